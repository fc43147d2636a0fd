"""Build lazy models, explain shape errors in words, and initialise weights.

`materialize` runs one dry forward so lazy layers get their parameters before an optimizer is
made. When a layer rejects its input, PyTorch says "mat1 and mat2 shapes cannot be multiplied
(32x100 and 64x10)"; we say which layer (by qualified name and type), the shape it got, the shape it
expects and what to check. The layer is found by re-running the failing forward with forward
pre-hooks that remember which layers were entered and not yet left, so the successful path
carries no hooks at all: `check_input` can wrap every forward in `predict` or a training step.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin

from layerwise.errors import DataError, RecipeError, ShapeError, did_you_mean

_TRANSLATABLE = (RuntimeError, ValueError)
_SHAPE_WORDS = re.compile(
    r"shape|size|dimension|channels|features|mat1|\d+D input|kernel|must match|"
    r"scalar type|dtype|should be the same",
    re.IGNORECASE,
)
_DTYPE_WORDS = re.compile(r"scalar type|dtype|type \(\w+\) and \w+ type", re.IGNORECASE)

# Input shape (without batch dim) each model was materialized with, for "the model expects" hints.
_BUILT_WITH: weakref.WeakKeyDictionary[nn.Module, tuple[int, ...]] = weakref.WeakKeyDictionary()


def _as_call(example_input: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A tuple means several positional inputs, a dict keyword inputs, anything else one input."""
    if isinstance(example_input, tuple):
        return example_input, {}
    if isinstance(example_input, dict):
        return (), example_input
    return (example_input,), {}


def call_model(model: nn.Module, inputs: Any) -> Any:
    """`model(inputs)`, where a tuple of inputs is several positional arguments and a dict is
    keyword arguments (`forward(self, tokens, lengths)` takes `{"tokens": ..., "lengths": ...}`)."""
    args, kwargs = _as_call(inputs)
    return model(*args, **kwargs)


def check_arguments(model: nn.Module, inputs: Any) -> None:
    """Refuse inputs that `call_model` could not pass to `model.forward` (a dict key it has no
    argument for, a missing argument), naming both sides, before a TypeError deep in torch."""
    args, kwargs = _as_call(inputs)
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):  # no introspectable signature: let the call speak
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        given = ", ".join(map(str, kwargs)) if kwargs else f"{len(args)} positional input(s)"
        raise DataError(
            f"the inputs ({given}) do not fit {type(model).__name__}.forward{signature}: {exc}",
            hint="name a dict batch's entries after forward's arguments (the target under "
            "'label'), or override Trainer.forward",
        ) from None


def _shape(x: Any) -> str:
    if isinstance(x, Tensor):
        return "(" + ", ".join(str(d) for d in x.shape) + ")"
    return type(x).__name__


def expected_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """The per-sample input shape `model` was declared or built with, when known."""
    declared = getattr(model, "input_shape", None)
    if isinstance(declared, tuple) and all(isinstance(d, int) for d in declared):
        return declared
    try:
        return _BUILT_WITH.get(model)
    except TypeError:  # an unhashable module
        return None


def _is_unbuilt(module: nn.Module) -> bool:
    return isinstance(module, LazyModuleMixin) and module.has_uninitialized_params()


def _expectation(module: nn.Module) -> str | None:
    """What input `module` accepts, in the notation of the error message; None when unknown."""
    if _is_unbuilt(module):
        return None
    if isinstance(module, nn.Linear):
        return f"(..., {module.in_features})"
    if isinstance(module, nn.modules.conv._ConvNd):
        spatial = {1: "L", 2: "H, W", 3: "D, H, W"}[len(module.kernel_size)]
        return f"(N, {module.in_channels}, {spatial})"
    if isinstance(module, nn.BatchNorm1d):
        return f"(N, {module.num_features}) or (N, {module.num_features}, L)"
    if isinstance(module, nn.BatchNorm2d):
        return f"(N, {module.num_features}, H, W)"
    if isinstance(module, nn.BatchNorm3d):
        return f"(N, {module.num_features}, D, H, W)"
    if isinstance(module, nn.LayerNorm):
        return "(..., " + ", ".join(str(d) for d in module.normalized_shape) + ")"
    if isinstance(module, nn.GroupNorm):
        return f"(N, {module.num_channels}, ...)"
    if isinstance(module, nn.Embedding):
        return f"integer indices below {module.num_embeddings}"
    if isinstance(module, nn.RNNBase):
        return (
            f"(N, L, {module.input_size})" if module.batch_first else f"(L, N, {module.input_size})"
        )
    if isinstance(module, nn.MultiheadAttention):
        return f"(..., {module.embed_dim})"
    return None


class _LayerTracker:
    """During one forward, keeps the stack of layers entered and not yet left."""

    def __init__(self, model: nn.Module) -> None:
        self.stack: list[tuple[str, nn.Module, tuple[Any, ...]]] = []
        self._handles = []
        for name, module in model.named_modules():
            # prepend: record the layer before a lazy layer's own shape-inference hook can fail
            self._handles.append(module.register_forward_pre_hook(self._enter(name), prepend=True))
            self._handles.append(module.register_forward_hook(self._leave))

    def _enter(self, name: str):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            self.stack.append((name, module, args))

        return hook

    def _leave(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.stack.pop()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _hint(
    model: nn.Module, name: str, module: nn.Module, layer_args: tuple, model_args: tuple, why: str
) -> str:
    if _DTYPE_WORDS.search(why):
        return "convert inputs to float32 (x.float()); NumPy arrays are float64 by default"
    if "more than 1 value per channel" in why:
        return "batch norm needs at least 2 samples per batch in training: raise the batch size"
    if "kernel size" in why.lower():
        return (
            f"the input of '{name}' is smaller than its kernel: use padding='same', a smaller "
            "kernel or fewer pooling layers, or feed larger inputs"
        )
    known = expected_input_shape(model)
    x = model_args[0] if model_args else None
    if known is not None and isinstance(x, Tensor) and tuple(x.shape[1:]) != known:
        expected = "(N, " + ", ".join(str(d) for d in known) + ")"
        return (
            f"the model expects inputs of shape {expected} but got {_shape(x)}; "
            "check data.input_shape"
        )
    feeds_on_model_input = module is not model and layer_args and layer_args[0] is x
    expects = _expectation(module)
    if feeds_on_model_input and expects:
        return (
            f"the model expects inputs of shape {expects} (its first layer '{name}' reads them); "
            "check data.input_shape"
        )
    if not name:
        return "check data.input_shape and the shapes in the model's forward()"
    return f"check data.input_shape or the layer before '{name}', whose output does not fit"


def explain_shape_error(
    model: nn.Module, example_input: Any, error: BaseException
) -> ShapeError | None:
    """Turn a forward's shape error into a `ShapeError` naming the layer, or None if it is not one.

    Re-runs the forward under `torch.no_grad()` with tracking hooks to find the innermost layer
    that was running when it failed; returns None when the error does not look like a shape or
    dtype problem or does not happen again inside `model` (e.g. it came from the loss).
    """
    if not isinstance(error, _TRANSLATABLE) or not _SHAPE_WORDS.search(str(error)):
        return None
    args, kwargs = _as_call(example_input)
    tracker = _LayerTracker(model)
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    except _TRANSLATABLE as again:
        if not tracker.stack or not _SHAPE_WORDS.search(str(again)):
            return None
        name, module, layer_args = tracker.stack[-1]
        why = str(again).strip().splitlines()[0]
        label = f"layer '{name}'" if name else "the model"
        tensors = [a for a in layer_args if isinstance(a, Tensor)]
        if _DTYPE_WORDS.search(why):
            dtypes = ", ".join(str(t.dtype).removeprefix("torch.") for t in tensors)
            message = f"{label} ({type(module).__name__}) got input of dtype {dtypes or '?'}"
        else:
            got = ", ".join(_shape(a) for a in layer_args) or "no positional input"
            message = f"{label} ({type(module).__name__}) got input of shape {got}"
            expects = _expectation(module)
            if expects:
                message += f" but expects {expects}"
        message += f" [PyTorch: {why}]"
        return ShapeError(message, hint=_hint(model, name, module, layer_args, args, why))
    finally:
        tracker.remove()
    return None


def check_input(model: nn.Module, x: Any) -> Any:
    """Return `model(x)`, raising `ShapeError` that names the layer when a layer rejects `x`.

    Costs nothing when the forward succeeds (no hooks), so `predict`, `evaluate` and training
    steps can call the model through it. A tuple `x` is passed as several positional inputs.
    """
    args, kwargs = _as_call(x)
    try:
        return model(*args, **kwargs)
    except _TRANSLATABLE as exc:
        error = explain_shape_error(model, x, exc)
        if error is None:
            raise
        raise error from exc


def _device_of(model: nn.Module) -> torch.device | None:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return None


def materialize(model: nn.Module, example_input: Any) -> nn.Module:
    """Create the parameters of every lazy layer by running `example_input` through `model` once.

    The dry run is in eval mode under `torch.no_grad()` (so batch-norm statistics do not move and
    a batch of one is fine); each module's train/eval mode is restored afterwards. Tensors are
    moved to the model's device. Returns `model`, now safe to hand to an optimizer.
    """
    device = _device_of(model)
    if device is not None:
        if isinstance(example_input, Tensor):
            example_input = example_input.to(device)
        elif isinstance(example_input, tuple):
            example_input = tuple(
                a.to(device) if isinstance(a, Tensor) else a for a in example_input
            )
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            check_input(model, example_input)
    finally:
        for module, training in modes:
            module.training = training
    if isinstance(example_input, Tensor):
        with contextlib.suppress(TypeError):  # an unhashable module
            _BUILT_WITH[model] = tuple(example_input.shape[1:])
    return model


# ---------------------------------------------------------------------------- weight init

_INIT_SCHEMES = {
    "he": lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"),
    "kaiming": lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"),
    "xavier": nn.init.xavier_uniform_,
    "glorot": nn.init.xavier_uniform_,
    "orthogonal": nn.init.orthogonal_,
    "default": None,
}
_INIT_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def _init_module(module: nn.Module, scheme: str) -> None:
    _INIT_SCHEMES[scheme](module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class _InitWhenBuilt:
    """Forward pre-hook that initialises a lazy layer right after its shape inference, once.

    Loading a state dict into the layer first cancels it: loaded weights must never be
    overwritten by a late initialisation.
    """

    def __init__(self, module: nn.Module, scheme: str) -> None:
        self.scheme = scheme
        self.handle: Any = module.register_forward_pre_hook(self)
        self.load_handle: Any = module.register_load_state_dict_post_hook(self.cancel)

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.handle is not None:
            _init_module(module, self.scheme)
            self.cancel()

    def cancel(self, *_: Any) -> None:
        for handle in (self.handle, self.load_handle):
            if handle is not None:
                handle.remove()
        self.handle = self.load_handle = None


def init_weights(model: nn.Module, scheme: str = "he") -> nn.Module:
    """Initialise every Linear/Conv weight with `scheme` and zero their biases; returns `model`.

    Schemes: `he` (Kaiming normal, fan_in, for ReLU nets), `xavier` (Glorot uniform, for tanh or
    sigmoid nets), `orthogonal`, `default` (keep PyTorch's init). Lazy layers that are not built
    yet are initialised right after their first forward.
    """
    key = str(scheme).strip().lower()
    if key not in _INIT_SCHEMES:
        raise RecipeError(f"unknown weight init '{scheme}'", hint=did_you_mean(key, _INIT_SCHEMES))
    if _INIT_SCHEMES[key] is None:
        return model
    for module in model.modules():
        if not isinstance(module, _INIT_TYPES):
            continue
        if _is_unbuilt(module):
            _InitWhenBuilt(module, key)
        else:
            _init_module(module, key)
    return model
