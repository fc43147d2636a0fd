"""CPU threads for a fit: one for small models, the free cores for large ones, the user's choice
when given, and torch's setting put back afterwards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layerwise.errors import RecipeError
from layerwise.train import Trainer, device
from layerwise.train.device import MACS_PER_THREAD, CpuThreads, forward_macs


@pytest.fixture
def two_free_cores(monkeypatch):
    """A 2-core machine whose other processes use `load["outside"]` cores."""
    load = {"outside": 0.0}
    monkeypatch.setattr(device, "usable_cores", lambda: 2)
    monkeypatch.setattr(device.OutsideLoad, "measure", lambda self, seconds: load["outside"])
    monkeypatch.setattr(device.OutsideLoad, "sample", lambda self: load["outside"])
    for name in device.THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return load


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def data(rows: int = 64, width: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(rows, width, generator=generator), torch.randint(0, 3, (rows,))


def test_forward_macs_counts_linear_and_conv_layers():
    mlp = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
    assert forward_macs(mlp, lambda: mlp(torch.zeros(4, 10))) == 4 * (10 * 20 + 20 * 3)
    conv = nn.Conv2d(2, 5, kernel_size=3, padding=1)
    assert forward_macs(conv, lambda: conv(torch.zeros(1, 2, 6, 6))) == 5 * 6 * 6 * 2 * 9


def test_small_model_fits_on_one_thread_and_torch_setting_is_restored(two_free_cores):
    torch.set_num_threads(2)
    trainer = Trainer(nn.Linear(8, 3), doctor=False)
    trainer.fit(data(), epochs=1, batch_size=16)
    assert trainer.cpu_threads.count == 1
    assert trainer.cpu_threads.cap == 1
    assert torch.get_num_threads() == 2


def test_large_model_uses_the_cores_others_leave_free_epoch_by_epoch(two_free_cores):
    width = 4096  # 16 rows x 4096 x 4096 multiply-adds: more than two threads' worth per batch
    assert 16 * width * width >= 2 * MACS_PER_THREAD
    threads = CpuThreads("auto")
    assert threads.start(torch.device("cpu"), lambda: 16 * width * width) == 2
    two_free_cores["outside"] = 1.1  # another process took a core during the epoch
    assert threads.epoch_end() == 1
    two_free_cores["outside"] = 0.1  # and left
    assert threads.epoch_end() == 2
    threads.restore()


def test_busy_machine_starts_a_large_model_on_one_thread(two_free_cores):
    two_free_cores["outside"] = 2.7
    threads = CpuThreads("auto")
    assert threads.start(torch.device("cpu"), lambda: 10 * MACS_PER_THREAD) == 1
    threads.restore()


def test_explicit_choices_win(two_free_cores, monkeypatch):
    torch.set_num_threads(1)
    trainer = Trainer(nn.Linear(8, 3), doctor=False, threads=2)
    trainer.fit(data(), epochs=1, batch_size=16)
    assert trainer.cpu_threads.count == 2 and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert CpuThreads("auto").start(torch.device("cpu"), lambda: 0.0) == 2
    untouched = CpuThreads(None)
    assert untouched.start(torch.device("cpu"), lambda: 0.0) is None


def test_threads_leaves_non_cpu_devices_alone(two_free_cores):
    assert CpuThreads("auto").start(torch.device("meta"), lambda: 1e12) is None


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(RecipeError, match="threads must be a positive number"):
        Trainer(nn.Linear(2, 2), threads=bad)


def test_estimating_the_work_changes_no_result(two_free_cores):
    """The estimate draws a batch (augmented from the global RNG here) and runs a forward before
    the first epoch; the RNG and batch-norm statistics must come out as they went in, so a seeded
    fit gives the same weights with the estimate (auto) or without it (a fixed count)."""
    x, y = data()

    def jitter(sample):
        return sample + 0.01 * torch.randn_like(sample)

    def fitted(threads):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 3)
        )
        Trainer(model, doctor=False, threads=threads).fit(
            (x, y), epochs=2, batch_size=16, transform=jitter
        )
        return model.state_dict()

    auto, one = fitted("auto"), fitted(1)
    for name, value in auto.items():
        assert torch.equal(value, one[name]), name


def test_a_recipe_sets_the_threads():
    from layerwise.experiment import build
    from layerwise.recipe import load_recipe
    from layerwise.recipes_bundled import bundled_recipe

    one = build(load_recipe(bundled_recipe("wine_mlp"), ["train.threads=1"]))
    assert one.trainer.cpu_threads.requested == 1
    default = build(load_recipe(bundled_recipe("wine_mlp")))
    assert default.trainer.cpu_threads.requested == "auto"


def test_a_custom_step_counts_its_forward_only_when_it_says_so():
    """The base Trainer cannot know how a custom step calls the model (a GAN pair), so it counts
    nothing; the sequence step reads batches as `unpack` gives them and counts its forward."""
    from layerwise.data import make_batcher
    from layerwise.tasks.sequence import SequenceTrainer

    class CustomStep(Trainer):
        def train_step(self, batch):
            return super().train_step(batch)

    tokens = torch.randint(1, 20, (8, 6), generator=torch.Generator().manual_seed(0))
    batches = make_batcher((tokens, tokens), batch_size=4, shuffle=False)
    model = nn.Sequential(nn.Embedding(20, 4), nn.Linear(4, 20))
    sequence, custom = SequenceTrainer(model, doctor=False), CustomStep(model, doctor=False)
    sequence.train_data = custom.train_data = batches
    before = torch.get_rng_state()
    assert sequence._forward_macs() == 4 * 6 * 4 * 20  # the Linear layer's multiply-adds
    assert torch.equal(torch.get_rng_state(), before)
    assert custom._forward_macs() == 0.0
