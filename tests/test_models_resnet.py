"""The pretrained CIFAR ResNet checkpoints in shared/data load strictly into our ResNets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from layerwise.errors import CheckpointError
from layerwise.models import load_cifar_resnet

PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018}


def checkpoint(shared_data: Path, depth: int) -> Path:
    (path,) = (shared_data / "pretrained" / "cifar_resnet").glob(f"resnet{depth}-*.th")
    return path


@pytest.mark.shared
@pytest.mark.parametrize("depth", sorted(PARAMS))
def test_checkpoint_loads_strictly_with_the_published_size(shared_data, depth):
    model = load_cifar_resnet(checkpoint(shared_data, depth))
    assert model.depth == depth
    assert sum(p.numel() for p in model.parameters()) == PARAMS[depth]
    raw = torch.load(checkpoint(shared_data, depth), map_location="cpu", weights_only=True)
    torch.testing.assert_close(
        model.layer3[0].conv1.weight, raw["state_dict"]["module.layer3.0.conv1.weight"]
    )


@pytest.mark.shared
def test_loaded_model_is_deterministic_in_eval_mode(shared_data):
    model = load_cifar_resnet(checkpoint(shared_data, 20)).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        first, again, alone = model(x), model(x), model(x[:1])
    assert first.shape == (3, 10)
    assert first.equal(again)
    torch.testing.assert_close(alone, first[:1], atol=1e-5, rtol=1e-5)
    # the running statistics came from the file, not from the fresh BN defaults
    assert not model.bn1.running_var.eq(1).all()


@pytest.mark.shared
def test_depth_comes_from_the_keys_when_the_name_says_nothing(shared_data, tmp_path):
    renamed = tmp_path / "weights.th"
    shutil.copy(checkpoint(shared_data, 32), renamed)
    assert load_cifar_resnet(renamed).depth == 32


@pytest.mark.shared
def test_truncated_and_garbage_files_raise_checkpoint_error(shared_data, tmp_path):
    data = checkpoint(shared_data, 20).read_bytes()
    truncated = tmp_path / "resnet20-cut.th"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_cifar_resnet(truncated)
    garbage = tmp_path / "resnet20-garbage.th"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_cifar_resnet(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        load_cifar_resnet(tmp_path / "missing.th")


@pytest.mark.shared
def test_mismatched_keys_raise_checkpoint_error(shared_data, tmp_path):
    with pytest.raises(CheckpointError, match="does not fit a ResNet-32"):
        load_cifar_resnet(checkpoint(shared_data, 20), depth=32)
    state = torch.load(checkpoint(shared_data, 20), map_location="cpu", weights_only=True)
    state["state_dict"]["module.extra.weight"] = torch.zeros(1)
    extra = tmp_path / "resnet20-extra.th"
    torch.save(state, extra)
    with pytest.raises(CheckpointError, match=r"1 unexpected keys \(e.g. extra\.weight\)"):
        load_cifar_resnet(extra)
