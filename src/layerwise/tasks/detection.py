"""Object detection: train a torchvision detector on generated digit scenes, score it with mAP,
draw and print its boxes.

A batch is `(images, targets)` as `layerwise.data.scenes` makes them: `(N, 1, H, W)` scenes of
0-255 pixels (uint8, or float32 once batched) and `(N, MAX_DIGITS, 5)` padded rows of
`[class, x0, y0, x1, y1]`. `DetectionTrainer` trains through the Trainer's step contract:
`train_step` turns the rows into torchvision's per-image target dicts and lets the detector
compute its own losses (FCOS: focal classification, GIoU box regression,
centre-ness), logging each and their sum `loss`. Evaluation runs the detector in eval mode and
feeds its boxes to `MeanAveragePrecision` (COCO's protocol through torchmetrics):
`map_50` is mAP at IoU 0.5, `map` the mean over IoU 0.5:0.95. Checkpoints, resume (bit for bit:
the batch order is a function of seed and epoch), progress and the report are the ones every
run has.

mAP needs `pycocotools`, in the `detect` extra: without it, a detection run stops before it
starts, with an error naming `pip install 'layerwise[detect]'`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from layerwise.data import load_dataset
from layerwise.data.scenes import CANVAS, SceneBundle, scene_targets
from layerwise.errors import DataError, LayerwiseError, RecipeError
from layerwise.models.detection import scene_fcos
from layerwise.recipe import Recipe
from layerwise.runs import Run
from layerwise.tasks.common import (
    close_run,
    log_and_checkpoint,
    restore_last,
    task_doctor,
    trainer_settings,
)
from layerwise.tasks.sequence import load_run_weights
from layerwise.train import Trainer, seed_everything
from layerwise.train.callbacks.stop_on_signal import guarded_fit
from layerwise.train.metrics import Metric

Echo = Callable[[str], None] | None
DETECTION_DATASETS = frozenset({"mnist_scenes"})
DETECTORS = {"scene_fcos": scene_fcos}
SHOW_SCORE = 0.5  # predict prints and draws the boxes scored at least this


class MissingExtraError(LayerwiseError):
    """An optional dependency of this task is not installed."""


def detection_task(recipe: Recipe) -> bool:
    """Does `recipe` train a detector (a scene dataset, trained by `train_detector`)?"""
    return recipe.data.name in DETECTION_DATASETS


def require_detect_extra() -> None:
    """Stop with a clear error when mAP cannot be computed (no `pycocotools`)."""
    try:
        import pycocotools  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            "object detection needs `pycocotools` for its mAP, which is not installed",
            hint="pip install 'layerwise[detect]'",
        ) from exc


class MeanAP(Metric):
    """mAP@0.5 (`map_50`) and mAP@[.5:.95] (`map`) of a detector's boxes, COCO style, by
    torchmetrics' `MeanAveragePrecision`. Updated with the detector's eval output (a dict per
    image) against target dicts; its state is the detections themselves (not checkpointed: a
    resumed run starts its validation from scratch, which evaluation always does)."""

    name = "map_50"
    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        self._map: Any = None

    def update(self, output: Any, target: Any) -> None:
        if self._map is None:
            from torchmetrics.detection import MeanAveragePrecision

            self._map = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
        self._map.update(
            [{k: v.detach().cpu() for k, v in o.items()} for o in output],
            [{k: v.cpu() for k, v in t.items()} for t in target],
        )

    def compute(self) -> dict[str, float]:
        if self._map is None:
            return {}
        result = self._map.compute()
        return {"map_50": float(result["map_50"]), "map": float(result["map"])}

    def reset(self) -> None:
        self._map = None

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self._map = None


class DetectionTrainer(Trainer):
    """A Trainer for `(images, padded targets)` scene batches (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("loss", None)
        kwargs.setdefault("metrics", (MeanAP(),))
        super().__init__(*args, **kwargs)

    def unpack(self, batch: Any) -> tuple[Tensor, list[dict[str, Tensor]]]:
        images, rows = batch
        # pixels are 0-255 (the batcher hands uint8 scenes over as float32); never divide in
        # place: an evaluation batch is a view of the stored split
        return images.float() / 255.0, scene_targets(rows)

    def train_step(self, batch: Any) -> dict[str, Tensor]:
        images, targets = self.unpack(batch)
        with self.autocast:
            losses = self.model(images, targets)
            loss = sum(losses.values())
        self.backward(loss)
        self.optimizer_step()
        return {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}}

    def eval_step(self, batch: Any) -> dict[str, Tensor]:
        images, targets = self.unpack(batch)
        self.update_metrics(self.model(images), targets)
        return {}

    def predict_step(self, batch: Any) -> list[dict[str, Tensor]]:
        images = batch[0] if isinstance(batch, tuple | list) else batch
        return self.model(images.float() / 255.0)  # 0-255 pixels, as in training


# ----------------------------------------------------------------------------------- training
def load_scenes(recipe: Recipe) -> SceneBundle:
    """The recipe's scenes (a `SceneBundle`, or a `RecipeError` naming the dataset)."""
    data = load_dataset(recipe.data.name, **recipe.data.args)
    if not isinstance(data, SceneBundle):
        raise RecipeError(
            f"data.name '{recipe.data.name}' is not detection scenes",
            hint="a detector trains on mnist_scenes",
        )
    return data


def build_detector(recipe: Recipe, data: SceneBundle) -> nn.Module:
    """The recipe's detector, sized for the data's classes, channels and canvas."""
    factory = DETECTORS.get(recipe.model.name)
    if factory is None:
        raise RecipeError(
            f"model.name '{recipe.model.name}' is not a detector",
            hint=f"use one of: {', '.join(sorted(DETECTORS))}",
        )
    given = {
        "num_classes": data.num_classes,
        "in_channels": data.input_shape[0],
        "canvas": data.canvas,
    }
    try:
        return factory(**{**given, **recipe.model.args})
    except TypeError as exc:
        raise RecipeError(
            f"model.args do not fit '{recipe.model.name}': {exc}",
            hint="see docs/detection.md for the detector's arguments",
        ) from exc


def build_trainer(
    recipe: Recipe, model: nn.Module, callbacks: Sequence[Any] = ()
) -> DetectionTrainer:
    """A `DetectionTrainer` configured by `recipe.train`, with `callbacks` (the doctor only if
    among them: `doctor_watch` makes it for a run)."""
    return DetectionTrainer(model, **trainer_settings(recipe, callbacks), doctor=False)


def doctor_watch(recipe: Recipe, run: Run, echo: Echo) -> list[Any]:
    """The doctor of a detection run: probes every `doctor.probe_every` steps into the run's
    probes.jsonl (so `layerwise doctor RUN` reads them) and the training rules, or nothing
    when `doctor.probes` is off.

    The data checks are not run: they read a `(x, y)` classifier or regressor, and would take
    the scenes' padded box rows for 30 regression targets and their 0-255 pixels (which
    `unpack` scales) for unscaled inputs, and spend minutes of near-copy search over 8,000
    16,384-pixel scenes before the first step."""
    return task_doctor(recipe, run, "detection", echo)


def train_detector(
    recipe: Recipe | None,
    runs_root: str | Path = "runs",
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    echo: Echo = print,
    callbacks: Sequence[Any] = (),
) -> tuple[Run, dict[str, float]]:
    """Train a detection recipe into a new run folder, or `resume` a stopped run from its last
    checkpoint; returns the run and its test scores (mAP on the test scenes with the best
    weights). The scenes are generated again from the saved recipe on resume (they depend only
    on their seed), so a resumed run continues bit for bit."""
    require_detect_extra()
    run: Run | None = None
    if resume is not None:
        run, recipe = Run.reopen(resume, runs_root, recipe)
        if run.info().get("status") == "finished":
            return run, run.info().get("test_metrics") or {}
    seed_everything(recipe.seed)
    data = load_scenes(recipe)
    model = build_detector(recipe, data)
    if run is None:
        run = Run.create(runs_root, recipe.name, recipe.to_yaml())
    monitor = recipe.train.monitor if data.val is not None else "loss"
    everything = log_and_checkpoint(run, recipe, monitor, progress)
    everything += doctor_watch(recipe, run, echo)
    trainer = build_trainer(recipe, model, [*everything, *callbacks])
    restore_last(run, model, trainer, resume is not None)
    eval_batch = recipe.data.eval_batch_size or 100
    with guarded_fit(run, trainer):
        trainer.fit(
            data.train,
            data.val,
            epochs=recipe.train.epochs,
            batch_size=recipe.data.batch_size,
            eval_batch_size=eval_batch,
        )
    load_run_weights(run, model, "best")
    metrics = trainer.evaluate(data.test, batch_size=eval_batch) if data.test else {}
    run.append_metrics({"epoch": trainer.state.epoch, "split": "test", **metrics})
    if data.test is not None:
        draw_predictions(trainer, data.test, run.plots_dir / "predictions.png")
    diagnosis = close_run(run, trainer, metrics)
    _write_report(run, trainer, diagnosis)
    return run, metrics


def evaluate_detector_run(run: Run, split: str = "test", which: str = "best") -> dict[str, float]:
    """A detection run's mAP on one split of its scenes (generated again from its recipe) with
    its `best` (else `last`) weights; on the test split the predictions grid is redrawn too.
    `layerwise evaluate` calls it, and it scores a run stopped before its end."""
    recipe = run.recipe()
    data = load_scenes(recipe)
    scenes = getattr(data, split, None)
    if scenes is None:
        raise DataError(
            f"run '{run.name}' has no {split} scenes",
            hint=f"its recipe sets data.args.{split}_size to 0; evaluate another split",
        )
    model = build_detector(recipe, data)
    load_run_weights(run, model, which)
    trainer = build_trainer(recipe, model)
    metrics = trainer.evaluate(scenes, batch_size=recipe.data.eval_batch_size or 100)
    if split == "test":
        draw_predictions(trainer, scenes, run.plots_dir / "predictions.png")
    run.append_metrics({"split": split, "eval": which, **metrics})
    return metrics


def _write_report(run: Run, trainer: Trainer, diagnosis: Any) -> None:
    from layerwise.report import write_report
    from layerwise.report.curve_marks import plot_run_curves

    plot_run_curves(run)
    count = sum(p.numel() for p in trainer.model.parameters())
    summary = f"{trainer.model}\n\n{count:,} parameters"
    write_report(run, summary_text=summary, diagnosis=diagnosis)


# ------------------------------------------------------------------------------ drawing boxes
def draw_predictions(
    trainer: DetectionTrainer, split: tuple[Tensor, Tensor], path: Path, count: int = 16
) -> Path:
    """A grid of the first `count` scenes of `split`: true boxes dashed green, predicted boxes
    (score >= `SHOW_SCORE`) solid red with class and score."""
    images, rows = split[0][:count], split[1][:count]
    detections = trainer.predict(images, batch_size=count)
    truths = scene_targets(rows)
    return draw_scenes(images, detections, path, truths=truths)


def draw_scenes(
    images: Tensor,
    detections: Sequence[dict[str, Tensor]],
    path: Path,
    *,
    truths: Sequence[dict[str, Tensor]] | None = None,
    titles: Sequence[str] | None = None,
) -> Path:
    """Scenes (uint8 or [0, 1] `(N, C, H, W)`) with their boxes, in a grid, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(images)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i].float().mean(0), cmap="gray")
        if truths is not None:
            for box in truths[i]["boxes"].tolist():
                ax.add_patch(_rectangle(Rectangle, box, "lime", "--"))
        kept = detections[i]["scores"] >= SHOW_SCORE
        for box, label, score in zip(
            detections[i]["boxes"][kept].tolist(),
            detections[i]["labels"][kept].tolist(),
            detections[i]["scores"][kept].tolist(),
            strict=True,
        ):
            ax.add_patch(_rectangle(Rectangle, box, "red", "-"))
            ax.text(box[0], box[1] - 1, f"{label} {score:.2f}", color="red", fontsize=7)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    figure.suptitle("predicted (red, score >= 0.5) and true (green, dashed) boxes", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _rectangle(kind: Any, box: list[float], colour: str, style: str) -> Any:
    x0, y0, x1, y1 = box
    return kind((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linestyle=style, lw=1)


# ---------------------------------------------------------------------------------- predict
def read_scene(path: Path, channels: int = 1) -> Tensor:
    """An image file as a `(C, H, W)` float tensor in [0, 1] (any size: the detector resizes it
    to its canvas and maps the boxes back)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            picture = picture.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(
            f"cannot read '{path}' as an image: {exc}", hint="give a .png or .jpg scene"
        ) from exc
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)
    return pixels[None] if pixels.dim() == 2 else pixels.permute(2, 0, 1)


def predict_scenes(
    run: Run, paths: Sequence[Path], which: str = "last"
) -> tuple[list[list[tuple[str, float, list[float]]]], list[Path]]:
    """Boxes for each image file: `(class, score, [x0, y0, x1, y1])` with score >= `SHOW_SCORE`,
    best first; an annotated copy of each image is written to `<run>/predictions/`. Returns the
    boxes and the annotated files. Images of another size than the scenes are resized by the
    detector and their boxes mapped back to the image's own pixels."""
    recipe = run.recipe()
    # the scenes' shape without generating any: one canvas, grey, ten digit classes
    shape = SceneBundle("", None, None, None, num_classes=10, input_shape=(1, CANVAS, CANVAS))
    model = build_detector(recipe, shape)
    scenes = [read_scene(path) for path in paths]  # a file that is no image stops here
    load_run_weights(run, model, which)
    model.eval()
    results, written = [], []
    out_dir = run.path / "predictions"
    for path, pixels in zip(paths, scenes, strict=True):
        with torch.no_grad():
            (found,) = model([pixels])
        kept = found["scores"] >= SHOW_SCORE
        boxes = [
            (str(label), float(score), [round(v, 1) for v in box])
            for box, label, score in zip(
                found["boxes"][kept].tolist(),
                found["labels"][kept].tolist(),
                found["scores"][kept].tolist(),
                strict=True,
            )
        ]
        results.append(boxes)
        target = out_dir / f"{path.stem}.boxes.png"
        written.append(draw_scenes(pixels[None], [found], target, titles=[path.name]))
    return results, written
