"""augmentations(): spec parsing into torchvision v2 transforms, and errors."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from layerwise.data import augmentations
from layerwise.errors import RecipeError


def test_dict_spec_builds_transforms_in_order_with_arguments() -> None:
    aug = augmentations(
        {
            "random_crop": {"size": 28, "padding": 2},
            "random_rotation": 10,
            "horizontal_flip": 0.5,
            "random_affine": {"degrees": 0, "translate": [0.1, 0.1]},
            "color_jitter": {"brightness": 0.2},
            "random_erasing": 0.25,
        }
    )
    assert isinstance(aug, v2.Compose)
    kinds = [type(t) for t in aug.transforms]
    assert kinds == [
        v2.RandomCrop,
        v2.RandomRotation,
        v2.RandomHorizontalFlip,
        v2.RandomAffine,
        v2.ColorJitter,
        v2.RandomErasing,
    ]
    crop, rotation, flip, affine, _, erasing = aug.transforms
    assert tuple(crop.size) == (28, 28) and list(crop.padding) == [2, 2, 2, 2]
    assert list(rotation.degrees) == [-10.0, 10.0]
    assert flip.p == 0.5 and erasing.p == 0.25
    assert list(affine.translate) == [0.1, 0.1]
    out = aug(torch.rand(1, 28, 28))
    assert out.shape == (1, 28, 28) and out.dtype == torch.float32


def test_list_spec_false_entries_and_passthrough() -> None:
    aug = augmentations(["horizontal_flip", {"random_rotation": 5}, {"vertical_flip": False}])
    assert [type(t) for t in aug.transforms] == [v2.RandomHorizontalFlip, v2.RandomRotation]
    assert aug.transforms[0].p == 0.5  # torchvision's default when no argument is given
    assert augmentations(None) is None
    assert augmentations({}) is None
    assert augmentations({"horizontal_flip": False}) is None

    def custom(sample: torch.Tensor) -> torch.Tensor:
        return sample

    assert augmentations(custom) is custom


def test_certain_flip_mirrors_the_image() -> None:
    image = torch.rand(3, 6, 5)
    assert torch.equal(augmentations({"horizontal_flip": 1.0})(image), image.flip(-1))


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(RecipeError) as info:
        augmentations({"horizontal_flp": 0.5})
    assert info.value.message == "unknown augmentation 'horizontal_flp'"
    assert "did you mean 'horizontal_flip'" in info.value.hint


def test_bad_arguments_name_the_augmentation_and_its_parameters() -> None:
    with pytest.raises(RecipeError) as info:
        augmentations({"random_rotation": {"degree": 3}})
    assert "augmentation 'random_rotation'" in info.value.message
    assert "degree" in info.value.message
    assert "degrees" in info.value.hint
    with pytest.raises(RecipeError, match="random_crop"):
        augmentations(["random_crop"])  # size is required
    with pytest.raises(RecipeError, match="needs named arguments"):
        augmentations({"normalize": 0.5})
    with pytest.raises(RecipeError, match="mapping or a list"):
        augmentations(3)
