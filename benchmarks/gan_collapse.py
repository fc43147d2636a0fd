"""Mode collapse within a class: the spread of one requested class's samples against the real
class's, on saved cGAN checkpoints (healthy runs and the old layout that ignored its noise) and
on the broken recipe whose generator gets its noise scaled to almost nothing.

    .venv/bin/python benchmarks/gan_collapse.py [--checkpoints LABEL=CKPT_DIR ...] [--train]

For each checkpoint folder (`<run>/checkpoints/last-NNNNNN`; its run folder holds the judge):
5,000 samples (500 per class) from the fixed evaluation noise, scored like `GANMonitor` does
against the first 5,000 real test digits: the Fréchet distance, the global feature spread and
class-entropy ratios, the judge's accuracy per class, the within-class feature spread ratio per
class (`gen_within_spread_ratio*`, what the doctor's `mode_collapse` reads), and the same
within-class ratio in pixel space (mean per-pixel standard deviation of one class's samples /
that of the real class's digits), and whether `mode_collapse` fires on that epoch alone.
Generators of the old layout (a label embedding beside the noise, before commit 84102ba) are
recognised by their weights and rebuilt as they were.

`--train` also trains `recipes/broken/mode_collapse.yaml` (the noise scaled to almost nothing)
and records its logs and the doctor's codes.

Results: benchmarks/results/gan_collapse.json, with the load average before and after each row
(the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results" / "gan_collapse.json"

from layerwise.diagnose.rules import RuleContext, run_rules  # noqa: E402
from layerwise.models import create_model  # noqa: E402
from layerwise.models.gan import Generator  # noqa: E402
from layerwise.recipe import load_recipe  # noqa: E402
from layerwise.tasks.gan import EVAL_SAMPLES, EVAL_SEED, load_images  # noqa: E402
from layerwise.tasks.gan_eval import Judge, score_samples  # noqa: E402

# The checkpoints the earlier GAN benchmarks left (benchmarks/results/gan.json names their runs):
# the shipped cGAN on seeds 0 and 1 at epochs 4-10, and the old layout after 1-3 epochs.
DEFAULT = {
    **{
        f"shipped seed {s} epoch {e}": f"/tmp/cgan_me/{leg}/s{s}/mnist_cgan/checkpoints/last-{n}"
        for s in (0, 1)
        for leg, e, n in (
            ("bench", 4, "000008"),
            ("bench", 5, "000010"),
            ("cont", 7, "000014"),
            ("cont", 8, "000016"),
            ("cont10", 9, "000018"),
            ("cont10", 10, "000020"),
        )
    },
    "old layout, planes + projection + AC, epoch 1": (
        "/tmp/ganbench3/mnist_cgan-2/checkpoints/last-000002"
    ),
    "old layout, planes + projection + AC, epoch 2": (
        "/tmp/ganbench3/mnist_cgan-2/checkpoints/last-000003"
    ),
    "old layout, planes + projection, epoch 2": "/tmp/ganbench2/mnist_cgan/checkpoints/last-000004",
    "old layout, projection only, epoch 3": "/tmp/ganbench/mnist_cgan/checkpoints/last-000006",
}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class OldConditionalGenerator(Generator):
    """The cGAN generator before 84102ba: a label embedding concatenated with the noise."""

    def __init__(self, latent_dim: int, width: int, num_classes: int) -> None:
        super().__init__(2 * latent_dim, width)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.embed = nn.Embedding(num_classes, latent_dim)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return super().forward(torch.cat([z, self.embed(labels)], dim=1))


def load_generator(checkpoint: Path):
    """The checkpoint's GAN pair (current layout, or the old generator put in its place)."""
    recipe = load_recipe(checkpoint.parents[1] / "recipe.yaml")
    args = {k: v for k, v in recipe.model.args.items() if k != "num_classes"}
    gan = create_model("cgan", **args)
    weights = {
        k.removeprefix("generator."): v
        for k, v in load_file(str(checkpoint / "weights.safetensors")).items()
        if k.startswith("generator.")
    }
    old = "embed.weight" in weights
    if old:
        gan.generator = OldConditionalGenerator(gan.latent_dim, args.get("width", 64), 10)
    gan.generator.load_state_dict(weights)
    state = torch.load(checkpoint / "state.pt", weights_only=False)
    return gan.eval(), old, state["train_state"]["epoch"]


def samples(gan) -> tuple[Tensor, Tensor]:
    """What `evaluate_generator` draws: 500 per class from the fixed evaluation noise."""
    generator = torch.Generator().manual_seed(EVAL_SEED)
    labels = torch.arange(EVAL_SAMPLES) % gan.num_classes
    images = torch.cat([gan.sample(len(c), c, generator=generator) for c in labels.split(1000)])
    return images, labels


def pixel_spread(images: Tensor, labels: Tensor, k: int) -> float:
    return float(images[labels == k].std(0).mean())


def score(label: str, checkpoint: Path, real_images: Tensor, real_labels: Tensor) -> dict:
    before = load()
    gan, old, epoch = load_generator(checkpoint)
    judge = Judge.load(checkpoint.parents[1])
    real, _ = judge.stats(real_images, real_labels)
    images, labels = samples(gan)
    scores = score_samples(judge, images, real, labels)
    logs = {"epoch": epoch, **scores.logs()}
    pixel = [
        pixel_spread(images, labels, k) / pixel_spread(real_images, real_labels, k)
        for k in range(10)
    ]
    ctx = RuleContext(history=[logs], recipe=None, task="gan", num_classes=10, final=True)
    codes = [f.code for f in run_rules(ctx)]
    row = {
        "checkpoint": str(checkpoint),
        "old_layout": old,
        "epoch": epoch,
        "fid": round(scores.fid, 2),
        "spread_ratio": round(scores.spread_ratio, 3),
        "class_entropy_ratio": round(scores.class_entropy_ratio, 3),
        "class_accuracy": [round(a, 3) for a in scores.class_accuracy],
        "within_spread_ratio": [round(r, 3) for r in scores.within_spread_ratio],
        "within_spread_ratio_min": round(logs["gen_within_spread_ratio_min"], 3),
        "pixel_within_ratio": [round(r, 3) for r in pixel],
        "pixel_within_ratio_min": round(min(pixel), 3),
        "doctor_on_this_epoch": codes,
        "load_before": before,
        "load_after": load(),
    }
    print(
        f"{label:48} fid {row['fid']:7.1f}  spread {row['spread_ratio']:.2f}  "
        f"entropy {row['class_entropy_ratio']:.2f}  acc min {min(row['class_accuracy']):.2f}  "
        f"within min {row['within_spread_ratio_min']:.3f} "
        f"(pixels {row['pixel_within_ratio_min']:.3f})"
        f"  doctor {codes or '-'}",
        flush=True,
    )
    return row


def train_recipes(work: Path) -> dict:
    """The broken recipe, with the doctor."""
    from layerwise.experiment import train

    out = {}
    for name, path, overrides in (
        ("broken/mode_collapse", ROOT / "recipes/broken/mode_collapse.yaml", []),
    ):
        before, start = load(), time.perf_counter()
        recipe = load_recipe(path, overrides)
        run, _ = train(recipe, work, progress=False, echo=None)
        rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
        epochs = [r for r in rows if r.get("split") == "train"]
        diagnosis = run.read_diagnosis()
        keep = ("fid", "gen_spread_ratio", "gen_class_entropy_ratio", "class_accuracy_min")
        keep += (
            "gen_within_spread_ratio_min",
            "gen_within_spread_class",
            "gen_within_spread_ratio",
        )
        out[name] = {
            "overrides": overrides,
            "per_epoch": [{k: r.get(k) for k in ("epoch", *keep)} for r in epochs],
            "codes": diagnosis["codes"],
            "mode_collapse_by": [
                f["evidence"].get("by")
                for f in diagnosis.get("findings", [])
                if f["code"] == "mode_collapse"
            ],
            "seconds": round(time.perf_counter() - start, 1),
            "load_before": before,
            "load_after": load(),
        }
        print(name, json.dumps(out[name]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="*", default=None, help="LABEL=DIR pairs")
    parser.add_argument("--train", action="store_true", help="also train the two recipes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = dict(p.split("=", 1) for p in args.checkpoints) if args.checkpoints else DEFAULT
    data = load_images(load_recipe(ROOT / "recipes" / "mnist_cgan.yaml"))
    real_images, real_labels = data.test[0][:EVAL_SAMPLES], data.test[1][:EVAL_SAMPLES]
    results: dict = {
        "command": "python benchmarks/gan_collapse.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "load_at_start": load()},
        "note": "shared machine: other engineers' jobs ran at the same time",
        "checkpoints": {},
    }
    for label, folder in pairs.items():
        if not Path(folder).is_dir():
            print(f"{label}: {folder} is missing, skipped", flush=True)
            continue
        results["checkpoints"][label] = score(label, Path(folder), real_images, real_labels)
    if args.train:
        results["trained"] = train_recipes(Path(tempfile.mkdtemp(prefix="gan_collapse_")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
