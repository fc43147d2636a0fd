"""Label-noise estimate in the manner of confident learning (Northcutt, Jiang and Chuang, 2021).

A quick model's out-of-fold probabilities say how likely each class is for a training row that
the model never saw. Each class j gets a threshold t_j, the mean probability of class j over the
rows labelled j (how confident the model typically is when the label is right). A row is flagged
when its given label's probability is below that label's threshold while some other class k
reaches its own threshold t_k: the off-diagonal of the confident joint. Per-class thresholds make
the estimate robust to a model that is over- or under-confident on some classes, and out-of-fold
predictions keep it from memorising the very labels it judges.

The quick model is the better (by out-of-fold accuracy) of a logistic regression and a
10-nearest-neighbour vote, on standardised features after PCA to at most 50 components for wide
inputs. Measured with seed 0 (share of rows flagged; in brackets, share of flagged rows that were
truly flipped): healthy digits 0.1-0.2%, MNIST 0.5%, breast cancer 0.2%, wine 0%; with 20% / 30%
of training labels flipped, digits 15% / 28% (96%, 94%), breast cancer 20% / 28% (84%, 73%),
wine 17% / 28% (90%, 86%), MNIST 18% / 27% (93%). It takes 0.1 s on digits and 2.5 s on
20,000 MNIST rows (one core). Where classes truly overlap, the flags cannot tell overlap from
noise: three classes from `make_classification(class_sep=0.5)` with no label flipped read as 23%
(the test of the surest rows below then abstains).

The flags are only as good as the quick model, so the estimate abstains when that model has not
learnt the data. If a share f of the labels were wrong and the model were right on every other
row, its out-of-fold accuracy against the given labels would be 1 - f; a model that learnt
nothing scores the chance accuracy c (the most common label's share). The estimate is kept only
when the model got at least `MIN_PROGRESS` (two thirds) of the way from c to 1 - f: then most of
its disagreements with the labels are the flagged rows, not its own mistakes. Measured (seed 0):
labels flipped on digits, wine and multi-class tables get 0.83-0.95 of the way, 15% flipped on
binary tables 0.72-0.76; honest difficulty stays below: a table whose informative columns were
removed 0.0-0.12 (its "noise" read 50%), classes that overlap 0.5-0.6, a weak signal 0.49-0.52,
a wide sparse table the linear model reads poorly 0.52-0.6. The price: 30% flipped on a binary
table of middling separability reaches only 0.66 and abstains.

Where classes overlap, the flags sit at the class borders, while flipped labels are spread evenly:
the estimate also abstains when the quarter of rows the quick model is surest of disagree with
their labels less than half as often as rows are flagged in all (`CONFIDENT_SHARE`).

Labels with no relation to their inputs at all (shuffled rows, an off-by-one join) leave the
quick model at chance, exactly like inputs that carry no signal. The held-out split tells them
apart when its labels are sound: `held_out` gives it, and when the training labels cannot be
learnt (the quick model got under `MAX_CROSS_PROGRESS` of the way) but the held-out ones can (its
own out-of-fold progress clears `MIN_PROGRESS`), a quick model fitted on the held-out split
judges the training labels (`cross_split_flags`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

FOLDS = 5
MAX_COMPONENTS = 50
MIN_ROWS = 50  # fewer rows than this give too few per fold for a meaningful estimate
MAX_INDICES = 50_000
NEIGHBOURS = 10
MIN_PROGRESS = 2 / 3  # the quick model must get 2/3 of the way from chance to 1 - fraction
# Flipped labels are spread evenly, so the rows the quick model is surest of disagree with their
# labels about as often as all rows are flagged; where classes merely overlap, the flags sit at
# the borders and those surest rows agree. The estimate stands only when the surest quarter's
# disagreement reaches half the flagged share, midway between the two.
CONFIDENT_SHARE = 0.5
# The comparison needs flags enough that, were they all wrong labels, the surest quarter would hold
# 5 of them; fewer can neither be told apart from overlap nor matter (healthy digits: 0.3).
MIN_EXPECTED_SURE = 5
# Labels unrelated to their inputs leave the quick model at chance; one that got a third of the way
# to `MIN_PROGRESS`'s target has learnt from them, so the held-out split is not asked to judge.
MAX_CROSS_PROGRESS = 1 / 3
C = 0.1  # stronger than sklearn's 1.0: with few rows per weight a noisy model otherwise
# memorises flipped labels and flags clean rows (25% flipped in 600 digits read as 38%, not 25%)


def noisy_label_indices(
    x: Any, y: Any, num_classes: int, seed: int = 0, *, max_rows: int | None = None
) -> np.ndarray:
    """Rows of `(x, y)` whose label the confident-learning check flags as probably wrong.

    This is what `data.drop_noisy` drops. `x` is a tensor or array of any shape (N, ...), where 3
    or more dimensions mean images; `y` holds class ids. Every row is examined unless `max_rows`
    caps them (a stratified, seeded subsample). Returns sorted int64 row indices (empty when fewer
    than 50 rows with valid labels or fewer than two classes are present).
    """
    xa, ya = _as_numpy(x), _as_numpy(y).reshape(-1)
    image = xa.ndim >= 3
    with one_thread():
        flagged, _ = confident_flags(
            xa.reshape(len(xa), -1), ya, num_classes, seed, max_rows, image
        )
    return flagged


def estimate_label_noise(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    seed: int = 0,
    max_rows: int | None = 20_000,
    image: bool = False,
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any] | None:
    """The `label_noise` entry of the data profile, or None when there is too little to judge.

    `x` is (N, features) (NaN/inf allowed: they are imputed with column means), `y` (N,) class
    ids; rows whose label is outside 0..num_classes-1 are left out. Returns:
    `estimated_fraction` (flagged / rows_examined), `flagged` (count), `indices` (flagged row
    indices into `x`, sorted, at most 50,000), `cv_accuracy` (out-of-fold accuracy of the quick
    model against the given labels; it drops as noise rises, 0.95 -> 0.62 on digits with 30%
    flipped), `chance_accuracy` (share of the most common label: a `cv_accuracy` near it means
    the quick model learnt little, and then its flags say more about the model than the labels),
    `class_recall` (the quick model's out-of-fold recall per class, None for an empty class),
    `rows_examined`, `method`, `confident_disagreement` (the share of the quarter of rows the
    quick model is surest of whose label it rejects), `progress` (how far the quick model got
    from chance towards the accuracy a model right on every unflagged row would have; see the
    module doc), `abstained`
    (None, or why the estimate is withheld: then `estimated_fraction` is None, nothing is flagged
    and `raw_fraction` holds the share the flags would have said) and `reference` (what the quick
    models reach out of fold, see `simple_reference`; None for images and for inputs wider than
    50 features, which the quick models only see through PCA).
    """
    flagged, info = confident_flags(x, y, num_classes, seed, max_rows, image)
    if info is None:
        return None
    surest, raw = info["confident_disagreement"], info["raw_fraction"]
    expected_in_surest = raw * max(1, info["rows_examined"] // 4)
    if (
        not info["abstained"]
        and expected_in_surest >= MIN_EXPECTED_SURE
        and surest < raw * CONFIDENT_SHARE
    ):
        flagged = np.zeros(0, dtype=np.int64)
        info["abstained"] = (
            f"the flagged rows lie where classes overlap: of the quarter of rows the quick model "
            f"is surest of, {surest:.1%} disagree with their label, against "
            f"{raw:.1%} flagged in all (wrong labels would be spread evenly)"
        )
    if info["abstained"] and info["progress"] < MAX_CROSS_PROGRESS and held_out is not None:
        crossed = cross_split_flags(x, y, *held_out, num_classes, seed, max_rows, image)
        if crossed is not None:
            flagged, info = crossed[0], {**info, **crossed[1], "abstained": None}
    rows = info["rows_examined"]
    out = {
        "estimated_fraction": len(flagged) / rows,
        "flagged": len(flagged),
        "indices": flagged[:MAX_INDICES].tolist(),
        **info,
    }
    if info["abstained"]:
        out.update(estimated_fraction=None, raw_fraction=info["raw_fraction"])
    return out


def confident_flags(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    seed: int,
    max_rows: int | None,
    image: bool,
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """Flagged row indices and facts about the check (None when it could not run)."""
    y = np.asarray(y).reshape(-1).astype(np.int64, copy=False)
    rows = np.flatnonzero((y >= 0) & (y < num_classes))
    if len(rows) < MIN_ROWS or len(np.unique(y[rows])) < 2:
        return np.zeros(0, dtype=np.int64), None
    rows = _subsample(rows, y[rows], max_rows, seed)
    features, description = _features(x[rows], image, seed)
    labels = y[rows]
    every = _out_of_fold_every(features, labels, num_classes, seed)
    model = _best_model(every, labels)
    probs = every[model]

    given = probs[np.arange(len(labels)), labels]
    counts = np.bincount(labels, minlength=num_classes)
    sums = np.bincount(labels, weights=given, minlength=num_classes)
    # A class nobody is labelled with has no threshold and is never suggested.
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    other_confident = probs >= thresholds
    other_confident[np.arange(len(labels)), labels] = False
    flagged = (given < thresholds[labels]) & other_confident.any(axis=1)
    predicted = probs.argmax(axis=1)
    accuracy = float(np.mean(predicted == labels))
    chance = float(counts.max() / len(labels))
    fraction = float(flagged.mean())
    progress = model_progress(accuracy, chance, fraction)
    surest = np.argsort(-probs.max(axis=1), kind="stable")[: max(1, len(labels) // 4)]
    confident_disagreement = float(np.mean(predicted[surest] != labels[surest]))
    abstained = None
    if progress < MIN_PROGRESS:
        abstained = (
            f"the quick model learnt too little to judge labels (accuracy {accuracy:.3f}, chance "
            f"{chance:.3f}: {max(progress, 0.0):.0%} of the way to {1 - fraction:.3f})"
        )
    hits = np.bincount(labels, weights=predicted == labels, minlength=num_classes)
    info = {
        "cv_accuracy": accuracy,
        # Out-of-fold recall per class (None for a class with no rows): whether a simple model
        # finds the rare classes as well as the common ones (read by `class_imbalance`).
        "class_recall": [float(h / c) if c else None for h, c in zip(hits, counts, strict=True)],
        "chance_accuracy": chance,
        "progress": progress,
        "confident_disagreement": confident_disagreement,
        "abstained": abstained,
        "raw_fraction": fraction,
        "rows_examined": len(rows),
        "method": f"confident learning, {FOLDS}-fold {model} on {description}",
        # What a simple model reaches on these inputs: only where it saw them whole.
        "reference": None
        if image or x.shape[1] > MAX_COMPONENTS
        else simple_reference(every, labels, num_classes),
    }
    if abstained:
        return np.zeros(0, dtype=np.int64), info
    return np.sort(rows[flagged]), info


def cross_split_flags(
    x: np.ndarray,
    y: np.ndarray,
    x_held: np.ndarray,
    y_held: np.ndarray,
    num_classes: int,
    seed: int,
    max_rows: int | None,
    image: bool,
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Training rows whose label a quick model fitted on the held-out split rejects, when the
    held-out labels are learnable (its out-of-fold progress clears `MIN_PROGRESS`) and the
    training labels are not; None otherwise.

    A row is flagged when the held-out model's probability for its label is below that class's
    typical probability on held-out rows of the class, while another class reaches its own (the
    confident-learning test, with thresholds from the held-out split's out-of-fold
    probabilities). The estimated fraction is then the share of training rows flagged."""
    y_held = np.asarray(y_held).reshape(-1).astype(np.int64, copy=False)
    _, held_info = confident_flags(x_held, y_held, num_classes, seed, max_rows, image)
    if held_info is None or held_info["abstained"]:
        return None
    y = np.asarray(y).reshape(-1).astype(np.int64, copy=False)
    rows = np.flatnonzero((y >= 0) & (y < num_classes))
    rows = _subsample(rows, y[rows], max_rows, seed)
    held_rows = np.flatnonzero((y_held >= 0) & (y_held < num_classes))
    both, description = _features(np.concatenate([x_held[held_rows], x[rows]]), image, seed)
    fit, judged = both[: len(held_rows)], both[len(held_rows) :]
    labels, held_labels = y[rows], y_held[held_rows]
    held_probs, model = _out_of_fold_probs(fit, held_labels, num_classes, seed)
    counts = np.bincount(held_labels, minlength=num_classes)
    sums = np.bincount(
        held_labels,
        weights=held_probs[np.arange(len(held_labels)), held_labels],
        minlength=num_classes,
    )
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    chosen = _make_model(model).fit(fit, held_labels)
    probs = np.zeros((len(rows), num_classes))
    probs[:, chosen.classes_] = chosen.predict_proba(judged)
    given = probs[np.arange(len(rows)), labels]
    other = probs >= thresholds
    other[np.arange(len(rows)), labels] = False
    flagged = (given < thresholds[labels]) & other.any(axis=1)
    info = {
        "cross_split": True,
        "held_out_cv_accuracy": held_info["cv_accuracy"],
        "held_out_progress": held_info["progress"],
        "cv_accuracy": float(np.mean(probs.argmax(axis=1) == labels)),
        "raw_fraction": float(flagged.mean()),
        "rows_examined": len(rows),
        "method": f"{model} fitted on the held-out split ({description}) judging train labels",
    }
    return np.sort(rows[flagged]), info


def model_progress(accuracy: float, chance: float, fraction: float) -> float:
    """How far (0: chance, 1: there) the quick model's accuracy got from the chance accuracy
    towards 1 - fraction, the accuracy of a model right on every row it does not flag; 0 when
    that target is not above chance (the flags then describe labels with no signal at all)."""
    target = 1.0 - fraction
    if target - chance <= 1e-9:
        return 0.0
    return (accuracy - chance) / (target - chance)


def one_thread() -> threadpool_limits:
    """Run BLAS and OpenMP on one thread: these small products gain little from more, and on a
    busy machine spinning BLAS threads made the digits estimate 30x slower (0.2 s -> 7 s)."""
    return threadpool_limits(limits=1)


def _subsample(rows: np.ndarray, labels: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    if max_rows is None or len(rows) <= max_rows:
        return rows
    try:
        kept, _ = train_test_split(rows, train_size=max_rows, stratify=labels, random_state=seed)
    except ValueError:  # a class with a single row cannot be stratified
        kept = np.random.default_rng(seed).choice(rows, max_rows, replace=False)
    return np.sort(kept)


def _features(x: np.ndarray, image: bool, seed: int) -> tuple[np.ndarray, str]:
    """Impute, standardise and (for wide inputs) reduce with PCA; returns features + a label."""
    x = np.array(x, dtype=np.float32 if x.dtype != np.float64 else np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        counts = finite.sum(axis=0)
        means = np.where(finite, x, 0).sum(axis=0) / np.maximum(counts, 1)
        x = np.where(finite, x, means.astype(x.dtype))
    width = x.shape[1]
    # Pixels share one scale, so standardising each would only blow up near-empty border pixels.
    if not image or width <= MAX_COMPONENTS:
        x = StandardScaler().fit_transform(x)
    description = f"{width} standardised features"
    if width > MAX_COMPONENTS:
        components = min(MAX_COMPONENTS, len(x) - 1)
        x = PCA(components, svd_solver="randomized", random_state=seed).fit_transform(x)
        x = StandardScaler().fit_transform(x)
        description = f"{components} PCA components"
    # float32 halves the memory traffic of the neighbour search, the slowest step.
    return x.astype(np.float32), description


def _out_of_fold_probs(
    x: np.ndarray, y: np.ndarray, num_classes: int, seed: int
) -> tuple[np.ndarray, str]:
    """Out-of-fold probabilities of the better of two quick models, and its name.

    A linear model reads wide inputs (pixels, many columns) well but cannot separate classes laid
    out in rings or an XOR; there it flags half of the clean rows (measured: 51% on sklearn's
    circles). A nearest-neighbour vote handles those shapes. Both see the same folds; the one with
    the higher out-of-fold accuracy against the given labels is kept (ties go to the linear one).
    """
    every = _out_of_fold_every(x, y, num_classes, seed)
    best = _best_model(every, y)
    return every[best], best


def _best_model(probs: dict[str, np.ndarray], y: np.ndarray) -> str:
    accuracy = {name: np.mean(p.argmax(axis=1) == y) for name, p in probs.items()}
    return max(probs, key=lambda name: accuracy[name])


def simple_reference(
    probs: dict[str, np.ndarray], y: np.ndarray, num_classes: int
) -> dict[str, Any]:
    """What the quick models reach out of fold: the best `accuracy` and the lowest `log_loss`
    (nats) of the two, and which model reached each (`accuracy_model`, `log_loss_model`).

    The doctor's curve rules compare a trained classifier with it: a network that does as well
    as a logistic regression or a nearest-neighbour vote on held-out rows is not short of
    capacity, however high its loss (labels drawn from a logistic model leave even the best
    model at its entropy). The vote's probabilities are counts of 10 neighbours, often 0 for the
    true class, so its log-loss is read from add-one smoothed counts, (votes + 1) / (10 + K);
    the regression's probabilities are floored at 1e-7."""
    rows = np.arange(len(y))
    losses = {}
    for name, p in probs.items():
        given = p[rows, y]
        if name != MODELS[0]:
            given = (given * NEIGHBOURS + 1) / (NEIGHBOURS + num_classes)
        losses[name] = float(-np.mean(np.log(np.maximum(given, 1e-7))))
    best_acc = _best_model(probs, y)
    best_loss = min(probs, key=lambda name: losses[name])
    return {
        "accuracy": float(np.mean(probs[best_acc].argmax(axis=1) == y)),
        "accuracy_model": best_acc,
        "log_loss": losses[best_loss],
        "log_loss_model": best_loss,
    }


def _out_of_fold_every(
    x: np.ndarray, y: np.ndarray, num_classes: int, seed: int
) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities of each quick model (`MODELS`), on the same folds."""
    models = {name: (lambda name=name: _make_model(name)) for name in MODELS}
    probs = {name: np.zeros((len(y), num_classes)) for name in models}
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Rare classes (fewer rows than folds) and an unconverged fit still give usable
        # probabilities for an estimate; neither is the user's problem to read about here.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        for fit_rows, held_out in folds.split(x, y):
            classes = np.unique(y[fit_rows])
            for name, make in models.items():
                if len(classes) < 2:
                    probs[name][held_out, classes[0]] = 1.0
                    continue
                model = make().fit(x[fit_rows], y[fit_rows])
                probs[name][np.ix_(held_out, model.classes_)] = model.predict_proba(x[held_out])
    return probs


MODELS = ("logistic regression", f"{NEIGHBOURS}-nearest-neighbour vote")


def _make_model(name: str) -> Any:
    if name == MODELS[0]:
        return LogisticRegression(C=C, max_iter=200)
    return KNeighborsClassifier(NEIGHBOURS)


def _as_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        if a.dtype in (torch.bfloat16, torch.float16):
            a = a.float()
        return a.numpy()
    return np.asarray(a)
