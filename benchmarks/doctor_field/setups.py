"""Independent field setups for the doctor: plain-PyTorch models and data, broken and healthy.

Each setup is what a user would write by hand: an `nn.Module`, train/val tensors, an optimizer
factory, a loss, epochs and a batch size. It carries its ground truth, decided from how the setup
was built (never from the doctor's thresholds):

- `root_cause`: the one finding a correct diagnosis must name (None for a healthy setup);
- `truth`: every finding that is factually true of the setup (the root cause included);
- `acceptable`: findings that are defensible consequences or close readings of the defect
  (e.g. `underfitting` when a dead network cannot fit), allowed but not required.

A finding outside `truth | acceptable` is a false finding. `symptom` names how the defect shows in
plain PyTorch terms (tests/test_doctor_field.py checks it with a hand-written training loop):
`healthy`, `nan`, `no_progress`, `diverges`, `oscillates`, `overfits`, `saturates` or `data` (the
defect is in the data itself and checked there).

Finding names are those of docs/doctor.md. Data comes from scikit-learn's bundled sets, MNIST in
/work/shared/data/MNIST/mnist.npz, or is generated here; nothing is downloaded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

MNIST_NPZ = Path("/work/shared/data/MNIST/mnist.npz")

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SYMPTOMS = (
    "healthy",
    "nan",
    "no_progress",
    "diverges",
    "oscillates",
    "overfits",
    "saturates",
    "data",
)


@dataclass
class Setup:
    """One hand-written training setup and what is true of it."""

    name: str
    kind: str  # tabular | image | sequence | regression
    model: nn.Module
    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    optimizer: OptimizerFactory
    loss: nn.Module
    epochs: int
    batch_size: int
    task: str  # classification | regression
    num_classes: int  # for regression: the number of targets
    root_cause: str | None
    truth: frozenset[str] = frozenset()
    acceptable: frozenset[str] = frozenset()
    symptom: str = "healthy"
    note: str = ""
    clean_labels: Tensor | None = field(default=None, repr=False)  # before a label defect

    @property
    def healthy(self) -> bool:
        return self.root_cause is None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


SETUPS: dict[str, Callable[[int], Setup]] = {}


HEALTHY: set[str] = set()


def register(fn: Callable[[int], Setup]) -> Callable[[int], Setup]:
    """Add a broken setup (its root cause is stated in what it builds)."""
    SETUPS[fn.__name__] = fn
    return fn


def healthy(fn: Callable[[int], Setup]) -> Callable[[int], Setup]:
    """Add a healthy setup: no finding is true of it beyond its `acceptable` facts."""
    HEALTHY.add(fn.__name__)
    return register(fn)


def build(name: str, seed: int) -> Setup:
    """The setup `name` for `seed`: data subset, label corruption and weights all follow it."""
    torch.manual_seed(seed)
    setup = SETUPS[name](seed)
    setup.name = name
    return setup


# ------------------------------------------------------------------------------ data helpers
def _f32(x: np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def _i64(y: np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(y, dtype=np.int64))


def _split(x: np.ndarray, y: np.ndarray, seed: int, val: float = 0.3, stratify: bool = True):
    return train_test_split(
        x, y, test_size=val, random_state=seed, stratify=y if stratify else None
    )


def _standardize(x_train: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_val)


def _table(loader: Callable, seed: int, scale: bool = True, val: float = 0.3):
    x, y = loader(return_X_y=True)
    x_tr, x_va, y_tr, y_va = _split(x, y, seed, val)
    if scale:
        x_tr, x_va = _standardize(x_tr, x_va)
    return (_f32(x_tr), _i64(y_tr)), (_f32(x_va), _i64(y_va))


@cache
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    with np.load(MNIST_NPZ) as npz:
        return npz["x_train"], npz["y_train"]


def _mnist(seed: int, n_train: int = 2000, n_val: int = 600, raw: bool = False):
    """A random MNIST subset as (N, 1, 28, 28) floats: raw 0-255, or normalised as usual."""
    images, labels = _mnist_arrays()
    idx = np.random.default_rng(seed).choice(len(images), n_train + n_val, replace=False)
    x = images[idx].astype(np.float32)[:, None]
    if not raw:
        x = (x / 255.0 - 0.1307) / 0.3081
    y = labels[idx].astype(np.int64)
    return (_f32(x[:n_train]), _i64(y[:n_train])), (_f32(x[n_train:]), _i64(y[n_train:]))


def _digits_images(seed: int):
    x, y = datasets.load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, 1, 8, 8)
    x_tr, x_va, y_tr, y_va = _split(x, y, seed)
    return (_f32(x_tr), _i64(y_tr)), (_f32(x_va), _i64(y_va))


def _sequences(seed: int, n: int, steps: int, where: str):
    """Noisy 1-feature sequences; the label is the sign of the signal at `where`.

    `where="first"`: only step 0 carries the label (a long-range dependency);
    `where="mean"`: every step carries a little of it.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sign = 2.0 * y - 1.0
    x = rng.normal(0.0, 1.0, (n, steps, 1))
    if where == "first":
        x[:, 0, 0] = sign * rng.uniform(1.0, 2.0, n)
    else:
        x[:, :, 0] += 0.4 * sign[:, None]
    x_tr, x_va, y_tr, y_va = _split(x, y, seed, 0.25)
    return (_f32(x_tr), _i64(y_tr)), (_f32(x_va), _i64(y_va))


def _permute_labels(y: Tensor, fraction: float, num_classes: int, seed: int) -> Tensor:
    """Replace `fraction` of the labels by a different class, chosen at random."""
    rng = np.random.default_rng(seed + 1000)
    y = y.clone()
    rows = rng.choice(len(y), round(fraction * len(y)), replace=False)
    shift = torch.as_tensor(rng.integers(1, num_classes, len(rows)))
    y[rows] = (y[rows] + shift) % num_classes
    return y


# ------------------------------------------------------------------------------ models
def mlp(sizes: list[int], act: Callable[[], nn.Module] = nn.ReLU, dropout: float = 0.0):
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Two conv blocks and a dense head, the way most tutorials write one."""

    def __init__(self, side: int, channels: tuple[int, int] = (8, 16), classes: int = 10):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * (side // 4) ** 2, 64), nn.ReLU(), nn.Linear(64, classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class SequenceClassifier(nn.Module):
    """A recurrent encoder whose last hidden state feeds a linear head."""

    def __init__(self, cell: str, hidden: int = 32, classes: int = 2, nonlinearity: str = "tanh"):
        super().__init__()
        if cell == "rnn":
            self.rnn = nn.RNN(1, hidden, batch_first=True, nonlinearity=nonlinearity)
        else:
            self.rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell](1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def adam(lr: float, **kw) -> OptimizerFactory:
    return lambda params: torch.optim.Adam(params, lr=lr, **kw)


def sgd(lr: float, momentum: float = 0.0, **kw) -> OptimizerFactory:
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum, **kw)


def _has_constant_column(x: Tensor) -> bool:
    finite = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return bool((finite.amax(0) == finite.amin(0)).any())


def _classify(name: str, kind: str, model, train, val, opt, epochs, batch, **kw) -> Setup:
    classes = int(torch.cat([train[1], val[1]]).max()) + 1
    truth = kw.get("truth", frozenset())
    if kind == "tabular" and _has_constant_column(train[0]) and "constant_feature" not in truth:
        # A column that never changes in the training split (digits' blank border pixels) is a
        # true fact of the data: reporting it is never false.
        kw["acceptable"] = frozenset(kw.get("acceptable", ())) | {"constant_feature"}
    return Setup(
        name,
        kind,
        model,
        train,
        val,
        opt,
        nn.CrossEntropyLoss(),
        epochs,
        batch,
        "classification",
        classes,
        **kw,
    )


def _regress(name: str, model, train, val, opt, epochs, batch, **kw) -> Setup:
    return Setup(
        name,
        "regression",
        model,
        train,
        val,
        opt,
        nn.MSELoss(),
        epochs,
        batch,
        "regression",
        1,
        **kw,
    )


def _as_column(*splits: tuple[np.ndarray, np.ndarray]):
    return [(_f32(x), _f32(np.asarray(y).reshape(-1, 1))) for x, y in splits]


# Consequences a stalled or broken run may also show; they are allowed, never required.
STALL = frozenset({"underfitting", "loss_plateau"})


# ============================================================================== healthy
@healthy
def wine_mlp(seed: int) -> Setup:
    train, val = _table(datasets.load_wine, seed)
    return _classify(
        "", "tabular", mlp([13, 32, 3]), train, val, adam(3e-3), 30, 16, root_cause=None
    )


@healthy
def breast_cancer_mlp(seed: int) -> Setup:
    train, val = _table(datasets.load_breast_cancer, seed)
    model = mlp([30, 32, 16, 2], dropout=0.2)
    return _classify("", "tabular", model, train, val, adam(1e-3), 25, 32, root_cause=None)


@healthy
def digits_table_mlp(seed: int) -> Setup:
    """Flattened 8x8 digits scaled to [0, 1]: bounded, with a few (near-)constant border pixels."""
    x, y = datasets.load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = _split(x / 16.0, y, seed)
    return _classify(
        "",
        "tabular",
        mlp([64, 64, 10]),
        (_f32(x_tr), _i64(y_tr)),
        (_f32(x_va), _i64(y_va)),
        adam(1e-3),
        25,
        32,
        root_cause=None,  # blank border pixels make `constant_feature` acceptable (_classify)
    )


@healthy
def moons_dense(seed: int) -> Setup:
    """Two features, 3,000 rows, overlapping classes: dense data with close but distinct rows."""
    x, y = datasets.make_moons(3000, noise=0.25, random_state=seed)
    x_tr, x_va, y_tr, y_va = _split(x, y, seed)
    return _classify(
        "",
        "tabular",
        mlp([2, 32, 32, 2]),
        (_f32(x_tr), _i64(y_tr)),
        (_f32(x_va), _i64(y_va)),
        adam(1e-2),
        20,
        64,
        root_cause=None,
    )


@healthy
def weak_signal_near_chance(seed: int) -> Setup:
    """Classes drawn first, then features from two Gaussians 0.25 std apart: every label is
    correct, yet no model can do much better than ~56%. Honest difficulty, not noise."""
    rng = np.random.default_rng(seed)
    n, d = 3000, 8
    y = rng.integers(0, 2, n)
    x = rng.normal(0.0, 1.0, (n, d)) + 0.25 / np.sqrt(d) * (2 * y[:, None] - 1)
    x_tr, x_va, y_tr, y_va = _split(x, y, seed)
    return _classify(
        "",
        "tabular",
        mlp([d, 16, 2]),
        (_f32(x_tr), _i64(y_tr)),
        (_f32(x_va), _i64(y_va)),
        adam(1e-3),
        12,
        64,
        root_cause=None,
        # The train loss stays near ln 2: "does not fit its training data" is literally true.
        acceptable=STALL,
    )


@healthy
def sparse_binary_wide(seed: int) -> Setup:
    """200 binary indicator columns, most of them rarely on (bag-of-words-like), in [0, 1]."""
    rng = np.random.default_rng(seed)
    n, d = 2500, 200
    rates = rng.uniform(0.01, 0.3, d)
    x = (rng.random((n, d)) < rates).astype(np.float64)
    w = np.zeros(d)
    w[:20] = rng.normal(0.0, 2.0, 20)
    logits = (x - rates) @ w
    y = (logits > 0).astype(np.int64)
    x_tr, x_va, y_tr, y_va = _split(x, y, seed)
    return _classify(
        "",
        "tabular",
        mlp([d, 32, 2]),
        (_f32(x_tr), _i64(y_tr)),
        (_f32(x_va), _i64(y_va)),
        adam(1e-3),
        15,
        32,
        root_cause=None,
    )


@healthy
def gru_sequence_ok(seed: int) -> Setup:
    train, val = _sequences(seed, 1600, 20, "mean")
    return _classify(
        "", "sequence", SequenceClassifier("gru"), train, val, adam(3e-3), 10, 32, root_cause=None
    )


@healthy
def lstm_sequence_ok(seed: int) -> Setup:
    train, val = _sequences(seed, 1600, 15, "mean")
    return _classify(
        "", "sequence", SequenceClassifier("lstm"), train, val, adam(3e-3), 10, 32, root_cause=None
    )


@healthy
def mnist_cnn(seed: int) -> Setup:
    train, val = _mnist(seed)
    return _classify("", "image", SmallCNN(28), train, val, adam(2e-3), 5, 64, root_cause=None)


@healthy
def digits_cnn_images(seed: int) -> Setup:
    train, val = _digits_images(seed)
    model = SmallCNN(8, channels=(16, 32))
    return _classify("", "image", model, train, val, adam(2e-3), 12, 32, root_cause=None)


@healthy
def diabetes_regression(seed: int) -> Setup:
    x, y = datasets.load_diabetes(return_X_y=True)
    x_tr, x_va, y_tr, y_va = _split(x, y, seed, stratify=False)
    x_tr, x_va = _standardize(x_tr, x_va)
    mean, std = y_tr.mean(), y_tr.std()
    train, val = _as_column((x_tr, (y_tr - mean) / std), (x_va, (y_va - mean) / std))
    model = mlp([10, 32, 1])
    return _regress("", model, train, val, adam(3e-3, weight_decay=1e-3), 15, 16, root_cause=None)


@healthy
def friedman_regression(seed: int) -> Setup:
    x, y = datasets.make_friedman1(3000, n_features=10, noise=1.0, random_state=seed)
    x_tr, x_va, y_tr, y_va = _split(x, y, seed, stratify=False)
    x_tr, x_va = _standardize(x_tr, x_va)
    mean, std = y_tr.mean(), y_tr.std()
    train, val = _as_column((x_tr, (y_tr - mean) / std), (x_va, (y_va - mean) / std))
    return _regress("", mlp([10, 64, 64, 1]), train, val, adam(1e-3), 25, 64, root_cause=None)


@healthy
def digits_sgd_momentum_dropout(seed: int) -> Setup:
    """SGD with momentum and dropout: the train loss sits above the validation loss."""
    train, val = _table(datasets.load_digits, seed)
    model = mlp([64, 128, 64, 10], dropout=0.3)
    return _classify("", "tabular", model, train, val, sgd(0.02, 0.9), 25, 32, root_cause=None)


# ============================================================================== broken: training
@register
def lr_too_high_adam_digits(seed: int) -> Setup:
    train, val = _table(datasets.load_digits, seed)
    return _classify(
        "",
        "tabular",
        mlp([64, 128, 128, 10]),
        train,
        val,
        adam(0.5),
        15,
        32,
        root_cause="lr_too_high",
        truth=frozenset({"lr_too_high"}),
        acceptable=STALL | {"dead_units", "oscillating_loss", "exploding_gradients"},
        symptom="diverges",
    )


@register
def lr_too_high_sgd_cnn(seed: int) -> Setup:
    train, val = _digits_images(seed)
    return _classify(
        "",
        "image",
        SmallCNN(8, channels=(16, 32)),
        train,
        val,
        sgd(1.5, 0.9),
        10,
        32,
        root_cause="lr_too_high",
        truth=frozenset({"lr_too_high"}),
        acceptable=STALL | {"dead_units", "oscillating_loss", "exploding_gradients", "loss_nan"},
        symptom="diverges",
    )


@register
def lr_too_low_wine(seed: int) -> Setup:
    train, val = _table(datasets.load_wine, seed)
    return _classify(
        "",
        "tabular",
        mlp([13, 32, 3]),
        train,
        val,
        sgd(1e-4),
        20,
        16,
        root_cause="lr_too_low",
        truth=frozenset({"lr_too_low"}),
        acceptable=STALL,
        symptom="no_progress",
    )


@register
def lr_too_low_mnist_mlp(seed: int) -> Setup:
    train, val = _mnist(seed)
    model = nn.Sequential(nn.Flatten(), mlp([784, 128, 10]))
    return _classify(
        "",
        "image",
        model,
        train,
        val,
        sgd(2e-5),
        8,
        64,
        root_cause="lr_too_low",
        truth=frozenset({"lr_too_low"}),
        acceptable=STALL,
        symptom="no_progress",
    )


class ExplodingMLP(nn.Module):
    """Eight linear+ReLU layers initialised with std 1 instead of ~1/sqrt(fan_in) (a common
    slip: `nn.init.normal_(w)` without a std): activations grow ~16x per layer."""

    def __init__(self, d_in: int, classes: int, width: int = 256, depth: int = 8):
        super().__init__()
        sizes = [d_in] + [width] * depth + [classes]
        self.net = mlp(sizes)
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@register
def exploding_bad_init(seed: int) -> Setup:
    train, val = _table(datasets.load_digits, seed)
    return _classify(
        "",
        "tabular",
        ExplodingMLP(64, 10),
        train,
        val,
        sgd(0.01, 0.9),
        5,
        32,
        root_cause="exploding_gradients",
        truth=frozenset({"exploding_gradients", "loss_nan"}),
        acceptable=frozenset({"lr_too_high"}),
        symptom="nan",
    )


@register
def exploding_rnn_relu(seed: int) -> Setup:
    """A ReLU RNN over 40 steps whose recurrent matrix is scaled to spectral radius ~2."""
    train, val = _sequences(seed, 1200, 40, "mean")
    model = SequenceClassifier("rnn", hidden=32, nonlinearity="relu")
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(32, 32))
        model.rnn.weight_hh_l0.copy_(2.0 * q)
    return _classify(
        "",
        "sequence",
        model,
        train,
        val,
        sgd(0.01),
        5,
        32,
        root_cause="exploding_gradients",
        truth=frozenset({"exploding_gradients", "loss_nan"}),
        acceptable=frozenset({"lr_too_high"}),
        symptom="nan",
    )


@register
def vanishing_deep_sigmoid(seed: int) -> Setup:
    """Twelve sigmoid layers on breast cancer: the first layers get almost no gradient."""
    train, val = _table(datasets.load_breast_cancer, seed)
    return _classify(
        "",
        "tabular",
        mlp([30] + [64] * 12 + [2], act=nn.Sigmoid),
        train,
        val,
        sgd(0.05),
        12,
        32,
        root_cause="vanishing_gradients",
        truth=frozenset({"vanishing_gradients"}),
        # Not `lr_too_low`: a larger rate would not reach the first layers (issue 9: a symptom
        # explained by another finding gives way to it).
        acceptable=STALL | {"saturated_activations"},
        symptom="no_progress",
    )


@register
def vanishing_rnn_first_step(seed: int) -> Setup:
    """The label is in step 0 of 60; a tanh RNN reads it at step 59: gradient through time
    vanishes, so the model stays at chance."""
    train, val = _sequences(seed, 1200, 60, "first")
    return _classify(
        "",
        "sequence",
        SequenceClassifier("rnn", hidden=32),
        train,
        val,
        adam(1e-3),
        8,
        32,
        root_cause="vanishing_gradients",
        truth=frozenset({"vanishing_gradients"}),
        acceptable=STALL,
        symptom="no_progress",
    )


class DeadReluMLP(nn.Module):
    """ReLU hidden layers whose biases start at -6 (a mistaken "bias trick"): no unit fires."""

    def __init__(self, sizes: list[int]):
        super().__init__()
        self.net = mlp(sizes)
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for layer in linears[:-1]:
            nn.init.constant_(layer.bias, -6.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@register
def dead_relu_negative_bias(seed: int) -> Setup:
    train, val = _table(datasets.load_digits, seed)
    return _classify(
        "",
        "tabular",
        DeadReluMLP([64, 128, 128, 10]),
        train,
        val,
        adam(1e-3),
        10,
        32,
        root_cause="dead_units",
        truth=frozenset({"dead_units"}),
        acceptable=STALL,
        symptom="no_progress",
    )


@register
def saturated_tanh_big_init(seed: int) -> Setup:
    """A tanh MLP on standardised breast cancer whose weights start at std 3: units pinned at ±1."""
    train, val = _table(datasets.load_breast_cancer, seed)
    model = mlp([30, 128, 128, 2], act=nn.Tanh)
    for module in model:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 3.0)
    return _classify(
        "",
        "tabular",
        model,
        train,
        val,
        sgd(0.01),
        12,
        32,
        root_cause="saturated_activations",
        truth=frozenset({"saturated_activations"}),
        acceptable=STALL | {"vanishing_gradients", "overfitting"},
        symptom="saturates",
    )


@register
def underfit_linear_on_circles(seed: int) -> Setup:
    """A linear model (no hidden layer) on concentric circles: it cannot beat chance."""
    x, y = datasets.make_circles(2000, noise=0.05, factor=0.5, random_state=seed)
    x_tr, x_va, y_tr, y_va = _split(x, y, seed)
    return _classify(
        "",
        "tabular",
        nn.Linear(2, 2),
        (_f32(x_tr), _i64(y_tr)),
        (_f32(x_va), _i64(y_va)),
        adam(1e-2),
        15,
        32,
        root_cause="underfitting",
        truth=frozenset({"underfitting", "loss_plateau"}),
        symptom="no_progress",
    )


@register
def underfit_tiny_mlp_mnist(seed: int) -> Setup:
    """784 -> 1 -> 10: one hidden unit cannot separate ten digits."""
    train, val = _mnist(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 1), nn.Tanh(), nn.Linear(1, 10))
    return _classify(
        "",
        "image",
        model,
        train,
        val,
        adam(3e-3),
        8,
        64,
        root_cause="underfitting",
        truth=frozenset({"underfitting"}),
        # Training drives the lone tanh unit to its limits (70% of images beyond ±0.98 on seed
        # 0, measured in plain PyTorch): saturation is a true fact of this run.
        acceptable=frozenset({"loss_plateau", "saturated_activations"}),
        symptom="no_progress",
    )


@register
def overfit_big_mlp(seed: int) -> Setup:
    """300 breast-cancer-like rows with 40 noise columns, a 512x512 MLP, 80 epochs, no
    regularisation: the validation loss climbs long after its minimum."""
    x, y = datasets.make_classification(
        420,
        n_features=50,
        n_informative=6,
        n_redundant=0,
        flip_y=0.0,
        class_sep=0.8,
        random_state=seed,
    )
    x_tr, x_va, y_tr, y_va = _split(x, y, seed, val=120 / 420)
    x_tr, x_va = _standardize(x_tr, x_va)
    return _classify(
        "",
        "tabular",
        mlp([50, 512, 512, 2]),
        (_f32(x_tr), _i64(y_tr)),
        (_f32(x_va), _i64(y_va)),
        adam(1e-3),
        40,
        32,
        root_cause="overfitting",
        truth=frozenset({"overfitting"}),
        acceptable=frozenset({"data_too_small"}),
        symptom="overfits",
    )


@register
def overfit_tiny_mnist(seed: int) -> Setup:
    """200 MNIST training images for a 512x512 MLP, 50 epochs, no regularisation."""
    train, val = _mnist(seed, n_train=200, n_val=500)
    model = nn.Sequential(nn.Flatten(), mlp([784, 512, 512, 10]))
    return _classify(
        "",
        "image",
        model,
        train,
        val,
        adam(1e-3),
        50,
        20,
        root_cause="overfitting",
        # 670,000 parameters on 200 rows (~3,300 per row): too little data for the model.
        truth=frozenset({"overfitting", "data_too_small"}),
        symptom="overfits",
    )


@register
def oscillating_adam(seed: int) -> Setup:
    """Adam at 0.05 on standardised digits: the loss falls, then rises and falls again."""
    train, val = _table(datasets.load_digits, seed)
    return _classify(
        "",
        "tabular",
        mlp([64, 64, 10]),
        train,
        val,
        adam(0.05),
        16,
        32,
        root_cause="oscillating_loss",
        truth=frozenset({"oscillating_loss"}),
        # The cause is a rate a little too high; a high rate can also silence ReLU units.
        acceptable=frozenset({"lr_too_high", "dead_units"}),
        symptom="oscillates",
    )


# ============================================================================== broken: data
@register
def unscaled_breast_cancer(seed: int) -> Setup:
    """Raw breast-cancer features: areas in the thousands next to ratios below 1."""
    train, val = _table(datasets.load_breast_cancer, seed, scale=False)
    return _classify(
        "",
        "tabular",
        mlp([30, 64, 2]),
        train,
        val,
        adam(1e-3),
        15,
        32,
        root_cause="unscaled_inputs",
        truth=frozenset({"unscaled_inputs"}),
        acceptable=STALL | {"lr_too_high", "oscillating_loss", "dead_units", "exploding_gradients"},
        symptom="data",
    )


@register
def unscaled_mnist_pixels(seed: int) -> Setup:
    """MNIST pixels fed as 0-255 into an MLP."""
    train, val = _mnist(seed, raw=True)
    model = nn.Sequential(nn.Flatten(), mlp([784, 128, 10]))
    return _classify(
        "",
        "image",
        model,
        train,
        val,
        sgd(0.01),
        6,
        64,
        root_cause="unscaled_inputs",
        truth=frozenset({"unscaled_inputs"}),
        acceptable=STALL
        | {"lr_too_high", "oscillating_loss", "dead_units", "exploding_gradients", "loss_nan"},
        symptom="data",
    )


@register
def unscaled_tiny_inputs(seed: int) -> Setup:
    """Wine features divided by 10,000 (a unit slip): every value is within ±0.01."""
    x, y = datasets.load_wine(return_X_y=True)
    x_tr, x_va, y_tr, y_va = _split(x, y, seed)
    x_tr, x_va = _standardize(x_tr, x_va)
    x_tr, x_va = np.clip(x_tr, -5, 5) / 1e4 * 2, np.clip(x_va, -5, 5) / 1e4 * 2
    return _classify(
        "",
        "tabular",
        mlp([13, 32, 3]),
        (_f32(x_tr), _i64(y_tr)),
        (_f32(x_va), _i64(y_va)),
        sgd(0.01),
        15,
        16,
        root_cause="unscaled_inputs",
        truth=frozenset({"unscaled_inputs"}),
        acceptable=STALL | {"lr_too_low"},
        symptom="data",
    )


@register
def labels_shifted_by_one(seed: int) -> Setup:
    """Labels shifted one row against their samples (an off-by-one join): no row's label fits."""
    (x_tr, y_tr), (x_va, y_va) = _table(datasets.load_digits, seed)
    shifted = torch.roll(y_tr, 1)
    return _classify(
        "",
        "tabular",
        mlp([64, 64, 10]),
        (x_tr, shifted),
        (x_va, y_va),
        adam(1e-3),
        15,
        32,
        root_cause="label_noise",
        truth=frozenset({"label_noise"}),
        acceptable=STALL | {"overfitting"},
        symptom="data",
        clean_labels=y_tr,
    )


@register
def labels_permuted_mnist(seed: int) -> Setup:
    """MNIST training labels randomly permuted across rows, an MLP on top."""
    (x_tr, y_tr), val = _mnist(seed)
    perm = torch.as_tensor(np.random.default_rng(seed + 7).permutation(len(y_tr)))
    return _classify(
        "",
        "image",
        nn.Sequential(nn.Flatten(), mlp([784, 128, 10])),
        (x_tr, y_tr[perm]),
        val,
        adam(1e-3),
        6,
        64,
        root_cause="label_noise",
        truth=frozenset({"label_noise"}),
        acceptable=STALL | {"overfitting"},
        symptom="data",
        clean_labels=y_tr,
    )


@register
def label_noise_30_wine(seed: int) -> Setup:
    (x_tr, y_tr), val = _table(datasets.load_wine, seed)
    noisy = _permute_labels(y_tr, 0.3, 3, seed)
    return _classify(
        "",
        "tabular",
        mlp([13, 32, 3]),
        (x_tr, noisy),
        val,
        adam(3e-3),
        30,
        16,
        root_cause="label_noise",
        truth=frozenset({"label_noise"}),
        # Like the shifted and permuted labels: the wrong labels cannot be fitted, so a model
        # that does not fit its training data (`underfitting`, whose documented causes include
        # labels with little signal) is a consequence, not a false alarm.
        acceptable=STALL | {"overfitting"},
        symptom="data",
        clean_labels=y_tr,
    )


@register
def label_noise_25_digits_cnn(seed: int) -> Setup:
    (x_tr, y_tr), val = _digits_images(seed)
    noisy = _permute_labels(y_tr, 0.25, 10, seed)
    return _classify(
        "",
        "image",
        SmallCNN(8, channels=(16, 32)),
        (x_tr, noisy),
        val,
        adam(2e-3),
        12,
        32,
        root_cause="label_noise",
        truth=frozenset({"label_noise"}),
        # Like the shifted and permuted labels: the wrong labels cannot be fitted, so a model
        # that does not fit its training data (`underfitting`, whose documented causes include
        # labels with little signal) is a consequence, not a false alarm.
        acceptable=STALL | {"overfitting"},
        symptom="data",
        clean_labels=y_tr,
    )


@register
def leakage_exact_copies(seed: int) -> Setup:
    """Half of the validation rows are copies of training rows (val sampled from everything)."""
    (x_tr, y_tr), (x_va, y_va) = _table(datasets.load_breast_cancer, seed)
    rng = np.random.default_rng(seed)
    half = len(x_va) // 2
    rows = torch.as_tensor(rng.choice(len(x_tr), half, replace=False))
    x_va = torch.cat([x_va[:half], x_tr[rows]])
    y_va = torch.cat([y_va[:half], y_tr[rows]])
    return _classify(
        "",
        "tabular",
        mlp([30, 32, 2]),
        (x_tr, y_tr),
        (x_va, y_va),
        adam(1e-3),
        20,
        32,
        root_cause="train_test_leakage",
        truth=frozenset({"train_test_leakage"}),
        symptom="data",
    )


@register
def leakage_near_copies(seed: int) -> Setup:
    """Validation rows are training rows with 0.5% jitter (augmented before splitting)."""
    (x_tr, y_tr), (x_va, y_va) = _table(datasets.load_wine, seed)
    rng = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(x_tr), generator=rng)[: len(x_va)]
    jitter = 0.005 * torch.randn(len(rows), x_tr.shape[1], generator=rng)
    x_va = x_tr[rows] + jitter * x_tr.std(dim=0)
    y_va = y_tr[rows]
    return _classify(
        "",
        "tabular",
        mlp([13, 32, 3]),
        (x_tr, y_tr),
        (x_va, y_va),
        adam(3e-3),
        25,
        16,
        root_cause="train_test_leakage",
        truth=frozenset({"train_test_leakage"}),
        symptom="data",
    )


@register
def leakage_oversampled_before_split(seed: int) -> Setup:
    """Every row duplicated (oversampling) before a random split: duplicates in train and
    train copies in val."""
    x, y = datasets.load_breast_cancer(return_X_y=True)
    x, y = np.concatenate([x, x]), np.concatenate([y, y])
    x_tr, x_va, y_tr, y_va = _split(x, y, seed)
    x_tr, x_va = _standardize(x_tr, x_va)
    return _classify(
        "",
        "tabular",
        mlp([30, 32, 2]),
        (_f32(x_tr), _i64(y_tr)),
        (_f32(x_va), _i64(y_va)),
        adam(1e-3),
        15,
        32,
        root_cause="train_test_leakage",
        truth=frozenset({"train_test_leakage", "duplicate_samples"}),
        symptom="data",
    )


@register
def duplicate_rows_train(seed: int) -> Setup:
    """The training table was appended to itself (an export run twice); val is clean."""
    (x_tr, y_tr), val = _table(datasets.load_wine, seed)
    return _classify(
        "",
        "tabular",
        mlp([13, 32, 3]),
        (torch.cat([x_tr, x_tr]), torch.cat([y_tr, y_tr])),
        val,
        adam(3e-3),
        20,
        16,
        root_cause="duplicate_samples",
        truth=frozenset({"duplicate_samples"}),
        symptom="data",
    )


@register
def missing_values_nan(seed: int) -> Setup:
    """5% of breast-cancer cells blanked to NaN (empty cells in a CSV)."""
    (x_tr, y_tr), (x_va, y_va) = _table(datasets.load_breast_cancer, seed)
    gen = torch.Generator().manual_seed(seed)
    x_tr = x_tr.masked_fill(torch.rand(x_tr.shape, generator=gen) < 0.05, float("nan"))
    return _classify(
        "",
        "tabular",
        mlp([30, 32, 2]),
        (x_tr, y_tr),
        (x_va, y_va),
        adam(1e-3),
        10,
        32,
        root_cause="missing_values",
        truth=frozenset({"missing_values"}),
        acceptable=frozenset({"loss_nan"}),
        symptom="data",
    )


@register
def missing_values_inf_log(seed: int) -> Setup:
    """A log-transformed count column with zeros: -inf in a few rows of train and val."""
    (x_tr, y_tr), (x_va, y_va) = _table(datasets.load_wine, seed, scale=False)
    x_tr, x_va = x_tr.clone(), x_va.clone()
    gen = torch.Generator().manual_seed(seed)
    for x in (x_tr, x_va):
        x[torch.rand(len(x), generator=gen) < 0.1, 4] = 0.0
        x[:, 4] = torch.log(x[:, 4])
    mean, std = x_tr[torch.isfinite(x_tr).all(1)].mean(0), x_tr[torch.isfinite(x_tr).all(1)].std(0)
    x_tr, x_va = (x_tr - mean) / std, (x_va - mean) / std
    return _classify(
        "",
        "tabular",
        mlp([13, 32, 3]),
        (x_tr, y_tr),
        (x_va, y_va),
        adam(3e-3),
        10,
        16,
        root_cause="missing_values",
        truth=frozenset({"missing_values"}),
        acceptable=frozenset({"loss_nan"}),
        symptom="data",
    )


@register
def class_imbalance_20_to_1(seed: int) -> Setup:
    """A fraud-like table: 95% of rows in one class."""
    x, y = datasets.make_classification(
        4000, n_features=12, n_informative=5, weights=[0.95, 0.05], flip_y=0.0, random_state=seed
    )
    x_tr, x_va, y_tr, y_va = _split(x, y, seed)
    x_tr, x_va = _standardize(x_tr, x_va)
    return _classify(
        "",
        "tabular",
        mlp([12, 32, 2]),
        (_f32(x_tr), _i64(y_tr)),
        (_f32(x_va), _i64(y_va)),
        adam(1e-3),
        12,
        64,
        root_cause="class_imbalance",
        truth=frozenset({"class_imbalance"}),
        symptom="data",
    )


@register
def class_imbalance_digits_rare(seed: int) -> Setup:
    """Digits where classes 0-2 keep only 12 training rows each (a skewed collection)."""
    (x_tr, y_tr), val = _table(datasets.load_digits, seed)
    rng = np.random.default_rng(seed)
    keep = np.ones(len(y_tr), dtype=bool)
    for c in range(3):
        rows = np.flatnonzero(y_tr.numpy() == c)
        keep[rng.choice(rows, len(rows) - 12, replace=False)] = False
    mask = torch.as_tensor(keep)
    return _classify(
        "",
        "tabular",
        mlp([64, 64, 10]),
        (x_tr[mask], y_tr[mask]),
        val,
        adam(1e-3),
        20,
        32,
        root_cause="class_imbalance",
        truth=frozenset({"class_imbalance"}),
        symptom="data",
    )


@register
def constant_columns_added(seed: int) -> Setup:
    """Wine with three constant columns appended (a unit, a version flag, an id prefix)."""
    (x_tr, y_tr), (x_va, y_va) = _table(datasets.load_wine, seed)
    const_tr = torch.tensor([1.0, 0.0, 3.0]).expand(len(x_tr), 3)
    const_va = torch.tensor([1.0, 0.0, 3.0]).expand(len(x_va), 3)
    return _classify(
        "",
        "tabular",
        mlp([16, 32, 3]),
        (torch.cat([x_tr, const_tr], 1), y_tr),
        (torch.cat([x_va, const_va], 1), y_va),
        adam(3e-3),
        25,
        16,
        root_cause="constant_feature",
        truth=frozenset({"constant_feature"}),
        symptom="data",
    )


@register
def data_too_small_wine(seed: int) -> Setup:
    """40 training rows of wine for a 256x256 MLP (~73,000 parameters)."""
    x, y = datasets.load_wine(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(
        x, y, train_size=40, test_size=100, random_state=seed, stratify=y
    )
    x_tr, x_va = _standardize(x_tr, x_va)
    return _classify(
        "",
        "tabular",
        mlp([13, 256, 256, 3]),
        (_f32(x_tr), _i64(y_tr)),
        (_f32(x_va), _i64(y_va)),
        adam(1e-3),
        30,
        8,
        root_cause="data_too_small",
        truth=frozenset({"data_too_small"}),
        acceptable=frozenset({"overfitting"}),
        symptom="data",
    )


def names(which: str = "all") -> list[str]:
    """Setup names: `all`, `healthy` or `broken`."""
    if which == "all":
        return list(SETUPS)
    return [n for n in SETUPS if (n in HEALTHY) == (which == "healthy")]


# The wider healthy set (issue 9, item 2) registers itself on import; it needs the helpers above.
import healthy_wide  # noqa: E402, F401
