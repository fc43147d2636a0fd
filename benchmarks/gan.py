"""GANs on full MNIST: Fréchet distance per epoch against the real-vs-real floor, the conditional
GAN's accuracy per class, training time, and the Trainer's GAN step against a hand-written loop.

    .venv/bin/python benchmarks/gan.py [--epochs 3] [--skip-train] [--runs-dir DIR] [--threads N]

1. Step time: the same DCGAN, data and optimizers, trained for the same batches by
   `GANTrainer.fit` (no doctor, no progress) and by a plain PyTorch loop doing the same two
   optimizer steps; rounds are interleaved so the machine's load falls on both alike, and the
   ratio of median times per step is the figure (target <= 1.05). Both use the same thread count.
2. The judge: a small layerwise CNN trained once on the 60,000 training digits (2 epochs); its
   penultimate features give the Fréchet distance, and it labels generated digits.
3. `recipes/mnist_dcgan.yaml` and `recipes/mnist_cgan.yaml` trained by `train_gan` for
   `--epochs` epochs each, one after the other: per-epoch Fréchet distance on 5,000 generated vs
   5,000 real test digits, the floor (5,000 training vs 5,000 test digits), epoch times, and
   for the cGAN the judge's accuracy on 500 generated digits of each class (target >= 90%) and
   the spread of each class's samples against the real class's (the weakest class per epoch:
   what the doctor's `mode_collapse` reads for a conditional GAN). `--threads N` sets the
   recipes' `train.threads` (default: theirs, `auto`).

The machine is shared: the load average is recorded before and after each part.
Results: benchmarks/results/gan.json (written after each part).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results" / "gan.json"

from layerwise.models import create_model  # noqa: E402
from layerwise.recipe import load_recipe  # noqa: E402
from layerwise.tasks.gan import GANTrainer, load_images, train_gan  # noqa: E402
from layerwise.tasks.gan_eval import Judge, train_judge  # noqa: E402
from layerwise.train import Callback  # noqa: E402


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


OUT = [RESULTS]


def save(results: dict) -> None:
    OUT[0].parent.mkdir(parents=True, exist_ok=True)
    OUT[0].write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


def adam(part: str, lr: float):
    return lambda gan: torch.optim.Adam(getattr(gan, part).parameters(), lr, betas=(0.5, 0.999))


def hand_written_steps(gan, batches, d_opt, g_opt, smoothing: float) -> None:
    """The reference: the same GAN step written directly in PyTorch."""
    for real, _ in batches:
        z = torch.randn(len(real), gan.latent_dim)
        fake = gan.generator(z)
        real_logits = gan.discriminator(real)
        fake_logits = gan.discriminator(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(
            real_logits, torch.full_like(real_logits, 1 - smoothing)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward(inputs=list(gan.discriminator.parameters()))
        d_opt.step()
        fooled = gan.discriminator(fake)
        g_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward(inputs=list(gan.generator.parameters()))
        g_opt.step()
        d_loss.item(), g_loss.item()


def step_time(x: torch.Tensor, y: torch.Tensor, rounds: int, steps: int, batch: int) -> dict:
    """Median seconds per step, Trainer vs hand-written, over interleaved rounds.

    Both run on one thread: on a machine this loaded, two OpenMP threads wait on each other
    and the times measure the scheduler rather than the step."""
    threads = 1
    torch.set_num_threads(threads)
    n = steps * batch
    data = (x[:n], y[:n])
    batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]
    ours, reference = [], []
    for r in range(rounds):
        torch.manual_seed(r)
        gan = create_model("dcgan", latent_dim=64, width=16)
        trainer = GANTrainer(
            gan,
            optimizer={
                "discriminator": adam("discriminator", 4e-4),
                "generator": adam("generator", 2e-4),
            },
            label_smoothing=0.1,
            doctor=False,
            progress=False,
            threads=None,
        )
        start = time.perf_counter()
        trainer.fit(data, epochs=1, batch_size=batch, shuffle=False)
        ours.append((time.perf_counter() - start) / steps)
        torch.set_num_threads(threads)
        torch.manual_seed(r)
        gan = create_model("dcgan", latent_dim=64, width=16)
        d_opt = adam("discriminator", 4e-4)(gan)
        g_opt = adam("generator", 2e-4)(gan)
        start = time.perf_counter()
        hand_written_steps(gan, batches, d_opt, g_opt, 0.1)
        reference.append((time.perf_counter() - start) / steps)
        print(
            f"  round {r}: trainer {ours[-1] * 1e3:.1f} ms/step, hand-written "
            f"{reference[-1] * 1e3:.1f} ms/step",
            flush=True,
        )
    mine, theirs = statistics.median(ours), statistics.median(reference)
    return {
        "threads": threads,
        "rounds": rounds,
        "steps_per_round": steps,
        "batch_size": batch,
        "trainer_ms_per_step": [round(t * 1e3, 2) for t in ours],
        "hand_written_ms_per_step": [round(t * 1e3, 2) for t in reference],
        "median_trainer_ms": round(mine * 1e3, 2),
        "median_hand_written_ms": round(theirs * 1e3, 2),
        "ratio": round(mine / theirs, 3),
        "ratio_per_round": [round(a / b, 3) for a, b in zip(ours, reference, strict=True)],
        "target": "<= 1.05",
    }


class LoadLog(Callback):
    """The machine's load average at the end of every epoch (the machine is shared)."""

    def __init__(self) -> None:
        self.rows: list[list[float]] = []

    def on_epoch_end(self, trainer) -> None:
        self.rows.append(load())


def train_recipe(
    name: str,
    epochs: int,
    runs_dir: Path,
    judge,
    seed: int | None = None,
    threads: int | None = None,
) -> dict:
    overrides = [f"train.epochs={epochs}"] + ([f"seed={seed}"] if seed is not None else [])
    overrides += [f"train.threads={threads}"] if threads is not None else []
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml", overrides)
    before = load()
    start, cpu = time.perf_counter(), time.process_time()
    loads = LoadLog()
    run, metrics = train_gan(
        recipe, runs_dir, judge=judge, progress=False, echo=None, callbacks=[loads]
    )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    epochs_rows = [r for r in rows if r.get("split") == "train"]
    info = json.loads((run.path / "run.json").read_text())
    return {
        "run": str(run.path),
        "seed": recipe.seed,
        "epochs": epochs,
        "seconds_total": round(seconds, 1),
        "cpu_seconds_total": round(cpu_seconds, 1),
        "threads": recipe.train.threads,
        "epoch_seconds": [round(r["time"], 1) for r in epochs_rows],
        "fid_per_epoch": [round(r["fid"], 3) for r in epochs_rows],
        "d_loss_per_epoch": [round(r["d_loss"], 4) for r in epochs_rows],
        "g_loss_per_epoch": [round(r["g_loss"], 4) for r in epochs_rows],
        "spread_ratio_per_epoch": [round(r["gen_spread_ratio"], 3) for r in epochs_rows],
        "class_entropy_ratio_per_epoch": [
            round(r["gen_class_entropy_ratio"], 3) for r in epochs_rows
        ],
        "class_accuracy_per_epoch": [
            round(r["class_accuracy"], 4) for r in epochs_rows if "class_accuracy" in r
        ],
        "class_accuracy_by_class_per_epoch": [
            [round(r[f"class_accuracy_{k}"], 3) for k in range(10)]
            for r in epochs_rows
            if "class_accuracy_0" in r
        ],
        "class_accuracy_min_per_epoch": [
            round(r["class_accuracy_min"], 4) for r in epochs_rows if "class_accuracy_min" in r
        ],
        "within_spread_ratio_min_per_epoch": [
            round(r["gen_within_spread_ratio_min"], 3)
            for r in epochs_rows
            if "gen_within_spread_ratio_min" in r
        ],
        "within_spread_class_per_epoch": [
            r["gen_within_spread_class"] for r in epochs_rows if "gen_within_spread_class" in r
        ],
        "load_per_epoch_end": loads.rows,
        "final": {k: round(v, 4) for k, v in metrics.items()},
        "findings": info.get("findings"),
        "load_before": before,
        "load_after": load(),
    }


def truncation_sweep(run_path: Path, scales: list[float]) -> dict:
    """The finished generator of a cGAN run scored with its latent vectors scaled by each of
    `scales` (the truncation trick: fewer unusual samples, less variety), on the same 5,000
    fixed-noise samples and real test digits as the run's own evaluation (scale 1.0)."""
    from layerwise.runs import Run
    from layerwise.tasks.gan import EVAL_SAMPLES, EVAL_SEED, load_gan
    from layerwise.tasks.gan_eval import score_samples

    run = Run(run_path)
    gan, judge = load_gan(run), Judge.load(run.path)
    real, _ = judge.stats(load_images(run.recipe()).test[0][:EVAL_SAMPLES])
    labels = torch.arange(EVAL_SAMPLES) % gan.num_classes
    noise = torch.randn(
        EVAL_SAMPLES, gan.latent_dim, generator=torch.Generator().manual_seed(EVAL_SEED)
    )
    rows = {}
    for scale in scales:
        images = torch.cat(
            [
                gan.sample(len(part), labels[i : i + len(part)], z=part * scale)
                for i, part in zip(range(0, EVAL_SAMPLES, 1000), noise.split(1000), strict=True)
            ]
        )
        scores = score_samples(judge, images, real, labels)
        rows[str(scale)] = {
            "fid": round(scores.fid, 3),
            "class_accuracy": [round(a, 3) for a in scores.class_accuracy],
            "class_accuracy_min": round(min(scores.class_accuracy), 3),
            "spread_ratio": round(scores.spread_ratio, 3),
            "zeros_pixel_std": round(float(images[labels == 0].std(0).mean()), 3),
        }
        print(f"  scale {scale}: {rows[str(scale)]}", flush=True)
    return {"run": str(run.path), "scales": rows, "load_after": load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-step-time", action="store_true")
    parser.add_argument(
        "--judge-from",
        type=Path,
        default=None,
        help="a GAN run folder whose judge to reuse (else one is trained)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="the recipes' seed (default: theirs)"
    )
    parser.add_argument("--only", choices=["mnist_dcgan", "mnist_cgan"], default=None)
    parser.add_argument("--threads", type=int, default=None, help="the recipes' train.threads")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--runs-dir", type=Path, default=None)
    parser.add_argument(
        "--truncation",
        type=Path,
        nargs="+",
        default=None,
        help="only score these finished cGAN runs with scaled latent vectors (1.0, 0.8, 0.6)",
    )
    args = parser.parse_args()
    OUT[0] = args.out
    if args.truncation:
        save({str(path): truncation_sweep(path, [1.0, 0.8, 0.6]) for path in args.truncation})
        return
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_at_start": load(),
            "note": "shared machine: other engineers' jobs ran at the same time",
        },
        "command": "python benchmarks/gan.py " + " ".join(sys.argv[1:]),
    }
    recipe = load_recipe(ROOT / "recipes" / "mnist_dcgan.yaml")
    data = load_images(recipe)
    x, y = data.train
    if not args.skip_step_time:
        print("step time: Trainer vs hand-written two-optimizer loop", flush=True)
        before = load()
        results["step_time"] = {
            **step_time(x, y, args.rounds, args.steps, 64),
            "load_before": before,
            "load_after": load(),
        }
        print(f"  ratio {results['step_time']['ratio']}", flush=True)
        save(results)
    if args.skip_train:
        return
    print("judge: small CNN on the 60,000 training digits", flush=True)
    start = time.perf_counter()
    if args.judge_from is not None:
        judge = Judge.load(args.judge_from)
    else:
        judge = train_judge(data.train, data.test, epochs=2, seed=0)
    results["judge"] = {
        "test_accuracy": round(judge.test_accuracy, 4),
        "seconds": round(time.perf_counter() - start, 1),
        "load_after": load(),
    }
    print(f"  judge test accuracy {judge.test_accuracy:.4f}", flush=True)
    save(results)
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="gan_bench_"))
    for name in [args.only] if args.only else ["mnist_dcgan", "mnist_cgan"]:
        print(f"{name}: {args.epochs} epochs", flush=True)
        key = name if args.seed is None else f"{name}_seed{args.seed}"
        results[key] = train_recipe(name, args.epochs, runs_dir, judge, args.seed, args.threads)
        print(json.dumps(results[key], indent=1), flush=True)
        save(results)


if __name__ == "__main__":
    main()
