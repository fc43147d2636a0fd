"""Faces and voices never seen in training: the triplet-loss embedding against eigenfaces and
fisherfaces on the same folds (issue 12 item 2).

Faces (AT&T/ORL, 40 people x 10 photos, downscaled to 46x56, each photo standardised by its own
mean and std): 4 folds, fold k tests people 10k..10k+9 and trains on the other 30. On each fold
- ours: `recipes/faces_orl_triplet.yaml` trained through `layerwise.tasks.faces.train_embedding`
  (the path of `layerwise train`) with `data.args.val_people=0`, so it learns from all 30
  people as the anchors do; the recipe's own 4 validation people only choose the checkpoint and
  the accept threshold of `identify`, which these figures do not use;
- eigenfaces: scikit-learn PCA (`--components`, 50 by default) fitted on the 30 training people's
  photos, the projection used as the embedding;
- fisherfaces: PCA to `--fisher-pca` (40) dimensions, then LDA to c - 1 = 29, fitted on the
  30 people (see `pca_lda` for why not to N - c).
All three embed the 10 unseen people's 100 photos and are scored alike
(`layerwise.train.metric_learning.embedding_scores`): ROC AUC and EER over all 4,950 pairs
(450 genuine), and one-shot identification top-1 (one gallery photo per person, the other 9 as
probes, averaged over the 10 choices of gallery photo). Distances are Euclidean.

Classic context (`classic`): eigenfaces and fisherfaces fitted on photos 1-5 of all 40 people,
nearest neighbour on photos 6-10 (the published figure is about 90-97%).

Voices (`speakers_<k>`): FSDD's 6 speakers, 3 folds of 2 held-out speakers, trained on the
other 4 (`recipes/speakers_fsdd_triplet.yaml`), EER and AUC over all pairs of the held-out
speakers' 1,000 clips; the anchor is the mean log-mel frame (40 numbers per clip, each band
standardised on the training speakers) compared by Euclidean distance. With 2 unseen speakers
per fold this measures only "same or other of two voices".

Each config writes a part file (load average at start and end, wall and CPU time; the machine
is shared); `--merge` collects them into benchmarks/results/faces.json and prints the tables.

Usage: python benchmarks/faces.py [--configs faces_0,faces_1,faces_2,faces_3,classic,
speakers_0,speakers_1,speakers_2] [--merge]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, RESULTS_DIR, machine, table, write_json

sys.path.insert(0, str(REPO / "src"))

ANCHOR = {
    "classic_identification": "eigenfaces/fisherfaces on ORL, 5 training photos per person: "
    "about 90-97% (issue 12)",
}
SPEAKER_FOLDS = (["george", "jackson"], ["lucas", "nicolas"], ["theo", "yweweler"])


def _timed(work):
    """Run `work()`; its result with wall and CPU seconds and the load around it."""
    load, wall, cpu = os.getloadavg(), time.perf_counter(), time.process_time()
    result = work()
    return result, {
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
        "load_average_start": list(load),
        "load_average_end": list(os.getloadavg()),
    }


def flat(x):
    return x.reshape(len(x), -1).numpy()


def pca_lda(train_x, train_y, components: int, fisher_pca: int):
    """Fitted eigenfaces (PCA to `components`) and fisherfaces (PCA to `fisher_pca`, then LDA to
    c - 1) as embedding functions. Belhumeur et al. reduce to N - c before the LDA; with 5 or 10
    photos per person that leaves the within-class scatter nearly singular and the LDA
    overfits (classic split: 29% top-1 at N - c = 160 against 90% at 40), so a smaller PCA is
    used, capped at N - c."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline

    x, y = flat(train_x), train_y.numpy()
    eigen = PCA(n_components=components, random_state=0).fit(x)
    keep = min(fisher_pca, len(x) - len(set(y.tolist())))
    fisher = make_pipeline(PCA(n_components=keep, random_state=0), LinearDiscriminantAnalysis())
    fisher.fit(x, y)
    return eigen, fisher


def embed_with(model, x):
    import torch

    return torch.from_numpy(model.transform(flat(x))).float()


def run_faces(fold: int, components: int, fisher_pca: int, epochs: int | None) -> dict:
    from layerwise.data import load_dataset
    from layerwise.recipe import load_recipe
    from layerwise.tasks.faces import train_embedding
    from layerwise.train.metric_learning import embedding_scores

    overrides = [f"data.args.fold={fold}", "data.args.val_people=0"]
    overrides += [f"train.epochs={epochs}"] if epochs else []
    recipe = load_recipe(REPO / "recipes" / "faces_orl_triplet.yaml", overrides)
    data = load_dataset(recipe.data.name, **recipe.data.args)
    test_x, test_y = data.test
    with tempfile.TemporaryDirectory() as runs:
        (run, metrics), timing = _timed(lambda: train_embedding(recipe, runs, progress=False))
        epochs_done = run.info().get("epochs_done")
    (eigen, fisher), anchor_timing = _timed(lambda: pca_lda(*data.train, components, fisher_pca))
    result = {
        "config": f"faces_{fold}",
        "test_people": [f"s{p + 1}" for p in data.people["test"]],
        "overrides": overrides,
        "epochs": epochs_done,
        "ours": _scores(metrics),
        "eigenfaces": _scores(embedding_scores(embed_with(eigen, test_x), test_y)),
        "fisherfaces": _scores(embedding_scores(embed_with(fisher, test_x), test_y)),
        "eigenfaces_components": components,
        "fisherfaces_pca": fisher_pca,
        "ours_timing": timing,
        "anchor_timing": anchor_timing,
    }
    return result


def _scores(metrics: dict) -> dict:
    return {k: round(float(metrics[k]), 4) for k in ("auc", "eer", "top1")}


def run_classic(components: int, fisher_pca: int) -> dict:
    """Photos 1-5 of every person fit, 6-10 are identified by nearest neighbour; on the
    standardised photos the CNN sees and on raw pixels in [0, 1]."""
    import torch

    from layerwise.data.faces import orl_images, standardise_faces

    raw, y = orl_images((56, 46))
    shot = torch.arange(len(y)) % 10
    train, test = shot < 5, shot >= 5
    result = {
        "config": "classic",
        "eigenfaces_components": components,
        "fisherfaces_pca": fisher_pca,
    }
    for pixels, x in (("standardised", standardise_faces(raw)), ("raw", raw)):
        eigen, fisher = pca_lda(x[train], y[train], components, fisher_pca)
        for name, model in (("eigenfaces", eigen), ("fisherfaces", fisher)):
            gallery, probes = embed_with(model, x[train]), embed_with(model, x[test])
            nearest = torch.cdist(probes, gallery).argmin(dim=1)
            top1 = float((y[train][nearest] == y[test]).double().mean())
            result[f"{name}_{pixels}"] = round(top1, 4)
    return result


def run_speakers(fold: int, epochs: int | None) -> dict:
    import torch

    from layerwise.data import load_dataset
    from layerwise.recipe import load_recipe
    from layerwise.tasks.faces import train_embedding
    from layerwise.train.metric_learning import verification_scores

    held = SPEAKER_FOLDS[fold]
    overrides = [f"data.args.test_speakers=[{','.join(held)}]"]
    overrides += [f"train.epochs={epochs}"] if epochs else []
    recipe = load_recipe(REPO / "recipes" / "speakers_fsdd_triplet.yaml", overrides)
    with tempfile.TemporaryDirectory() as runs:
        (run, metrics), timing = _timed(lambda: train_embedding(recipe, runs, progress=False))
        epochs_done = run.info().get("epochs_done")
    data = load_dataset(recipe.data.name, **recipe.data.args)
    mean_frame = data.test[0].mean(dim=-1).flatten(1)  # (N, n_mels), bands standardised
    anchor = verification_scores(mean_frame.to(torch.float32), data.test[1])
    return {
        "config": f"speakers_{fold}",
        "test_speakers": held,
        "overrides": overrides,
        "epochs": epochs_done,
        "ours": {k: round(float(metrics[k]), 4) for k in ("auc", "eer")},
        "mean_log_mel": {k: round(float(anchor[k]), 4) for k in ("auc", "eer")},
        "test_clips": len(data.test[1]),
        "ours_timing": timing,
    }


def run_config(name: str, args: argparse.Namespace) -> dict:
    kind, _, number = name.partition("_")
    if kind == "faces":
        work = lambda: run_faces(int(number), args.components, args.fisher_pca, args.epochs)  # noqa: E731
    elif kind == "speakers":
        work = lambda: run_speakers(int(number), args.epochs)  # noqa: E731
    elif name == "classic":
        work = lambda: run_classic(args.components, args.fisher_pca)  # noqa: E731
    else:
        raise SystemExit(f"unknown config {name!r}")
    result, timing = _timed(work)
    result.update(total=timing, machine=machine())
    args.parts.mkdir(parents=True, exist_ok=True)
    write_json(args.parts / f"{name}.json", result)
    print(json.dumps(result), flush=True)
    return result


def merge(parts: Path, output: Path) -> None:
    results = {p.stem: json.loads(p.read_text()) for p in sorted(parts.glob("*.json"))}
    faces = [r for n, r in results.items() if n.startswith("faces_")]
    rows = []
    for method in ("ours", "eigenfaces", "fisherfaces"):
        for r in faces:
            s = r[method]
            rows.append([method, r["config"], s["auc"], s["eer"], s["top1"]])
        if faces:
            mean = {
                k: sum(r[method][k] for r in faces) / len(faces) for k in ("auc", "eer", "top1")
            }
            rows.append([method, f"mean of {len(faces)}", *(round(mean[k], 4) for k in mean)])
    if rows:
        print(table(["method", "fold", "ROC AUC", "EER", "one-shot top-1"], rows))
    timing = [
        [r["config"], r.get("epochs"), r["ours_timing"]["wall_seconds"],
         r["ours_timing"]["cpu_seconds"], round(r["ours_timing"]["load_average_start"][0], 1)]
        for r in results.values() if "ours_timing" in r
    ]  # fmt: skip
    if timing:
        print(table(["config", "epochs", "train wall s", "train cpu s", "load at start"], timing))
    if "classic" in results:
        c = results["classic"]
        print("classic (photos 1-5 of all 40 fit, 6-10 identified), top-1: " + ", ".join(
            f"{k} {v:.4f}" for k, v in c.items() if k.startswith(("eigen", "fisher")) and "_" in k
            and not k.endswith(("components", "pca"))))  # fmt: skip
    speakers = [r for n, r in results.items() if n.startswith("speakers_")]
    if speakers:
        rows = [
            [r["config"], "+".join(r["test_speakers"]), r["ours"]["auc"], r["ours"]["eer"],
             r["mean_log_mel"]["auc"], r["mean_log_mel"]["eer"]]
            for r in speakers
        ]  # fmt: skip
        print(table(["fold", "held out", "ours AUC", "ours EER", "mean log-mel AUC",
                     "mean log-mel EER"], rows))  # fmt: skip
    write_json(output, {"anchor": ANCHOR, "results": results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="faces_0,faces_1,faces_2,faces_3,classic")
    parser.add_argument("--components", type=int, default=50, help="eigenfaces' PCA components")
    parser.add_argument("--fisher-pca", type=int, default=40, help="PCA before fisherfaces' LDA")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' epochs")
    parser.add_argument("--parts", type=Path, default=RESULTS_DIR / "faces_parts")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "faces.json")
    parser.add_argument("--merge", action="store_true", help="only collect the part files")
    args = parser.parse_args()
    if not args.merge:
        for name in args.configs.split(","):
            run_config(name, args)
    merge(args.parts, args.output)


if __name__ == "__main__":
    main()
