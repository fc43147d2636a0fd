"""GANs: the models, the two-optimizer step, the Fréchet distance, pictures and the doctor's rules.

Fast tests use random tensors and hand-made logs; the end-to-end runs (a real run folder, the
CLI, a SIGKILL and resume, broken setups the doctor must name) are in test_gan_runs.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from layerwise.diagnose.rules import RuleContext, run_rules
from layerwise.errors import DataError, RecipeError
from layerwise.models import create_model
from layerwise.report.gan_plots import image_grid
from layerwise.tasks.gan import GANTrainer, fixed_grid, interpolation_strip
from layerwise.tasks.gan_eval import FeatureStats, frechet_distance

GAN_CODES = {"mode_collapse", "discriminator_overpowering", "gan_divergence"}


def test_dcgan_and_cgan_make_28x28_images_in_tanh_range_and_score_them():
    torch.manual_seed(0)
    dcgan = create_model("dcgan", latent_dim=8, width=4)
    images = dcgan.sample(5)
    assert images.shape == (5, 1, 28, 28) and images.abs().max() <= 1
    assert dcgan(torch.randn(3, 8)).shape == (3, 1)
    cgan = create_model("cgan", latent_dim=8, width=4)
    assert cgan.conditional and cgan.num_classes == 10
    assert cgan(torch.randn(3, 8), torch.tensor([0, 1, 9])).shape == (3, 11)
    with pytest.raises(RecipeError, match="class label"):
        cgan.generator(torch.randn(2, 8))
    # Spectral normalisation is a parametrisation of every discriminator weight, or none.
    names = [n for n, _ in cgan.discriminator.named_parameters()]
    assert all("parametrizations.weight.original" in n for n in names if "weight" in n)
    plain = create_model("dcgan", latent_dim=8, width=4, spectral_norm=False)
    assert not any("parametrizations" in n for n, _ in plain.discriminator.named_parameters())
    with pytest.raises(RecipeError, match="latent_dim"):
        create_model("dcgan", latent_dim=0)


def test_the_conditional_generator_reads_the_label_through_batch_norm_and_keeps_its_noise():
    from layerwise.models.gan import ConditionalBatchNorm

    torch.manual_seed(0)
    norm = ConditionalBatchNorm(6, num_classes=3, maps=True)
    h, labels = torch.randn(8, 6, 5, 5), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    plain = torch.nn.functional.batch_norm(h, None, None, training=True)
    assert torch.allclose(norm(h, labels), plain, atol=1e-6)  # starts as plain batch norm
    with torch.no_grad():
        norm.scale.weight[2] = 3.0
        norm.shift.weight[2] = -1.0
    out = norm(h, labels)
    is_two = labels == 2
    assert torch.allclose(out[is_two], 3 * plain[is_two] - 1, atol=1e-5)
    assert torch.allclose(out[~is_two], plain[~is_two], atol=1e-6)
    # The noise alone enters the first layer: one class from different noise gives different
    # digits, and the same noise with different classes too (the label is not ignored either).
    cgan = create_model("cgan", latent_dim=8, width=4).eval()
    assert not hasattr(cgan.generator, "embed")
    for module in (cgan.generator.norm1, cgan.generator.norm2):
        torch.nn.init.normal_(module.scale.weight, 1.0, 0.5)
        torch.nn.init.normal_(module.shift.weight, 0.0, 0.5)
    z = torch.randn(4, 8)
    same_class = cgan.sample(4, torch.full((4,), 3), z=z)
    assert (same_class[0] - same_class[1]).abs().mean() > 1e-3
    same_noise = cgan.sample(2, torch.tensor([3, 7]), z=z[:1].repeat(2, 1))
    assert (same_noise[0] - same_noise[1]).abs().mean() > 1e-3


def _trainer(gan, **kwargs):
    def adam(part, lr):
        return lambda m: torch.optim.Adam(getattr(m, part).parameters(), lr, betas=(0.5, 0.999))

    return GANTrainer(
        gan,
        optimizer={
            "discriminator": adam("discriminator", 4e-4),
            "generator": adam("generator", 1e-4),
        },
        doctor=False,
        progress=False,
        threads=None,
        **kwargs,
    )


def test_the_step_trains_each_network_with_its_own_optimizer_and_rate():
    torch.manual_seed(0)
    gan = create_model("cgan", latent_dim=8, width=4)
    x, y = torch.rand(96, 1, 28, 28) * 2 - 1, torch.arange(96) % 10
    before = {n: p.detach().clone() for n, p in gan.named_parameters()}
    trainer = _trainer(gan, label_smoothing=0.1)
    history = trainer.fit((x, y), epochs=1, batch_size=32)
    logs = history[0]
    assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(logs)
    assert logs["lr_discriminator"] == 4e-4 and logs["lr_generator"] == 1e-4
    assert set(trainer.state_dict()["optimizers"]) == {"discriminator", "generator"}
    moved = {n for n, p in gan.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("generator.") for n in moved)
    assert any(n.startswith("discriminator.") for n in moved)
    # Each optimizer holds exactly its own network's parameters.
    d_ids = {id(p) for g in trainer.optimizers["discriminator"].param_groups for p in g["params"]}
    assert d_ids == {id(p) for p in gan.discriminator.parameters()}


def _gaussian_stats(rng, n, dim, shift=0.0, scale=1.0):
    mix = rng.normal(size=(dim, dim))
    f = torch.tensor(rng.normal(size=(n, dim)) @ mix * scale + shift)
    return FeatureStats.of(f, torch.zeros(n, dtype=torch.long), 10)


def test_frechet_distance_matches_the_sqrtm_formula_and_is_zero_on_itself():
    rng = np.random.default_rng(0)
    a, b = _gaussian_stats(rng, 400, 6), _gaussian_stats(rng, 400, 6, shift=0.5, scale=1.3)
    covmean = linalg.sqrtm(a.cov @ b.cov).real
    expected = ((a.mean - b.mean) ** 2).sum() + np.trace(a.cov + b.cov - 2 * covmean)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # A pure shift of the mean by d adds |d|^2.
    shifted = FeatureStats(a.mean + 2.0, a.cov, a.class_share)
    assert frechet_distance(a, shifted) == pytest.approx(4.0 * 6, rel=1e-6)


def test_feature_stats_measure_spread_and_class_entropy():
    f = torch.randn(1000, 4)
    even = FeatureStats.of(f, torch.arange(1000) % 10, 10)
    one = FeatureStats.of(f * 0.01, torch.zeros(1000, dtype=torch.long), 10)
    assert even.class_entropy == pytest.approx(np.log(10))
    assert one.class_entropy == 0.0
    assert one.spread == pytest.approx(even.spread * 0.01, rel=1e-6)


def test_grids_and_strips_tile_the_samples():
    torch.manual_seed(0)
    cgan = create_model("cgan", latent_dim=8, width=4)
    grid = fixed_grid(cgan, n=20)
    assert grid.shape == (20, 1, 28, 28)
    assert torch.equal(grid, fixed_grid(cgan, n=20))  # fixed noise: epochs compare like with like
    canvas = image_grid(grid, columns=10)
    assert canvas.shape == (2 * (2 * 30 + 2), 2 * (10 * 30 + 2)) and canvas.dtype == np.uint8
    strip = interpolation_strip(cgan, steps=10, rows=2)
    assert strip.shape == (20, 1, 28, 28)
    # The first and last images of a line differ; neighbours differ less than the ends.
    line = strip[:10].flatten(1)
    assert (line[0] - line[9]).abs().mean() > (line[0] - line[1]).abs().mean()


# ------------------------------------------------------------------------------ doctor rules
def _history(d, g, fid=None, spread=None, entropy=None):
    rows = []
    for i in range(len(d)):
        row = {"epoch": i + 1, "d_loss": d[i], "g_loss": g[i]}
        for key, values in (
            ("fid", fid),
            ("gen_spread_ratio", spread),
            ("gen_class_entropy_ratio", entropy),
        ):
            if values is not None:
                row[key] = values[i]
        rows.append(row)
    return rows


RECIPE = {
    "model": {"name": "dcgan", "args": {"spectral_norm": False}},
    "train": {
        "optimizer": {"lr": 2e-4, "args": {"discriminator_lr": 4e-4}},
        "loss": {"label_smoothing": 0.0},
    },
}
HEALTHY = _history(
    d=[0.62, 0.58, 0.6, 0.61, 0.6],
    g=[1.9, 2.1, 2.0, 2.05, 2.1],
    fid=[60.0, 25.0, 14.0, 10.0, 8.0],
    spread=[0.7, 0.85, 0.9, 0.92, 0.95],
    entropy=[0.9, 0.97, 0.98, 0.99, 0.99],
)


def _codes(history, recipe=RECIPE, task="gan", final=True):
    ctx = RuleContext(history=history, recipe=recipe, task=task, num_classes=10, final=final)
    return {f.code for f in run_rules(ctx)}


def test_gan_rules_are_silent_on_a_healthy_gan_and_on_a_classifier():
    assert not _codes(HEALTHY) & GAN_CODES
    classifier = [{"epoch": e, "loss": 1 / e, "accuracy": 0.9} for e in range(1, 6)]
    assert not _codes(classifier, recipe=None, task="classification") & GAN_CODES


def test_mode_collapse_from_feature_spread_or_class_histogram():
    spread = _history(
        [0.6] * 4, [2.0] * 4, fid=[80, 70, 75, 72], spread=[0.5, 0.2, 0.1, 0.08], entropy=[0.9] * 4
    )
    ctx = RuleContext(history=spread, recipe=RECIPE, task="gan", num_classes=10)
    finding = next(f for f in run_rules(ctx) if f.code == "mode_collapse")
    assert finding.evidence["by"] == "spread" and finding.epoch == 4
    assert finding.patch["model.args.spectral_norm"] is True
    classes = _history([0.6] * 3, [2.0] * 3, spread=[0.8] * 3, entropy=[0.9, 0.3, 0.2])
    assert "mode_collapse" in _codes(classes)
    # One low epoch that recovers is not a collapse; nor is the last epoch alone in a live check.
    recovered = _history([0.6] * 3, [2.0] * 3, spread=[0.8, 0.1, 0.8], entropy=[0.9] * 3)
    assert "mode_collapse" not in _codes(recovered)
    assert "mode_collapse" not in _codes(spread[:2], final=False)


def test_discriminator_overpowering_needs_a_winning_d_and_a_growing_g_loss():
    broken = _history(d=[0.4, 0.1, 0.03, 0.01], g=[2.0, 3.5, 5.0, 6.5])
    ctx = RuleContext(history=broken, recipe=RECIPE, task="gan", num_classes=10)
    finding = next(f for f in run_rules(ctx) if f.code == "discriminator_overpowering")
    assert finding.evidence["g_growth"] == pytest.approx(3.25)
    assert finding.patch["train.optimizer.args.discriminator_lr"] == pytest.approx(4e-4)
    assert finding.patch["train.loss.label_smoothing"] == 0.1
    # With smoothing 0.1 the discriminator's floor is 0.325 nats: 0.34 is "near 0" there.
    smoothed = {**RECIPE, "train": {**RECIPE["train"], "loss": {"label_smoothing": 0.1}}}
    at_floor = _history(d=[0.5, 0.4, 0.34, 0.33], g=[2.0, 3.5, 5.0, 6.5])
    assert "discriminator_overpowering" in _codes(at_floor, recipe=smoothed)
    # A strong discriminator whose generator keeps up (g_loss flat) is not overpowering.
    keeping_up = _history(d=[0.4, 0.1, 0.03, 0.01], g=[2.0, 2.1, 2.0, 2.1])
    assert "discriminator_overpowering" not in _codes(keeping_up)


def test_gan_divergence_needs_swings_without_progress():
    swinging = _history(
        d=[0.7, 0.2, 1.4, 0.1, 1.6, 0.3],
        g=[1.0, 4.0, 0.8, 5.0, 0.7, 4.5],
        fid=[200, 210, 190, 230, 205, 220],
    )
    ctx = RuleContext(history=swinging, recipe=RECIPE, task="gan", num_classes=10)
    finding = next(f for f in run_rules(ctx) if f.code == "gan_divergence")
    assert finding.evidence["turns"] >= 2 and finding.evidence["swing"] > 0.4
    assert finding.patch["train.optimizer.lr"] == pytest.approx(6e-5)
    # The same swings while the Fréchet distance falls: a lively game, not a divergence.
    improving = [dict(row, fid=200 / (i + 1)) for i, row in enumerate(swinging)]
    assert "gan_divergence" not in _codes(improving)
    assert "gan_divergence" not in _codes(HEALTHY)


def test_generate_refuses_a_label_for_an_unconditional_gan(tmp_path):
    from layerwise.recipe import parse_recipe
    from layerwise.runs import Run
    from layerwise.tasks.gan import generate_grid

    recipe = parse_recipe("name: g\nmodel: {name: dcgan, args: {latent_dim: 8, width: 4}}\n")
    run = Run.create(tmp_path, "g", recipe.to_yaml())
    gan = create_model("dcgan", latent_dim=8, width=4)
    run.save_checkpoint(gan.state_dict(), {"format": 2}, best=False)
    with pytest.raises(DataError, match="unconditional"):
        generate_grid(run, n=4, label=3)
    with pytest.raises(DataError, match="--n"):
        generate_grid(run, n=0)
    path = generate_grid(run, n=6, output=tmp_path / "g.png")
    from PIL import Image

    assert Image.open(path).size == (2 * (3 * 30 + 2), 2 * (2 * 30 + 2))


def test_gan_rules_are_silent_on_the_measured_mnist_cgan_runs():
    """The doctor's GAN rules on the per-epoch logs recorded for the shipped mnist_cgan recipe
    on full MNIST (every seed, at 5 and at 10 epochs, resumed and fresh; the fresh runs with the
    within-class spread): a healthy game, no finding.
    The same rules fire on the broken recipes (tests/test_doctor_cases.py)."""
    import json
    from pathlib import Path

    from layerwise.recipe import load_recipe

    root = Path(__file__).resolve().parents[1]
    results = json.loads((root / "benchmarks" / "results" / "gan.json").read_text())
    recipe = load_recipe(root / "recipes" / "mnist_cgan.yaml").model_dump(mode="json")
    prefixes = ("mnist_cgan_seed", "continued_mnist", "fresh_mnist_cgan")
    runs = {k: v for k, v in results.items() if k.startswith(prefixes)}
    assert len(runs) >= 4
    assert any(run.get("within_spread_ratio_min_per_epoch") for run in runs.values())
    for name, measured in runs.items():
        keys = {
            "d_loss": "d_loss_per_epoch",
            "g_loss": "g_loss_per_epoch",
            "fid": "fid_per_epoch",
            "gen_spread_ratio": "spread_ratio_per_epoch",
            "gen_class_entropy_ratio": "class_entropy_ratio_per_epoch",
        }
        if measured.get("within_spread_ratio_min_per_epoch"):
            keys["gen_within_spread_ratio_min"] = "within_spread_ratio_min_per_epoch"
        epochs = len(measured["fid_per_epoch"])
        assert epochs == measured["epochs"] >= (1 if name.startswith("fresh") else 5)
        history = [
            {"epoch": e + 1, **{log: measured[field][e] for log, field in keys.items()}}
            for e in range(epochs)
        ]
        assert not _codes(history, recipe=recipe) & GAN_CODES
        assert not set(measured["findings"]) & GAN_CODES  # the run's own diagnosis agreed
    # The DCGAN (unconditional: no within-class spread, the global measures judge it alone).
    dcgan = results["mnist_dcgan"]
    fields = {log: field for log, field in keys.items() if not log.startswith("gen_within")}
    history = [
        {"epoch": e + 1, **{log: dcgan[field][e] for log, field in fields.items()}}
        for e in range(dcgan["epochs"])
    ]
    dcgan_recipe = load_recipe(root / "recipes" / "mnist_dcgan.yaml").model_dump(mode="json")
    assert len(history) == 2 and not _codes(history, recipe=dcgan_recipe) & GAN_CODES


# ------------------------------------------------------------------------------ within a class
def _tiny_judge():
    from layerwise.tasks.gan_eval import Judge

    torch.manual_seed(0)
    args = {"variant": "lenet", "channels": [4, 8], "hidden": [16], "dropout": 0.0}
    return Judge(create_model("cnn", num_classes=10, input_shape=(1, 28, 28), **args))


def test_within_class_spread_sees_a_generator_that_ignores_its_noise():
    """One image per requested class: the global spread and the class histogram cannot tell it
    from a healthy generator, the spread within each class can (0 against about 1)."""
    from layerwise.diagnose.rules.gan import COLLAPSE_SPREAD, COLLAPSE_WITHIN
    from layerwise.tasks.gan_eval import MIN_CLASS_SAMPLES, score_samples

    judge = _tiny_judge()
    n = 10 * MIN_CLASS_SAMPLES
    labels = torch.arange(n) % 10
    real, _ = judge.stats(torch.rand(n, 1, 28, 28) * 2 - 1, labels)
    assert real.class_spread.shape == (10,) and (real.class_spread > 0).all()
    one_per_class = (torch.rand(10, 1, 28, 28) * 2 - 1)[labels]
    collapsed = score_samples(judge, one_per_class, real, labels)
    assert collapsed.spread_ratio > COLLAPSE_SPREAD  # the global measure misses it
    assert max(collapsed.within_spread_ratio) < 1e-6
    logs = collapsed.logs()
    assert logs["gen_within_spread_ratio_min"] < COLLAPSE_WITHIN
    assert logs["gen_within_spread_ratio"] < COLLAPSE_WITHIN
    varied = score_samples(judge, torch.rand(n, 1, 28, 28) * 2 - 1, real, labels).logs()
    assert 0.8 < varied["gen_within_spread_ratio_min"] <= varied["gen_within_spread_ratio"] < 1.2
    # A class with too few samples is not judged; an unconditional GAN gets no within-class keys.
    few = torch.cat([torch.arange(n)[labels != 9], torch.arange(n)[labels == 9][:5]])
    partial = score_samples(judge, one_per_class[few], real, labels[few])
    assert (
        np.isnan(partial.within_spread_ratio[9]) and partial.logs()["gen_within_spread_class"] != 9
    )
    unconditional = score_samples(judge, one_per_class, real).logs()
    assert not any(key.startswith("gen_within") for key in unconditional)


def _with_within(history, values, klass=3):
    return [
        dict(row, gen_within_spread_ratio_min=v, gen_within_spread_class=klass)
        for row, v in zip(history, values, strict=True)
    ]


def test_mode_collapse_within_a_class_of_a_conditional_gan():
    zeroed = {**RECIPE, "model": {"name": "cgan", "args": {"latent_scale": 0.0}}}
    flat = _history([0.6] * 3, [2.0] * 3, fid=[90, 80, 85], spread=[0.7] * 3, entropy=[0.99] * 3)
    collapsed = _with_within(flat, [0.2, 0.05, 0.0])
    ctx = RuleContext(history=collapsed, recipe=zeroed, task="gan", num_classes=10, final=True)
    finding = next(f for f in run_rules(ctx) if f.code == "mode_collapse")
    assert finding.evidence["by"] == "within_class" and finding.epoch == 3
    assert finding.evidence["within_spread_class"] == 3 and "class 3" in finding.message
    assert finding.patch == {"model.args.latent_scale": 1.0}
    # The same global figures without the within-class key (a DCGAN, or older logs): silent;
    # healthy classes, one low epoch that recovers, or one epoch in a live check: silent too.
    assert "mode_collapse" not in _codes(flat, recipe=zeroed)
    assert "mode_collapse" not in _codes(_with_within(flat, [0.8, 0.9, 0.95]), recipe=zeroed)
    assert "mode_collapse" not in _codes(_with_within(flat, [0.9, 0.1, 0.9]), recipe=zeroed)
    assert "mode_collapse" not in _codes(collapsed[:1], recipe=zeroed, final=False)


def test_latent_scale_zero_feeds_the_generator_no_noise():
    torch.manual_seed(0)
    cgan = create_model("cgan", latent_dim=8, width=4, latent_scale=0.0)
    project = cgan.generator.project.weight.detach().clone()
    x, y = torch.rand(64, 1, 28, 28) * 2 - 1, torch.arange(64) % 10
    _trainer(cgan).fit((x, y), epochs=1, batch_size=32)
    # Trained on zero noise, its first layer got no gradient; its samples of a class are one.
    assert torch.equal(cgan.generator.project.weight, project)
    threes = cgan.sample(4, torch.full((4,), 3))
    assert torch.equal(threes[0], threes[3])
    for bad in (-1.0, float("nan"), "big", True):
        with pytest.raises(RecipeError, match="latent_scale"):
            create_model("cgan", latent_dim=8, width=4, latent_scale=bad)
