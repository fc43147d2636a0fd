"""Transfer learning: head replacement, freezing, discriminative rates, gradual unfreezing,
the feature cache, and checkpoints that do not fit (every difference listed, nothing loaded)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from layerwise.errors import CheckpointError, RecipeError
from layerwise.models import CifarResNet, create_model
from layerwise.train import Trainer
from layerwise.transfer import (
    CheckpointMismatchError,
    FeatureExtractor,
    GradualUnfreezing,
    discriminative_groups,
    discriminative_optimizer,
    freeze,
    frozen_groups,
    group_names,
    layer_groups,
    load_backbone,
    load_weights,
    read_state_dict,
    replace_head,
)


def tiny_cnn(num_classes: int = 5) -> nn.Module:
    model = create_model("cnn", num_classes=num_classes, channels=(4, 8), hidden=(16,))
    model(torch.zeros(2, 1, 8, 8))  # build the lazy layers
    return model


def tiny_data(n: int = 64, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.arange(n) % classes


def trainer_for(model: nn.Module, **kw) -> Trainer:
    kw.setdefault("optimizer", "sgd")
    return Trainer(model, lr=0.1, doctor=False, progress=False, metrics=(), **kw)


# ------------------------------------------------------------------ head and groups
def test_replace_head_gives_new_width_and_keeps_the_body() -> None:
    model = tiny_cnn(5)
    body_before = copy.deepcopy(model.block1.state_dict())
    head = replace_head(model, 3, seed=0)
    assert model.head is head and head.out_features == 3 and head.in_features == 16
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    for key, value in model.block1.state_dict().items():
        assert torch.equal(value, body_before[key])


def test_groups_of_a_cifar_resnet_end_with_the_head() -> None:
    model = CifarResNet(20, 10)
    assert group_names(model) == ["conv1", "layer1", "layer2", "layer3", "linear"]
    grouped = sum(len(g.parameters()) for g in layer_groups(model))
    assert grouped == len(list(model.parameters()))  # bn1 joined the stem, nothing left out


def test_freezing_really_freezes() -> None:
    model = tiny_cnn(3)
    assert freeze(model, "backbone") == ["block1", "block2", "fc1"]
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head")}
    head_before = model.head.weight.clone()
    trainer_for(model).fit(tiny_data(), epochs=1, batch_size=16)
    for name, param in model.named_parameters():
        if not name.startswith("head"):
            assert param.grad is None and not param.requires_grad, name
    for key, value in model.state_dict().items():
        if key in frozen:
            assert torch.equal(value, frozen[key]), key
    assert not torch.equal(model.head.weight, head_before)
    assert frozen_groups(model) == ["block1", "block2", "fc1"]


def test_frozen_batch_norm_keeps_its_statistics() -> None:
    model = CifarResNet(8, 10)
    freeze(model, "backbone")
    stats = model.bn1.running_mean.clone()
    model.train()
    model(torch.randn(4, 3, 8, 8) * 5 + 3)
    assert torch.equal(model.bn1.running_mean, stats)
    freeze(model, "none")
    model(torch.randn(4, 3, 8, 8) * 5 + 3)
    assert not torch.equal(model.bn1.running_mean, stats)


def test_freeze_names_the_groups_on_a_typo() -> None:
    with pytest.raises(RecipeError, match="block1"):
        freeze(tiny_cnn(), ["blok1"])


# ------------------------------------------------------------------ learning rates
def test_discriminative_rates_per_group() -> None:
    model = tiny_cnn(3)
    groups = discriminative_groups(model, lr=1.0, factor=0.5)
    assert [g["name"] for g in groups] == ["block1", "block2", "fc1", "head"]
    assert [g["lr"] for g in groups] == [0.125, 0.25, 0.5, 1.0]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each parameter once
    trainer = trainer_for(model, optimizer=discriminative_optimizer(model, "sgd", 1.0, 0.5))
    trainer.fit(tiny_data(16), epochs=1, batch_size=16)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [0.125, 0.25, 0.5, 1.0]


def test_explicit_rates_must_match_the_groups() -> None:
    with pytest.raises(RecipeError, match="4 layer groups"):
        discriminative_groups(tiny_cnn(), lr=1.0, lrs=[0.1, 1.0])


def test_gradual_unfreezing_schedule() -> None:
    model = tiny_cnn(3)
    unfreezing = GradualUnfreezing(every=2)
    trainer = trainer_for(model, callbacks=[unfreezing])
    trainer.fit(tiny_data(16), epochs=7, batch_size=16)
    frozen_per_epoch = [names for _, names in unfreezing.history]
    assert frozen_per_epoch == [
        ["block1", "block2", "fc1"],
        ["block1", "block2", "fc1"],
        ["block1", "block2"],
        ["block1", "block2"],
        ["block1"],
        ["block1"],
        [],
    ]
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------ feature cache
def test_feature_cache_is_reused_and_keyed_by_weights(tmp_path: Path) -> None:
    model = tiny_cnn(3)
    x, y = tiny_data(40)
    extractor = FeatureExtractor(model, cache_dir=tmp_path)
    first = extractor.transform(x)
    assert first.shape == (40, 16) and (extractor.hits, extractor.misses) == (0, 1)
    again = FeatureExtractor(model, cache_dir=tmp_path).transform(x)
    assert torch.equal(first, again)
    second = FeatureExtractor(model, cache_dir=tmp_path)
    second.transform(x)
    assert (second.hits, second.misses) == (1, 0)
    # training the head does not invalidate the cache; changing the backbone does
    trainer_for(extractor.head).fit((first, y), epochs=1, batch_size=8)
    third = FeatureExtractor(model, cache_dir=tmp_path)
    third.transform(x)
    assert third.hits == 1
    with torch.no_grad():
        model.block1.conv.weight.add_(1.0)
    fourth = FeatureExtractor(model, cache_dir=tmp_path)
    assert not torch.equal(fourth.transform(x), first) and fourth.misses == 1
    # the embeddings are what the head sees: head(features) == model(x) in eval mode
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.head(fourth.transform(x)), model(x), atol=1e-5)


# ------------------------------------------------------------------ checkpoints that do not fit
def cifar_state(depth: int = 8, classes: int = 10) -> dict[str, torch.Tensor]:
    return CifarResNet(depth, classes).state_dict()


def test_wrong_architecture_lists_keys_and_loads_nothing() -> None:
    model = CifarResNet(8, 10)
    before = copy.deepcopy(model.state_dict())
    state = cifar_state(14)  # deeper: extra blocks
    state["linear.weight"] = torch.zeros(5, 64)
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights(model, state, source="test")
    error = info.value
    assert "layer1.1.conv1.weight" in error.unexpected
    assert error.mismatched["linear.weight"] == ((5, 64), (10, 64))
    assert "linear.weight file [5, 64] vs model [10, 64]" in str(error)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_missing_keys_are_listed_with_shapes() -> None:
    state = cifar_state()
    del state["layer3.0.conv2.weight"]
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights(CifarResNet(8, 10), state, source="test")
    assert info.value.missing == {"layer3.0.conv2.weight": (64, 64, 3, 3)}
    assert "layer3.0.conv2.weight [64, 64, 3, 3]" in str(info.value)


def test_non_strict_loads_shared_keys_but_never_wrong_shapes() -> None:
    state = cifar_state()
    del state["layer3.0.conv2.weight"]
    state["extra.weight"] = torch.zeros(3)
    model = CifarResNet(8, 10)
    load_weights(model, state, source="test", strict=False)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    state["conv1.weight"] = torch.zeros(16, 1, 3, 3)
    with pytest.raises(CheckpointMismatchError, match=r"conv1\.weight file"):
        load_weights(model, state, source="test", strict=False)


def test_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        read_state_dict(text)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_state_dict(tensor)
    yaml_text = tmp_path / "recipe.yaml"
    yaml_text.write_text("name: x\nmodel: {name: cnn}\n")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        read_state_dict(yaml_text)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.target = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": evil}, path)
    with pytest.raises(CheckpointError, match="would import or run code"):
        read_state_dict(path)
    assert not marker.exists()
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(evil))
    with pytest.raises(CheckpointError, match="would import or run code"):
        read_state_dict(raw)
    assert not marker.exists()


def test_cifar_resnet_backbone_gets_new_head(shared_data: Path) -> None:
    path = shared_data / "pretrained" / "cifar_resnet" / "resnet20-12fca82f.th"
    model = load_backbone("cifar_resnet", path, num_classes=40)
    assert model.linear.out_features == 40
    reference = read_state_dict(path)
    assert torch.equal(model.layer3[2].conv2.weight, reference["layer3.2.conv2.weight"])
    with pytest.raises(CheckpointMismatchError, match="60 unexpected"):
        load_backbone("cifar_resnet", path.with_name("resnet32-d509ac18.th"), arch="resnet20")


def test_torchvision_backbone_from_a_user_file(tmp_path: Path) -> None:
    import torchvision

    path = tmp_path / "weights.pt"
    torch.save(torchvision.models.resnet18(num_classes=7).state_dict(), path)
    model = load_backbone("torchvision", path, arch="resnet18", num_classes=3)
    assert model.fc.out_features == 3
    assert group_names(model) == ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]
    with pytest.raises(CheckpointMismatchError, match="80 missing key"):
        load_backbone("torchvision", path, arch="resnet34")  # deeper: blocks the file lacks
