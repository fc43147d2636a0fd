"""More healthy field setups, written the way tutorials write them (issue 9, item 2).

Thirty-one ordinary models on ordinary data, none of them broken: bounded and unbounded tables,
low-dimensional dense data, wide sparse data, images, token-id text (classifiers and language
models), sequences (RNN, LSTM, GRU, attention), regression, natural class imbalance, tiny and
large data. Architectures and hyperparameters are the usual tutorial ones; they were written and
run before any rule of the doctor was looked at, so a finding on any of them is a false alarm
unless it is listed in the setup's `acceptable` facts (with the reason next to it).

Imported at the end of setups.py, which registers them.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import torch
from setups import (
    Setup,
    SmallCNN,
    _as_column,
    _classify,
    _f32,
    _i64,
    _mnist_arrays,
    _regress,
    _split,
    _standardize,
    _table,
    adam,
    healthy,
    mlp,
    register,
    sgd,
)
from sklearn import datasets
from torch import Tensor, nn

SHAKESPEARE = Path("/work/shared/data/tinyshakespeare/input.txt")
IMDB_TRAIN = Path("/work/shared/data/imdb/imdb_train.jsonl.gz")


# ------------------------------------------------------------------------------ data helpers
def _xy(x, y, seed: int, val: float = 0.3, stratify: bool = True):
    x_tr, x_va, y_tr, y_va = _split(x, y, seed, val, stratify)
    return (_f32(x_tr), _i64(y_tr)), (_f32(x_va), _i64(y_va))


def _standardized_regression(x, y, seed: int, val: float = 0.3):
    x_tr, x_va, y_tr, y_va = _split(x, y, seed, val, stratify=False)
    x_tr, x_va = _standardize(x_tr, x_va)
    mean, std = y_tr.mean(), y_tr.std()
    return _as_column((x_tr, (y_tr - mean) / std), (x_va, (y_va - mean) / std))


def _mnist_flat01(seed: int, n_train: int, n_val: int):
    """MNIST as most beginners feed it: pixels divided by 255, images kept (N, 1, 28, 28)."""
    images, labels = _mnist_arrays()
    idx = np.random.default_rng(seed + 7).choice(len(images), n_train + n_val, replace=False)
    x = images[idx].astype(np.float32)[:, None] / 255.0
    y = labels[idx].astype(np.int64)
    return (_f32(x[:n_train]), _i64(y[:n_train])), (_f32(x[n_train:]), _i64(y[n_train:]))


@cache
def _imdb_reviews() -> tuple[list[str], np.ndarray]:
    with gzip.open(IMDB_TRAIN, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return [r["text"] for r in rows], np.array([r["label"] for r in rows])


def _tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("<br />", " "))


def _imdb_token_ids(seed: int, n: int = 2000, vocab: int = 5000, length: int = 128):
    """A balanced IMDB subset as padded token ids (0 = padding, 1 = unknown word)."""
    texts, labels = _imdb_reviews()
    rng = np.random.default_rng(seed)
    idx = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), n // 2, replace=False) for c in (0, 1)]
    )
    tokens = [_tokenize(texts[i]) for i in idx]
    y = labels[idx]
    order = rng.permutation(len(idx))
    tokens, y = [tokens[i] for i in order], y[order]
    cut = int(0.75 * len(tokens))
    counts = Counter(w for doc in tokens[:cut] for w in doc)
    index = {w: i + 2 for i, (w, _) in enumerate(counts.most_common(vocab - 2))}
    ids = np.zeros((len(tokens), length), dtype=np.int64)
    for row, doc in enumerate(tokens):
        seq = [index.get(w, 1) for w in doc[:length]]
        ids[row, : len(seq)] = seq
    return (ids[:cut], y[:cut]), (ids[cut:], y[cut:]), vocab


def _as_tokens(train, val):
    (x, y), (xv, yv) = train, val
    return (torch.as_tensor(x), _i64(y)), (torch.as_tensor(xv), _i64(yv))


@cache
def _shakespeare_ids() -> tuple[np.ndarray, int]:
    text = SHAKESPEARE.read_text(encoding="utf-8")
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    return np.array([lookup[c] for c in text], dtype=np.int64), len(chars)


def _char_windows(seed: int, n_train: int = 1200, n_val: int = 300, length: int = 64):
    """Random windows of the text; inputs are characters 0..T-1, targets characters 1..T.
    Validation windows come from the last tenth of the text, never seen in training."""
    ids, vocab = _shakespeare_ids()
    rng = np.random.default_rng(seed)
    split = int(0.9 * len(ids))
    starts = rng.integers(0, split - length - 1, n_train)
    val_starts = rng.integers(split, len(ids) - length - 1, n_val)

    def windows(s):
        w = np.stack([ids[i : i + length + 1] for i in s])
        return torch.as_tensor(w[:, :-1]), torch.as_tensor(w[:, 1:])

    return windows(starts), windows(val_starts), vocab


def _synthetic_token_text(seed: int, n: int = 2000, vocab: int = 500, length: int = 40):
    """Zipf-distributed token ids; class 1 documents use a few 'positive' words more often."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, vocab)  # token 0 is padding
    weights /= weights.sum()
    y = rng.integers(0, 2, n)
    x = rng.choice(np.arange(1, vocab), size=(n, length), p=weights)
    cue = rng.random((n, length)) < 0.08
    cue_words = np.where(y[:, None] == 1, rng.integers(50, 60, (n, length)), 0)
    x = np.where(cue & (y[:, None] == 1), cue_words, x)
    lengths = rng.integers(length // 2, length + 1, n)
    x[np.arange(length)[None, :] >= lengths[:, None]] = 0
    x_tr, x_va, y_tr, y_va = _split(x, y, seed, 0.25)
    return (torch.as_tensor(x_tr), _i64(y_tr)), (torch.as_tensor(x_va), _i64(y_va)), vocab


def _sine_sequences(seed: int, n: int = 1500, steps: int = 30, features: int = 1):
    """Noisy sine waves of three frequencies; the class is the frequency."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    freq = np.array([0.5, 1.0, 1.5])[y]
    t = np.arange(steps) * 0.3
    phase = rng.uniform(0, 2 * np.pi, (n, features))
    x = np.sin(freq[:, None, None] * t[None, :, None] + phase[:, None, :])
    x += rng.normal(0, 0.3, x.shape)
    return _xy(x, y, seed, 0.25)


def _forecast_windows(seed: int, n: int = 1500, steps: int = 24):
    """Windows of a noisy sum of two sines; the target is the next value."""
    rng = np.random.default_rng(seed)
    t0 = rng.uniform(0, 200, n)
    t = t0[:, None] + np.arange(steps + 1) * 0.25
    series = np.sin(t) + 0.5 * np.sin(0.37 * t) + rng.normal(0, 0.1, t.shape)
    x, y = series[:, :steps, None], series[:, steps]
    return _standardized_regression_seq(x, y, seed)


def _standardized_regression_seq(x, y, seed: int):
    x_tr, x_va, y_tr, y_va = _split(x, y, seed, 0.25, stratify=False)
    mean, std = y_tr.mean(), y_tr.std()
    return _as_column((x_tr, (y_tr - mean) / std), (x_va, (y_va - mean) / std))


# ------------------------------------------------------------------------------ models
class TokenBag(nn.Module):
    """Embedding, mean over the non-padding tokens, linear head (fastText-like)."""

    def __init__(self, vocab: int, dim: int = 32, classes: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids: Tensor) -> Tensor:
        mask = (ids != 0).float().unsqueeze(-1)
        summed = (self.embed(ids) * mask).sum(1)
        return self.head(summed / mask.sum(1).clamp_min(1.0))


class TokenCNN(nn.Module):
    """Embedding, one 1-D convolution, max over time, linear head (Kim-style)."""

    def __init__(self, vocab: int, dim: int = 32, filters: int = 32, classes: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.conv = nn.Conv1d(dim, filters, 3, padding=1)
        self.head = nn.Linear(filters, classes)

    def forward(self, ids: Tensor) -> Tensor:
        h = torch.relu(self.conv(self.embed(ids).transpose(1, 2)))
        return self.head(h.amax(-1))


class TokenLSTM(nn.Module):
    """Embedding, LSTM, last hidden state, linear head."""

    def __init__(self, vocab: int, dim: int = 32, hidden: int = 32, classes: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, ids: Tensor) -> Tensor:
        _, (h, _) = self.lstm(self.embed(ids))
        return self.head(h[-1])


class CharGRU(nn.Module):
    """A character language model: embedding, GRU, a vocabulary-sized output at every step."""

    def __init__(self, vocab: int, dim: int = 32, hidden: int = 96):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids: Tensor) -> Tensor:
        out, _ = self.gru(self.embed(ids))
        return self.head(out)


class TinyTransformerLM(nn.Module):
    """A one-layer causal transformer over characters (nanoGPT-style, much smaller)."""

    def __init__(self, vocab: int, length: int, dim: int = 48, heads: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(length, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(dim, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length))

    def forward(self, ids: Tensor) -> Tensor:
        steps = ids.shape[1]
        h = self.embed(ids) + self.position(torch.arange(steps, device=ids.device))
        return self.head(self.encoder(h, mask=self.mask[:steps, :steps], is_causal=True))


class TokenCrossEntropy(nn.Module):
    """Cross-entropy over every position: logits (N, T, V), targets (N, T)."""

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


class SeqNet(nn.Module):
    """A recurrent encoder over (N, T, F) sequences with a linear head on the last step."""

    def __init__(self, cell: type[nn.Module], features: int, hidden: int, out: int, **kw):
        super().__init__()
        self.rnn = cell(features, hidden, batch_first=True, **kw)
        width = hidden * (2 if kw.get("bidirectional") else 1)
        self.head = nn.Linear(width, out)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class AttentionGRU(nn.Module):
    """GRU outputs pooled by learned additive attention weights over time steps."""

    def __init__(self, features: int, hidden: int = 32, classes: int = 3):
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.gru(x)
        weights = torch.softmax(self.score(out), dim=1)
        return self.head((weights * out).sum(1))


class SequenceTransformer(nn.Module):
    """Linear projection, learned positions, two encoder layers, mean pooling, linear head."""

    def __init__(self, features: int, steps: int, dim: int = 32, classes: int = 3):
        super().__init__()
        self.project = nn.Linear(features, dim)
        self.position = nn.Parameter(torch.zeros(1, steps, dim))
        layer = nn.TransformerEncoderLayer(dim, 4, 64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(self.project(x) + self.position).mean(1))


class LeNet(nn.Module):
    """The PyTorch MNIST example's network: two convolutions, dropout, two dense layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.drop = nn.Dropout(0.25)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(nn.functional.max_pool2d(self.conv1(x), 2))
        x = torch.relu(nn.functional.max_pool2d(self.drop(self.conv2(x)), 2))
        return self.fc2(self.drop(torch.relu(self.fc1(x.flatten(1)))))


def _bn_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 16, 10),
    )


def _lm_setup(model: nn.Module, train, val, vocab: int, opt, epochs: int, batch: int) -> Setup:
    return Setup(
        "",
        "text",
        model,
        train,
        val,
        opt,
        TokenCrossEntropy(),
        epochs,
        batch,
        "classification",
        vocab,
        root_cause=None,
    )


# ============================================================================== tables
@healthy
def iris_mlp(seed: int) -> Setup:
    """Tiny data: 105 training rows, standardised."""
    train, val = _table(datasets.load_iris, seed)
    return _classify(
        "", "tabular", mlp([4, 16, 3]), train, val, adam(1e-2), 60, 16, root_cause=None
    )


@healthy
def iris_raw_centimetres(seed: int) -> Setup:
    """Iris as measured (0.1-7.9 cm), not standardised: bounded, modest values."""
    train, val = _table(datasets.load_iris, seed, scale=False)
    model = mlp([4, 32, 3])
    return _classify("", "tabular", model, train, val, adam(1e-2), 80, 16, root_cause=None)


@healthy
def make_classification_mlp(seed: int) -> Setup:
    """Unbounded Gaussian features, 3 classes, standardised."""
    x, y = datasets.make_classification(
        3000, 20, n_informative=8, n_classes=3, class_sep=1.0, random_state=seed
    )
    x_tr, x_va, y_tr, y_va = _split(x, y, seed)
    x_tr, x_va = _standardize(x_tr, x_va)
    train, val = (_f32(x_tr), _i64(y_tr)), (_f32(x_va), _i64(y_va))
    model = mlp([20, 64, 64, 3])
    return _classify("", "tabular", model, train, val, adam(1e-3), 20, 64, root_cause=None)


@healthy
def blobs_2d_raw(seed: int) -> Setup:
    """Four Gaussian blobs in the plane, coordinates as generated (range about -12..12)."""
    x, y = datasets.make_blobs(2000, centers=4, cluster_std=1.5, random_state=seed)
    train, val = _xy(x, y, seed)
    return _classify(
        "", "tabular", mlp([2, 16, 4]), train, val, adam(1e-2), 15, 32, root_cause=None
    )


@healthy
def circles_2d_dense(seed: int) -> Setup:
    """Two concentric noisy circles, 2,500 points: low-dimensional and dense."""
    x, y = datasets.make_circles(2500, noise=0.08, factor=0.5, random_state=seed)
    train, val = _xy(x, y, seed)
    model = mlp([2, 32, 32, 2])
    return _classify("", "tabular", model, train, val, adam(1e-2), 25, 32, root_cause=None)


@healthy
def wine_logistic_sgd(seed: int) -> Setup:
    """Multinomial logistic regression (one linear layer) with plain SGD on 124 rows."""
    train, val = _table(datasets.load_wine, seed)
    model = nn.Linear(13, 3)
    return _classify("", "tabular", model, train, val, sgd(0.1), 50, 16, root_cause=None)


@healthy
def breast_cancer_logistic(seed: int) -> Setup:
    """Logistic regression on standardised features; classes 63/37 as the data has them."""
    train, val = _table(datasets.load_breast_cancer, seed)
    return _classify(
        "", "tabular", nn.Linear(30, 2), train, val, adam(1e-2), 30, 32, root_cause=None
    )


@healthy
def heavy_tailed_log_table(seed: int) -> Setup:
    """Income-like log-normal columns, log1p-transformed and standardised by the user."""
    rng = np.random.default_rng(seed)
    n, d = 2500, 12
    raw = rng.lognormal(mean=3.0, sigma=1.2, size=(n, d))
    z = np.log1p(raw)
    score = z[:, :4] @ np.array([1.0, -0.8, 0.6, 0.5]) + rng.normal(0, 0.6, n)
    y = (score > np.median(score)).astype(np.int64)
    x_tr, x_va, y_tr, y_va = _split(z, y, seed)
    x_tr, x_va = _standardize(x_tr, x_va)
    train, val = (_f32(x_tr), _i64(y_tr)), (_f32(x_va), _i64(y_va))
    return _classify(
        "", "tabular", mlp([d, 32, 2]), train, val, adam(1e-3), 20, 32, root_cause=None
    )


# ============================================================================== wide sparse
@healthy
def tfidf_wide_logistic(seed: int) -> Setup:
    """1,000 sparse term columns, tf-idf weighted, rows L2-normalised; logistic regression."""
    rng = np.random.default_rng(seed)
    n, d = 1800, 1000
    rates = 0.2 / np.arange(1, d + 1) ** 0.6
    counts = rng.poisson(rates * 3, (n, d)).astype(np.float64)
    y = rng.integers(0, 2, n)
    topic = rng.choice(d, 30, replace=False)
    counts[:, topic] += rng.poisson(0.4, (n, 30)) * y[:, None]
    idf = np.log((1 + n) / (1 + (counts > 0).sum(0))) + 1
    x = counts * idf
    x /= np.linalg.norm(x, axis=1, keepdims=True).clip(1e-9)
    train, val = _xy(x, y, seed)
    return _classify(
        "", "tabular", nn.Linear(d, 2), train, val, adam(1e-2), 15, 32, root_cause=None
    )


def _imdb_presence(seed: int):
    """IMDB reviews as 2,000 binary word-presence columns."""
    (x, y), (xv, yv), _ = _imdb_token_ids(seed, n=2000, vocab=2000, length=200)

    def presence(ids: np.ndarray) -> np.ndarray:
        out = np.zeros((len(ids), 2000), dtype=np.float32)
        rows = np.repeat(np.arange(len(ids)), ids.shape[1])
        out[rows, ids.ravel()] = 1.0
        out[:, :2] = 0.0  # padding and unknown words carry no meaning
        return out

    return (_f32(presence(x)), _i64(y)), (_f32(presence(xv)), _i64(yv))


@healthy
def imdb_bag_of_words_mlp(seed: int) -> Setup:
    """A two-layer MLP on word presence, stopped after 3 epochs as the Keras IMDB tutorial
    advises: the validation loss is lowest there (written first with 8 epochs, it truly
    overfit: val loss 0.40 -> 0.51 from epoch 3 to 8 in the plain loop; that version is now
    the broken setup `imdb_bag_of_words_overtrained`)."""
    train, val = _imdb_presence(seed)
    model = mlp([2000, 64, 2], dropout=0.5)
    return _classify("", "tabular", model, train, val, adam(1e-3), 3, 32, root_cause=None)


@register
def imdb_bag_of_words_overtrained(seed: int) -> Setup:
    """The same MLP trained 8 epochs: train accuracy 100%, val loss up 27% from its lowest."""
    train, val = _imdb_presence(seed)
    model = mlp([2000, 64, 2], dropout=0.5)
    return _classify(
        "",
        "tabular",
        model,
        train,
        val,
        adam(1e-3),
        8,
        32,
        root_cause="overfitting",
        truth=frozenset({"overfitting"}),
        symptom="overfits",
    )


# ============================================================================== natural imbalance
@healthy
def imbalanced_4_to_1_mlp(seed: int) -> Setup:
    """A churn-like 80/20 problem with separable enough classes; no re-weighting needed."""
    x, y = datasets.make_classification(
        3000, 10, n_informative=5, weights=[0.8, 0.2], class_sep=1.5, random_state=seed
    )
    x_tr, x_va, y_tr, y_va = _split(x, y, seed)
    x_tr, x_va = _standardize(x_tr, x_va)
    train, val = (_f32(x_tr), _i64(y_tr)), (_f32(x_va), _i64(y_va))
    return _classify(
        "", "tabular", mlp([10, 32, 2]), train, val, adam(1e-3), 20, 32, root_cause=None
    )


@healthy
def digits_zero_vs_rest(seed: int) -> Setup:
    """'Is it a zero?' on the 8x8 digits: one positive in ten, a classic one-vs-rest task."""
    x, y = datasets.load_digits(return_X_y=True)
    train, val = _xy(x / 16.0, (y == 0).astype(np.int64), seed)
    return _classify(
        "", "tabular", mlp([64, 32, 2]), train, val, adam(1e-3), 20, 32, root_cause=None
    )


# ============================================================================== images
@healthy
def mnist_mlp_pixels01(seed: int) -> Setup:
    """Pixels / 255 (no mean subtraction), Flatten + two dense layers, the Keras-tutorial way."""
    train, val = _mnist_flat01(seed, 3000, 600)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    return _classify("", "image", model, train, val, adam(1e-3), 5, 32, root_cause=None)


@healthy
def mnist_lenet_sgd(seed: int) -> Setup:
    """The PyTorch MNIST example's LeNet and optimizer: SGD lr 0.01, momentum 0.5."""
    train, val = _mnist_flat01(seed, 3000, 600)
    x, xv = (train[0] - 0.1307) / 0.3081, (val[0] - 0.1307) / 0.3081
    return _classify(
        "", "image", LeNet(), (x, train[1]), (xv, val[1]), sgd(0.01, 0.5), 6, 64, root_cause=None
    )


@healthy
def digits_cnn_batchnorm(seed: int) -> Setup:
    """8x8 digits, a convolutional net with batch normalisation."""
    x, y = datasets.load_digits(return_X_y=True)
    train, val = _xy((x / 16.0).reshape(-1, 1, 8, 8), y, seed)
    return _classify("", "image", _bn_cnn(), train, val, adam(1e-3), 10, 32, root_cause=None)


@healthy
def mnist_large_mlp(seed: int) -> Setup:
    """Larger data: 15,000 MNIST images, a 256-unit MLP, two epochs at batch 128."""
    train, val = _mnist_flat01(seed, 15000, 2000)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    return _classify("", "image", model, train, val, adam(1e-3), 2, 128, root_cause=None)


@healthy
def mnist_small_cnn_sgd(seed: int) -> Setup:
    """A small CNN with SGD + momentum 0.9 at lr 0.01, normalised pixels."""
    train, val = _mnist_flat01(seed, 2500, 500)
    x, xv = (train[0] - 0.1307) / 0.3081, (val[0] - 0.1307) / 0.3081
    model = SmallCNN(28)
    return _classify(
        "", "image", model, (x, train[1]), (xv, val[1]), sgd(0.01, 0.9), 4, 64, root_cause=None
    )


# ============================================================================== token-id text
@healthy
def imdb_token_bag(seed: int) -> Setup:
    """IMDB as token ids (vocabulary 5,000, 128 tokens), averaged embeddings."""
    train, val, vocab = _imdb_token_ids(seed)
    train, val = _as_tokens(train, val)
    return _classify("", "text", TokenBag(vocab), train, val, adam(5e-3), 8, 32, root_cause=None)


@healthy
def synthetic_text_cnn(seed: int) -> Setup:
    """Zipf-distributed token ids with padding; a 1-D CNN over embeddings."""
    train, val, vocab = _synthetic_token_text(seed)
    return _classify("", "text", TokenCNN(vocab), train, val, adam(2e-3), 8, 32, root_cause=None)


@healthy
def synthetic_text_lstm(seed: int) -> Setup:
    """The same kind of text, read by an LSTM over embeddings."""
    train, val, vocab = _synthetic_token_text(seed, n=1600, length=30)
    return _classify("", "text", TokenLSTM(vocab), train, val, adam(3e-3), 8, 32, root_cause=None)


@healthy
def char_gru_language_model(seed: int) -> Setup:
    """Next-character prediction on Shakespeare with a GRU (targets: every next character)."""
    train, val, vocab = _char_windows(seed)
    return _lm_setup(CharGRU(vocab), train, val, vocab, adam(3e-3), 4, 32)


@healthy
def char_transformer_language_model(seed: int) -> Setup:
    """Next-character prediction with a one-layer causal transformer."""
    train, val, vocab = _char_windows(seed, length=48)
    model = TinyTransformerLM(vocab, 48)
    return _lm_setup(model, train, val, vocab, adam(1e-3), 4, 32)


# ============================================================================== sequences
@healthy
def rnn_tanh_short_sequences(seed: int) -> Setup:
    """A vanilla tanh RNN on 12-step sine sequences: short enough for a plain RNN."""
    train, val = _sine_sequences(seed, steps=12)
    model = SeqNet(nn.RNN, 1, 32, 3)
    return _classify("", "sequence", model, train, val, adam(3e-3), 25, 32, root_cause=None)


@healthy
def bigru_sine_frequency(seed: int) -> Setup:
    """A bidirectional GRU on 2-channel sine sequences."""
    train, val = _sine_sequences(seed, steps=30, features=2)
    model = SeqNet(nn.GRU, 2, 24, 3, bidirectional=True)
    return _classify("", "sequence", model, train, val, adam(3e-3), 10, 32, root_cause=None)


@healthy
def lstm_two_layer_sine(seed: int) -> Setup:
    """A two-layer LSTM with dropout between layers."""
    train, val = _sine_sequences(seed, steps=25)
    model = SeqNet(nn.LSTM, 1, 32, 3, num_layers=2, dropout=0.2)
    return _classify("", "sequence", model, train, val, adam(3e-3), 10, 32, root_cause=None)


@healthy
def attention_gru_pooling(seed: int) -> Setup:
    """GRU outputs pooled by additive attention."""
    train, val = _sine_sequences(seed, steps=30)
    model = AttentionGRU(1)
    return _classify("", "sequence", model, train, val, adam(3e-3), 10, 32, root_cause=None)


@healthy
def transformer_sequence_classifier(seed: int) -> Setup:
    """A small transformer encoder over 30-step sequences, mean-pooled."""
    train, val = _sine_sequences(seed, steps=30)
    model = SequenceTransformer(1, 30)
    return _classify("", "sequence", model, train, val, adam(1e-3), 20, 32, root_cause=None)


@healthy
def gru_forecast_next_value(seed: int) -> Setup:
    """Sequence regression: a GRU predicts the next value of a noisy two-sine series."""
    train, val = _forecast_windows(seed)
    model = SeqNet(nn.GRU, 1, 32, 1)
    return _regress("", model, train, val, adam(3e-3), 15, 32, root_cause=None)


# ============================================================================== regression
@healthy
def sine_1d_regression(seed: int) -> Setup:
    """y = sin(x) + noise on 2,000 points of one feature: as dense as data gets."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, (2000, 1))
    y = np.sin(x[:, 0]) + rng.normal(0, 0.1, 2000)
    train, val = _as_column(*_pairs(x, y, seed))
    model = mlp([1, 64, 64, 1], act=nn.Tanh)
    return _regress("", model, train, val, adam(1e-2), 30, 32, root_cause=None)


def _pairs(x, y, seed: int):
    x_tr, x_va, y_tr, y_va = _split(x, y, seed, stratify=False)
    return (x_tr, y_tr), (x_va, y_va)


@healthy
def linear_regression_wide(seed: int) -> Setup:
    """make_regression with 40 features (10 informative), a linear model, standardised."""
    x, y = datasets.make_regression(1500, 40, n_informative=10, noise=10.0, random_state=seed)
    train, val = _standardized_regression(x, y, seed)
    return _regress("", nn.Linear(40, 1), train, val, adam(1e-2), 20, 32, root_cause=None)


@healthy
def diabetes_linear_sgd(seed: int) -> Setup:
    """Tiny regression (309 rows): a linear model with SGD, targets standardised."""
    x, y = datasets.load_diabetes(return_X_y=True)
    train, val = _standardized_regression(x, y, seed)
    return _regress("", nn.Linear(10, 1), train, val, sgd(0.05), 40, 16, root_cause=None)
