"""vanishing_gradients judges depth by the autograd graph, not by the order modules were defined.

The probes record which weight layers feed which (`layer_graph`) from a training step's autograd
graph; the rule counts depth from the loss along it, judges the input end (the deepest layers)
and compares each layer with the output layers its output reaches. Each test trains a small
model for a few steps with probes on, as a run does, and reads the recorded log.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from layerwise.diagnose.probe_log import ProbeLog
from layerwise.diagnose.probes import Probes
from layerwise.diagnose.rules import RuleContext, gradients
from layerwise.train import Trainer


def probed(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, **kw: Any) -> Any:
    """The probe log of `epochs` epochs of training with probes on every `every` steps."""
    probes = Probes(every=kw.pop("every", 1))
    batch_size = kw.pop("batch_size", 16)
    trainer = Trainer(model, doctor=False, callbacks=[probes], progress=False, threads=1, **kw)
    trainer.fit((x, y), epochs=epochs, batch_size=batch_size)
    return probes.log


def ctx(log: Any, task: str = "classification") -> RuleContext:
    return RuleContext(
        history=[], probes=log, data=None, recipe=None, task=task, num_classes=10, final=True
    )


def weight_layers(c: RuleContext) -> list[str]:
    return [
        n
        for n in c.layer_names(role="param")
        if not any(w in c.layer_type(n).lower() for w in gradients.NOT_A_WEIGHT_LAYER)
    ]


def without_graph(log: ProbeLog) -> ProbeLog:
    """The same records as a log written before probes recorded the layer graph."""
    return ProbeLog(steps=[{k: v for k, v in r.items() if k != "graph"} for r in log.steps])


def relative(log: ProbeLog, layer: str) -> float:
    stats = log.steps[-1]["layers"][layer]
    return stats["grad_norm"] / stats["weight_norm"]


# ------------------------------------------------------------------ a feature pyramid
SIDE = 1e-5  # how much the stride-4 level's prediction counts in the output


class SideLevelFPN(nn.Module):
    """A two-level feature pyramid with a head shared over the levels, its pyramid defined
    before its backbone (module order: output convs, laterals, stem ... head). The output uses
    the coarse level only at `SIDE` weight, as FCOS on the MNIST scenes uses its stride-16
    level (no digit box is assigned to it), so `out_p4` learns almost nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.out_p4 = nn.Conv2d(16, 16, 3, padding=1)
        self.out_p3 = nn.Conv2d(16, 16, 3, padding=1)
        self.lateral_p4 = nn.Conv2d(32, 16, 1)
        self.lateral_p3 = nn.Conv2d(16, 16, 1)
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.stage3 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.stage4 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.head = nn.Conv2d(16, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c3 = F.relu(self.stage3(F.relu(self.stem(x))))
        c4 = F.relu(self.stage4(c3))
        p4 = self.lateral_p4(c4)
        p3 = self.lateral_p3(c3) + F.interpolate(p4, scale_factor=2.0)
        fine = self.head(F.relu(self.out_p3(p3))).mean((2, 3))
        coarse = self.head(F.relu(self.out_p4(p4))).mean((2, 3))
        return fine + SIDE * coarse


def images(n: int = 64, channels: int = 1, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, channels, size, size, generator=g), torch.randint(
        0, 10, (n,), generator=g
    )


def test_a_starved_pyramid_level_is_not_read_as_vanishing() -> None:
    torch.manual_seed(0)
    log = probed(SideLevelFPN(), *images(), epochs=2, optimizer="adam", lr=1e-3)
    assert relative(log, "out_p4") < 1e-3 * relative(log, "head")  # the observation is true
    c = ctx(log)
    graph = log.steps[0]["graph"]
    assert graph["lateral_p3"] == ["stage3"] and graph["head"] == ["out_p4", "out_p3"]
    assert graph["out_p3"] == ["lateral_p4", "lateral_p3"]  # the top-down path
    layout = gradients.graph_layout(c, weight_layers(c))
    assert layout is not None and layout.judged == {"stem"}  # the input end: 5 layers to the loss
    assert layout.outputs["out_p4"] == ["head"] and layout.n_outputs == 1
    assert gradients.vanishing_gradients(c) is None
    # Read in module order, the starved output conv (defined first) was taken for the input end.
    old = gradients.vanishing_gradients(ctx(without_graph(log)))
    assert (
        old is not None and old.layer == "out_p4" and old.evidence["layer_order"] == "model order"
    )


# ------------------------------------------------------------------ residual nets
def test_a_residual_net_is_silent_and_its_shortcuts_are_not_the_input_end() -> None:
    from layerwise.models.resnet import CifarResNet

    torch.manual_seed(0)
    log = probed(CifarResNet(8, 10, 3), *images(channels=3), epochs=2, optimizer="adam", lr=1e-3)
    c = ctx(log)
    graph = log.steps[0]["graph"]
    # The second block's first conv is fed by the first block and, through the skip, the stem.
    assert graph["layer2.0.conv1"] == ["bn1", "layer1.0.bn2"]
    layout = gradients.graph_layout(c, weight_layers(c))
    assert layout is not None and "conv1" in layout.judged and layout.n_outputs == 1
    assert gradients.vanishing_gradients(c) is None


def test_torchvision_resnet18_downsample_convs_sit_near_the_loss() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    log = probed(model, *images(16, 3, 32), epochs=1, optimizer="adam", lr=1e-3, batch_size=8)
    c = ctx(log)
    layout = gradients.graph_layout(c, weight_layers(c))
    assert layout is not None and layout.n_outputs == 1 and len(layout.towers) == 1
    # The 1x1 shortcut convs come after their block's convs in module order and are 1-2 layers
    # from the next block: never the input end, which is the stem and the first blocks.
    assert "conv1" in layout.judged and not any("downsample" in n for n in layout.judged)
    assert gradients.vanishing_gradients(c) is None


# ------------------------------------------------------------------ the FCOS detector
def test_the_fcos_detector_is_judged_at_its_stem() -> None:
    pytest.importorskip("torchvision")
    from layerwise.data.scenes import generate_scenes, read_mnist
    from layerwise.models.detection import scene_fcos
    from layerwise.tasks.detection import DetectionTrainer

    torch.manual_seed(0)
    scenes, rows = generate_scenes(*read_mnist("test"), 8, seed=0, split="test")
    probes = Probes(every=1)
    model = scene_fcos(widths=[8, 8, 16, 16], fpn_channels=32, head_convs=1)
    trainer = DetectionTrainer(
        model, lr=3e-3, doctor=False, progress=False, threads=1, callbacks=[probes]
    )
    trainer.fit((scenes, rows), epochs=2, batch_size=8)
    c = ctx(probes.log, task="detection")
    layout = gradients.graph_layout(c, weight_layers(c))
    assert layout is not None
    assert layout.judged == {
        "backbone.stages.0.0",
        "backbone.stages.1.0.0",
        "backbone.stages.1.1.0",
    }
    heads = ["cls_logits", "bbox_reg", "bbox_ctrness"]
    assert sorted(o.rsplit(".", 1)[1] for o in layout.outputs["backbone.stages.0.0"]) == sorted(
        heads
    )
    # The stride-16 output conv reaches the heads only: three layers from the loss.
    level = "backbone.fpn.layer_blocks.1.0"
    assert level not in layout.judged and len(layout.outputs[level]) == 3
    assert gradients.vanishing_gradients(c) is None
    # The recipe's measured case: that level starved to 1e-4 of its step's gradient (no digit
    # box is assigned to it) while the stem learns is still silent; the stem starved is named.
    starved = starve(probes.log, [level], 1e-4)
    assert gradients.vanishing_gradients(ctx(starved, task="detection")) is None
    dying = gradients.vanishing_gradients(
        ctx(starve(starved, ["backbone.stages.0.0"], 1e-5), task="detection")
    )
    assert dying is not None and dying.layer == "backbone.stages.0.0"
    assert dying.evidence["layer_order"] == "graph" and level in dying.evidence["layers_below"]
    assert dying.evidence["reference_layer"].rsplit(".", 1)[1] in heads


def starve(log: ProbeLog, layers: list[str], factor: float) -> ProbeLog:
    steps = []
    for record in log.steps:
        copy = {**record, "layers": {n: dict(s) for n, s in record["layers"].items()}}
        for name in layers:
            copy["layers"][name]["grad_norm"] *= factor
        steps.append(copy)
    return ProbeLog(steps=steps)


# ------------------------------------------------------------------ genuinely vanishing
def test_a_deep_sigmoid_mlp_still_vanishes_along_the_graph() -> None:
    """recipes/broken/vanishing_gradients.yaml as plain PyTorch: ten sigmoid layers of 64."""
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    layers: list[nn.Module] = []
    for _ in range(10):
        linear = nn.Linear(64, 64)
        nn.init.xavier_uniform_(linear.weight)
        layers += [linear, nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(64, 10))
    log = probed(model, x, y, epochs=2, optimizer="sgd", lr=0.05, every=10, batch_size=32)
    assert all(log.steps[0]["graph"][str(2 * k)] == [str(2 * k - 2)] for k in range(1, 11))
    found = gradients.vanishing_gradients(ctx(log))
    assert found is not None and found.layer == "0" and found.evidence["reference_layer"] == "20"
    assert found.evidence["ratio"] < 1e-4 and found.evidence["layer_order"] == "graph"
    assert "the last layer's (20)" in found.message and "of 10 earlier layers" in found.message


# ------------------------------------------------------------------ hand-made graphs
def kind(name: str) -> str:
    return "BatchNorm1d" if name.startswith("bn") else "Linear"


def record(grads: dict[str, float], graph: dict[str, list[str]], epoch: int) -> dict[str, Any]:
    layers = {
        n: {"type": kind(n), "role": "param", "grad_norm": g, "weight_norm": 1.0}
        for n, g in grads.items()
    }
    return {"kind": "step", "step": epoch, "epoch": epoch, "loss": 1.0, "layers": layers,
            "graph": graph}  # fmt: skip


def test_towers_come_from_the_graph_not_the_names() -> None:
    """PPO-like actor and critic named as one chain: the graph still shows two towers."""
    grads = {"a1": 1e-3, "a2": 2e-3, "a_out": 0.6, "c1": 5e-2, "c2": 0.6, "c_out": 4.5}
    graph = {"a1": [], "a2": ["a1"], "a_out": ["a2"], "c1": [], "c2": ["c1"], "c_out": ["c2"]}
    log = [record(grads, graph, e) for e in (1, 2)]
    assert gradients.vanishing_gradients(ctx(log, task="rl")) is None
    dying = [record({**grads, "a1": 4e-4}, graph, e) for e in (1, 2)]
    found = gradients.vanishing_gradients(ctx(dying, task="rl"))
    assert (
        found is not None and found.layer == "a1" and found.evidence["reference_layer"] == "a_out"
    )
    assert "its tower's last layer's (a_out)" in found.message
    # Without the graph, the names make one chain and the critic's head is the reference.
    plain = ProbeLog(steps=[{k: v for k, v in r.items() if k != "graph"} for r in log])
    assert gradients.vanishing_gradients(ctx(plain, task="rl")) is not None


def test_several_outputs_compare_with_their_median_and_norms_are_crossed() -> None:
    """A trunk with three heads (as FCOS's classification, box and centre-ness outputs): the
    reference is the median of the heads the layer reaches; a batch norm between two layers
    joins them rather than cutting the chain."""
    grads = {"stem": 2e-3, "bn": 1e-6, "body": 0.1, "cls": 1.0, "box": 3.0, "ctr": 0.01}
    graph = {
        "stem": [],
        "bn": ["stem"],
        "body": ["bn"],
        "cls": ["body"],
        "box": ["body"],
        "ctr": ["body"],
    }
    log = [record(grads, graph, e) for e in (1, 2)]
    layout = gradients.graph_layout(ctx(log), ["stem", "body", "cls", "box", "ctr"])
    assert layout is not None and layout.judged == {"stem"} and layout.n_outputs == 3
    found = gradients.vanishing_gradients(ctx(log))  # 2e-3 / 1.0 (cls, the median head)
    assert found is None
    log = [record({**grads, "stem": 5e-4}, graph, e) for e in (1, 2)]
    found = gradients.vanishing_gradients(ctx(log))
    assert found is not None and found.evidence["reference_layer"] == "cls"
    assert found.evidence["ratio"] == pytest.approx(5e-4)
    assert "the output layer's (cls)" in found.message and "of 2 earlier layers" in found.message


def test_a_frozen_input_layer_leaves_the_graph_to_the_trained_layers() -> None:
    """A frozen first layer (transfer learning) computes nothing autograd tracks: the graph
    starts at the first trained layer, which is then the input end."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )
    model[0].requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    log = probed(model, x, y, epochs=2)
    assert log.steps[0]["graph"] == {"2": [], "4": ["2"]}
    c = ctx(log)
    layout = gradients.graph_layout(c, weight_layers(c))
    assert layout is not None and layout.layers == ["2", "4"] and layout.judged == {"2"}
    assert gradients.vanishing_gradients(c) is None
