"""Layer groups of a pretrained model: its head, freezing, and a learning rate per group.

Fine-tuning treats a network as a stack of groups, bottom (generic features) to top (the head).
A group is one parameterised top-level child of the model (a ResNet stage, a conv block, a dense
layer); a normalisation layer joins the group before it (a stem's conv + BN is one group), and
the head — the last linear layer — is always a group of its own, the last one. Lower groups get
smaller learning rates and are unfrozen last (Howard & Ruder 2018, ULMFiT).

Freezing sets `requires_grad=False` and puts the group's batch-norm layers in eval mode at every
forward (a frozen feature extractor must not drift with the new data's statistics); unfreezing
undoes both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from layerwise.errors import RecipeError

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_FROZEN_HOOK = "_layerwise_frozen_bn_hook"


@dataclass
class LayerGroup:
    """A named slice of the model: the modules it holds and their parameters."""

    name: str
    modules: list[nn.Module] = field(default_factory=list)

    def parameters(self, exclude: set[int] = frozenset()) -> list[nn.Parameter]:
        seen: set[int] = set(exclude)
        params = []
        for module in self.modules:
            for param in module.parameters():
                if id(param) not in seen:
                    seen.add(id(param))
                    params.append(param)
        return params


def find_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The model's head: its last `nn.Linear` (a lazy one included), as (dotted name, module)."""
    heads = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise RecipeError(
            f"{type(model).__name__} has no linear layer to use as its head",
            hint="transfer needs a classifier whose last layer is nn.Linear",
        )
    return heads[-1]


def replace_head(model: nn.Module, num_classes: int, *, seed: int | None = None) -> nn.Linear:
    """Swap the head for a fresh `nn.Linear(in_features, num_classes)`; returns the new head.

    The new head is created with PyTorch's default initialisation (under `seed` when given).
    """
    import torch

    name, old = find_head(model)
    if isinstance(old.weight, nn.parameter.UninitializedParameter):
        raise RecipeError(
            f"the head '{name}' of {type(model).__name__} is not built yet",
            hint="load the pretrained weights (or run one batch) before replacing the head",
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise RecipeError(f"num_classes must be a positive integer, got {num_classes!r}")
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        head = nn.Linear(old.weight.shape[1], num_classes, bias=old.bias is not None)
    head.to(old.weight.device)
    _set_module(model, name, head)
    return head


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """The model's groups, bottom to top; the head is the last one (named after it)."""
    head_name, head = find_head(model)
    root = model
    while True:  # look through wrappers holding a single parameterised child
        children = [(n, c) for n, c in root.named_children() if _has_params(c)]
        if (
            len(children) == 1
            and children[0][1] is not head
            and len(list(children[0][1].children()))
        ):
            root = children[0][1]
        else:
            break
    groups: list[LayerGroup] = []
    for name, child in root.named_children():
        if child is head or not _has_params(child):
            continue
        if isinstance(child, NORMS) and groups:
            groups[-1].modules.append(child)
        else:
            groups.append(LayerGroup(name, [child]))
    head_ids = {id(p) for p in head.parameters()}
    groups = [g for g in groups if g.parameters(exclude=head_ids)]
    groups.append(LayerGroup(head_name, [head]))
    return groups


def group_names(model: nn.Module) -> list[str]:
    return [group.name for group in layer_groups(model)]


def freeze(model: nn.Module, groups: int | list[str] | str = "backbone") -> list[str]:
    """Freeze the lowest `groups` groups (an int), the named ones, or the whole `backbone`
    (every group but the head); the others are unfrozen. Returns the names now frozen."""
    all_groups = layer_groups(model)
    names = [g.name for g in all_groups]
    chosen = _resolve(groups, names)
    head_ids = {id(p) for p in all_groups[-1].parameters()}
    for group in all_groups:
        frozen = group.name in chosen
        exclude = set() if group is all_groups[-1] else head_ids
        for param in group.parameters(exclude=exclude):
            param.requires_grad_(not frozen)
        for module in group.modules:
            for sub in module.modules():
                if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                    _set_bn_frozen(sub, frozen)
    return [n for n in names if n in chosen]


def unfreeze(model: nn.Module) -> None:
    """Make every parameter trainable again (and batch norm follow train/eval mode)."""
    freeze(model, 0)


def frozen_groups(model: nn.Module) -> list[str]:
    """Names of the groups whose parameters are all frozen."""
    return [
        g.name
        for g in layer_groups(model)
        if g.parameters() and not any(p.requires_grad for p in g.parameters())
    ]


def discriminative_groups(
    model: nn.Module, lr: float, factor: float = 1.0, lrs: list[float] | None = None
) -> list[dict[str, Any]]:
    """Optimizer parameter groups, one per layer group: the head at `lr`, each group below at
    `factor` times the one above (or the explicit `lrs`, bottom to top). Frozen parameters are
    included, so unfreezing them later needs no new optimizer."""
    groups = layer_groups(model)
    if lrs is not None and len(lrs) != len(groups):
        raise RecipeError(
            f"backbone.lrs has {len(lrs)} rates but the model has {len(groups)} layer groups "
            f"({', '.join(g.name for g in groups)})",
            hint="give one rate per group, bottom to top, or use lr_factor",
        )
    head_ids = {id(p) for p in groups[-1].parameters()}
    seen: set[int] = set()
    result = []
    for depth, group in enumerate(reversed(groups)):
        params = group.parameters(exclude=seen | (set() if depth == 0 else head_ids))
        seen |= {id(p) for p in params}
        rate = lrs[len(groups) - 1 - depth] if lrs is not None else lr * factor**depth
        result.append({"params": params, "lr": rate, "name": group.name})
    rest = [p for p in model.parameters() if id(p) not in seen]  # anything outside the groups
    if rest:
        result.append({"params": rest, "lr": lr * factor ** (len(groups) - 1), "name": "other"})
    result.reverse()
    return [group for group in result if group["params"]]


def _resolve(groups: int | list[str] | str, names: list[str]) -> set[str]:
    if groups == "backbone":
        return set(names[:-1])
    if groups in ("none", None):
        return set()
    if groups == "all":
        return set(names)
    if isinstance(groups, bool) or not isinstance(groups, int | list | tuple):
        raise RecipeError(
            f"freeze must be 'backbone', 'all', 'none', a number of groups or a list of names, "
            f"got {groups!r}",
            hint=f"the groups are: {', '.join(names)}",
        )
    if isinstance(groups, int):
        if not 0 <= groups <= len(names):
            raise RecipeError(
                f"cannot freeze {groups} groups: the model has {len(names)} ({', '.join(names)})"
            )
        return set(names[:groups])
    unknown = [g for g in groups if g not in names]
    if unknown:
        raise RecipeError(
            f"unknown layer group(s) {', '.join(map(str, unknown))}",
            hint=f"the groups are: {', '.join(names)}",
        )
    return set(groups)


def _set_bn_frozen(module: nn.Module, frozen: bool) -> None:
    handles = getattr(module, _FROZEN_HOOK, None)
    if frozen and handles is None:
        handles = (
            module.register_forward_pre_hook(_enter_eval),
            module.register_forward_hook(_leave_eval),
        )
        setattr(module, _FROZEN_HOOK, handles)
    elif not frozen and handles is not None:
        for handle in handles:
            handle.remove()
        delattr(module, _FROZEN_HOOK)


def _enter_eval(module: nn.Module, args: Any) -> None:
    """Normalise with the running statistics (and leave them alone) for this forward only."""
    module._layerwise_was_training = module.training
    module.training = False


def _leave_eval(module: nn.Module, args: Any, output: Any) -> None:
    module.training = module.__dict__.pop("_layerwise_was_training", module.training)


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _set_module(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, attr = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
