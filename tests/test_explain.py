"""`layerwise explain`: attributions that can be checked, and whole explanations of real runs.

The sanity checks: saliency (and integrated gradients) of a model that ignores half of its input
is exactly zero there; integrated gradients add up to f(x) − f(baseline) within a reported gap,
and the gap grows when the path integral is coarse; Grad-CAM of a trained digits CNN sits on the
strokes more than on the background. Runs are built in tmp_path from models trained here by a
plain loop in about a second (a whole `train` would cost tens of seconds on this machine).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from layerwise.errors import DataError
from layerwise.experiment import build_model, prepare_data
from layerwise.explain import (
    ExplainError,
    explain_run,
    feature_maps,
    first_layer_filters,
    gradcam,
    integrated_gradients,
    last_conv_layer,
    saliency,
    stroke_ratio,
    token_attributions,
)
from layerwise.models import create_model
from layerwise.predict import predict_run
from layerwise.recipe import parse_recipe
from layerwise.report import write_report
from layerwise.runs import Run

pytest.importorskip("captum", reason="the interpret extra (make install installs it)")

# One conv block at full resolution: the last conv map of a two-block LeNet on 8x8 digits is
# 4x4, too coarse to tell a stroke from the background one pixel away (its Grad-CAM sits on the
# strokes for only ~45% of test digits, median stroke/background ratio 0.95).
CNN = {"variant": "lenet", "channels": [16], "hidden": [64]}


def _fit(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 3e-3
) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 32):
            rows = order[start : start + 32]
            loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory):
    """A finished-looking digits CNN run: recipe, preprocessing, trained weights, a report."""
    torch.manual_seed(0)
    recipe = parse_recipe(
        yaml.safe_dump(
            {
                "name": "digits_cnn1",
                "data": {"name": "digits"},
                "model": {"name": "cnn", "args": CNN},
            }
        )
    )
    data, preprocess = prepare_data(recipe)
    model = _fit(build_model(recipe, data), *data.train, epochs=3)
    run = Run.create(tmp_path_factory.mktemp("runs"), recipe.name, recipe.to_yaml())
    preprocess.save(run.path)
    run.save_checkpoint(model.state_dict(), {"format": 2})
    run.set_status("finished")
    write_report(run)
    return run, model, data


# ------------------------------------------------------------------------------ sanity checks
class LeftHalf(nn.Module):
    """Scores 8x8 images from their left four columns only."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x[..., :4].flatten(1))


def test_saliency_and_integrated_gradients_are_zero_where_the_model_does_not_look():
    model, x = LeftHalf().eval(), torch.rand(1, 1, 8, 8) + 0.1
    for values in (
        saliency(model, x, 2),
        integrated_gradients(model, x, 2, torch.zeros_like(x)).attributions,
    ):
        assert torch.count_nonzero(values[..., 4:]) == 0
        assert torch.count_nonzero(values[..., :4]) == 32


def test_integrated_gradients_report_their_completeness_gap(digits_run):
    _, model, data = digits_run
    x, blank = data.test[0][:1], torch.zeros(1, 1, 8, 8)
    fine = integrated_gradients(model, x, 3, blank, steps=64)
    coarse = integrated_gradients(model, x, 3, blank, steps=2)
    with torch.no_grad():
        difference = float(model(x)[0, 3] - model(blank)[0, 3])
    assert fine.difference == pytest.approx(difference, abs=1e-5)
    assert fine.total == pytest.approx(float(fine.attributions.sum()))
    assert fine.relative_gap < 0.02
    assert coarse.gap > 5 * fine.gap  # a coarse path integral misses, and the gap shows it
    linear = LeftHalf().eval()
    exact = integrated_gradients(linear, x, 0, blank, steps=2)  # linear: exact at any steps
    assert exact.gap < 1e-5


def test_gradcam_of_a_trained_digits_cnn_sits_on_the_strokes(digits_run):
    _, model, data = digits_run
    x, y = data.test
    name, layer = last_conv_layer(model, x[:1])
    assert name == "block1.act"  # the rectified maps after the last conv, not the raw conv
    ratios = []
    for i in range(60):
        cam = gradcam(model, x[i : i + 1], int(y[i]), layer)
        assert cam.shape == (1, 1, 8, 8) and float(cam.min()) >= 0
        ratios.append(stroke_ratio(cam[0], x[i], background=0.0))
    assert np.median(ratios) > 1.3
    assert np.mean(np.array(ratios) > 1) > 0.65


def test_the_maps_change_when_the_weights_are_randomised(digits_run):
    """Adebayo et al. (2018): a map that stays the same for random weights shows the input,
    not the model. An untrained net's Grad-CAM also sits on the strokes, so this is the check
    that the maps depend on what was learnt."""
    from scipy.stats import spearmanr

    _, model, data = digits_run
    torch.manual_seed(1)
    random = create_model("cnn", num_classes=10, **CNN, input_shape=(1, 8, 8)).eval()
    x, y = data.test
    blank = torch.zeros(1, 1, 8, 8)
    for method in (
        lambda m, xi, t: saliency(m, xi, t),
        lambda m, xi, t: integrated_gradients(m, xi, t, blank).attributions,
    ):
        rho = [
            spearmanr(
                method(model, x[i : i + 1], int(y[i])).flatten(),
                method(random, x[i : i + 1], int(y[i])).flatten(),
            ).statistic
            for i in range(20)
        ]
        assert np.nanmedian(rho) < 0.5


def test_stroke_ratio_reads_a_map_on_the_background_as_below_one():
    pixels = torch.zeros(1, 8, 8)
    pixels[0, 2:6, 3:5] = 1.0
    assert stroke_ratio(pixels.clone(), pixels, 0.0) == 1e6  # nothing on the background: capped
    assert stroke_ratio(1.0 - pixels, pixels, 0.0) == 0.0
    assert stroke_ratio(torch.ones(1, 8, 8), torch.zeros(1, 8, 8), 0.0) is None


def test_layers_without_convolutions():
    mlp = create_model("mlp", num_classes=10, hidden=[16], input_shape=(1, 8, 8)).eval()
    x = torch.rand(1, 1, 8, 8)
    assert last_conv_layer(mlp, x) is None
    assert feature_maps(mlp, x) == []
    name, filters = first_layer_filters(mlp, (1, 8, 8))
    assert name == "fc1" and filters.shape == (16, 1, 8, 8)


# ------------------------------------------------------------------------------ text
def test_token_attributions_find_the_word_that_decides_and_add_up():
    torch.manual_seed(0)
    fast = create_model("fasttext", num_classes=2, vocab_size=10, dim=4, ngrams=2, buckets=16)
    with torch.no_grad():
        fast.embedding.weight.zero_()
        fast.head.weight.copy_(torch.tensor([[0.0, 0, 0, 0], [1.0, 0, 0, 0]]))
        fast.head.bias.zero_()
        fast.embedding.weight[7, 0] = 5.0  # word 7 alone pushes class 1
    tokens = torch.tensor([[5, 7, 6, 8]])
    found = token_attributions(fast.eval(), tokens, torch.tensor([4]), list("abcd"), target=1)
    assert int(np.argmax(found.scores)) == 1
    assert sum(found.scores) == pytest.approx(found.total, abs=1e-5)
    assert found.relative_gap < 1e-5
    assert found.scores[1] == pytest.approx(5.0 / 7)  # mean over 4 words and 3 bigrams

    lstm = create_model("bilstm", num_classes=2, vocab_size=10, embed_dim=4, hidden=4)
    found = token_attributions(lstm.eval(), tokens, torch.tensor([4]), list("abcd"), target=0)
    assert len(found.scores) == 4 and found.layer == "embedding"
    assert found.relative_gap < 0.01


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory):
    """A fastText run on reviews whose sentiment is carried by a few words."""
    root = tmp_path_factory.mktemp("text")
    good, bad, filler = ["superb", "wonderful"], ["awful", "dull"], ["the", "film", "was", "a"]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(120):
        words = [*rng.choice(filler, 3), rng.choice(good if i % 2 else bad)]
        rng.shuffle(words)
        rows.append({"review": " ".join(words), "sentiment": ["neg", "pos"][i % 2]})
    (root / "reviews.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    args = {"path": str(root / "reviews.jsonl"), "text": "review", "target": "sentiment"}
    recipe = parse_recipe(
        yaml.safe_dump(
            {
                "name": "reviews",
                "data": {"name": "text", "args": args},
                "model": {"name": "fasttext", "args": {"dim": 8, "buckets": 64}},
            }
        )
    )
    data = prepare_data(recipe)[0]
    model = _fit(build_model(recipe, data), *data.train, epochs=10, lr=0.05)
    run = Run.create(root / "runs", recipe.name, recipe.to_yaml())
    data.pipeline.save(run.path)
    run.save_checkpoint(model.state_dict(), {"format": 2})
    return run


def test_explain_a_text_run_writes_coloured_tokens(text_run):
    result = explain_run(text_run.path, "the film was superb")
    assert result.predicted == "pos" and result.probability > 0.9
    scores = {t["token"]: t["score"] for t in result.checks["tokens"]}
    assert max(scores, key=scores.get) == "superb"
    assert result.checks["integrated_gradients"]["relative_gap"] < 1e-4
    assert {p.name for p in result.files} == {"tokens.png", "tokens.html"}
    snippet = (result.folder / "tokens.html").read_text()
    assert 'title="+' in snippet and ">superb</span>" in snippet
    against = explain_run(text_run.path, "the film was superb", target="neg")
    assert against.target == "neg" and against.checks["tokens"][3]["score"] < 0
    assert against.folder.name == result.folder.name + "_for-neg"  # neither overwrites the other


@pytest.mark.parametrize(
    ("method", "source", "error", "words"),
    [
        ("gradcam", "the film was superb", ExplainError, "text run"),
        ("all", "reviews.jsonl", DataError, "is a file"),
    ],
)
def test_a_text_run_refuses_image_explanations(text_run, method, source, error, words):
    path = text_run.path.parent.parent / source
    with pytest.raises(error, match=words):
        explain_run(text_run.path, str(path) if path.exists() else source, method)


# ------------------------------------------------------------------------------ image runs
def test_explain_an_image_file_writes_maps_filters_and_the_report_section(digits_run, tmp_path):
    run, _, data = digits_run
    x = data.test[0]
    picture = tmp_path / "digit.png"
    Image.fromarray((x[5, 0].numpy() * 255).astype(np.uint8)).save(picture)
    result = explain_run(run.path, str(picture))

    _, ranked, _ = predict_run(run.path, [picture])  # what `layerwise predict` answers
    assert (result.predicted, result.probability) == pytest.approx(ranked[0][0])
    assert result.methods == ["saliency", "integrated_gradients", "gradcam"]
    assert result.checks["integrated_gradients"]["relative_gap"] < 0.02
    assert result.checks["gradcam"]["layer"] == "block1.act"
    names = {p.name for p in result.files}
    assert names == {
        "saliency.png",
        "integrated_gradients.png",
        "gradcam.png",
        "panel.png",
        "feature_maps.png",
        "filters.png",
    }
    assert all(Image.open(p).size[0] > 300 for p in result.files)
    saved = json.loads((run.path / "explain" / "digit" / "explanation.json").read_text())
    assert saved["predicted"]["class"] == result.predicted
    page = run.report_path.read_text()
    section = page[page.index('<section id="explanations">') :]
    assert section.count("<img") == 3  # filters, then the input's panel and feature maps
    assert 'href="#explanations"' in page


def test_explain_another_class_and_a_row_of_an_array(digits_run, tmp_path):
    run, _, data = digits_run
    np.save(tmp_path / "rows.npy", data.test[0][:3].numpy())
    out = tmp_path / "out"
    result = explain_run(run.path, str(tmp_path / "rows.npy"), "saliency", "0", out, row=2)
    assert result.target == "0" and result.methods == ["saliency"]
    assert "holds 3 inputs" in result.notes[0]
    assert (out / "saliency.png").is_file() and (out / "filters.png").is_file()
    with pytest.raises(DataError, match="--row 3 is out of range"):
        explain_run(run.path, str(tmp_path / "rows.npy"), row=3)


def test_a_missing_captum_is_one_clear_error(digits_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ExplainError, match="captum") as raised:
        explain_run(digits_run[0].path, "anything.png")
    assert "pip install 'layerwise[interpret]'" in raised.value.hint


@pytest.mark.slow
def test_the_explained_report_renders_in_chromium(digits_run, tmp_path):
    from browser import open_page, require_browser

    require_browser()
    run, _, data = digits_run
    np.save(tmp_path / "three.npy", data.test[0][3].numpy())
    explain_run(run.path, str(tmp_path / "three.npy"))
    check = open_page(run.report_path, tmp_path / "explained_report.png")
    assert check.problems() == []
    assert "explanations" in check.section_ids
    shown = [image for image in check.images if image["alt"].startswith("explanation ")]
    assert {image["alt"] for image in shown} >= {
        "explanation filters",
        "explanation three: panel",
        "explanation three: feature maps",
    }
    assert all(image["decoded"] and image["width"] >= 300 for image in shown)


def test_the_cli_prints_the_answer_and_the_completeness_check(text_run):
    from typer.testing import CliRunner

    from layerwise.cli import app

    args = ["explain", str(text_run.path), "a dull film", "--method", "integrated_gradients"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "a dull film: predicted neg" in result.output
    assert "completeness gap 0.00%" in result.output
    assert "wrote 2 files to" in result.output and "text-a-dull-film" in result.output
