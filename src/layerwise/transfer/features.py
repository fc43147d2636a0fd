"""Feature extraction: run the frozen backbone over the data once, cache the embeddings, and train
only the head on them.

With a frozen backbone, every epoch would recompute the same embeddings; computing them once turns
an epoch of a ResNet into an epoch of a linear layer. The cache is keyed by the backbone's weights
and the input bytes (SHA-256), so a changed backbone or changed data never reads stale features,
and a second fit on the same data reads them from disk (`FeatureExtractor.hits` counts that).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from layerwise.errors import ShapeError
from layerwise.runs.atomic import atomic_write_bytes
from layerwise.transfer.groups import _set_module, find_head


class FeatureExtractor:
    """The embeddings a model feeds its head, computed in eval mode without gradients.

    Args:
        model: a classifier whose last linear layer is its head (shared, not copied: training
            `extractor.head` trains the model's head).
        cache_dir: where embeddings are stored (a run's `features/` folder); None keeps nothing.
        batch_size: rows per forward pass.

    Example:
        >>> extractor = FeatureExtractor(model, cache_dir=run.path / "features")
        >>> Trainer(extractor.head).fit((extractor.transform(x), y))
    """

    def __init__(
        self, model: nn.Module, cache_dir: str | Path | None = None, batch_size: int = 256
    ) -> None:
        self.model = model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.hits = 0  # embeddings read from the cache
        self.misses = 0  # embeddings computed

    @property
    def head(self) -> nn.Linear:
        return find_head(self.model)[1]

    def transform(self, x: Tensor) -> Tensor:
        """Embeddings of `x` (N, feature_dim), from the cache when it holds them."""
        path = self._cache_path(x)
        if path is not None and path.is_file():
            from safetensors.torch import load_file

            self.hits += 1
            return load_file(path)["features"]
        features = self._compute(x)
        self.misses += 1
        if path is not None:
            from safetensors.torch import save

            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, save({"features": features.contiguous()}))
        return features

    def _compute(self, x: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        chunks = []
        with self._headless() as body, torch.no_grad():
            modes = [(m, m.training) for m in body.modules()]
            body.eval()
            try:
                for start in range(0, len(x), self.batch_size):
                    chunks.append(body(x[start : start + self.batch_size].to(device)).float().cpu())
            finally:
                for module, training in modes:
                    module.training = training
        features = torch.cat(chunks) if chunks else torch.empty(0, self.head.weight.shape[1])
        if features.dim() != 2:
            raise ShapeError(
                f"the layers below the head of {type(self.model).__name__} give "
                f"{tuple(features.shape[1:])} per sample, not a flat feature vector",
                hint="feature extraction needs a model whose head takes a flat vector",
            )
        return features

    @contextlib.contextmanager
    def _headless(self) -> Iterator[nn.Module]:
        name, head = find_head(self.model)
        _set_module(self.model, name, nn.Identity())
        try:
            yield self.model
        finally:
            _set_module(self.model, name, head)

    def _cache_path(self, x: Tensor) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256()
        head_ids = {id(p) for p in self.head.parameters()}
        for key, value in self.model.state_dict(keep_vars=True).items():
            if id(value) in head_ids:
                continue
            digest.update(key.encode())
            digest.update(_tensor_bytes(value))
        digest.update(str((tuple(x.shape), x.dtype)).encode())
        digest.update(_tensor_bytes(x))
        return self.cache_dir / f"{digest.hexdigest()[:24]}.safetensors"


class FeatureModel(nn.Module):
    """A pretrained classifier that also accepts its own embeddings: a flat `(N, feature_dim)`
    input goes to the head alone, anything else through the whole model.

    This lets a run train only the head on cached embeddings while its checkpoints, evaluation and
    `predict` keep the whole model. `input_shape` (one raw sample) must differ from
    `(feature_dim,)`, so the two kinds of input cannot be confused.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.input_shape = tuple(input_shape)
        self.feature_dim = find_head(model)[1].weight.shape[1]
        if self.input_shape == (self.feature_dim,):
            raise ShapeError(
                f"feature mode cannot tell raw inputs of shape {self.input_shape} from "
                f"embeddings of the same width",
                hint="use backbone.mode: finetune with freeze: backbone instead",
            )

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2 and x.shape[1] == self.feature_dim:
            return find_head(self.model)[1](x)
        return self.model(x)


def _tensor_bytes(tensor: Tensor) -> bytes:
    t = tensor.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy().tobytes() if t.numel() else b""
