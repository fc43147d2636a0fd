"""The Trainer: learning, reproducibility, exact resume, events, and no host sync per step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layerwise.errors import RecipeError
from layerwise.train import Callback, EarlyStopping, Trainer
from layerwise.train import device as device_module


def blobs(n: int = 256, classes: int = 3, dim: int = 8, seed: int = 0):
    """Well-separated Gaussian blobs: any working trainer gets them right."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 4
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, dim, generator=g)
    return x, y


def small_mlp(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, classes))


def weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_learns_and_reports_history():
    x, y = blobs()
    trainer = Trainer(small_mlp(), optimizer="adam", lr=1e-2, device="cpu")
    history = trainer.fit((x[:200], y[:200]), val=(x[200:], y[200:]), epochs=5, batch_size=32)
    assert len(history) == 5
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch"} <= set(history[-1])
    assert history[-1]["loss"] < history[0]["loss"]
    assert trainer.evaluate((x[200:], y[200:]))["accuracy"] >= 0.95
    assert trainer.predict(x[:10]).shape == (10, 3)


def test_same_seed_gives_bitwise_identical_weights():
    x, y = blobs()
    models = []
    for _ in range(2):
        model = small_mlp()
        Trainer(model, optimizer="sgd", lr=0.05, seed=7, device="cpu").fit(
            (x, y), epochs=2, batch_size=16
        )
        models.append(model)
    assert weights_equal(*models)


class StopAt(Callback):
    """Simulates a crash after a given step, keeping the trainer state of that moment."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.snapshot = None

    def on_batch_end(self, trainer: Trainer) -> None:
        if trainer.state.step == self.step:
            self.snapshot = (
                {k: v.clone() for k, v in trainer.model.state_dict().items()},
                trainer.state_dict(),
            )
            trainer.stop_training = True


def test_resume_mid_epoch_is_bitwise_identical():
    x, y = blobs(n=200)
    kwargs = {"optimizer": "adam", "lr": 5e-3, "seed": 3, "device": "cpu", "schedule": "onecycle"}
    full = small_mlp()
    Trainer(full, **kwargs).fit((x, y), val=(x[:50], y[:50]), epochs=3, batch_size=16)

    stopper = StopAt(step=17)  # 13 batches per epoch: this is mid-way through epoch 2
    first = small_mlp()
    Trainer(first, callbacks=[stopper], **kwargs).fit(
        (x, y), val=(x[:50], y[:50]), epochs=3, batch_size=16
    )
    weights, state = stopper.snapshot
    assert state["train_state"]["batch_in_epoch"] == 4

    resumed = small_mlp()
    resumed.load_state_dict(weights)
    trainer = Trainer(resumed, **kwargs)
    trainer.load_state_dict(state)
    history = trainer.fit((x, y), val=(x[:50], y[:50]), epochs=3, batch_size=16)
    assert len(history) == 3
    assert weights_equal(full, resumed)


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def __getattribute__(self, name: str):
        if name.startswith(("on_", "after_")):
            self_events = object.__getattribute__(self, "events")
            return lambda trainer: self_events.append(name)
        return object.__getattribute__(self, name)


def test_events_fire_in_order():
    x, y = blobs(n=64)
    recorder = Recorder()
    Trainer(small_mlp(), callbacks=[recorder], device="cpu").fit((x, y), epochs=2, batch_size=32)
    per_batch = ["after_backward", "on_batch_end"]
    epoch = ["on_epoch_start", *per_batch, *per_batch, "on_epoch_end"]
    assert recorder.events == ["on_fit_start", *epoch, *epoch, "on_fit_end"]


def test_train_step_can_be_overridden():
    class CountingTrainer(Trainer):
        calls = 0

        def train_step(self, batch):
            CountingTrainer.calls += 1
            return super().train_step(batch)

    x, y = blobs(n=64)
    CountingTrainer(small_mlp(), device="cpu").fit((x, y), epochs=3, batch_size=16)
    assert CountingTrainer.calls == 12


def _count_host_syncs(monkeypatch, steps_per_epoch: int, doctor: bool = False) -> int:
    calls = {"n": 0}
    for name in ("item", "tolist", "cpu", "__float__", "__bool__", "numpy"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    x, y = blobs(n=16 * steps_per_epoch)
    trainer = Trainer(
        small_mlp(), optimizer="sgd", lr=0.1, metrics=["accuracy"], device="cpu", doctor=doctor
    )
    calls["n"] = 0
    trainer.fit((x, y), epochs=2, batch_size=16)
    count = calls["n"]
    monkeypatch.undo()
    return count


def test_no_host_sync_per_step(monkeypatch):
    few = _count_host_syncs(monkeypatch, steps_per_epoch=4)
    many = _count_host_syncs(monkeypatch, steps_per_epoch=40)
    assert few == many, f"host syncs grow with steps: {few} for 8 steps, {many} for 80"


def test_the_doctors_host_syncs_are_per_sample_not_per_step(monkeypatch):
    # With probe_every="auto" an epoch has ~9 sampled steps however long it is, plus the dense
    # early samples (steps 0-3, then powers of two below the sampling interval): one sync each.
    from layerwise.diagnose.probes import auto_every, early_steps

    shorter = _count_host_syncs(monkeypatch, steps_per_epoch=90, doctor=True)
    longer = _count_host_syncs(monkeypatch, steps_per_epoch=360, doctor=True)
    extra_early = len(early_steps(auto_every(360))) - len(early_steps(auto_every(90)))
    assert longer - shorter == extra_early, f"{shorter} syncs for 180 steps, {longer} for 720"


def test_grad_clip_bounds_the_gradient_norm():
    norms = []

    class Norms(Callback):
        def on_batch_end(self, trainer):
            pass

        def after_backward(self, trainer):
            grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))

    x, y = blobs(n=64)
    x = x * 1000  # huge inputs, huge gradients
    model = small_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(model, optimizer="sgd", lr=1.0, grad_clip=0.01, callbacks=[Norms()], device="cpu").fit(
        (x, y), epochs=1, batch_size=64
    )
    change = torch.sqrt(sum(((model.state_dict()[k] - before[k]) ** 2).sum() for k in before))
    assert norms[0] > 1.0  # the raw gradient was big …
    assert change <= 0.01 + 1e-6  # … yet the clipped step moved the weights by at most lr * clip


def test_early_stopping_stops_and_restores_best():
    x, y = blobs(n=64)
    stopper = EarlyStopping(monitor="loss", patience=1, min_delta=1e9)
    trainer = Trainer(small_mlp(), callbacks=[stopper], device="cpu")
    history = trainer.fit((x, y), epochs=10, batch_size=32)
    assert len(history) == 2
    assert stopper.stopped_epoch == 2


def test_bf16_and_channels_last_run_on_cpu():
    images = torch.randn(32, 1, 8, 8)
    labels = torch.randint(0, 2, (32,))
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    trainer = Trainer(model, precision="bf16", channels_last=True, device="cpu")
    history = trainer.fit((images, labels), epochs=1, batch_size=8)
    assert torch.isfinite(torch.tensor(history[-1]["loss"]))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_hardware_has_it(monkeypatch, native):
    monkeypatch.setattr(device_module, "native_bf16", lambda device: native)
    trainer = Trainer(small_mlp(), precision="auto", device="cpu")
    assert trainer.precision == ("bf16" if native else "fp32")
    x, _ = blobs(n=16)
    outputs = trainer.predict(x)
    assert outputs.dtype == torch.float32  # bf16 outputs come back as float32 either way
    with trainer.autocast:
        dtype = trainer.model(x).dtype
    assert dtype == (torch.bfloat16 if native else torch.float32)


def test_unknown_precision_names_the_choices():
    with pytest.raises(RecipeError, match="unknown precision 'fp8'") as info:
        Trainer(small_mlp(), precision="fp8", device="cpu")
    assert "auto" in info.value.hint


def test_diagnose_before_training_says_fit_has_not_started_rather_than_no_doctor():
    from layerwise.errors import DataError, LayerwiseError

    x, y = blobs()
    x[3, 2] = float("nan")
    trainer = Trainer(small_mlp(), threads=1, progress=False)
    with pytest.raises(DataError, match="NaN"):
        trainer.fit((x, y), epochs=1)
    with pytest.raises(LayerwiseError, match="fit\\(\\) has not started training"):
        trainer.diagnose()
    quiet = Trainer(small_mlp(), threads=1, progress=False, doctor=False)
    with pytest.raises(LayerwiseError, match="has no doctor"):
        quiet.diagnose()
