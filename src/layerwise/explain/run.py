"""`layerwise explain RUN INPUT`: why a trained run answered what it did for one input.

The input is read exactly as `layerwise predict` reads it (the run's saved preprocessing, or its
text pipeline), so the explanation is of what the model really saw. Image runs get saliency,
integrated gradients and Grad-CAM over the input (one PNG each and a panel), the first layer's
filters and every conv layer's feature maps; text runs get integrated gradients over the
embedding layer, as tokens coloured by attribution (PNG and HTML). Everything lands in
`RUN/explain/<input>/` (filters, which do not depend on the input, in `RUN/explain/`), with an
`explanation.json` of the numbers, and the run's report gains an "Explanations" section.
Nothing is written until every check has passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from layerwise.errors import DataError, did_you_mean
from layerwise.experiment import Experiment, load_experiment, run_preprocess
from layerwise.explain import figures
from layerwise.explain.attribute import (
    ExplainError,
    captum_attr,
    gradcam,
    integrated_gradients,
    last_conv_layer,
    saliency,
    stroke_ratio,
)
from layerwise.explain.layers import feature_maps, first_layer_filters
from layerwise.explain.text import token_attributions
from layerwise.nn import check_input
from layerwise.predict import read_inputs, top_predictions
from layerwise.runs import Run
from layerwise.runs.atomic import atomic_write_json

METHODS = ("saliency", "integrated_gradients", "gradcam")
LABELS = {
    "saliency": "saliency |∂score/∂x|",
    "integrated_gradients": "integrated gradients",
    "gradcam": "Grad-CAM",
}
EXPLAIN_DIR = "explain"


@dataclass
class Explanation:
    """What `explain_run` found and wrote: the prediction, the explained class, the files, the
    sanity checks (`checks`: numbers that say how far the maps can be trusted) and notes."""

    run: str
    input: str
    folder: Path
    predicted: str
    probability: float
    target: str
    target_probability: float
    methods: list[str]
    files: list[Path] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "input": self.input,
            "predicted": {"class": self.predicted, "probability": self.probability},
            "target": {"class": self.target, "probability": self.target_probability},
            "methods": self.methods,
            "files": [p.name for p in self.files],
            "checks": self.checks,
            "notes": self.notes,
        }


def explain_run(
    run_ref: str | Path,
    source: str,
    method: str = "all",
    target: str | None = None,
    output: str | Path | None = None,
    which: str = "last",
    runs_root: str | Path = "runs",
    row: int = 0,
) -> Explanation:
    """Explain a run's answer for one input (an image, .npy or .csv file for an image run; a
    raw text for a text run) with `method` (`saliency`, `integrated_gradients`, `gradcam` or
    `all`), for class `target` (a class name or index; default: the predicted class).

    PNGs go into `output`, by default `RUN/explain/<input>/`; then the run's report is written
    again with an Explanations section.

    Example:
        >>> result = explain_run("digits_cnn", "seven.png")  # doctest: +SKIP
        >>> result.checks["integrated_gradients"]["relative_gap"]  # doctest: +SKIP
        0.004
    """
    methods = _methods(method)
    captum_attr()  # a missing captum is said before any work
    run = Run.open(run_ref, root=runs_root)
    from layerwise.text import TextPipeline

    if TextPipeline.exists(run.path):
        result, experiment = _explain_text(run, source, methods, method, target, output, which)
    else:
        result, experiment = _explain_image(
            run, source, methods, method, target, output, which, row
        )
    if output is None and run.report_path.exists():
        _rewrite_report(run, experiment)
    return result


# ------------------------------------------------------------------------------ images
def _explain_image(
    run: Run,
    source: str,
    methods: list[str],
    asked: str,
    target: str | None,
    output: str | Path | None,
    which: str,
    row: int,
) -> tuple[Explanation, Experiment]:
    preprocess = run_preprocess(run)
    spec = preprocess.image
    if spec is None:
        raise ExplainError(
            f"run '{run.name}' was trained on rows of {preprocess.input_shape[0]} features, not "
            "images or text",
            hint="explain covers image runs (digits, MNIST) and text runs (IMDB-style)",
        )
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"input '{source}' is not a file: run '{run.name}' is an image run and explains an "
            "image, .npy or .csv file",
            hint="give the path of an image (.png, .jpg …) or of pixel rows (.npy, .csv); raw "
            "text goes to a text run",
        )
    if path.is_dir():
        raise DataError(
            f"'{source}' is a folder: explain takes one input file",
            hint="name one image file in it",
        )
    experiment = load_experiment(run, which)
    _require_classifier(run, experiment)
    batch = read_inputs([path], preprocess)
    notes = list(batch.notes)
    if not 0 <= row < len(batch.x):
        raise DataError(
            f"--row {row} is out of range: '{path.name}' holds {len(batch.x)} input(s)",
            hint=f"give --row from 0 to {len(batch.x) - 1}",
        )
    if len(batch.x) > 1:
        notes.append(f"note: {path.name} holds {len(batch.x)} inputs: explaining row {row}")
    model = experiment.model.eval()
    x = batch.x[row : row + 1]
    logits = check_input(model, x).detach()
    names = experiment.data.class_names or [str(i) for i in range(_classes(logits))]
    chosen = _class_index(target, names, run.name)
    conv = last_conv_layer(model, x)
    if "gradcam" in methods and conv is None:
        if asked == "gradcam":
            raise ExplainError(
                f"Grad-CAM needs a conv layer, and the model of run '{run.name}' "
                f"({type(model).__name__}) has none",
                hint="use --method saliency or integrated_gradients for this model",
            )
        methods = [m for m in methods if m != "gradcam"]
        notes.append("note: Grad-CAM left out: the model has no conv layer")

    predicted, probability, target_p, chosen = _answer(logits, names, chosen)
    image_shape = (spec.channels, spec.height, spec.width)
    slug = _slug(path, row) + _for_class(target, names[chosen])
    folder = Path(output) if output is not None else run.path / EXPLAIN_DIR / slug
    title = (
        f"{path.name}: predicted {predicted} ({probability:.1%}); explaining class "
        f"{names[chosen]} ({target_p:.1%})"
    )
    result = Explanation(
        run.name,
        path.name,
        folder,
        predicted,
        probability,
        names[chosen],
        target_p,
        methods,
        notes=notes,
    )
    shown = figures.display_image(x.reshape(image_shape))
    maps: dict[str, tuple[Any, bool]] = {}
    for name in methods:
        if name == "saliency":
            values = saliency(model, x, chosen).reshape(image_shape)
            maps[LABELS[name]] = (figures.heat_of(values, signed=False), False)
        elif name == "integrated_gradients":
            blank = torch.full((1, *image_shape), spec.background or 0.0)
            ig = integrated_gradients(model, x, chosen, preprocess.pixels_to_model(blank))
            maps[LABELS[name]] = (figures.heat_of(ig.attributions.reshape(image_shape), True), True)
            result.checks[name] = {
                "sum_of_attributions": ig.total,
                "score_difference": ig.difference,
                "gap": ig.gap,
                "relative_gap": ig.relative_gap,
                "steps": ig.steps,
                "baseline": f"blank image (pixels {spec.background or 0.0:g})",
            }
        else:
            layer_name, layer = conv
            cam = gradcam(model, x, chosen, layer)
            maps[LABELS[name]] = (cam[0, 0].numpy(), False)
            check: dict[str, Any] = {"layer": layer_name}
            if spec.background is not None:
                pixels = torch.as_tensor(shown).reshape(image_shape)  # contrast-stretched
                check["stroke_ratio"] = stroke_ratio(cam[0], pixels, _stretched(spec.background))
            result.checks[name] = check

    folder.mkdir(parents=True, exist_ok=True)
    for label, (heat, signed) in maps.items():
        stem = next(m for m in METHODS if LABELS[m] == label)
        result.files.append(
            figures.plot_map(
                shown, heat, signed, f"{LABELS[stem]}\n{title}", folder / f"{stem}.png"
            )
        )
    if maps:
        result.files.append(figures.plot_panel(shown, maps, title, folder / "panel.png"))
    layers = feature_maps(model, x)
    if layers:
        result.files.append(
            figures.plot_feature_maps(
                layers,
                f"Feature maps of each conv layer for {path.name}",
                folder / "feature_maps.png",
            )
        )
    filters = first_layer_filters(model, image_shape)
    if filters is not None:
        name, weights = filters
        filter_folder = folder if output is not None else folder.parent
        result.files.append(
            figures.plot_filters(
                weights,
                f"First-layer filters ({name}, {len(weights)})",
                filter_folder / "filters.png",
            )
        )
    atomic_write_json(folder / "explanation.json", result.to_dict())
    return result, experiment


def _stretched(background: float) -> float:
    """The background's value after `display_image`'s stretch: 0 for a dark background (the
    darkest pixel), 1 for a light one."""
    return 0.0 if background < 0.5 else 1.0


# ------------------------------------------------------------------------------ text
def _explain_text(
    run: Run,
    source: str,
    methods: list[str],
    asked: str,
    target: str | None,
    output: str | Path | None,
    which: str,
) -> tuple[Explanation, Experiment]:
    from layerwise.data.text import TextBundle
    from layerwise.text import TextPipeline, check_texts

    if asked not in ("all", "integrated_gradients"):
        raise ExplainError(
            f"--method {asked} is for image runs; run '{run.name}' is a text run, explained by "
            "integrated gradients over its embedding layer",
            hint="use --method integrated_gradients (or all)",
        )
    if _is_file(source):
        raise DataError(
            f"'{source}' is a file, but run '{run.name}' is a text run and explains raw text",
            hint='give the text itself in quotes, e.g. "A gripping, beautifully acted film."',
        )
    text = check_texts([source], "the input text")[0]
    pipeline = TextPipeline.load(run.path)
    experiment = load_experiment(run, which, data=TextBundle.from_pipeline(pipeline))
    model = experiment.model.eval()
    encoded = pipeline.encode([text])
    tokens, lengths = encoded["tokens"], encoded["lengths"]
    every_token = pipeline.tokenizer.tokenize([text])[0]
    words = every_token[: tokens.shape[1]]
    notes = []
    if len(every_token) > len(words):
        notes.append(
            f"note: the model reads the first {len(words)} of the text's {len(every_token)} "
            "tokens (the run's max_length); the rest is not explained"
        )
    if pipeline.unknown_share([text])[0] >= 1.0:
        notes.append("warning: none of the text's words is in the vocabulary")
    with torch.no_grad():
        logits = model(tokens, lengths)
    names = experiment.data.class_names
    chosen = _class_index(target, names, run.name)
    predicted, probability, target_p, chosen = _answer(logits, names, chosen)
    found = token_attributions(model, tokens, lengths, words, chosen)
    shown = text if len(text) <= 50 else text[:47] + "..."
    title = (
        f'"{shown}": predicted {predicted} ({probability:.1%}); integrated gradients for '
        f"{names[chosen]} ({target_p:.1%}); red for, blue against"
    )
    slug = _text_slug(text) + _for_class(target, names[chosen])
    folder = Path(output) if output is not None else run.path / EXPLAIN_DIR / slug
    result = Explanation(
        run.name,
        text,
        folder,
        predicted,
        probability,
        names[chosen],
        target_p,
        ["integrated_gradients"],
        notes=notes,
    )
    result.checks["integrated_gradients"] = {
        "sum_of_attributions": found.total,
        "score_difference": found.difference,
        "gap": found.gap,
        "relative_gap": found.relative_gap,
        "steps": found.steps,
        "layer": found.layer,
        "baseline": "the same number of padding tokens",
    }
    result.checks["tokens"] = [
        {"token": w, "score": s} for w, s in zip(found.tokens, found.scores, strict=True)
    ]
    if len(words) > figures.MAX_TOKENS_SHOWN:
        notes.append(
            f"note: the PNG shows the first {figures.MAX_TOKENS_SHOWN} of {len(words)} tokens "
            "(tokens.html and explanation.json have them all)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    result.files.append(
        figures.plot_tokens(found.tokens, found.scores, title, folder / "tokens.png")
    )
    result.files.append(
        figures.write_html(
            figures.tokens_html(found.tokens, found.scores, title), folder / "tokens.html"
        )
    )
    atomic_write_json(folder / "explanation.json", result.to_dict())
    return result, experiment


# ------------------------------------------------------------------------------ shared
def _methods(method: str) -> list[str]:
    if method == "all":
        return list(METHODS)
    if method not in METHODS:
        raise ExplainError(
            f"unknown explanation method '{method}'",
            hint=did_you_mean(method, [*METHODS, "all"]),
        )
    return [method]


def _require_classifier(run: Run, experiment: Experiment) -> None:
    """Explanations are of a class score; a regression's output has no class to explain."""
    if experiment.data.task != "classification":
        raise ExplainError(
            f"run '{run.name}' is a {experiment.data.task} model: explain covers classifiers "
            "(a class score to attribute)",
            hint="explain an image or text classification run",
        )


def _classes(logits: torch.Tensor) -> int:
    return max(2, logits.shape[1] if logits.dim() > 1 else 1)


def _class_index(target: str | None, names: list[str], run_name: str) -> int | None:
    """`--target` as a class index: a class name, else an index; None for the predicted one."""
    if target is None:
        return None
    if target in names:
        return names.index(target)
    if re.fullmatch(r"-?\d+", target.strip()) and 0 <= int(target) < len(names):
        return int(target)
    shown = ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
    raise ExplainError(
        f"--target {target} is not a class of run '{run_name}': it has {len(names)} classes "
        f"(indices 0-{len(names) - 1}: {shown})",
        hint="give a class name or an index in that range, or leave --target out for the "
        "predicted class",
    )


def _answer(
    logits: torch.Tensor, names: list[str], chosen: int | None
) -> tuple[str, float, float, int]:
    """The predicted class and its probability, and the explained class (`chosen`, default the
    predicted one) with its probability."""
    ranked = top_predictions(logits, names, k=len(names))[0]
    probability = dict(ranked)
    predicted, best = ranked[0]
    chosen = names.index(predicted) if chosen is None else chosen
    return predicted, best, probability[names[chosen]], chosen


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a long text is no file name (ENAMETOOLONG, NUL)
        return False


def _slug(path: Path, row: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-.") or "input"
    return stem if row == 0 else f"{stem}_row{row}"


def _for_class(target: str | None, name: str) -> str:
    """A folder suffix for an explicit --target, so "why not 3?" does not overwrite "why 7?"."""
    if target is None:
        return ""
    return "_for-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "class")


def _text_slug(text: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", text.lower())[:6]
    return "text-" + ("-".join(words)[:48] or "input")


def _rewrite_report(run: Run, experiment: Experiment) -> None:
    """The run's report again, now with its Explanations section (and its model summary)."""
    from layerwise.nn import summary
    from layerwise.report import write_report

    try:
        text = str(summary(experiment.model, (1, *experiment.data.input_shape)))
    except Exception:  # the summary is a nicety here; the report is still worth rewriting
        text = None
    write_report(run, summary_text=text)
