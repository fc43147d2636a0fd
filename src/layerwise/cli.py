"""The `layerwise` command. Every verb is a thin call into the library.

Bad input ends in one message and a hint on stderr with exit code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import json
import sys
import warnings
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from layerwise import __version__
from layerwise.cli_text import PipeSafeStream, ReadableHelpCommand, ReadableHelpGroup
from layerwise.errors import LayerwiseError


class _Typer(typer.Typer):
    """Every command of this app renders its help for people (see `layerwise.cli_text`)."""

    def command(self, *args, **kwargs):
        kwargs.setdefault("cls", ReadableHelpCommand)
        return super().command(*args, **kwargs)


app = _Typer(
    help="layerwise: build, train, diagnose and ship neural networks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=ReadableHelpGroup,
)
runs_app = _Typer(help="List, show and compare runs.", no_args_is_help=True, cls=ReadableHelpGroup)
app.add_typer(runs_app, name="runs")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

RunsDir = Annotated[
    Path, typer.Option("--runs-dir", metavar="PATH", help="Folder holding the run folders.")
]
Debug = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a recipe field, e.g. train.epochs=5 (repeat)."
    ),
]


def _show_version(value: bool) -> None:
    if value:
        out.print(f"layerwise {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """layerwise: build, train, diagnose and ship neural networks."""


class Split(StrEnum):
    train = "train"
    val = "val"
    test = "test"


WEIGHTS_HELP = (
    "last: the weights training ended with (what its test figure measured); "
    "best: the epoch with the best monitored value."
)


class Weights(StrEnum):
    best = "best"
    last = "last"


@app.command()
def train(
    recipe: Annotated[
        Path | None,
        typer.Argument(help="Recipe YAML file, or a bundled recipe's name (digits_cnn)."),
    ] = None,
    set_: Overrides = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", metavar="RUN", help="Continue this run (name or path)."),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            metavar="N",
            help="Train data-parallel in N processes on this machine (torchrun; gloo on CPU).",
        ),
    ] = None,
    debug: Debug = False,
) -> None:
    """Train a recipe into a new run folder, or --resume a stopped one.

    Example: layerwise train recipes/digits_cnn.yaml --set train.epochs=5
    Example: layerwise train recipes/digits_cnn.yaml --nproc 2
    """
    from layerwise import experiment
    from layerwise.recipe import load_recipe
    from layerwise.recipes_bundled import resolve_recipe
    from layerwise.runs import Run
    from layerwise.tasks.dispatch import task_trainer

    if recipe is None and resume is None:
        raise LayerwiseError("no recipe given", hint="layerwise train recipes/digits_cnn.yaml")
    if recipe is not None:
        parsed = load_recipe(resolve_recipe(recipe), set_)
    elif (
        set_
    ):  # --resume RUN --set …: compare the overridden saved recipe, so the change is refused
        found = Run.open(resume, root=runs_dir)
        parsed = found.recipe(overrides=set_)
    else:
        parsed = None
    if nproc is not None:  # this same command in N processes, started by torchrun
        again = [str(recipe)] if recipe is not None else []
        again += [f"--set={item}" for item in set_ or []] + ["--runs-dir", str(runs_dir)]
        again += ["--resume", resume] if resume else []
        again += ["--quiet"] * quiet + ["--debug"] * debug
        saved = parsed or Run.open(resume, root=runs_dir).recipe()
        raise typer.Exit(experiment.launch_train(nproc, again, saved, new_run=resume is None))
    try:
        # a resumed run keeps the task its saved recipe picked
        chosen = parsed if resume is None else Run.open(resume, root=runs_dir).recipe()
        # under torchrun: refuse a recipe that cannot train there
        experiment.check_distributed(parsed if parsed is not None else chosen)
        task_train = task_trainer(chosen)  # translation, LM, detection, recommender, faces, GAN, RL
        if task_train is not None:
            run, test_metrics = task_train(parsed, runs_dir, resume=resume, progress=not quiet)
        elif resume is not None:
            run, test_metrics = experiment.resume(
                resume, runs_dir, recipe=parsed, progress=not quiet
            )
        else:
            run, test_metrics = experiment.train(parsed, runs_dir, progress=not quiet)
        if run is None:  # a rank other than 0 under torchrun: rank 0 reports
            return
    except KeyboardInterrupt as interrupt:  # SIGINT/SIGTERM: the run is `stopped`, resumable
        stopped = getattr(interrupt, "run", None)
        name = stopped.name if stopped is not None else "<run>"
        where = "" if runs_dir == Path("runs") else f" --runs-dir {runs_dir}"
        err.print(
            f"{escape(str(interrupt) or 'interrupted')}; continue with: "
            f"layerwise train --resume {escape(name + where)}"
        )
        number = getattr(interrupt, "signal", None)
        raise typer.Exit(128 + int(number) if number else 130) from None
    _print_outcome(run, test_metrics)
    _print_doctor_summary(run)


@app.command()
def quickstart(runs_dir: RunsDir = Path("runs"), debug: Debug = False) -> None:
    """Train the quick-start CNN on scikit-learn's bundled digits and show where the report is.

    Example: layerwise quickstart
    """
    from layerwise import experiment
    from layerwise.recipe import load_recipe
    from layerwise.recipes_bundled import bundled_recipe

    recipe = load_recipe(bundled_recipe("digits_cnn"))
    run, test_metrics = experiment.train(recipe, runs_dir)
    _print_outcome(run, test_metrics)
    _print_doctor_summary(run)


@app.command()
def doctor(
    target: Annotated[str, typer.Argument(help="A run (name or folder), or a recipe YAML file.")],
    auto_fix: Annotated[
        bool, typer.Option("--auto-fix", help="Train, fix the recipe, retrain (recipe only).")
    ] = False,
    rounds: Annotated[
        int, typer.Option(metavar="N", help="Fix rounds after the first training.")
    ] = 3,
    data_only: Annotated[
        bool, typer.Option("--data-only", help="Only check the data; do not train.")
    ] = False,
    set_: Overrides = None,
    output: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Where --auto-fix writes the fixed recipe."),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="Also show possible findings and explained symptoms."),
    ] = False,
    debug: Debug = False,
) -> None:
    """Diagnose a finished run, or check and train a recipe, or auto-fix a recipe.

    A run's diagnosis is printed and written to its diagnosis.json. With a recipe, the data is
    checked, the recipe trained with the doctor watching, and the diagnosis printed; --auto-fix
    then applies the findings' patches and retrains, and writes a fixed copy of the recipe (the
    original file is never changed).

    Examples:
      layerwise doctor digits_cnn
      layerwise doctor recipes/broken/lr_too_high.yaml --auto-fix --rounds 2
    """
    is_recipe = target.endswith((".yaml", ".yml")) or Path(target).is_file()
    if not is_recipe:
        if auto_fix or data_only or set_:
            raise LayerwiseError(
                f"'{target}' is a run; --auto-fix, --data-only and --set need a recipe file",
                hint="give a recipe: layerwise doctor recipes/<name>.yaml --auto-fix",
            )
        _diagnose_run(target, runs_dir, verbose)
    elif auto_fix:
        _auto_fix(target, rounds, runs_dir, set_, output)
    elif data_only:
        _check_data_only(target, set_, verbose)
    else:
        _train_and_diagnose(target, set_, runs_dir, verbose)


def _diagnose_run(target: str, runs_dir: Path, verbose: bool = False) -> None:
    """`doctor RUN`: diagnose a run from its folder, print it and write diagnosis.json."""
    from layerwise.diagnose.doctor import diagnose_run
    from layerwise.runs import Run

    found = Run.open(target, root=runs_dir)
    out.print(diagnose_run(found).render(verbose), markup=False)
    out.print(f"diagnosis: {found.diagnosis_path}")


def _auto_fix(
    target: str, rounds: int, runs_dir: Path, overrides: list[str] | None, output: Path | None
) -> None:
    """`doctor RECIPE --auto-fix`: train, apply the findings' patches, retrain; print the rounds."""
    from layerwise.tune.autofix import auto_fix as run_auto_fix

    result = run_auto_fix(
        target,
        rounds=rounds,
        runs_root=runs_dir,
        overrides=overrides,
        output=output,
        echo=_plain,
        progress=True,
    )
    _print_auto_fix(result)


def _check_data_only(target: str, overrides: list[str] | None, verbose: bool = False) -> None:
    """`doctor RECIPE --data-only`: the data checks alone, reported whatever they find."""
    from layerwise import experiment
    from layerwise.errors import RecipeError
    from layerwise.recipe import load_recipe
    from layerwise.tasks import sequence_task
    from layerwise.tasks.dispatch import task_kind

    recipe = load_recipe(target, overrides)
    recipe = recipe.model_copy(
        update={"doctor": recipe.doctor.model_copy(update={"data_checks": True})}
    )
    kind = task_kind(recipe)
    if kind is not None:  # a task with its own data and batches: the generic checks do not fit
        task = sequence_task(recipe)
        if task is None:
            raise RecipeError(
                f"recipe '{recipe.name}' trains a {kind.name} task, whose data the doctor's "
                "data checks do not cover on their own",
                hint=f"train it (layerwise train {target}): the doctor watches its training",
            )
        from layerwise.tasks.sequence import sequence_data_only

        out.print(sequence_data_only(recipe, task).render(verbose), markup=False)
        return
    data = experiment.build_data(recipe)
    model = experiment.build_model(recipe, data)
    diagnosis = experiment.check_recipe_data(recipe, data, model, echo=None, refuse_fatal=False)
    out.print(diagnosis.render(verbose), markup=False)


def _train_and_diagnose(
    target: str, overrides: list[str] | None, runs_dir: Path, verbose: bool = False
) -> None:
    """`doctor RECIPE`: check the data, train with the doctor watching, print the diagnosis (the
    whole data diagnosis too when the data is refused)."""
    from layerwise import experiment
    from layerwise.diagnose.findings import Diagnosis
    from layerwise.errors import DataError
    from layerwise.recipe import load_recipe

    recipe = load_recipe(target, overrides)
    try:
        run, test_metrics = experiment.train(recipe, runs_dir, echo=_plain)
    except DataError as exc:
        if exc.diagnosis is not None:
            out.print(exc.diagnosis.render(verbose), markup=False)
        raise
    _print_outcome(run, test_metrics)
    out.print(Diagnosis.from_dict(run.read_diagnosis() or {}).render(verbose), markup=False)


@app.command("lr-find")
def lr_find(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    set_: Overrides = None,
    start_lr: Annotated[
        float, typer.Option(metavar="LR", help="Lowest learning rate tried.")
    ] = 1e-7,
    end_lr: Annotated[
        float, typer.Option(metavar="LR", help="Highest learning rate tried.")
    ] = 10.0,
    steps: Annotated[int, typer.Option(metavar="N", help="Mini-batches in the sweep.")] = 100,
    plot: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Where to write the plot (PNG).")
    ] = None,
    debug: Debug = False,
) -> None:
    """Run the learning-rate range test on a recipe and suggest a learning rate.

    Example: layerwise lr-find recipes/mnist_mlp.yaml --plot lr_find.png
    """
    from layerwise.experiment import build
    from layerwise.recipe import load_recipe
    from layerwise.tune.lr_finder import lr_find as run_lr_find
    from layerwise.tune.lr_finder import plot_lr_find

    parsed = load_recipe(recipe, set_)
    result = run_lr_find(
        build(parsed), start_lr=start_lr, end_lr=end_lr, num_steps=steps, echo=_plain
    )
    path = plot_lr_find(result, plot or Path(f"{parsed.name}.lr_find.png"))
    out.print(f"suggested learning rate: {result.suggestion:.3g}  ({result.rule})")
    out.print(
        f"lowest loss at lr {result.min_loss_lr:.3g}; recipe has {parsed.train.optimizer.lr:g}"
    )
    out.print(f"use it: layerwise train {recipe} --set train.optimizer.lr={result.suggestion:.3g}")
    out.print(f"plot: {path}")


@app.command()
def tune(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file with a tune: section.")],
    trials: Annotated[
        int, typer.Option("--trials", metavar="N", help="Finished trials the study should hold.")
    ] = 20,
    timeout: Annotated[
        float | None, typer.Option("--timeout", metavar="S", help="Stop starting trials after S s.")
    ] = None,
    study: Annotated[
        str | None,
        typer.Option("--study", metavar="NAME", help="Study name (default: the recipe's name)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an existing study (it must exist).")
    ] = False,
    set_: Overrides = None,
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Search the recipe's tune.space with Optuna; each trial is a run; a killed search resumes.

    Example: layerwise tune recipes/digits_mlp_tune.yaml --trials 20
    """
    from layerwise.recipes_bundled import resolve_recipe
    from layerwise.tune.report import print_tune_result
    from layerwise.tune.search import tune as run_tune

    result = run_tune(
        resolve_recipe(recipe),
        trials=trials,
        timeout=timeout,
        study_name=study,
        resume=resume,
        overrides=set_,
        runs_root=runs_dir,
        echo=_plain,
    )
    print_tune_result(result, out)


@app.command()
def evaluate(
    run: Annotated[str, typer.Argument(help="Run name or folder.")],
    split: Annotated[Split, typer.Option(help="Which data split.")] = Split.test,
    weights: Annotated[Weights, typer.Option(help=WEIGHTS_HELP)] = Weights.last,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            metavar="FILE",
            help="A new labelled file instead of a split: .csv with the training label column, "
            "or .npz with x and y; raw, as the training file (the run's preprocessing is "
            "applied).",
        ),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Evaluate a run's weights on a data split, or on a new labelled file.

    Example: layerwise evaluate digits_cnn --split test
    Example: layerwise evaluate wine_mlp --data new_wines.csv
    """
    from layerwise.experiment import evaluate_run
    from layerwise.predict import evaluate_file

    if data is not None:
        found, metrics, notes = evaluate_file(run, data, weights.value, runs_dir)
        for note in notes:
            err.print(escape(note))
        out.print(f"{found.name} ({weights.value} weights) on {data.name}: {_fmt(metrics)}")
        return
    from layerwise.runs import Run

    if _detection(Run.open(run, root=runs_dir).recipe()):  # mAP on regenerated scenes
        from layerwise.tasks.detection import evaluate_detector_run

        found = Run.open(run, root=runs_dir)
        metrics = evaluate_detector_run(found, split.value, weights.value)
    elif _recommender(Run.open(run, root=runs_dir).recipe()):  # RMSE, leave-one-out ranking
        from layerwise.tasks.recommend import evaluate_recommender_run

        found = Run.open(run, root=runs_dir)
        metrics = evaluate_recommender_run(found, split.value, weights.value)
    else:
        found, metrics = evaluate_run(run, split.value, weights.value, runs_dir)
    out.print(f"{found.name} ({weights.value} weights) on {split.value}: {_fmt(metrics)}")


@app.command()
def predict(
    run: Annotated[str, typer.Argument(help="Run name or folder.")],
    inputs: Annotated[
        list[str],
        typer.Argument(
            help=".npy, .csv, image files or a folder; for a text run, raw texts; for a speech "
            "run, audio files (.wav) or a folder of them."
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write predictions to this CSV."),
    ] = None,
    top_k: Annotated[
        int, typer.Option(metavar="K", help="How many classes to show per input.")
    ] = 3,
    weights: Annotated[Weights, typer.Option(help=WEIGHTS_HELP)] = Weights.last,
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Predict classes with probabilities for new inputs.

    Example: layerwise predict digits_cnn images/ --output predictions.csv
    Example: layerwise predict imdb_fasttext "A gripping, beautifully acted film."
    Example: layerwise predict speech_digits_cnn clip.wav
    """
    from layerwise.predict import predict_run
    from layerwise.runs import Run
    from layerwise.text import TextPipeline

    found = Run.open(run, root=runs_dir)
    if _detection(found.recipe()):  # boxes, not classes: layerwise.tasks.detection
        _predict_boxes(found, inputs, weights.value)
        return
    if TextPipeline.exists(found.path):
        _predict_texts(found.path, inputs, output, top_k, weights.value)
        return
    # New inputs get the run's preprocessing (preprocess.json); notes say how they were read.
    paths = [Path(i) for i in inputs]
    names, rows, notes = predict_run(found.path, paths, weights.value, runs_dir, top_k)
    for note in notes:
        err.print(escape(note))
    if output is not None:
        _write_predictions(output, names, rows)
        out.print(f"wrote {len(rows)} predictions to {output}")
        return
    for name, ranked in zip(names, rows, strict=True):
        best = "  ".join(f"{label} {p:.3f}" for label, p in ranked)
        out.print(f"{escape(name)}: {escape(best)}")


def _predict_boxes(run, inputs: list[str], which: str) -> None:
    """`predict` for a detection run: a line per box (class, score, x0,y0,x1,y1) under each
    image, and where its annotated copy was written."""
    from layerwise.predict import predict_boxes

    for name, boxes, drawn in predict_boxes(run, inputs, which):
        out.print(f"{escape(name)}: {len(boxes)} box(es); annotated: {escape(str(drawn))}")
        for label, score, (x0, y0, x1, y1) in boxes:
            out.print(f"  {label}  {score:.3f}  {x0:.1f},{y0:.1f},{x1:.1f},{y1:.1f}")


def _predict_texts(
    run_path: Path, texts: list[str], output: Path | None, top_k: int, which: str
) -> None:
    """`predict` for a run trained on text: each input is a raw text, read through the run's
    saved pipeline (the training data is not read again)."""
    from layerwise.data.text import TextBundle
    from layerwise.experiment import load_experiment
    from layerwise.predict import top_predictions
    from layerwise.runs import Run
    from layerwise.text import TextPipeline

    run = Run.open(run_path)
    pipeline = TextPipeline.load(run.path)
    experiment = load_experiment(run, which, data=TextBundle.from_pipeline(pipeline))
    logits = pipeline.predict(experiment.trainer, texts)
    rows = top_predictions(logits, experiment.data.class_names, top_k)
    if output is not None:
        _write_predictions(output, list(texts), rows)
        out.print(f"wrote {len(rows)} predictions to {output}")
        return
    for text, ranked, share in zip(texts, rows, pipeline.unknown_share(texts), strict=True):
        best = "  ".join(f"{label} {p:.3f}" for label, p in ranked)
        shown = text if len(text) <= 60 else text[:57] + "..."
        note = "  (none of its words is in the vocabulary)" if share >= 1.0 else ""
        out.print(f"{escape(shown)}: {escape(best)}{note}")


@app.command()
def explain(
    run: Annotated[str, typer.Argument(help="Run name or folder.")],
    source: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="An image, .npy or .csv file for an image run; a raw text for a text run.",
        ),
    ],
    method: Annotated[
        str,
        typer.Option(
            metavar="METHOD",
            help="saliency, integrated_gradients, gradcam or all (text runs: integrated "
            "gradients over the embedding layer).",
        ),
    ] = "all",
    target: Annotated[
        str | None,
        typer.Option(
            metavar="CLASS", help="Class to explain (name or index); default: the predicted one."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="DIR", help="Folder for the PNGs (default RUN/explain/)."
        ),
    ] = None,
    row: Annotated[int, typer.Option(metavar="N", help="Which row of a .npy/.csv file.")] = 0,
    weights: Annotated[Weights, typer.Option(help=WEIGHTS_HELP)] = Weights.last,
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Explain a prediction: saliency, integrated gradients and Grad-CAM maps, first-layer
    filters and feature maps for an image; coloured tokens for a text. Needs captum.

    Example: layerwise explain digits_cnn seven.png
    Example: layerwise explain imdb_fasttext "A gripping, beautifully acted film."
    """
    from layerwise.explain import explain_run

    found = explain_run(run, source, method, target, output, weights.value, runs_dir, row)
    for note in found.notes:
        err.print(escape(note))
    out.print(
        f"{escape(found.input)}: predicted {escape(found.predicted)} ({found.probability:.3f}); "
        f"explained class {escape(found.target)} ({found.target_probability:.3f})"
    )
    for name, check in found.checks.items():
        if name == "integrated_gradients":
            out.print(
                f"integrated gradients: attributions sum to {check['sum_of_attributions']:.4g}, "
                f"score minus baseline score {check['score_difference']:.4g} (completeness gap "
                f"{check['relative_gap']:.2%})"
            )
        elif name == "gradcam" and check.get("stroke_ratio") is not None:
            out.print(
                f"Grad-CAM on {check['layer']}: {check['stroke_ratio']:.2f}x as strong on the "
                "strokes as on the background"
            )
    out.print(f"wrote {len(found.files)} files to {found.folder}")


class ExportFormat(StrEnum):
    onnx = "onnx"
    torchscript = "torchscript"


@app.command("export")
def export_(
    run: Annotated[str, typer.Argument(help="Run name or folder.")],
    format: Annotated[
        ExportFormat, typer.Option("--format", help="onnx (onnxruntime) or torchscript.")
    ] = ExportFormat.onnx,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Model file to write (default <run>/export/model.onnx or model.pt); its "
            "metadata and preprocessing go beside it in FILE.json.",
        ),
    ] = None,
    weights: Annotated[Weights, typer.Option(help=WEIGHTS_HELP)] = Weights.last,
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Export a run's model with a dynamic batch axis, checked against PyTorch on real samples.

    Example: layerwise export wine_mlp --format onnx --out wine.onnx
    """
    from layerwise.serve.export import export_run

    result = export_run(run, format.value, out_file, weights.value, runs_dir)
    out.print(
        f"exported {result.format} to {result.model_path}; max abs difference to PyTorch "
        f"{result.max_abs_diff:.3g} on {result.samples} samples; metadata and preprocessing: "
        f"{result.metadata_path}"
    )


@app.command()
def serve(
    run: Annotated[str, typer.Argument(help="Run name or folder.")],
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="TCP port.")] = 8000,
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    max_batch: Annotated[
        int,
        typer.Option(
            "--max-batch", metavar="N", help="Rows per forward pass at most; 1: no micro-batching."
        ),
    ] = 32,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            "--max-wait-ms", metavar="MS", help="How long a request waits for others to join it."
        ),
    ] = 5.0,
    max_rows: Annotated[
        int, typer.Option("--max-rows", metavar="N", help="Rows per request at most.")
    ] = 1024,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", metavar="MB", help="Request body size at most.")
    ] = 10.0,
    weights: Annotated[Weights, typer.Option(help=WEIGHTS_HELP)] = Weights.last,
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Serve a run's model over HTTP: POST /predict, /predict/file; GET /health, /metadata, /docs.

    Example: layerwise serve wine_mlp --port 8000
    """
    from layerwise.serve.server import serve as run_server

    run_server(
        run,
        host,
        port,
        max_batch,
        max_wait_ms,
        weights.value,
        runs_dir,
        max_rows=max_rows,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        echo=_plain,
    )


@app.command()
def translate(
    run: Annotated[str, typer.Argument(help="Translation run name or folder.")],
    text: Annotated[list[str], typer.Argument(help="Sentence(s) to translate.")],
    beam: Annotated[int, typer.Option(metavar="N", help="Beam width (1: greedy).")] = 4,
    weights: Annotated[Weights, typer.Option(help=WEIGHTS_HELP)] = Weights.best,
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Translate sentences with a trained translation run.

    Example: layerwise translate multi30k_transformer "A man rides a bike."
    """
    from layerwise.runs import Run
    from layerwise.tasks.translation import load_translator

    translator = load_translator(Run.open(run, root=runs_dir), weights.value)
    for line in translator.translate(list(text), beam=beam):
        out.print(escape(line))


Tokens = Annotated[
    int, typer.Option("--length", "--tokens", metavar="N", help="How many tokens to add.")
]
Temperature = Annotated[
    float, typer.Option(metavar="T", help="Sampling temperature (0: always the likeliest).")
]
TopK = Annotated[
    int | None, typer.Option("--top-k", metavar="K", help="Sample among the K likeliest only.")
]


@app.command()
def generate(
    run: Annotated[str, typer.Argument(help="Language-model or GAN run name or folder.")],
    prompt: Annotated[str, typer.Option(help="Text to continue.")] = "\n",
    length: Tokens = 200,
    temperature: Temperature = 0.8,
    top_k: TopK = None,
    seed: Annotated[int | None, typer.Option(help="Seed for a repeatable sample.")] = None,
    n: Annotated[int, typer.Option("--n", metavar="N", help="GAN: images in the grid.")] = 64,
    label: Annotated[
        int | None, typer.Option(metavar="K", help="Conditional GAN: draw only class K.")
    ] = None,
    interpolate: Annotated[
        bool, typer.Option("--interpolate", help="GAN: a latent interpolation strip instead.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="GAN: the PNG to write (default <run>/generated.png)."),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Continue a prompt with a trained language model, or draw digits with a GAN run.

    Example: layerwise generate shakespeare_char --prompt "ROMEO:" --tokens 300 --temperature 0.8
    Example: layerwise generate mnist_cgan --n 64 --label 3
    """
    from layerwise.runs import Run
    from layerwise.tasks import gan_task

    found = Run.open(run, root=runs_dir)
    if gan_task(found.recipe()):
        from layerwise.tasks.gan import generate_grid

        path = generate_grid(found, n, label, output, seed, interpolate)
        out.print(f"wrote {escape(str(path))}")
        return
    from layerwise.tasks.language_model import load_generator

    generator = load_generator(found)
    out.print(escape(generator.generate(prompt, length, temperature, top_k, seed)))


@app.command()
def play(
    run: Annotated[str, typer.Argument(help="RL run name or folder (a dqn or ppo recipe).")],
    episodes: Annotated[int, typer.Option(metavar="N", help="Greedy episodes to play.")] = 5,
    gif: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Also save the first episode as a GIF.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the first episode.")] = None,
    weights: Annotated[Weights, typer.Option(help=WEIGHTS_HELP)] = Weights.best,
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Play a trained RL agent greedily and print each episode's return.

    Example: layerwise play rl_cartpole_dqn --episodes 5 --gif cartpole.gif
    """
    from layerwise.runs import Run
    from layerwise.tasks.rl import play as play_agent

    found = Run.open(run, root=runs_dir)
    returns = play_agent(found, episodes, gif=gif, seed=seed, which=weights.value)
    for number, value in enumerate(returns, start=1):
        out.print(f"episode {number}: return {value:g}")
    out.print(f"mean return {sum(returns) / len(returns):.2f} over {len(returns)} episode(s)")
    if gif is not None:
        out.print(f"wrote {escape(str(gif))}")


@app.command()
def chat(
    run: Annotated[str, typer.Argument(help="Language-model run name or folder.")],
    length: Tokens = 200,
    temperature: Temperature = 0.8,
    top_k: TopK = None,
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Type a line; the language model continues it (an empty line or Ctrl-D ends).

    Example: layerwise chat shakespeare_char
    """
    from layerwise.models.language import check_sampling
    from layerwise.runs import Run
    from layerwise.tasks.language_model import load_generator

    check_sampling(temperature, top_k)  # a bad option is one error and exit 2, not one per line
    generator = load_generator(Run.open(run, root=runs_dir))
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            break
        if not line:
            break
        try:
            out.print(escape(generator.generate(line, length, temperature, top_k)))
        except LayerwiseError as error:  # an unseen character: say so and keep chatting
            err.print(f"error: {escape(error.message)}\n  hint: {escape(error.hint or '')}")


def _detection(recipe) -> bool:
    """Does `recipe` train a detector on scenes (`layerwise.tasks.detection`)?"""
    from layerwise.tasks.detection import detection_task

    return detection_task(recipe)


def _recommender(recipe) -> bool:
    """Does `recipe` train a recommender on rating data (`layerwise.tasks.recommend`)?"""
    from layerwise.tasks.recommend import recommender_task

    return recommender_task(recipe)


@app.command()
def recommend(
    run: Annotated[str, typer.Argument(help="Recommender run name or folder.")],
    user: Annotated[str, typer.Option(metavar="ID", help="The user's id, as in the data.")],
    k: Annotated[int, typer.Option("--k", metavar="K", help="How many items.")] = 10,
    weights: Annotated[Weights, typer.Option(help=WEIGHTS_HELP)] = Weights.best,
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """The top K items a user has not rated yet; a cold-start user gets the most popular ones.

    Example: layerwise recommend recsys_synthetic_mf --user 42 --k 10
    """
    from layerwise.runs import Run
    from layerwise.tasks.recommend import recommend as top_items

    for line in top_items(Run.open(run, root=runs_dir), user, k, weights.value).lines():
        _plain(line)


@app.command()
def enroll(
    run: Annotated[str, typer.Argument(help="Face (or speaker) embedding run name or folder.")],
    person_dir: Annotated[Path, typer.Argument(help="A folder of one person's photos.")],
    name: Annotated[
        str | None, typer.Option(metavar="NAME", help="The person's name (default: the folder's).")
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Store a person's mean embedding in the run's gallery, for `identify`.

    Example: layerwise enroll faces_orl_triplet photos/alice --name alice
    """
    from layerwise.runs import Run
    from layerwise.tasks.faces import enroll as enroll_person

    enrolled, count = enroll_person(Run.open(run, root=runs_dir), person_dir, name)
    _plain(f"enrolled {enrolled} from {count} input(s)")


@app.command()
def identify(
    run: Annotated[str, typer.Argument(help="Face (or speaker) embedding run name or folder.")],
    face: Annotated[Path, typer.Argument(help="A photo (a .pgm, .png, .jpg ...) to identify.")],
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """The nearest enrolled person and the distance, or "unknown" above the run's threshold.

    Example: layerwise identify faces_orl_triplet photo.pgm
    """
    from layerwise.runs import Run
    from layerwise.tasks.faces import identify as nearest_person

    _plain(nearest_person(Run.open(run, root=runs_dir), face).line())


@app.command()
def summary(
    target: Annotated[str, typer.Argument(help="Recipe YAML file or run.")],
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Per-layer output shapes, parameter counts and MACs of a recipe's or a run's model.

    Example: layerwise summary recipes/mnist_cnn.yaml
    """
    from layerwise.experiment import build_data, build_model
    from layerwise.nn import summary as model_summary
    from layerwise.recipe import load_recipe
    from layerwise.runs import Run

    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        recipe = load_recipe(target)
    else:
        found = Run.open(target, root=runs_dir)
        recipe = found.recipe()
    data = build_data(recipe)
    model = build_model(recipe, data)
    out.print(str(model_summary(model, (1, *data.input_shape))))


@runs_app.command("ls")
def runs_ls(runs_dir: RunsDir = Path("runs"), debug: Debug = False) -> None:
    """List runs, newest first: status, model, data, epochs, the headline test figure (acc:
    accuracy) and when each was created (UTC; the year only for older runs).

    Example: layerwise runs ls
    """
    from layerwise.runs import RunIndex, shown_status

    # Sized for an 80-column terminal: no borders, one headline figure, minutes-precise times.
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False, show_edge=False)
    table.add_column("name", overflow="fold", min_width=8)
    table.add_column("status", no_wrap=True)
    table.add_column("model", overflow="ellipsis", max_width=12)
    table.add_column("data", overflow="ellipsis", max_width=13)
    table.add_column("epochs", justify="right", no_wrap=True)
    table.add_column("test", no_wrap=True)
    table.add_column("created", no_wrap=True)
    for row in RunIndex(runs_dir).list():
        final = json.loads(row.get("final_metrics_json") or "{}")
        metrics = {k[5:]: v for k, v in final.items() if k.startswith("test_")}
        table.add_row(
            str(row["name"]),
            shown_status(row),  # `interrupted`: marked running, but its process is gone
            str(row.get("model") or ""),
            str(row.get("dataset") or ""),
            str(row.get("epochs") or ""),
            _headline(metrics),
            _when(str(row.get("created") or "")),
        )
    out.print(table)


def _when(created: str) -> str:
    """`12-03 06:05` for this year's runs, `2025-12-03` for older ones (times are UTC)."""
    from datetime import UTC, datetime

    if created[:4] == str(datetime.now(UTC).year):
        return created[5:16].replace("T", " ")
    return created[:10]


def _headline(metrics: dict[str, float]) -> str:
    """The one test figure people scan for: accuracy, else the first other metric, else loss."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    if not numbers:
        return ""
    others = [k for k in numbers if k != "loss"]
    key = "accuracy" if "accuracy" in numbers else (others[0] if others else "loss")
    return f"{'acc' if key == 'accuracy' else key} {numbers[key]:.4f}"


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="Run name or folder.")],
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Show a run's status, per-epoch numbers and files.

    Example: layerwise runs show digits_cnn
    """
    from layerwise.runs import Run, shown_status

    found = Run.open(run, root=runs_dir)
    info, records = found.info(), found.read_metrics()  # a damaged file: an error, nothing printed
    out.print(f"[bold]{escape(found.name)}[/bold]  {shown_status(info)}  {escape(str(found.path))}")
    table = Table("epoch", "split", "loss", "metrics")
    for record in records:
        skip = ("epoch", "step", "split", "loss", "lr", "time")
        numbers = {k: v for k, v in record.items() if k not in skip}
        loss = record.get("loss")
        table.add_row(
            str(record.get("epoch", "")),
            str(record.get("split", "")),
            f"{loss:.4f}" if isinstance(loss, float) else "",
            _fmt({k: v for k, v in numbers.items() if isinstance(v, float)}),
        )
    out.print(table)
    if found.report_path.exists():
        out.print(f"report: {found.report_path}")


@runs_app.command("compare")
def runs_compare(
    runs: Annotated[list[str], typer.Argument(help="One or more run names or folders.")],
    runs_dir: RunsDir = Path("runs"),
    debug: Debug = False,
) -> None:
    """Compare several runs: their final numbers side by side, and a report (HTML + PNG) with
    every run's curves on the same axes.

    Example: layerwise runs compare mnist_mlp mnist_cnn
    """
    from layerwise.report.compare import compare_runs
    from layerwise.runs import Run

    columns: dict[str, dict[str, float]] = {}
    opened = [Run.open(ref, root=runs_dir) for ref in runs]
    for found in opened:
        latest: dict[str, float] = {}
        for record in found.read_metrics():
            split = record.get("split", "train")
            for key, value in record.items():
                if isinstance(value, float) and key not in ("epoch", "step", "time", "lr"):
                    latest[f"{split}_{key}"] = value
        columns[found.name] = latest
    keys = sorted({key for numbers in columns.values() for key in numbers})
    table = Table("metric", *columns)
    for key in keys:
        table.add_row(key, *(_num(numbers.get(key)) for numbers in columns.values()))
    out.print(table)
    folder = runs_dir / "compare" / "_vs_".join(found.name for found in opened)[:120]
    try:
        page, _ = compare_runs(opened, folder)
    except (LayerwiseError, OSError) as exc:  # a read-only runs folder still gets the table
        err.print(f"[yellow]warning:[/yellow] comparison report not written: {escape(str(exc))}")
    else:
        out.print(f"comparison report: {page}", markup=False)


def _print_outcome(run, test_metrics: dict[str, float]) -> None:
    if "accuracy" in test_metrics:
        out.print(f"test accuracy: {test_metrics['accuracy']:.4f}")
    elif test_metrics:
        out.print(f"test: {_fmt(test_metrics)}")
    out.print(f"run folder: {run.path}")
    out.print(f"report: {run.report_path}")


def _print_doctor_summary(run) -> None:
    """One line per finding after training, and one per finding shown live that no longer
    held at the end; a halted run is an error with the doctor's reason."""
    from layerwise.diagnose.findings import Finding

    diagnosis = run.read_diagnosis() or {}
    findings = diagnosis.get("findings", [])
    info = run.info()
    if info.get("status") == "halted":
        fatal = next((f for f in findings if f["severity"] == "fatal"), None)
        reason = fatal["message"] if fatal else "a fatal problem"
        raise LayerwiseError(
            f"the doctor stopped training: {fatal['code'] if fatal else ''} {reason}".strip(),
            hint=(fatal["remedies"][0] if fatal and fatal["remedies"] else "see the report")
            + f"; the last good checkpoint is in {run.checkpoints_dir}; "
            f"details: layerwise doctor {run.name}",
        )
    resolved = [Finding.from_dict(f) for f in diagnosis.get("resolved", [])]
    if not findings:
        _plain("doctor: no problems found" + (" at the end" if resolved else ""))
    else:
        _plain(f"doctor: {len(findings)} finding(s); details: layerwise doctor {run.name}")
    for finding in findings:
        _plain(f"  [{finding['severity']}] {finding['code']}: {finding['message']}")
    for finding in resolved:
        _plain(f"  [resolved] {finding.resolved_headline()}")


def _print_auto_fix(result) -> None:
    table = Table("round", "tried", "findings", "status", "validation", "kept", "test")
    for r in result.rounds:
        tried = "\n".join(f"{k}={v!r}" for k, v in r.tried.items()) or "(as given)"
        score = r.holdout.get("value")
        table.add_row(
            str(r.round),
            escape(tried),
            escape(", ".join(r.codes) or "none"),
            r.status,
            f"{score:.4f}" if score is not None else "-",
            "yes" if r.kept else "no",
            _fmt(r.test_metrics) or "-",
        )
    out.print(table)
    if result.fixed_recipe:
        out.print(f"fixed recipe (round {result.best_round}): {result.fixed_recipe}")
    else:
        out.print("no change improved on the recipe as given; nothing written")
    out.print(f"log: {result.log_path}")


def _write_predictions(path: Path, names: list[str], rows: list[list[tuple[str, float]]]) -> None:
    import csv

    from layerwise.runs import atomic_write_text

    lines: list[list[str]] = [["input", "prediction", "probability", "top_k"]]
    for name, ranked in zip(names, rows, strict=True):
        top = ";".join(f"{label}:{p:.4f}" for label, p in ranked)
        lines.append([name, ranked[0][0], f"{ranked[0][1]:.6f}", top])
    import io

    buffer = io.StringIO()
    csv.writer(buffer).writerows(lines)
    atomic_write_text(path, buffer.getvalue())


def _plain(line: str) -> None:
    """Print a line as it is (finding messages quote `[...]`, which is not markup)."""
    out.print(line, markup=False)


def _fmt(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, int | float))


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def main() -> None:
    """Console entry point: people get one message and a hint; --debug gets the traceback."""
    debug = "--debug" in sys.argv
    sys.stdout = PipeSafeStream(sys.stdout)  # `layerwise train … | head` keeps training
    if not debug:
        warnings.showwarning = _show_warning
    try:
        app()
    except LayerwiseError as exc:
        if debug:
            raise
        # Messages quote shapes, paths and types ("x.npy[0]", "Sequence[int]"): print them as is.
        err.print(f"[bold red]error:[/bold red] {escape(exc.message)}")
        if exc.hint:
            err.print(f"  hint: {escape(exc.hint)}")
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; continue with: layerwise train --resume <run>")
        sys.exit(130)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings read like the errors: one line, no source location (--debug shows it)."""
    err.print(f"[yellow]warning:[/yellow] {escape(str(message))}")


if __name__ == "__main__":
    main()
