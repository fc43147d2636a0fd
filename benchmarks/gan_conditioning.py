"""How the label enters a conditional GAN: one epoch of full MNIST per layout, scored every
235 steps by a judge CNN (per-class accuracy on the requested digit, Fréchet distance, and the
spread of one class's samples: whether the generator still uses its noise).

    .venv/bin/python benchmarks/gan_conditioning.py --variant cbn_proj_ac --judge-from RUN

Variants (width 16, latent 64, the `mnist_cgan` recipe's optimizers, smoothing and TTUR):

- `concat_planes_proj_ac` (the cGAN before): the generator reads a label embedding next to the
  noise; the discriminator sees one-hot label planes on the pixels, a projection and an
  auxiliary classifier (AC-GAN); `--no-sn` drops spectral normalisation.
- `cbn_proj`, `cbn_proj_ac`, `cbn_planes_proj_ac`: conditional batch norm in the generator (a
  scale and shift per class on each hidden map; the noise alone enters the linear layer) with a
  projection discriminator, with/without the auxiliary classifier and the label planes.

Batches are drawn at random (with replacement) through `GANTrainer.fit`, and the generator is
scored in eval mode on 5,000 samples (500 per class) from fixed noise. The within-class spread
`div0` is the mean per-pixel standard deviation of the 500 generated zeros (real zeros: 0.34).
Results are appended to benchmarks/results/gan_conditioning.json with the load per row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results" / "gan_conditioning.json"

from layerwise.recipe import load_recipe  # noqa: E402
from layerwise.tasks.gan import GANTrainer, load_images  # noqa: E402
from layerwise.tasks.gan_eval import Judge, score_samples  # noqa: E402

VARIANTS = {
    "concat_planes_proj_ac": ("concat", {"planes", "proj", "ac"}),
    "cbn_proj": ("cbn", {"proj"}),
    "cbn_proj_ac": ("cbn", {"proj", "ac"}),
    "cbn_planes_proj_ac": ("cbn", {"planes", "proj", "ac"}),
}
LATENT, CLASSES = 64, 10


class ClassNorm(nn.Module):
    """Batch norm without its own affine; scale and shift looked up per class."""

    def __init__(self, channels: int, maps: bool) -> None:
        super().__init__()
        self.norm = (nn.BatchNorm2d if maps else nn.BatchNorm1d)(channels, affine=False)
        self.scale, self.shift = nn.Embedding(CLASSES, channels), nn.Embedding(CLASSES, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)
        self.maps = maps

    def forward(self, h, y):
        scale, shift = self.scale(y), self.shift(y)
        if self.maps:
            scale, shift = scale[:, :, None, None], shift[:, :, None, None]
        return scale * self.norm(h) + shift


class Generator(nn.Module):
    def __init__(self, width: int, layout: str) -> None:
        super().__init__()
        self.layout, self.width = layout, width
        self.embed = nn.Embedding(
            CLASSES, LATENT
        )  # read by `concat` only (kept in both: same init)
        inputs = 2 * LATENT if layout == "concat" else LATENT
        self.linear = nn.Linear(inputs, 2 * width * 49, bias=False)
        self.up1 = nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False)
        self.up2 = nn.ConvTranspose2d(width, 1, 4, 2, 1)
        if layout == "concat":
            self.norm1, self.norm2 = nn.BatchNorm1d(2 * width * 49), nn.BatchNorm2d(width)
        else:
            self.norm1, self.norm2 = ClassNorm(2 * width * 49, False), ClassNorm(width, True)

    def forward(self, z, y):
        if self.layout == "concat":
            h = F.relu(self.norm1(self.linear(torch.cat([z, self.embed(y)], 1))))
            h = F.relu(self.norm2(self.up1(h.view(len(z), 2 * self.width, 7, 7))))
        else:
            h = F.relu(self.norm1(self.linear(z), y))
            h = F.relu(self.norm2(self.up1(h.view(len(z), 2 * self.width, 7, 7)), y))
        return torch.tanh(self.up2(h))


class Discriminator(nn.Module):
    def __init__(self, width: int, parts: set[str], sn: bool) -> None:
        super().__init__()
        wrap = spectral_norm if sn else (lambda module: module)
        self.parts = parts
        inputs = 1 + (CLASSES if "planes" in parts else 0)
        self.features = nn.Sequential(
            wrap(nn.Conv2d(inputs, width, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            wrap(nn.Conv2d(width, 2 * width, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        features = 2 * width * 49
        self.head = wrap(nn.Linear(features, 1))
        self.embed = wrap(nn.Embedding(CLASSES, features)) if "proj" in parts else None
        self.classify = wrap(nn.Linear(features, CLASSES)) if "ac" in parts else None

    def forward(self, x, y, classes=False):
        if "planes" in self.parts:
            planes = F.one_hot(y, CLASSES).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, planes.expand(-1, -1, 28, 28)], 1)
        h = self.features(x)
        logit = self.head(h)
        if self.embed is not None:
            logit = logit + (self.embed(y) * h).sum(1, keepdim=True)
        return (
            (logit, self.classify(h) if self.classify is not None else None) if classes else logit
        )


class Pair(nn.Module):
    latent_dim, num_classes, conditional = LATENT, CLASSES, True

    def __init__(self, width: int, layout: str, parts: set[str], sn: bool) -> None:
        super().__init__()
        self.generator = Generator(width, layout)
        self.discriminator = Discriminator(width, parts, sn)


class Trainer(GANTrainer):
    def _score(self, images, labels):
        return self.model.discriminator(images, labels, classes=True)


def evaluate(gan: Pair, judge: Judge, real) -> tuple:
    noise = torch.Generator().manual_seed(4321)
    labels = torch.arange(5000) % CLASSES
    gan.generator.eval()
    with torch.no_grad():
        z = torch.randn(5000, LATENT, generator=noise)
        images = torch.cat(
            [gan.generator(z[i : i + 1000], labels[i : i + 1000]) for i in range(0, 5000, 1000)]
        )
    gan.generator.train()
    return score_samples(judge, images, real, labels), float(images[labels == 0].std(0).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--no-sn", action="store_true", help="no spectral normalisation")
    parser.add_argument("--judge-from", type=Path, required=True, help="a GAN run with a judge")
    parser.add_argument("--steps", type=int, default=940)
    parser.add_argument("--every", type=int, default=235)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    layout, parts = VARIANTS[args.variant]
    data = load_images(load_recipe(ROOT / "recipes" / "mnist_cgan.yaml"))
    x, y = data.train
    judge = Judge.load(args.judge_from)
    real, _ = judge.stats(data.test[0][:5000])
    gan = Pair(args.width, layout, parts, not args.no_sn)

    def adam(part: str, lr: float):
        return lambda m: torch.optim.Adam(getattr(m, part).parameters(), lr, betas=(0.5, 0.999))

    optimizers = {
        "discriminator": adam("discriminator", 4e-4),
        "generator": adam("generator", 2e-4),
    }
    trainer = Trainer(
        gan,
        optimizer=optimizers,
        label_smoothing=0.1,
        doctor=False,
        progress=False,
        threads=1,
        seed=args.seed,
    )
    rows, done, start = [], 0, time.time()
    while done < args.steps:
        n = min(args.every, args.steps - done)
        pick = torch.randint(0, len(x), (n * 64,))
        trainer.fit(
            (x[pick], y[pick]), epochs=trainer.state.epoch + 1, batch_size=64, shuffle=False
        )
        done += n
        scores, div0 = evaluate(gan, judge, real)
        last = trainer.history[-1]
        rows.append(
            {
                "step": done,
                "sec": round(time.time() - start),
                "fid": round(scores.fid, 1),
                "acc_min": round(min(scores.class_accuracy), 3),
                "acc": [round(a, 2) for a in scores.class_accuracy],
                "spread": round(scores.spread_ratio, 2),
                "div0": round(div0, 3),
                "d": round(float(last["d_loss"]), 3),
                "g": round(float(last["g_loss"]), 3),
                "load": os.getloadavg()[0],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    key = args.variant + ("_no_sn" if args.no_sn else "")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[key] = {"command": "python " + " ".join(sys.argv), "rows": rows}
    RESULTS.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
