"""Every registered model builds and backpropagates on small inputs of its kind; names and args
are checked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layerwise.errors import RecipeError
from layerwise.models import MODELS, CifarResNet, create_model, list_models
from layerwise.models.resnet import PadShortcut

IMAGE_MODELS = [n for n in list_models() if n in ("mlp", "cnn") or n.startswith("resnet")]
SHAPES = [(1, 8, 8), (1, 28, 28)]
CASES = [(name, shape) for name in IMAGE_MODELS for shape in SHAPES] + [
    (name, (3, 32, 32)) for name in IMAGE_MODELS if name.startswith("resnet")
]


def _tokens(vocab: int, lengths: list[int]) -> torch.Tensor:
    """Right-padded token ids (0 is padding), one row per length."""
    tokens = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        tokens[row, :length] = torch.randint(1, vocab, (length,))
    return tokens


TEXT = {"num_classes": 7, "vocab_size": 50}
SMALL_LM = {"vocab_size": 30}
# name -> (factory arguments, inputs (positional), expected output shape)
NON_IMAGE = {
    **{
        name: (TEXT, lambda: (_tokens(50, [12, 5]), torch.tensor([12, 5])), (2, 7))
        for name in ("fasttext", "rnn_classifier", "bilstm", "bigru", "transformer_classifier")
    },
    **{
        name: ({"num_classes": 3}, lambda: (torch.randn(2, 16, 2),), (2, 3))
        for name in ("gru_forecaster", "lstm_forecaster", "cnn_forecaster", "mlp_forecaster")
    },
    "lstm_lm": (
        {**SMALL_LM, "embed": 16, "hidden": 16},
        lambda: (_tokens(30, [9, 9]),),
        (2, 9, 30),
    ),
    "gpt_lm": (
        {**SMALL_LM, "dim": 16, "heads": 2, "layers": 1, "context": 16},
        lambda: (_tokens(30, [9, 9]),),
        (2, 9, 30),
    ),
    "seq2seq_gru": (
        {"src_vocab": 30, "tgt_vocab": 31, "embed": 16, "hidden": 16},
        lambda: (_tokens(30, [7, 4]), torch.tensor([7, 4]), _tokens(31, [6, 6])),
        (2, 6, 31),
    ),
    "seq2seq_transformer": (
        {"src_vocab": 30, "tgt_vocab": 31, "dim": 16, "heads": 2, "layers": 1, "ff": 32},
        lambda: (_tokens(30, [7, 4]), torch.tensor([7, 4]), _tokens(31, [6, 6])),
        (2, 6, 31),
    ),
    **{
        name: ({"num_classes": 10}, lambda: (torch.randn(2, 1, 40, 32),), (2, 10))
        for name in ("audio_cnn", "audio_crnn")
    },
    # A metric-learning embedding: one unit-length row per face (or spectrogram).
    "embedding_cnn": (
        {"channels": [4, 8], "dim": 6, "hflip": True},
        lambda: (torch.randn(2, 1, 28, 23),),
        (2, 6),
    ),
    # A recommender predicts one rating per (user, item) pair.
    **{
        name: (
            {"num_users": 5, "num_items": 7, "global_mean": 3.5},
            lambda: (torch.tensor([0, 4]), torch.tensor([6, 1])),
            (2,),
        )
        for name in ("biased_mf", "neumf")
    },
    # A table row: the category codes first (one column per categorical), then the numbers.
    "tabular_mlp": (
        {"num_classes": 3, "cardinalities": (4, 5), "num_numeric": 2},
        lambda: (torch.tensor([[1.0, 4.0, 0.3, -1.2], [3.0, 0.0, 2.0, 0.1]]),),
        (2, 3),
    ),
    # Game observations: a Q-value per action; the actor-critic's action logits and values.
    "dqn": ({"obs_dim": 4, "num_actions": 2}, lambda: (torch.randn(2, 4),), (2, 2)),
    "ppo": ({"obs_dim": 4, "num_actions": 2}, lambda: (torch.randn(2, 4),), ((2, 2), (2,))),
    # A GAN pair scores its own samples: the discriminator's logits on generated images.
    "dcgan": ({"latent_dim": 8, "width": 4}, lambda: (torch.randn(2, 8),), (2, 1)),
    "cgan": (
        {"latent_dim": 8, "width": 4},
        lambda: (torch.randn(2, 8), torch.tensor([3, 7])),
        (2, 11),  # the real/fake logit and 10 auxiliary class logits
    ),
}


def test_expected_families_are_registered():
    expected = {"mlp", "cnn", "resnet", "resnet20", "resnet32", "resnet44", "resnet56"}
    assert expected <= set(list_models())


def test_every_registered_model_has_a_forward_test():
    untested = set(list_models()) - set(IMAGE_MODELS) - set(NON_IMAGE)
    assert not untested, f"add sample inputs for {sorted(untested)} to NON_IMAGE"


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_model_builds_forwards_and_backpropagates(name, shape):
    model = create_model(name, num_classes=7)
    x = torch.randn(2, *shape)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(n for n in NON_IMAGE if n in list_models()))
def test_non_image_model_builds_forwards_and_backpropagates(name):
    torch.manual_seed(0)
    arguments, inputs, expected = NON_IMAGE[name]
    model = create_model(name, **arguments)
    out = model(*inputs())
    outputs = out if isinstance(out, tuple) else (out,)
    shapes = expected if isinstance(expected[0], tuple) else (expected,)
    assert [o.shape for o in outputs] == list(shapes)
    assert all(torch.isfinite(o).all() for o in outputs)
    sum(o.square().mean() for o in outputs).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused


@pytest.mark.parametrize("variant", ["lenet", "vgg", "strided"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_cnn_variants_fit_small_and_large_images(variant, shape):
    model = create_model("cnn", num_classes=10, variant=variant, input_shape=shape)
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_vgg_layout_and_parameter_count():
    model = create_model("cnn", num_classes=10, variant="vgg", input_shape=(1, 28, 28))
    assert model.stem.conv.stride == (2, 2)
    assert isinstance(model.block1.bn1, nn.BatchNorm2d) and model.block1.conv1.bias is None
    # stem 1*32*9 + BN 64; block1 2*(32*32*9 + 64); block2 32*64*9 + 64*64*9 + 2*128;
    # block3 64*128*9 + 128*128*9 + 2*256; head 128*10 + 10
    assert sum(p.numel() for p in model.parameters()) == 297_450


def test_strided_layout_halves_the_image_at_every_unit():
    model = create_model("cnn", num_classes=10, variant="strided", input_shape=(1, 28, 28))
    assert [model.block1.conv.stride, model.block3.conv.stride] == [(2, 2), (2, 2)]
    assert model.block1.conv.weight.shape == (16, 1, 5, 5)
    assert model.block2.conv.weight.shape == (32, 16, 3, 3) and model.block2.conv.bias is None
    # 28 -> 14 -> 7 -> 4 pixels, 64 channels flattened into the head
    assert model.head.weight.shape == (10, 64 * 4 * 4)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.Dropout)) for m in model.modules())


def test_lenet_layout():
    model = create_model("cnn", num_classes=10, input_shape=(1, 28, 28))
    assert model.block1.conv.weight.shape == (6, 1, 5, 5)
    assert model.block2.conv.weight.shape == (16, 6, 5, 5)
    assert model.fc1.dense.weight.shape == (120, 16 * 7 * 7)
    assert model.head.weight.shape == (10, 84)


def test_mlp_options():
    model = create_model(
        "mlp",
        num_classes=3,
        hidden=(16, 8),
        activation="tanh",
        dropout=0.25,
        batchnorm=True,
        input_shape=(4, 2),
    )
    names = [name for name, _ in model.named_children()]
    assert names == [
        "flatten",
        "fc1",
        "bn1",
        "act1",
        "drop1",
        "fc2",
        "bn2",
        "act2",
        "drop2",
        "head",
    ]
    assert model.fc1.weight.shape == (16, 8) and model.fc1.bias is None
    assert isinstance(model.act2, nn.Tanh) and model.drop1.p == 0.25
    assert model.head.weight.shape == (3, 8)


def test_he_init_is_applied_by_default():
    model = create_model("mlp", num_classes=10, hidden=(512,), input_shape=(2048,))
    assert model.fc1.weight.std().item() == pytest.approx((2 / 2048) ** 0.5, rel=0.05)
    assert model.fc1.bias.eq(0).all()


def test_unknown_model_and_bad_arguments():
    with pytest.raises(RecipeError, match="unknown model 'mlpp'") as info:
        create_model("mlpp", num_classes=10)
    assert "did you mean 'mlp'" in info.value.hint
    with pytest.raises(RecipeError, match="unknown cnn variant 'vggg'") as info:
        create_model("cnn", num_classes=10, variant="vggg")
    assert "did you mean 'vgg'" in info.value.hint
    with pytest.raises(RecipeError, match="num_classes"):
        create_model("mlp", num_classes=0)
    with pytest.raises(RecipeError, match="dropout"):
        create_model("cnn", num_classes=2, dropout=1.5)
    with pytest.raises(RecipeError, match="bad arguments"):
        create_model("mlp")
    with pytest.raises(RecipeError, match="6n\\+2"):
        create_model("resnet", depth=21)


def test_resnet_layout_matches_the_paper():
    model = CifarResNet(depth=20, num_classes=10)
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    assert sum(p.numel() for p in model.parameters()) == 269_722
    assert MODELS.get("resnet56")().layer3[8].conv2.weight.shape == (64, 64, 3, 3)
    # input channels are inferred: a 1-channel stem has 16*2*9 fewer weights
    gray = create_model("resnet20", num_classes=10)
    gray(torch.zeros(1, 1, 8, 8))
    assert sum(p.numel() for p in gray.parameters()) == 269_722 - 16 * 2 * 9


def test_option_a_shortcut_subsamples_and_zero_pads_both_sides():
    x = torch.randn(2, 16, 8, 8)
    out = PadShortcut(stride=2, extra=16)(x)
    assert out.shape == (2, 32, 4, 4)
    assert out[:, :8].eq(0).all() and out[:, 24:].eq(0).all()
    assert out[:, 8:24].equal(x[:, :, ::2, ::2])
    assert not list(PadShortcut(2, 16).parameters())
