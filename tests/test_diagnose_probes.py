"""Probes: sampled steps, exact statistics on hand-made layers, no hooks between samples, the
log's file round trip and resume, and the doctor's plots."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from layerwise.diagnose.probe_log import ProbeLog
from layerwise.diagnose.probes import Probes, auto_every, early_steps, watched_layers
from layerwise.errors import LayerwiseError, RecipeError, RunError
from layerwise.report.doctor_plots import (
    plot_activation_histograms,
    plot_gradient_flow,
    plot_update_ratios,
)
from layerwise.train import Callback, Trainer


def _data(rows: int = 24, features: int = 4, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, features, generator=g), torch.randint(0, classes, (rows,), generator=g)


def _mlp(activation: nn.Module | None = None) -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 6), activation or nn.ReLU(), nn.Linear(6, 3))


def _fit(model, probes, data=None, epochs=1, batch_size=8, callbacks=(), **kwargs) -> Trainer:
    trainer = Trainer(
        model,
        optimizer=kwargs.pop("optimizer", "sgd"),
        lr=kwargs.pop("lr", 0.1),
        metrics=[],
        callbacks=[probes, *callbacks],
        device="cpu",
        **kwargs,
    )
    trainer.fit(data or _data(), epochs=epochs, batch_size=batch_size, shuffle=False)
    return trainer


def _png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- sampling
def test_records_appear_exactly_at_sampled_steps():
    probes = Probes(every=4)
    trainer = _fit(_mlp(), probes, epochs=3)  # 3 batches per epoch: steps 0..8
    # Steps 1-3 are the dense early samples (every step up to 3, then powers of two below 4).
    assert early_steps(4) == {0, 1, 2, 3}
    assert [r["step"] for r in probes.log.steps] == [0, 1, 2, 3, 4, 8]
    assert [bool(r.get("early")) for r in probes.log.steps] == [0, 1, 1, 1, 0, 0]
    assert [r["epoch"] for r in probes.log.steps] == [1, 1, 1, 2, 2, 3]
    assert [(h["epoch"], h["step"]) for h in probes.log.hists] == [(1, 0), (2, 3), (3, 8)]
    # A second fit continues the run: its first step (9) is sampled too, then every 4th.
    trainer.fit(_data(), epochs=5, batch_size=8, shuffle=False)
    assert [r["step"] for r in probes.log.steps] == [0, 1, 2, 3, 4, 8, 9, 12]
    assert [h["step"] for h in probes.log.hists] == [0, 3, 8, 9, 12]


def test_early_steps_are_dense_then_sparse():
    assert early_steps(1) == {0}
    assert early_steps(50) == {0, 1, 2, 3, 8, 16, 32}
    assert early_steps(5) == {0, 1, 2, 3}


def test_every_one_samples_every_step_and_auto_follows_the_epoch_length():
    probes = Probes(every=1)
    _fit(_mlp(), probes, epochs=2)
    assert [r["step"] for r in probes.log.steps] == list(range(6))
    assert auto_every(445) == 50  # MNIST at batch 128: 9 samples per epoch
    assert auto_every(1875) == 50  # never less often than every 50 steps
    assert auto_every(45) == 5
    assert auto_every(3) == 1
    assert auto_every(None) == 50
    auto = Probes()
    _fit(_mlp(), auto, data=_data(rows=80), batch_size=4)  # 20 batches -> every 3
    assert auto.every_ == 3
    assert [r["step"] for r in auto.log.steps] == [0, 1, 2, 3, 6, 9, 12, 15, 18]


class HookCounter(Callback):
    """Counts forward hooks on the watched layers in the middle of every step."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules = modules
        self.during_step: list[int] = []
        self.between_steps: list[int] = []

    def after_backward(self, trainer: Trainer) -> None:
        self.during_step.append(sum(len(m._forward_hooks) for m in self.modules))

    def on_batch_end(self, trainer: Trainer) -> None:
        self.between_steps.append(sum(len(m._forward_hooks) for m in self.modules))


@pytest.mark.parametrize(
    ("every", "armed_after"),
    # every 3: each regular sample starts an epoch, so it is armed there; the early samples
    # (steps 1, 2) are armed after the step before them
    [(3, [0, 1]), (4, [0, 1, 3, 7])],
)
def test_no_hooks_on_unsampled_steps_and_none_after_fit(every, armed_after):
    model = _mlp()
    counter = HookCounter(list(model))
    _fit(model, Probes(every=every), callbacks=[counter], epochs=3)  # steps 0..8
    sampled = [step % every == 0 or step in early_steps(every) for step in range(9)]
    assert [n > 0 for n in counter.during_step] == sampled
    assert counter.during_step[0] == 3  # Linear, ReLU, Linear
    # After step s ends, hooks are present only if step s + 1 is sampled (armed in advance)
    # and in the same epoch (validation and epoch-end callbacks run unhooked).
    assert [i for i, n in enumerate(counter.between_steps) if n] == armed_after
    assert all(len(m._forward_hooks) == 0 for m in model)


def test_bad_settings_are_recipe_errors():
    for every in (0, -1, 2.5, "often", True):
        with pytest.raises(RecipeError, match="every"):
            Probes(every=every)
    with pytest.raises(RecipeError, match="histogram_bins"):
        Probes(histogram_bins=0)


# ---------------------------------------------------------------------------- statistics
def test_known_weight_and_gradient_give_exact_norms_and_update_ratio():
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0]]))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    probes = Probes(every=1)
    _fit(layer, probes, data=(x, torch.zeros(2)), batch_size=2, loss=lambda out, y: out.sum())
    record = probes.log.steps[0]
    stats = record["layers"]["model"]
    grad = math.sqrt(4.0**2 + 6.0**2)  # d(sum of x @ w)/dw = column sums of x = (4, 6)
    assert record["loss"] == pytest.approx(11.0 + 25.0)
    assert record["grad_norm"] == pytest.approx(grad)
    assert stats["type"] == "Linear" and stats["role"] == "param"
    assert stats["weight_norm"] == pytest.approx(5.0)
    assert stats["grad_norm"] == pytest.approx(grad)
    assert stats["update_ratio"] == pytest.approx(0.1 * grad / 5.0)  # plain SGD: lr‖g‖/‖W‖
    assert stats["act_mean"] == pytest.approx(18.0)  # outputs 11 and 25
    assert stats["act_std"] == pytest.approx(7.0)


def test_relu_fed_negative_inputs_is_dead_and_partial_death_counts_units():
    first = nn.Linear(4, 3)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]))
        first.bias.fill_(0.0)
    model = nn.Sequential(first, nn.ReLU(), nn.Linear(3, 2))
    x = torch.rand(8, 4) + 0.1
    x[:, 0] = -x[:, 0]  # unit 0 never positive: one of three units dead
    probes = Probes(every=1)
    _fit(model, probes, data=(x, torch.zeros(8, dtype=torch.long)), lr=1e-9)
    relu = probes.log.steps[0]["layers"]["1"]
    assert relu["role"] == "activation" and relu["type"] == "ReLU"
    assert relu["dead_frac"] == pytest.approx(1 / 3)
    assert relu["zero_frac"] == pytest.approx(1 / 3)
    assert "sat_frac" not in relu

    probes = Probes(every=1)
    _fit(model, probes, data=(-x.abs() - 1, torch.zeros(8, dtype=torch.long)), lr=1e-9)
    relu = probes.log.steps[0]["layers"]["1"]
    assert relu["dead_frac"] == 1.0 and relu["zero_frac"] == 1.0


def test_dead_units_are_channels_for_images():
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 9, 2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.copy_(torch.tensor([0.0, 0.0, -100.0, -100.0]))
    x = -torch.rand(4, 1, 3, 3) - 0.1
    x[2, 0, 1, 1] = 1.0  # channels 0 and 1 come alive at one pixel of one image: not dead
    probes = Probes(every=1)
    _fit(model, probes, data=(x, torch.zeros(4, dtype=torch.long)), batch_size=4, lr=1e-9)
    assert probes.log.steps[0]["layers"]["1"]["dead_frac"] == 0.5


@pytest.mark.parametrize(
    ("activation", "inputs", "expected"),
    [
        (nn.Sigmoid(), 100.0, 1.0),
        (nn.Sigmoid(), 0.0, 0.0),
        (nn.Tanh(), -100.0, 1.0),
        (nn.Hardtanh(), 5.0, 1.0),
        (nn.Tanh(), 0.1, 0.0),
    ],
)
def test_saturation_of_sigmoid_and_tanh(activation, inputs, expected):
    model = nn.Sequential(activation, nn.Linear(4, 3))
    x = torch.full((8, 4), inputs) * torch.sign(torch.randn(8, 4))  # both limits
    probes = Probes(every=1)
    _fit(model, probes, data=(x, torch.zeros(8, dtype=torch.long)), lr=1e-9)
    stats = probes.log.steps[0]["layers"]["0"]
    assert stats["sat_frac"] == pytest.approx(expected)
    assert "dead_frac" not in stats


def test_histogram_counts_every_output_between_lo_and_hi():
    probes = Probes(every=2, histogram_bins=10)
    trainer = _fit(_mlp(), probes, epochs=2)
    hist = probes.log.hists[0]["layers"]["1"]
    assert list(probes.log.hists[0]["layers"]) == ["1"]  # activations only
    assert len(hist["counts"]) == 10
    assert sum(hist["counts"]) == 8 * 6  # batch x units, from the epoch's first sampled step
    assert hist["lo"] == 0.0 and hist["hi"] > 0
    assert probes.log.hists[1]["step"] == 4  # epoch 2's first sampled step (steps 3-5)
    assert trainer.state.step == 6


def test_recurrent_outputs_unused_layers_and_custom_train_steps():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(4, 5, batch_first=True)
            self.unused = nn.Linear(5, 5)
            self.act = nn.Tanh()
            self.head = nn.Linear(5, 3)

        def forward(self, x):
            out, _ = self.rnn(x)  # a tuple: the probes describe its first tensor
            return self.head(self.act(out[:, -1]))

    class TwoForwards(Trainer):
        def train_step(self, batch):
            x, y = batch
            with torch.no_grad():
                self.model(x * 1000)  # an inference pass inside the step is not recorded
            loss = self.compute_loss(self.model(x), y)
            self.backward(loss)
            self.optimizer_step()
            return loss

    x, y = torch.randn(8, 3, 4), torch.randint(0, 3, (8,))
    net, probes = Net(), Probes(every=1)
    trainer = TwoForwards(net, optimizer="sgd", lr=1e-9, metrics=[], callbacks=[probes])
    trainer.fit((x, y), epochs=1, batch_size=8)
    layers = probes.log.steps[0]["layers"]
    assert list(layers) == ["rnn", "unused", "act", "head"]
    assert layers["rnn"]["type"] == "GRU"
    with torch.no_grad():
        out = net.rnn(x)[0]  # the recorded pass, not the x1000 one
    assert layers["rnn"]["act_mean"] == pytest.approx(out.mean().item(), abs=1e-6)
    assert layers["rnn"]["act_std"] == pytest.approx(out.std(correction=0).item(), abs=1e-6)
    assert layers["rnn"]["grad_norm"] > 0
    assert "act_mean" not in layers["unused"] and "grad_norm" not in layers["unused"]
    assert layers["unused"]["weight_norm"] > 0
    assert probes.log.steps[0]["loss"] == pytest.approx(trainer.last_logs["loss"].item())


def test_no_watched_layers_bf16_autocast_and_no_loss():
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return x[:, :3] * self.gain

    probes = Probes(every=1)
    _fit(Scale(), probes, epochs=1)
    assert [r["layers"] for r in probes.log.steps] == [{}, {}, {}]
    assert all(r["grad_norm"] > 0 for r in probes.log.steps)

    probes = Probes(every=1)
    _fit(_mlp(), probes, precision="bf16")
    stats = probes.log.steps[0]["layers"]
    numbers = [v for s in stats.values() for v in s.values() if isinstance(v, float)]
    assert len(numbers) == 14 and all(math.isfinite(v) for v in numbers)

    class NoLoss(Trainer):
        def train_step(self, batch):
            super().train_step(batch)

    probes = Probes(every=1)
    NoLoss(_mlp(), metrics=[], callbacks=[probes]).fit(_data(), epochs=1, batch_size=8)
    assert probes.log.steps[0]["loss"] is None and probes.log.steps[0]["layers"]


def test_watched_layers_roles_and_frozen_layers():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.GELU(), nn.Dropout(), nn.PReLU())
    assert [(w.name, w.role) for w in watched_layers(model)] == [
        ("0", "param"),
        ("1", "param"),
        ("2", "activation"),
        ("4", "activation"),
    ]
    model = _mlp()
    model[0].requires_grad_(False)
    probes = Probes(every=1)
    _fit(model, probes)
    frozen = probes.log.steps[0]["layers"]["0"]
    assert "weight_norm" in frozen and "update_ratio" not in frozen and "grad_norm" not in frozen


# ---------------------------------------------------------------------------- the log
def _log() -> ProbeLog:
    layers = {
        "fc": {"type": "Linear", "role": "param", "grad_norm": math.nan, "update_ratio": 1e-3},
        "act": {"type": "ReLU", "role": "activation", "dead_frac": math.inf, "act_mean": 0.5},
    }
    steps = [
        {"kind": "step", "step": s, "epoch": 1 + s // 10, "loss": 1.0 / (s + 1), "grad_norm": s}
        | {"layers": json.loads(json.dumps(layers))}
        for s in range(0, 30, 5)
    ]
    steps[-1]["loss"] = math.nan
    hists = [
        {"kind": "hist", "epoch": e, "step": (e - 1) * 10, "layers": {"act": {"lo": 0.0,
         "hi": 2.0, "counts": [5, 3, 1, 1]}}}
        for e in (1, 2, 3)
    ]  # fmt: skip
    return ProbeLog(steps, hists)


def test_save_and_load_round_trip_keeps_nan_and_inf(tmp_path):
    log = _log()
    path = log.save(tmp_path / "probes.jsonl")
    lines = path.read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines[:3]] == ["step", "hist", "step"]
    again = ProbeLog.load(path)
    assert len(again.steps) == 6 and again.hists == log.hists
    assert math.isnan(again.steps[-1]["loss"])
    assert math.isnan(again.steps[0]["layers"]["fc"]["grad_norm"])
    assert again.steps[0]["layers"]["act"]["dead_frac"] == math.inf
    assert again.layers() == ["fc", "act"]


def test_series_and_epoch_values():
    log = _log()
    assert log.series(None, "grad_norm") == ([0, 5, 10, 15, 20, 25], [0.0, 5, 10, 15, 20, 25])
    assert log.series("act", "act_mean")[1] == [0.5] * 6
    assert log.series("act", "missing") == ([], [])
    assert log.epoch_values(None, "grad_norm") == {1: 2.5, 2: 12.5, 3: 22.5}
    assert log.epoch_values(None, "grad_norm", reduce="max") == {1: 5.0, 2: 15.0, 3: 25.0}
    last = log.epoch_values(None, "loss", reduce="median")
    assert last[1] == pytest.approx((1 + 1 / 6) / 2) and math.isnan(last[3])  # NaN shows
    with pytest.raises(LayerwiseError, match="reduction 'meen'"):
        log.epoch_values(None, "loss", reduce="meen")


def test_layers_keep_model_order_when_a_layer_first_shows_up_late():
    log = ProbeLog(
        steps=[
            {"kind": "step", "step": 0, "epoch": 1, "layers": {"a": {}, "c": {}}},
            {"kind": "step", "step": 5, "epoch": 1, "layers": {"a": {}, "b": {}, "c": {}}},
        ]
    )
    assert log.layers() == ["a", "b", "c"]


def test_missing_or_damaged_log_is_a_run_error_naming_the_file(tmp_path):
    with pytest.raises(RunError, match=r"nothere\.jsonl' does not exist"):
        ProbeLog.load(tmp_path / "nothere.jsonl")
    bad = tmp_path / "probes.jsonl"
    bad.write_text('{"kind": "step", "step": 0, "layers": {}}\n{"kind": "st')
    with pytest.raises(RunError, match=r"probes.jsonl' is damaged at line 2") as info:
        ProbeLog.load(bad)
    assert "delete" in info.value.hint
    bad.write_text('{"kind": "step", "layers": {}}\n')
    with pytest.raises(RunError, match="line 1"):
        ProbeLog.load(bad)


def test_log_is_written_at_epoch_end_and_resume_drops_records_to_be_redone(tmp_path):
    path = tmp_path / "probes.jsonl"
    states = {}

    class KeepState(Callback):
        def on_epoch_end(self, trainer):
            states[trainer.state.epoch] = (
                {k: v.clone() for k, v in trainer.model.state_dict().items()},
                trainer.state_dict(),
            )

    torch.manual_seed(0)
    full = Probes(every=2, path=path)
    _fit(_mlp(), full, epochs=3, callbacks=[KeepState()])  # steps 0..8
    assert [r["step"] for r in ProbeLog.load(path).steps] == [0, 1, 2, 4, 6, 8]
    expected = [(r["step"], r["loss"]) for r in full.log.steps]

    # Resume after epoch 1 (step 3) while the file already holds steps up to 8.
    weights, state = states[1]
    model = _mlp()
    model.load_state_dict(weights)
    resumed = Probes(every=2, path=path)
    trainer = Trainer(model, optimizer="sgd", lr=0.1, metrics=[], callbacks=[resumed])
    trainer.load_state_dict(state)
    trainer.fit(_data(), epochs=3, batch_size=8, shuffle=False)
    got = [(r["step"], r["loss"]) for r in ProbeLog.load(path).steps]
    assert [s for s, _ in got] == [0, 1, 2, 3, 4, 6, 8]  # step 3 is the resumed fit's first
    assert dict(got)[8] == pytest.approx(dict(expected)[8])  # the same run, bit for bit
    assert [h["epoch"] for h in ProbeLog.load(path).hists] == [1, 2, 3]


def test_a_fresh_fit_starts_an_empty_log(tmp_path):
    path = tmp_path / "probes.jsonl"
    _log().save(path)
    probes = Probes(every=2, path=path)
    _fit(_mlp(), probes)
    assert [r["step"] for r in ProbeLog.load(path).steps] == [0, 1, 2]


# ---------------------------------------------------------------------------- plots
def test_plots_write_png_files(tmp_path):
    probes = Probes(every=1)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.Sigmoid(), nn.Linear(6, 3)
    )
    _fit(model, probes, epochs=3)
    log = probes.log
    log.steps[2]["layers"]["0"]["grad_norm"] = math.inf  # drawn in red, not an error
    for plot, name in (
        (plot_gradient_flow, "flow.png"),
        (plot_update_ratios, "ratios.png"),
        (plot_activation_histograms, "hists.png"),
    ):
        assert _png(plot(log, tmp_path / name))
    assert _png(plot_activation_histograms(log, tmp_path / "e2.png", epochs=[1, 2, 3]))
    with pytest.raises(LayerwiseError, match=r"epoch\(s\) \[7\]"):
        plot_activation_histograms(log, tmp_path / "x.png", epochs=[1, 7])


def test_plots_of_logs_without_data(tmp_path):
    with pytest.raises(LayerwiseError, match="no sampled steps"):
        plot_gradient_flow(ProbeLog(), tmp_path / "flow.png")
    log = ProbeLog(steps=[{"kind": "step", "step": 0, "epoch": 1, "loss": 1.0, "layers": {}}])
    assert _png(plot_activation_histograms(log, tmp_path / "hists.png"))  # says why it is empty
    assert _png(plot_gradient_flow(log, tmp_path / "flow.png"))
