"""Checkpoint integrity: damage detected, and kills at every instant resumed bit for bit.

Two measurements, for the figures issue 15 asks for:

1. Damage: a digits-CNN checkpoint is damaged in one way at a time (a bit flipped at a random
   offset in the safetensors header, in its tensor data, or in the state file; truncation at a
   random length; a zero-length file; a file swapped in from another run), then read. Counted:
   how often the damage is detected before anything is loaded, and how often loading falls back
   to the older intact checkpoint with the right weights.
2. Kills: a small training run (digits MLP, a checkpoint every 2 steps, 3 epochs) is SIGKILLed at
   every stage of every save (a hook in `layerwise.runs.store` counts the stages, so each instant
   is hit exactly), plus at random times, then resumed; the final weights must equal an
   uninterrupted run's bit for bit.

    .venv/bin/python benchmarks/checkpoint_integrity.py            # all of it
    .venv/bin/python benchmarks/checkpoint_integrity.py --damage-per-kind 50 --random-kills 5
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS_DIR, machine, table, write_json

RECIPE = """
name: k
data: {name: digits, args: {subset: 240}, batch_size: 32, val_fraction: 0.2}
model: {name: mlp, args: {hidden: [16]}}
train: {epochs: 3, checkpoint_every_steps: 2}
doctor: {probes: false, data_checks: false, label_noise: false, live: false}
"""

DAMAGE_KINDS = {  # name: (file, what is done to it)
    "bit flip in weights header": ("weights.safetensors", "flip header"),
    "bit flip in weights data": ("weights.safetensors", "flip data"),
    "bit flip in state": ("state.pt", "flip"),
    "truncated weights": ("weights.safetensors", "truncate"),
    "truncated state": ("state.pt", "truncate"),
    "zero-length weights": ("weights.safetensors", "empty"),
    "zero-length state": ("state.pt", "empty"),
    "zero-length manifest": ("manifest.json", "empty"),
    "weights from another run": ("weights.safetensors", "swap"),
    "state from another run": ("state.pt", "swap"),
    "manifest from another run": ("manifest.json", "swap"),
}


# ------------------------------------------------------------------------------ the child
def child(mode: str, root: str, kill_at: int) -> None:
    """Train (or resume) the small run in this process, SIGKILLing it at the `kill_at`-th stage."""
    from layerwise import experiment
    from layerwise.recipe import parse_recipe
    from layerwise.runs import store

    stages: list[str] = []

    def hook(stage: str) -> None:
        stages.append(stage)
        if len(stages) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    store.STAGE_HOOK = hook
    runs = os.path.join(root, "runs")
    if mode == "train":
        recipe = parse_recipe(RECIPE)
        experiment.train(recipe, runs, progress=False, echo=None)
    else:
        experiment.resume("k", runs, progress=False, echo=None)
    print("STAGES", len(stages), flush=True)


def _spawn(mode: str, root: Path, kill_at: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", mode, str(root), str(kill_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _final(root: Path):
    from layerwise.runs import Run

    return Run(root / "runs" / "k").load_checkpoint("last")[0]


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


# ------------------------------------------------------------------------------ kills
def kills(work: Path, random_kills: int, seed: int, stage_step: int = 1) -> dict:
    reference = work / "reference"
    done = _spawn("train", reference)
    out, err = done.communicate()
    assert done.returncode == 0, err
    total = int(out.split("STAGES")[-1])
    expected = _final(reference)
    rows = []
    instants = [("stage", k) for k in range(1, total + 1, stage_step)]
    rng = random.Random(seed)
    instants += [("random", rng.uniform(0.0, 1.5)) for _ in range(random_kills)]
    for kind, at in instants:
        root = work / f"{kind}-{at}"
        if kind == "stage":
            victim = _spawn("train", root, int(at))
            victim.communicate()
        else:
            victim = _spawn("train", root)
            while victim.poll() is None and not (root / "runs/k/metrics.jsonl").exists():
                time.sleep(0.01)  # training has started: now kill it somewhere in the next 1.5 s
            time.sleep(at)
            victim.send_signal(signal.SIGKILL)
            victim.communicate()
        killed = victim.returncode == -signal.SIGKILL
        resumed = _spawn("resume", root)
        _, err = resumed.communicate()
        ok = resumed.returncode == 0 and _same(_final(root), expected)
        rows.append(
            {
                "instant": f"{kind} {at:.2f}" if kind == "random" else f"stage {at}",
                "killed": killed,
                "resumed_bitwise": ok,
                "error": None if ok else err.strip().splitlines()[-1:],
            }
        )
        print(rows[-1], flush=True)
        shutil.rmtree(root, ignore_errors=True)
    killed_rows = [r for r in rows if r["killed"]]
    return {
        "stages_per_run": total,
        "instants_tried": len(rows),
        "killed": len(killed_rows),
        "resumed_bitwise": sum(r["resumed_bitwise"] for r in killed_rows),
        "rows": rows,
    }


# ------------------------------------------------------------------------------ damage
def _damage(kind: str, folder: Path, other: Path, rng: random.Random) -> None:
    name, how = DAMAGE_KINDS[kind]
    path = folder / name
    data = bytearray(path.read_bytes())
    if how.startswith("flip"):
        header = 8 + struct.unpack("<Q", data[:8])[0] if name.endswith(".safetensors") else 0
        low, high = {"flip header": (0, header), "flip data": (header, len(data))}.get(
            how, (0, len(data))
        )
        data[rng.randrange(low, high)] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: rng.randrange(len(data))]))
    elif how == "empty":
        path.write_bytes(b"")
    else:
        shutil.copy(other / name, path)


def damage(work: Path, per_kind: int, seed: int) -> dict:
    import warnings

    import torch

    from layerwise.errors import CheckpointError
    from layerwise.models import create_model
    from layerwise.runs import CheckpointFallbackWarning, Run

    def weights(s: int) -> dict:
        torch.manual_seed(s)
        model = create_model("cnn", input_shape=(1, 8, 8), num_classes=10)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    state = {"train_state": {"step": 1}, "rng": torch.get_rng_state()}
    other = Run.create(work, "other", "name: o\n")
    other.save_checkpoint(weights(9), state)
    other_folder = other.checkpoints.latest("last")
    run = Run.create(work, "victim", "name: v\n")
    rng = random.Random(seed)
    counts = {}
    for kind in DAMAGE_KINDS:
        detected = fell_back = 0
        for _ in range(per_kind):
            shutil.rmtree(run.checkpoints_dir)
            run.save_checkpoint(weights(1), {**state, "train_state": {"step": 1}})
            run.save_checkpoint(weights(2), {**state, "train_state": {"step": 2}})
            newest = run.checkpoints.latest("last")
            _damage(kind, newest, other_folder, rng)
            try:
                run.checkpoints.verify(newest)
            except CheckpointError:
                detected += 1
            with warnings.catch_warnings(record=True, category=CheckpointFallbackWarning):
                loaded, loaded_state = run.load_checkpoint("last")
            fell_back += loaded_state["train_state"]["step"] == 1 and _same(loaded, weights(1))
        counts[kind] = {"tried": per_kind, "detected": detected, "fell_back_correctly": fell_back}
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--damage-per-kind", type=int, default=200)
    parser.add_argument("--random-kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-kills", action="store_true")
    parser.add_argument("--stage-step", type=int, default=1, help="kill at every Nth save stage")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "checkpoint_integrity.json")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "ROOT", "KILL_AT"))
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        damaged = damage(work / "damage", args.damage_per_kind, args.seed)
        print(
            table(
                ["damage", "tried", "detected", "fell back correctly"],
                [
                    [k, v["tried"], v["detected"], v["fell_back_correctly"]]
                    for k, v in damaged.items()
                ],
            )
        )
        killed = (
            None
            if args.skip_kills
            else kills(work / "kills", args.random_kills, args.seed, args.stage_step)
        )
    if killed:
        print(
            f"\nkills: {killed['instants_tried']} instants ({killed['stages_per_run']} save "
            f"stages per run + {args.random_kills} random), {killed['killed']} killed, "
            f"{killed['resumed_bitwise']} resumed bit for bit"
        )
        for row in killed["rows"]:
            if row["killed"] and not row["resumed_bitwise"]:
                print("  FAILED", row)
    write_json(
        args.json,
        {
            "machine": machine(),
            "seconds": round(time.perf_counter() - started, 1),
            "damage": damaged,
            "kills": killed,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
