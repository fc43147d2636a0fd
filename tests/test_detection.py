"""Object detection: the scene generator, the detector's training step, mAP and predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cli_runner import layerwise
from layerwise.data import load_dataset
from layerwise.data.scenes import CANVAS, MAX_DIGITS, generate_scenes, read_mnist, scene_targets
from layerwise.errors import DataError
from layerwise.models.detection import scene_fcos
from layerwise.recipe import parse_recipe
from layerwise.tasks.detection import (
    DetectionTrainer,
    MeanAP,
    evaluate_detector_run,
    train_detector,
)
from layerwise.train.callbacks.base import Callback

TINY_DETECTOR = {"widths": [8, 8, 16, 16], "fpn_channels": 32, "head_convs": 1}
TINY_RECIPE = """\
name: tiny_detect
seed: 0
data:
  name: mnist_scenes
  args: {train_size: 16, val_size: 4, test_size: 4}
  batch_size: 8
  eval_batch_size: 4
model:
  name: scene_fcos
  args: {widths: [8, 8, 16, 16], fpn_channels: 32, head_convs: 1}
train: {epochs: 1, metrics: [], monitor: val_map_50, optimizer: {name: adam, lr: 0.003}}
doctor: {probes: false}
"""


@pytest.fixture(scope="module")
def digits():
    return read_mnist("test")


def test_scenes_are_deterministic_and_grow_by_appending(digits):
    first = generate_scenes(*digits, 6, seed=3, split="test")
    again = generate_scenes(*digits, 10, seed=3, split="test")
    other = generate_scenes(*digits, 6, seed=4, split="test")
    assert torch.equal(first[0], again[0][:6]) and torch.equal(first[1], again[1][:6])
    assert not torch.equal(first[0], other[0])
    train = generate_scenes(*digits, 6, seed=3, split="train")  # another stream per split
    assert not torch.equal(first[0], train[0])


def test_boxes_are_tight_around_the_ink_and_never_overlap(digits):
    images, rows = generate_scenes(*digits, 40, seed=0, split="test")
    assert images.shape == (40, 1, CANVAS, CANVAS) and images.dtype == torch.uint8
    assert rows.shape == (40, MAX_DIGITS, 5)
    counts = (rows[:, :, 0] >= 0).sum(1)
    assert counts.min() >= 2 and counts.max() <= 6 and counts.float().std() > 0
    for image, target in zip(images[:, 0], scene_targets(rows), strict=True):
        covered = torch.zeros_like(image, dtype=torch.bool)
        for x0, y0, x1, y1 in target["boxes"].int().tolist():
            patch = image[y0:y1, x0:x1]
            # ink touches all four sides of its box: the box is tight
            assert patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()
            assert not covered[y0:y1, x0:x1].any(), "two boxes overlap"
            covered[y0:y1, x0:x1] = True
            assert 14 <= y1 - y0 <= 40
        assert not image[~covered].any(), "ink outside every box"
        assert set(target["labels"].tolist()) <= set(range(10))


def test_labels_name_the_digit_that_was_drawn():
    """Digits made of one grey level each (level 100 + label): a box holds its label's level."""
    fake = np.zeros((10, 28, 28), np.uint8)
    for label in range(10):
        fake[label, 4:24, 8:20] = 100 + 10 * label
    images, rows = generate_scenes(fake, np.arange(10), 8, seed=1, split="test")
    for image, target in zip(images[:, 0], scene_targets(rows), strict=True):
        for (x0, y0, x1, y1), label in zip(
            target["boxes"].int().tolist(), target["labels"].tolist(), strict=True
        ):
            assert image[y0:y1, x0:x1].max() == 100 + 10 * label


def test_dataset_is_registered_with_sizes_and_refuses_bad_ones():
    data = load_dataset("mnist_scenes", train_size=3, val_size=0, test_size=2)
    assert data.sizes() == {"train": 3, "val": 0, "test": 2} and data.num_classes == 10
    with pytest.raises(DataError, match="train_size is 0"):
        load_dataset("mnist_scenes", train_size=0)
    with pytest.raises(DataError, match=r"heights 30\.\.20"):
        load_dataset("mnist_scenes", min_height=30, max_height=20)


def test_mean_ap_on_hand_made_boxes():
    truth = [
        {
            "boxes": torch.tensor([[10.0, 10, 30, 40], [60, 60, 90, 100]]),
            "labels": torch.tensor([3, 7]),
        }
    ]

    def score(boxes, labels, scores):
        metric = MeanAP()
        found = {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels)}
        metric.update([{**found, "scores": torch.tensor(scores)}], truth)
        return metric.compute()

    perfect = score([[10.0, 10, 30, 40], [60, 60, 90, 100]], [3, 7], [0.9, 0.8])
    assert perfect == {"map_50": pytest.approx(1.0), "map": pytest.approx(1.0)}
    # the second box shifted by half its width: IoU 600 / 1800 = 1/3 < 0.5, so it is missed
    shifted = score([[10.0, 10, 30, 40], [75, 60, 105, 100]], [3, 7], [0.9, 0.8])
    assert shifted["map_50"] == pytest.approx(0.5)  # class 3 AP 1, class 7 AP 0
    wrong_class = score([[10.0, 10, 30, 40], [60, 60, 90, 100]], [3, 2], [0.9, 0.8])
    assert wrong_class["map_50"] == pytest.approx(0.5)  # class 2 has no truth: not averaged


def test_a_few_training_steps_lower_the_detector_loss(digits):
    torch.manual_seed(0)
    images, rows = generate_scenes(*digits, 8, seed=0, split="test")
    trainer = DetectionTrainer(
        scene_fcos(**TINY_DETECTOR), lr=3e-3, doctor=False, progress=False, threads=1
    )
    history = trainer.fit((images, rows), epochs=6, batch_size=8)
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert {"classification", "bbox_regression", "bbox_ctrness"} <= set(history[0])
    # evaluation leaves the data as it was: scoring twice gives the same mAP
    first = trainer.evaluate((images, rows), batch_size=8)
    assert (
        set(first) == {"map_50", "map"} and trainer.evaluate((images, rows), batch_size=8) == first
    )


@pytest.mark.slow
def test_train_resume_and_predict_through_the_cli(tmp_path, digits):
    recipe = parse_recipe(TINY_RECIPE)
    run, metrics = train_detector(recipe, tmp_path / "runs", progress=False)
    assert set(metrics) == {"map_50", "map"} and run.info()["status"] == "finished"
    assert (run.plots_dir / "predictions.png").is_file() and run.report_path.is_file()
    again, same = train_detector(None, tmp_path / "runs", resume=run.path)
    assert again.path == run.path and same == metrics  # a finished run is not trained again
    assert evaluate_detector_run(run) == metrics  # scored again from its best checkpoint

    images, _ = generate_scenes(*digits, 1, seed=0, split="test")
    Image.fromarray(images[0, 0].numpy()).save(tmp_path / "scene.png")
    outcome = layerwise("predict", "tiny_detect", "scene.png", "--runs-dir", "runs", cwd=tmp_path)
    assert outcome.code == 0, outcome.stderr
    assert "scene.png:" in outcome.stdout and "box(es)" in outcome.stdout
    assert (run.path / "predictions" / "scene.boxes.png").is_file()
    scored = layerwise("evaluate", "tiny_detect", "--runs-dir", "runs", cwd=tmp_path)
    assert scored.code == 0 and "map_50" in scored.stdout, scored.stderr


@pytest.mark.slow
def test_the_doctor_probes_a_detector_without_the_classifier_data_checks(tmp_path):
    """With `doctor.probes` on, a detection run records its probes into probes.jsonl (which
    `layerwise doctor RUN` reads) and runs no data checks: they read the scenes' box rows as
    regression targets and their 0-255 pixels, which the trainer scales, as unscaled inputs."""
    from layerwise.diagnose.probe_log import ProbeLog

    recipe = parse_recipe(TINY_RECIPE.replace("doctor: {probes: false}", "doctor: {}"))
    said: list[str] = []
    run, _ = train_detector(recipe, tmp_path, progress=False, echo=said.append)
    log = ProbeLog.load(run.path / "probes.jsonl")
    assert [s["step"] for s in log.steps] == [0, 1]  # 2 steps, both among the dense first
    stem = log.steps[0]["layers"]["backbone.stages.0.2"]
    assert stem["type"] == "ReLU" and 0.0 <= stem["dead_frac"] < 1.0
    head = log.steps[0]["layers"]["head.classification_head.cls_logits"]
    assert head["grad_norm"] > 0 and head["update_ratio"] > 0
    assert log.hists and "backbone.stages.0.2" in log.hists[0]["layers"]
    assert not (run.path / "data_profile.json").exists() and said == []
    assert run.read_diagnosis()["data_profile"] is None


class _StopAtStep3(Callback):
    def on_batch_end(self, trainer):
        if trainer.state.step == 3:  # in the middle of epoch 2 (2 steps per epoch)
            raise KeyboardInterrupt("stopped for the test")


@pytest.mark.slow
def test_a_stopped_run_resumes_bit_for_bit(tmp_path):
    recipe = parse_recipe(TINY_RECIPE.replace("train: {epochs: 1,", "train: {epochs: 3,"))
    straight, _ = train_detector(recipe, tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_detector(recipe, tmp_path / "b", progress=False, callbacks=[_StopAtStep3()])
    stopped = tmp_path / "b" / "tiny_detect"
    resumed, _ = train_detector(None, tmp_path / "b", resume=stopped, progress=False)
    assert resumed.info()["status"] == "finished"
    expected, _ = straight.load_checkpoint("last")
    weights, _ = resumed.load_checkpoint("last")
    assert all(torch.equal(expected[name], weights[name]) for name in expected)
