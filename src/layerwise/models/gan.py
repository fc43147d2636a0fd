"""DCGAN and conditional GAN pairs for 28x28 single-channel images (MNIST).

A pair is one `nn.Module` holding a `generator` and a `discriminator`, so one checkpoint keeps
both and the Trainer's named optimizers each train one of them (see `layerwise.tasks.gan`).
The generator maps a latent vector (and, when conditional, a class label) to an image in
[-1, 1]; the discriminator returns one logit per image. With `num_classes` the pair is a
conditional GAN: the generator reads the label through conditional batch norm (a scale and
shift per class on each hidden map, `ConditionalBatchNorm`), so the latent vector alone feeds
its first layer; the discriminator reads it as a projection (Miyato & Koyama, 2018): its logit
gains the inner product of the label's embedding with the image features, and an auxiliary
classifier head (AC-GAN) names the digit. `spectral_norm` wraps every discriminator weight in
`torch.nn.utils.parametrizations.spectral_norm`, which bounds its Lipschitz constant, the most
common stabiliser of the discriminator. `latent_scale` scales the latent vectors in training and
sampling (1: standard normal); 0 feeds the generator no noise at all, the bug behind one image
per class (`recipes/broken/mode_collapse.yaml`).

Calling the pair, `gan(z, labels)`, returns the discriminator's logits on the generator's images
of `z` (a conditional pair: with its auxiliary class logits): the path the generator's loss runs
through. `gan.sample(n)` gives images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from layerwise.errors import RecipeError
from layerwise.models.registry import MODELS

IMAGE_SHAPE = (1, 28, 28)


class Generator(nn.Module):
    """Latent vector -> 7x7 feature map -> 14x14 -> 28x28 image in [-1, 1] (unconditional)."""

    def __init__(self, latent_dim: int, width: int) -> None:
        super().__init__()
        self.latent_dim, self.width, self.num_classes = latent_dim, width, 0
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * 7 * 7, bias=False),
            nn.BatchNorm1d(2 * width * 7 * 7),
            nn.ReLU(),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.project(z).view(len(z), 2 * self.width, 7, 7)
        return self.upsample(h)


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose scale and shift are looked up per class (de Vries et al., 2017).

    The label sets the statistics of every hidden map, so it reaches all layers of the
    generator, and the latent vector keeps the linear layer to itself: fed side by side with a
    label embedding, the noise was ignored and each class came out as one image.
    """

    def __init__(self, features: int, num_classes: int, maps: bool = False) -> None:
        super().__init__()
        norm = nn.BatchNorm2d if maps else nn.BatchNorm1d  # (N, C, H, W) maps or (N, C) vectors
        self.norm = norm(features, affine=False)
        self.scale = nn.Embedding(num_classes, features)
        self.shift = nn.Embedding(num_classes, features)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, h: Tensor, labels: Tensor) -> Tensor:
        shape = (len(h), -1) + (1,) * (h.dim() - 2)
        return self.scale(labels).view(shape) * self.norm(h) + self.shift(labels).view(shape)


class ConditionalGenerator(nn.Module):
    """The generator's layout with conditional batch norm: the label scales and shifts the
    normalised 7x7 and 14x14 maps (see `ConditionalBatchNorm`)."""

    def __init__(self, latent_dim: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.latent_dim, self.width, self.num_classes = latent_dim, width, num_classes
        self.project = nn.Linear(latent_dim, 2 * width * 7 * 7, bias=False)
        self.norm1 = ConditionalBatchNorm(2 * width * 7 * 7, num_classes)
        self.up1 = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False)
        self.norm2 = ConditionalBatchNorm(width, num_classes, maps=True)
        self.up2 = nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None:
            raise RecipeError(
                "this conditional generator needs a class label for every sample",
                hint="pass labels (0..num_classes-1), e.g. --label 3",
            )
        h = F.relu(self.norm1(self.project(z), labels)).view(len(z), 2 * self.width, 7, 7)
        h = F.relu(self.norm2(self.up1(h), labels))
        return torch.tanh(self.up2(h))


class Discriminator(nn.Module):
    """Image -> 14x14 -> 7x7 features -> one logit (+ the label projection when conditional)."""

    def __init__(self, width: int, num_classes: int = 0, spectral_norm: bool = True) -> None:
        super().__init__()
        wrap = _spectral_norm if spectral_norm else (lambda module: module)
        self.num_classes = num_classes
        self.features = nn.Sequential(
            wrap(nn.Conv2d(1, width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            wrap(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.head = wrap(nn.Linear(2 * width * 7 * 7, 1))
        self.embed = wrap(nn.Embedding(num_classes, 2 * width * 7 * 7)) if num_classes else None
        # An auxiliary classifier (AC-GAN): which digit is this? Trained on real images, it
        # pushes the generator to draw the class it is asked for.
        self.classify = wrap(nn.Linear(2 * width * 7 * 7, num_classes)) if num_classes else None

    def forward(
        self, images: Tensor, labels: Tensor | None = None, classes: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The real/fake logit `(N, 1)`; with `classes`, also the auxiliary class logits."""
        if self.embed is None:
            return self.head(self.features(images))
        if labels is None:
            raise RecipeError(
                "this conditional discriminator needs the class label of every image",
                hint="batches of a conditional GAN are (images, labels)",
            )
        h = self.features(images)
        logits = self.head(h) + (self.embed(labels) * h).sum(dim=1, keepdim=True)
        return (logits, self.classify(h)) if classes else logits


class GANPair(nn.Module):
    """A generator and a discriminator trained against each other (see the module docstring).

    Args:
        latent_dim: size of the latent vector the generator starts from.
        width: channels of the generator's last hidden map and the discriminator's first.
        num_classes: 0 for an unconditional DCGAN, else the classes of a conditional GAN.
        spectral_norm: spectral normalisation on every discriminator weight.
        latent_scale: standard deviation of the latent vectors, in training and sampling.
    """

    def __init__(
        self,
        latent_dim: int = 64,
        width: int = 64,
        num_classes: int = 0,
        spectral_norm: bool = True,
        latent_scale: float = 1.0,
    ) -> None:
        super().__init__()
        for field, value in (("latent_dim", latent_dim), ("width", width)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RecipeError(
                    f"model.args.{field} must be a positive integer, got {value!r}",
                    hint=f"e.g. {field}: 64",
                )
        finite = isinstance(latent_scale, int | float) and math.isfinite(latent_scale)
        if isinstance(latent_scale, bool) or not finite or latent_scale < 0:
            raise RecipeError(
                f"model.args.latent_scale must be a number >= 0, got {latent_scale!r}",
                hint="leave it out: 1.0 draws the latent vectors from a standard normal",
            )
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.latent_scale = float(latent_scale)
        self.generator = (
            ConditionalGenerator(latent_dim, width, num_classes)
            if num_classes
            else Generator(latent_dim, width)
        )
        self.discriminator = Discriminator(width, num_classes, spectral_norm)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """The discriminator on generated images: `(N, 1)` logits, and for a conditional GAN
        `(N, 1 + num_classes)`, the real/fake logit followed by the class logits."""
        images = self.generator(z, labels)
        if not self.conditional:
            return self.discriminator(images)
        return torch.cat(self.discriminator(images, labels, classes=True), dim=1)

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """`n` latent vectors from N(0, latent_scale²) on the model's device."""
        device = next(self.parameters()).device
        return (torch.randn(n, self.latent_dim, generator=generator) * self.latent_scale).to(device)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        z: Tensor | None = None,
    ) -> Tensor:
        """`n` generated images `(n, 1, 28, 28)` in [-1, 1], made in eval mode (batch-norm
        statistics are read, not updated); the training mode is restored afterwards."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            z = self.noise(n, generator) if z is None else z
            if self.conditional and labels is None:
                labels = torch.arange(n) % self.num_classes
            if labels is not None:
                labels = labels.to(z.device)
            return self.generator(z, labels)
        finally:
            self.generator.train(was_training)


@MODELS.register("dcgan")
def dcgan(
    latent_dim: int = 64, width: int = 64, spectral_norm: bool = True, latent_scale: float = 1.0
) -> GANPair:
    """An unconditional DCGAN for 28x28 grey images (see `GANPair`)."""
    return GANPair(latent_dim, width, 0, spectral_norm, latent_scale)


@MODELS.register("cgan")
def cgan(
    num_classes: int = 10,
    latent_dim: int = 64,
    width: int = 64,
    spectral_norm: bool = True,
    latent_scale: float = 1.0,
) -> GANPair:
    """A conditional GAN (conditional-batch-norm generator, projection discriminator with an
    auxiliary classifier; see `GANPair`)."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise RecipeError(
            f"model.args.num_classes must be an integer of at least 2, got {num_classes!r}",
            hint="leave it out to take it from the dataset",
        )
    return GANPair(latent_dim, width, num_classes, spectral_norm, latent_scale)
