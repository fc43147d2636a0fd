"""Export a run's model to ONNX or TorchScript, checked against the PyTorch model it came from.

An export is two files: the model (`model.onnx` or `model.pt`) with a dynamic batch axis, and
beside it `<file>.json` holding what a consumer needs to give it raw inputs and read its outputs:
the run's preprocessing (`preprocess.json`, embedded), the class names, the input name and shape,
and the parity check (the largest absolute difference between the exported model's outputs and
the PyTorch model's on real samples of the run's data, at several batch sizes). An export whose
outputs differ by more than `TOLERANCE` is refused, not written: a model that answers differently
from the one that was validated is worse than no model. `layerwise.serve.exported` reads the pair
back and answers raw inputs as `layerwise predict` does.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from layerwise.errors import LayerwiseError
from layerwise.experiment import load_experiment, run_preprocess
from layerwise.runs import Run, atomic_write_bytes, atomic_write_text

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
KIND = {"onnx": "an ONNX", "torchscript": "a TorchScript"}
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
TOLERANCE = 1e-4  # float32 kernels of two runtimes agree to ~1e-6 on these models
BATCH_SIZES = (1, 7, 64)  # the parity check runs each: the batch axis must really be dynamic


class ExportError(LayerwiseError):
    """A model cannot be exported in the asked format, or its export answers differently."""


@dataclass
class ExportResult:
    """Where the export went and how closely it matches the PyTorch model."""

    model_path: Path
    metadata_path: Path
    format: str
    max_abs_diff: float
    samples: int
    batch_sizes: list[int]


def export_run(
    run_ref: str | Path,
    format: str = "onnx",
    out: str | Path | None = None,
    which: str = "last",
    runs_root: str | Path = "runs",
) -> ExportResult:
    """Export a run's `last` (or `best`) weights, as `layerwise predict` uses them; `out` is
    the model file (default `<run>/export/model.onnx` or `.pt`), its metadata JSON beside it."""
    if format not in FORMATS:
        raise ExportError(
            f"unknown export format '{format}'", hint=f"choose one of: {', '.join(FORMATS)}"
        )
    run = Run.open(run_ref, root=runs_root)
    _refuse_unsupported_runs(run)
    path = Path(out) if out is not None else run.path / "export" / f"model{FORMATS[format]}"
    if path.is_dir():
        raise ExportError(
            f"--out '{path}' is a folder; give the model file to write",
            hint=f"e.g. --out {path / ('model' + FORMATS[format])}",
        )
    if path.suffix != FORMATS[format]:
        raise ExportError(
            f"--out '{path}' does not end in {FORMATS[format]}, the suffix of {KIND[format]} model",
            hint=f"e.g. --out {path.with_suffix(FORMATS[format])}",
        )
    experiment = load_experiment(run, which)
    weights = which if which == "last" or run.has_checkpoint("best") else "last"
    model = experiment.model.eval()
    samples = _samples(experiment.data)
    preprocess = run_preprocess(run)
    with torch.no_grad():
        expected = model(samples)
    exported = export_model(model, samples, format)
    diff = max_abs_diff(exported, samples, expected)
    if not diff <= TOLERANCE:
        raise ExportError(
            f"the {format} export answers differently from the PyTorch model: max abs "
            f"difference {diff:.3g} on {len(samples)} samples (tolerance {TOLERANCE:g})",
            hint="a layer whose output depends on the input values in Python (an if on a "
            "tensor) is frozen by export; try the other format",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    exported.save(path)
    result = ExportResult(
        path, path.with_name(path.name + ".json"), format, diff, len(samples), _sizes(samples)
    )
    metadata = {
        "format": format,
        "model_file": path.name,
        "run": run.name,
        "weights": weights,
        "task": experiment.data.task,
        "class_names": experiment.data.class_names,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_shape": ["batch", *map(int, samples.shape[1:])],
        "parity": {
            "max_abs_diff": diff,
            "tolerance": TOLERANCE,
            "samples": len(samples),
            "batch_sizes": _sizes(samples),
            "against": f"torch {torch.__version__}",
        },
        "preprocess": preprocess.to_dict(),
    }
    atomic_write_text(result.metadata_path, json.dumps(metadata, indent=1))
    return result


def _refuse_unsupported_runs(run: Run) -> None:
    from layerwise.data.audio import AudioFeatures
    from layerwise.text import TextPipeline

    kind = "text" if TextPipeline.exists(run.path) else None
    if kind is None and AudioFeatures.load(run.path) is not None:
        kind = "speech"
    if kind:
        raise ExportError(
            f"run '{run.name}' is a {kind} run; export supports table and image runs so far",
            hint=f"use `layerwise predict {run.name} ...` for {kind} inputs",
        )


def _sizes(samples: Tensor) -> list[int]:
    """The batch sizes the parity check ran: 1, 7 and all the samples (fewer when fewer)."""
    return sorted({1, min(BATCH_SIZES[1], len(samples)), len(samples)})


def _samples(data: Any) -> Tensor:
    """Up to 64 real inputs of the run (test split first), float32, as the model takes them."""
    for split in ("test", "val", "train"):
        part = getattr(data, split, None)
        if part is not None and len(part[0]):
            return part[0][: max(BATCH_SIZES)].float()
    raise ExportError("the run's data has no rows to check the export on", hint="check the recipe")


# ---------------------------------------------------------------------------------- exporters
class Exported:
    """An exported model held in memory: run it on a batch, save it to a file."""

    def __call__(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        raise NotImplementedError


class OnnxExport(Exported):
    def __init__(self, data: bytes) -> None:
        import onnxruntime

        self.data = data
        self.session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])

    def __call__(self, x: Tensor) -> Tensor:
        (out,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        return torch.from_numpy(np.asarray(out))

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, self.data)


class TorchScriptExport(Exported):
    def __init__(self, module: torch.jit.ScriptModule) -> None:
        self.module = module

    def __call__(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.module(x)

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still works
            torch.jit.save(self.module, buffer)
        atomic_write_bytes(path, buffer.getvalue())


def export_model(model: nn.Module, samples: Tensor, format: str) -> Exported:
    """`model` (in eval mode) exported with a dynamic batch axis, traced on `samples`.

    Raises `ExportError` naming the layer that cannot be exported (the deepest submodule whose
    own export fails) and the operator when the exporter names one.
    """
    if format == "onnx":
        _require("onnx", "onnxscript", "onnxruntime")
    with _quiet():
        try:
            if format == "onnx":
                return OnnxExport(_onnx_bytes(model, samples))
            return TorchScriptExport(_trace(model, samples))
        except ExportError:
            raise
        except Exception as exc:  # exporters raise many kinds; all mean "this model cannot go"
            raise _explain(model, samples, format, exc) from exc


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(
            f"ONNX export needs {', '.join(missing)}, which is not installed",
            hint="pip install 'layerwise[serve]'",
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress and, on failure, pages of graph dumps and log lines; the
    error we raise says what matters."""
    logging.disable(logging.CRITICAL)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _onnx_bytes(model: nn.Module, samples: Tensor) -> bytes:
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        model,
        (samples,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        optimize=False,  # onnxruntime optimises the graph itself; this pass costs seconds
        verbose=False,
    )
    buffer = io.BytesIO()
    program.save(buffer)
    return buffer.getvalue()


def _trace(model: nn.Module, samples: Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(model, samples, check_trace=False)
    tracer = [w for w in caught if w.category.__name__ == "TracerWarning"]
    if tracer:  # the trace froze a Python decision on the sample's values or shape
        raise ExportError(
            f"TorchScript tracing froze a value-dependent step: {str(tracer[0].message)[:200]}",
            hint="a layer branches in Python on tensor values or sizes; rewrite it with "
            "tensor operations (torch.where), or try --format onnx",
        )
    return traced


def max_abs_diff(exported: Exported, samples: Tensor, expected: Tensor) -> float:
    """The largest |exported - PyTorch| over the samples, given one at a time (the first few),
    in a batch of 7 and all together (a batch axis frozen at export time fails here)."""
    worst = 0.0
    chunks = [slice(i, i + 1) for i in range(min(3, len(samples)))]
    chunks += [slice(0, BATCH_SIZES[1]), slice(0, len(samples))]
    for chunk in chunks:
        got, want = exported(samples[chunk]), expected[chunk]
        if got.shape != want.shape:
            raise ExportError(
                f"the export gives outputs of shape {tuple(got.shape)} for a batch of "
                f"{len(want)}, PyTorch {tuple(want.shape)}",
                hint="the batch axis was frozen at export time; try the other format",
            )
        worst = max(worst, float((got.float() - want.float()).abs().max()))
    return worst


# ------------------------------------------------------------------------ naming the culprit
def _explain(model: nn.Module, samples: Tensor, format: str, exc: Exception) -> ExportError:
    name, kind = _culprit(model, samples)
    reason = _first_line(exc)
    op = re.search(r"aten[.:]{1,2}[A-Za-z_][\w.]*", str(exc))
    where = f"layer '{name}' ({kind})" if name else f"the model's own forward ({kind})"
    other = "torchscript" if format == "onnx" else "onnx"
    return ExportError(
        f"cannot export the model to {format}: {where} fails"
        + (f" at operator {op.group(0)}" if op else "")
        + f": {reason}",
        hint=f"try --format {other}; or rewrite that layer without Python branches on tensor "
        "values (torch.where) and without operators the format lacks",
    )


def _culprit(model: nn.Module, samples: Tensor) -> tuple[str, str]:
    """The deepest submodule that fails `torch.export` on the input it received in a real
    forward pass, or ('', the model's class) when every submodule exports on its own."""
    inputs: dict[str, tuple[Any, ...]] = {}

    def recorder(name: str):
        def record(module: nn.Module, args: tuple[Any, ...]) -> None:  # None: input unchanged
            inputs.setdefault(name, args)

        return record

    hooks = [
        module.register_forward_pre_hook(recorder(name))
        for name, module in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            model(samples)
    except Exception:
        pass
    finally:
        for hook in hooks:
            hook.remove()
    found, kind = "", type(model).__name__
    parent = model
    prefix = ""
    while True:
        failing = None
        for child_name, child in parent.named_children():
            full = f"{prefix}{child_name}"
            if full in inputs and not _exports(child, inputs[full]):
                failing = (full, child)
                break
        if failing is None:
            return found, kind
        found, parent = failing[0], failing[1]
        kind, prefix = type(parent).__name__, f"{found}."


def _exports(module: nn.Module, args: tuple[Any, ...]) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.export.export(module, args, strict=False)
    except Exception:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    """The first line of the innermost error (the exporter wraps the real reason), without
    terminal colour codes."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def metadata_of(result: ExportResult) -> dict[str, Any]:
    """The result as JSON-ready values (paths as text)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
