"""Scoring generated images with a layerwise classifier (the "judge").

The Fréchet distance (as in FID, but in the feature space of a small MNIST CNN trained by
layerwise rather than Inception's) compares the mean and covariance of the judge's penultimate
features on generated and on real images:

    d² = |mu_g - mu_r|² + tr(S_g + S_r - 2 (S_g S_r)^(1/2))

The trace of the matrix square root is computed from eigenvalues: with `A = S_g^(1/2)`, the
product `A S_r A` is symmetric positive semi-definite and has the same eigenvalues as `S_g S_r`,
so `tr((S_g S_r)^(1/2))` is the sum of the square roots of its eigenvalues (no complex numbers,
no iterative `sqrtm`). The distance between two real samples of the same size is the floor a
generator can reach. The judge also labels generated digits: its class histogram shows mode
collapse, and on a conditional GAN its accuracy per requested class shows whether the labels
are obeyed.

A conditional GAN can also collapse inside each class while every global measure looks well:
a generator that ignores its noise draws one image per requested digit, so ten images spread
over most of the real data's feature space and fill its class histogram evenly. Its samples of
one class, though, barely spread at all. So the spread is also measured within each class (the
requested label for generated images, the true label for real ones): `within_spread_ratio`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

JUDGE_WEIGHTS, JUDGE_INFO = "judge.safetensors", "judge.json"
JUDGE_ARGS = {"variant": "lenet", "channels": [16, 32], "hidden": [64], "dropout": 0.0}
# A class with fewer samples than this (generated or real) gets no within-class spread: from
# a handful the root of the 64 features' variance sum is noise. With 33 per class (a 2,000-digit
# subset's 333 test digits) the weakest class of a healthy cGAN measured 0.85-0.89, as with 500.
MIN_CLASS_SAMPLES = 20


def _spread(features: np.ndarray) -> float:
    """Root of the total variance (the trace of the covariance) of feature rows."""
    return math.sqrt(float(features.var(axis=0, ddof=1).sum())) if len(features) > 1 else 0.0


@dataclass
class FeatureStats:
    """Mean and covariance of a set of feature vectors (float64), their class histogram, and,
    given each vector's class, the spread within each class (NaN: under `MIN_CLASS_SAMPLES`)."""

    mean: np.ndarray
    cov: np.ndarray
    class_share: np.ndarray
    class_spread: np.ndarray | None = None

    @classmethod
    def of(
        cls,
        features: Tensor,
        predictions: Tensor,
        num_classes: int,
        labels: Tensor | None = None,
    ) -> FeatureStats:
        f = features.double().numpy()
        share = np.bincount(predictions.numpy(), minlength=num_classes) / max(len(predictions), 1)
        within = None
        if labels is not None:
            given = labels.cpu().numpy()
            within = np.array(
                [
                    _spread(f[given == k]) if (given == k).sum() >= MIN_CLASS_SAMPLES else np.nan
                    for k in range(num_classes)
                ]
            )
        return cls(f.mean(axis=0), np.cov(f, rowvar=False), share, within)

    @property
    def spread(self) -> float:
        """Root of the total variance: how far apart the samples lie in feature space."""
        return math.sqrt(max(float(np.trace(self.cov)), 0.0))

    @property
    def class_entropy(self) -> float:
        p = self.class_share[self.class_share > 0]
        return float(-(p * np.log(p)).sum())


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """The Fréchet distance between two Gaussians fitted to features (see the module docstring)."""
    root_a = _sqrt_psd(a.cov)
    product = root_a @ b.cov @ root_a
    eigen = np.linalg.eigvalsh((product + product.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eigen, 0.0, None)).sum())
    diff = a.mean - b.mean
    value = float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * trace_sqrt)
    return max(value, 0.0)


class Judge:
    """A trained layerwise MNIST classifier whose penultimate layer gives the features."""

    def __init__(self, model: nn.Module, test_accuracy: float = float("nan")) -> None:
        self.model = model.eval()
        self.test_accuracy = test_accuracy
        self.num_classes = int(model.head.out_features)

    @torch.no_grad()
    def features_and_predictions(self, images: Tensor, batch: int = 1000) -> tuple[Tensor, Tensor]:
        """Penultimate features `(N, F)` and predicted classes `(N,)`, on the CPU."""
        features, predictions = [], []
        device = next(self.model.parameters()).device
        for lo in range(0, len(images), batch):
            h = images[lo : lo + batch].to(device)
            for name, layer in self.model.named_children():
                if name == "head":
                    predictions.append(layer(h).argmax(dim=1).cpu())
                    break
                h = layer(h)
            features.append(h.flatten(1).float().cpu())
        return torch.cat(features), torch.cat(predictions)

    def stats(self, images: Tensor, labels: Tensor | None = None) -> tuple[FeatureStats, Tensor]:
        """Feature statistics of `images` and the judge's predictions; with `labels` (true or
        requested classes) the statistics hold the spread within each class too."""
        features, predictions = self.features_and_predictions(images)
        return FeatureStats.of(features, predictions, self.num_classes, labels), predictions

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(weights, str(folder / JUDGE_WEIGHTS))
        info = {
            "args": JUDGE_ARGS,
            "num_classes": self.num_classes,
            "test_accuracy": self.test_accuracy,
        }
        (folder / JUDGE_INFO).write_text(json.dumps(info, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> Judge:
        from safetensors.torch import load_file

        from layerwise.models import create_model

        info = json.loads((folder / JUDGE_INFO).read_text(encoding="utf-8"))
        model = create_model(
            "cnn", num_classes=info["num_classes"], **info["args"], input_shape=(1, 28, 28)
        )
        model.load_state_dict(load_file(str(folder / JUDGE_WEIGHTS)))
        return cls(model, info.get("test_accuracy", float("nan")))


def train_judge(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    *,
    epochs: int = 2,
    seed: int = 0,
) -> Judge:
    """Train the judge CNN on real images (scaled to [-1, 1], like the generator's output).

    The global RNG state is saved and restored around it, so training a judge first changes
    nothing in the GAN run that follows.
    """
    from layerwise.models import create_model
    from layerwise.train import Trainer
    from layerwise.train.device import rng_state, set_rng_state

    saved = rng_state()
    try:
        num_classes = int(train[1].max()) + 1
        model = create_model("cnn", num_classes=num_classes, **JUDGE_ARGS, input_shape=(1, 28, 28))
        trainer = Trainer(
            model,
            optimizer="adam",
            lr=2e-3,
            seed=seed,
            doctor=False,
            progress=False,
            num_classes=num_classes,
        )
        trainer.fit(train, epochs=epochs, batch_size=128)
        accuracy = trainer.evaluate(test)["accuracy"]
    finally:
        set_rng_state(saved)
    return Judge(model, float(accuracy))


@dataclass
class Scores:
    """What one evaluation of a generator measured (see `score_samples`)."""

    fid: float
    class_entropy_ratio: float
    spread_ratio: float
    class_accuracy: list[float] | None = None  # conditional: accuracy per requested class
    # conditional: spread of each requested class's samples / that of the real class (NaN: not
    # judged, too few samples)
    within_spread_ratio: list[float] | None = None

    def logs(self) -> dict[str, float]:
        out = {
            "fid": self.fid,
            "gen_class_entropy_ratio": self.class_entropy_ratio,
            "gen_spread_ratio": self.spread_ratio,
        }
        if self.class_accuracy is not None:
            out["class_accuracy"] = float(np.mean(self.class_accuracy))
            out["class_accuracy_min"] = float(min(self.class_accuracy))
            out.update({f"class_accuracy_{k}": a for k, a in enumerate(self.class_accuracy)})
        judged = [(r, k) for k, r in enumerate(self.within_spread_ratio or []) if math.isfinite(r)]
        if judged:  # the doctor's mode_collapse reads the weakest class
            lowest, klass = min(judged)
            out["gen_within_spread_ratio"] = float(np.mean([r for r, _ in judged]))
            out["gen_within_spread_ratio_min"] = lowest
            out["gen_within_spread_class"] = klass
        return out


def score_samples(
    judge: Judge, images: Tensor, real: FeatureStats, labels: Tensor | None = None
) -> Scores:
    """Fréchet distance of `images` to the `real` statistics, the class-histogram entropy and the
    feature spread as shares of the real data's, and (given the requested `labels`) the judge's
    accuracy per class and, when `real` has per-class spreads, the spread within each class as
    a share of the real class's."""
    labels = labels.cpu() if labels is not None else None
    stats, predictions = judge.stats(images, labels)
    entropy = real.class_entropy
    per_class = within = None
    if labels is not None:
        per_class = [
            float((predictions[labels == k] == k).float().mean()) if (labels == k).any() else 0.0
            for k in range(judge.num_classes)
        ]
    if stats.class_spread is not None and real.class_spread is not None:
        within = [
            float(g / r) if r > 0 else math.nan  # NaN / r stays NaN: not judged
            for g, r in zip(stats.class_spread, real.class_spread, strict=True)
        ]
    return Scores(
        fid=frechet_distance(stats, real),
        class_entropy_ratio=stats.class_entropy / entropy if entropy > 0 else 1.0,
        spread_ratio=stats.spread / real.spread if real.spread > 0 else 1.0,
        class_accuracy=per_class,
        within_spread_ratio=within,
    )
