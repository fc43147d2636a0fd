"""The doctor on setups written the way a user writes them (issue 9).

Each setup is plain PyTorch data and models passed through `check_data` and a `Trainer` with the
doctor, as the CLI wires them; each stands for one class of mistake the doctor made on setups it
had never seen: a false alarm on healthy data, or a root cause it missed.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_classification, make_moons
from torch import nn

from layerwise.data import DatasetBundle
from layerwise.diagnose.doctor import check_data, doctor_callbacks
from layerwise.diagnose.findings import CODES, Finding
from layerwise.diagnose.rules import ACCOUNTS_FOR, EXPLAINED_BY, RESTS_ON, explain
from layerwise.train import Trainer


def bundle(x: np.ndarray, y: np.ndarray, classes: int, seed: int = 0) -> DatasetBundle:
    """70/15/15 shuffled splits of (x, y) as tensors, as a user would build them."""
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order]).long()
    a, b = int(0.7 * len(x)), int(0.85 * len(x))
    return DatasetBundle(
        name="user",
        train=(x[:a], y[:a]),
        val=(x[a:b], y[a:b]),
        test=(x[b:], y[b:]),
        num_classes=classes,
        input_shape=tuple(x.shape[1:]),
    )


# ---------------------------------------------------------------------------- data: no false alarm
def test_flattened_digits_in_unit_range_are_not_unscaled():
    """8x8 digits / 16 as a 64-column table: near-empty border columns have tiny stds (277-fold
    apart) but every column spans the same [0, 1]; nothing about this data is wrong."""
    x, y = load_digits(return_X_y=True)
    diagnosis = check_data(bundle(x / 16.0, y, 10))
    assert "unscaled_inputs" not in diagnosis.codes
    scale = diagnosis.data_profile["scale"]
    assert scale["feature_std_ratio"] > 100 and scale["feature_range_ratio"] <= 16


def test_a_column_in_other_units_is_still_unscaled():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8))
    x[:, 3] *= 1e-3  # one measurement in km among others in m, say
    y = (x[:, 0] + 1e3 * x[:, 3] > 0).astype(int)
    finding = next(f for f in check_data(bundle(x, y, 2)).findings if f.code == "unscaled_inputs")
    assert "feature ranges differ" in finding.message


def test_dense_two_feature_data_has_no_leakage_but_copied_rows_do():
    """Two moons, 4,000 rows: neighbours sit ~0.3% apart, so a fixed 1.5% near-copy radius called
    almost every validation row a copy of a training row."""
    x, y = make_moons(4_000, noise=0.15, random_state=0)
    data = bundle(x, y, 2)
    diagnosis = check_data(data, label_noise=False)
    assert diagnosis.codes == []
    overlap = diagnosis.data_profile["overlap"]
    assert overlap["val"]["fraction"] < 0.03 and overlap["near_rms"] < 0.015
    # 10% of the validation rows copied into train are leakage, exactly as before.
    vx, vy = data.val
    leaked = DatasetBundle(
        name="user",
        train=(torch.cat([data.train[0], vx[:60]]), torch.cat([data.train[1], vy[:60]])),
        val=data.val,
        test=data.test,
        num_classes=2,
        input_shape=(2,),
    )
    assert "train_test_leakage" in check_data(leaked, label_noise=False).codes


def test_label_noise_abstains_when_its_quick_model_cannot_learn():
    """The informative columns were dropped: the quick model sits at chance and its flags (half
    the rows) describe its own guesses, not the labels."""
    x, y = make_classification(
        1_500, 20, n_informative=5, n_redundant=0, shuffle=False, random_state=1
    )
    diagnosis = check_data(bundle(x[:, 5:], y, 2))
    noise = diagnosis.data_profile["label_noise"]
    assert "label_noise" not in diagnosis.codes
    assert noise["estimated_fraction"] is None and noise["flagged"] == 0
    assert noise["raw_fraction"] > 0.3 and noise["progress"] < 0.5
    assert "learnt too little" in noise["abstained"]


def test_shuffled_training_labels_are_judged_against_the_held_out_split():
    """Training labels shuffled across rows leave the quick model at chance, as inputs without
    signal would; the validation labels are sound, so a model fitted on them says which."""
    x, y = load_digits(return_X_y=True)
    data = bundle(x / 16.0, y, 10)
    xt, yt = data.train
    shuffled = yt[torch.randperm(len(yt), generator=torch.Generator().manual_seed(0))]
    diagnosis = check_data(dataclasses.replace(data, train=(xt, shuffled)))
    noise = diagnosis.data_profile["label_noise"]
    assert "label_noise" in diagnosis.codes
    assert noise["cross_split"] and noise["progress"] < 0.2 and noise["held_out_progress"] > 0.8
    assert noise["estimated_fraction"] > 0.5
    # Honest data keeps the training split's own estimate.
    assert "cross_split" not in check_data(data).data_profile["label_noise"]


def test_label_noise_still_found_when_the_model_learns():
    x, y = make_classification(
        1_500, 10, n_informative=4, n_redundant=0, class_sep=2.0, random_state=2
    )
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(y), 450, replace=False)
    y = y.copy()
    y[flipped] = 1 - y[flipped]  # 30% of the labels wrong
    diagnosis = check_data(bundle(x, y, 2))
    assert "label_noise" in diagnosis.codes
    assert diagnosis.data_profile["label_noise"]["abstained"] is None


# ---------------------------------------------------------------------------- symptoms and causes
def finding(code: str) -> Finding:
    return Finding(code=code, severity="warning", message="m", evidence={})


def test_a_symptom_gives_way_to_the_finding_that_accounts_for_it():
    """No update happened because no unit was alive: the slow loss is the dead units' doing."""
    kept, explained = explain([finding("lr_too_low"), finding("dead_units")])
    assert [f.code for f in kept] == ["dead_units"]
    assert [f.code for f in explained] == ["lr_too_low"]
    assert explained[0].evidence["explained_by"] == ["dead_units"]
    assert kept[0].evidence["explains"] == ["lr_too_low"]
    # Alone, each stays.
    assert [f.code for f in explain([finding("lr_too_low")])[0]] == ["lr_too_low"]


def test_explanations_come_from_observations_not_pairs():
    """Every symptom names what it rests on, every explainer accounts for all of it, and no two
    findings explain each other (so one of them always stays)."""
    assert set(RESTS_ON) | set(ACCOUNTS_FOR) <= set(CODES)
    for symptom, causes in EXPLAINED_BY.items():
        assert causes, symptom
        for cause in causes:
            assert RESTS_ON[symptom] <= ACCOUNTS_FOR[cause]
            assert symptom not in EXPLAINED_BY.get(cause, ())
    assert "dead_units" in EXPLAINED_BY["lr_too_low"]
    assert "dead_units" not in EXPLAINED_BY["underfitting"]  # a small model has dead units too


# ---------------------------------------------------------------------------- training
def fit(model: nn.Module, x, y, *, classes: int, epochs: int, optimizer="adam", lr=1e-3, batch=32):
    callbacks = doctor_callbacks(num_classes=classes, echo=None)
    trainer = Trainer(
        model, optimizer=optimizer, lr=lr, doctor=False, callbacks=callbacks, metrics=("accuracy",)
    )
    n = int(0.8 * len(x))
    trainer.fit((x[:n], y[:n]), (x[n:], y[n:]), epochs=epochs, batch_size=batch, progress=False)
    return trainer, callbacks[0].log


@pytest.mark.slow
def test_a_nan_loss_from_a_bad_initialisation_names_its_cause():
    """Weights drawn from N(0, 1) in six 256-wide ReLU layers: the gradient overflows at step 1
    and the loss is NaN at step 2, long before the first regular sample (every 5 steps)."""
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    widths = [64, 256, 256, 256, 256, 256, 256]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(256, 10))
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1.0)
    trainer, log = fit(model, x, y, classes=10, epochs=3, optimizer="sgd", lr=0.01)
    assert [r["step"] for r in log.steps][:3] == [0, 1, 2]  # dense early samples
    diagnosis = trainer.diagnose()
    assert {"loss_nan", "exploding_gradients"} <= set(diagnosis.codes)
    nan = next(f for f in diagnosis.findings if f.code == "loss_nan")
    assert "just before: gradient norm" in nan.message
    assert nan.causes[0].startswith("exploding gradients")
    assert nan.evidence["lead_up"]["update_ratio"] > 1


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.RNNBase]) -> None:
        super().__init__()
        self.rnn = cell(4, 32, batch_first=True)
        self.head = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def sequences(depends_on: slice, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1_500, 60, 4, generator=g)
    return x, (x[:, depends_on, 0].sum(1) > 0).long()


@pytest.mark.slow
def test_vanishing_gradients_through_time_in_a_recurrent_net():
    """The label is the sign of the first of 60 time steps: a tanh RNN cannot carry it."""
    torch.manual_seed(0)
    x, y = sequences(slice(0, 1))
    trainer, log = fit(Recurrent(nn.RNN), x, y, classes=2, epochs=5, batch=64)
    ratios = [r["layers"]["rnn"]["time_grad_ratio"] for r in log.steps]
    assert max(ratios) < 1e-6
    diagnosis = trainer.diagnose()
    assert "vanishing_gradients" in diagnosis.codes
    found = next(f for f in diagnosis.findings if f.code == "vanishing_gradients")
    assert found.evidence["through_time"] and found.layer == "rnn"
    # What it explains (a plateau, underfitting) is kept as true but not the root cause.
    assert {"underfitting"} <= {f.code for f in diagnosis.explained}


@pytest.mark.slow
def test_a_recurrent_net_that_learns_is_not_judged_by_its_forgetting():
    """The label is set by the last 5 steps: the first steps' gradient is tiny, rightly."""
    torch.manual_seed(0)
    x, y = sequences(slice(-5, None))
    trainer, log = fit(Recurrent(nn.LSTM), x, y, classes=2, epochs=6, batch=64, lr=3e-3)
    assert min(r["layers"]["rnn"]["time_grad_ratio"] for r in log.steps) < 1e-3
    assert trainer.history[-1]["val_accuracy"] > 0.8
    assert trainer.diagnose().codes == []


def test_possible_findings_and_explained_symptoms_show_only_when_verbose():
    from layerwise.diagnose.findings import Diagnosis
    from layerwise.diagnose.rules import sureness

    strong = sureness(finding("dead_units"), "share of dead units", 0.95, 0.6)
    possible = sureness(finding("class_imbalance"), "largest/smallest class", 6.0, 5.0)
    assert (strong.confidence, possible.confidence) == ("strong", "possible")
    assert possible.decided_by == "largest/smallest class 6 (>= 5)"
    kept, explained = explain([strong, possible, finding("lr_too_low")])
    diagnosis = Diagnosis(kept, explained=explained)
    quiet, verbose = diagnosis.render(), diagnosis.render(verbose=True)
    assert "dead_units" in quiet and "class_imbalance" not in quiet
    assert "1 possible finding not shown" in quiet and "lr_too_low" not in quiet
    assert "class_imbalance (possible)" in verbose
    assert "[explained] lr_too_low: m (explained by dead_units)" in verbose
    assert Diagnosis.from_dict(diagnosis.to_dict()).explained[0].code == "lr_too_low"


# ---------------------------------------------------------------------------- the wider field set
def test_two_d_blobs_as_generated_are_not_unscaled_but_tenfold_ones_are():
    """Four Gaussian blobs with centres drawn in ±10, coordinates left as generated: std 6,
    root mean square 6, and an MLP fits them as well as standardised ones. Ten times that (the
    same blobs in millimetres) is an order of magnitude off."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(2_000, centers=4, cluster_std=1.5, random_state=100)
    diagnosis = check_data(bundle(x, y, 4), label_noise=False)
    assert diagnosis.data_profile["scale"]["std"] > 5  # what the old mean/std test flagged
    assert "unscaled_inputs" not in diagnosis.codes
    scaled_up = check_data(bundle(10 * x, y, 4), label_noise=False)
    found = next(f for f in scaled_up.findings if f.code == "unscaled_inputs")
    assert "root mean square" in found.message


def test_a_linear_regression_converged_at_its_noise_level_is_not_a_plateau():
    """A linear model with SGD on the 309 diabetes rows, targets standardised: it converges in
    two epochs at about half the targets' variance, which is all a line explains there."""
    from sklearn.datasets import load_diabetes

    torch.manual_seed(0)
    x, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(100).permutation(len(x))
    x, y = x[order], y[order]
    n = int(0.7 * len(x))
    x = (x - x[:n].mean(0)) / x[:n].std(0)
    y = (y - y[:n].mean()) / y[:n].std()
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)[:, None]
    data = DatasetBundle(
        name="diabetes",
        train=(xt[:n], yt[:n]),
        val=(xt[n:], yt[n:]),
        test=None,
        num_classes=1,
        input_shape=(10,),
        task="regression",
    )
    profile = check_data(data).data_profile
    assert 0.4 < profile["linear_fit_mse"] < 0.6 and profile["target_variance"] == pytest.approx(1)
    callbacks = doctor_callbacks(data_profile=profile, task="regression", echo=None)
    trainer = Trainer(
        nn.Linear(10, 1), loss="mse", optimizer="sgd", lr=0.05, doctor=False, callbacks=callbacks
    )
    trainer.fit(data.train, data.val, epochs=12, batch_size=16, progress=False)
    assert trainer.history[-1]["loss"] > 0.5  # half the variance: the old yardstick's plateau
    assert "loss_plateau" not in trainer.diagnose().codes


@pytest.mark.slow
def test_a_few_wrong_val_rows_growing_surer_are_not_overfitting():
    """Iris (105 training rows, 45 val rows) with a 16-unit MLP and Adam for 60 epochs: the same
    3 val rows stay wrong while the model grows surer of them, so the val loss climbs by a third
    from its lowest at an unchanged val accuracy. A few rows, not a model that does worse."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.3, random_state=101, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    as_xy = lambda a, b: (torch.tensor(a, dtype=torch.float32), torch.tensor(b))  # noqa: E731
    train, val = as_xy(scaler.transform(x_tr), y_tr), as_xy(scaler.transform(x_va), y_va)
    data = DatasetBundle("iris", train=train, val=val, test=None, num_classes=3, input_shape=(4,))
    callbacks = doctor_callbacks(data_profile=check_data(data).data_profile, echo=None)
    torch.manual_seed(101)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    trainer = Trainer(model, optimizer="adam", lr=1e-2, seed=101, doctor=False, callbacks=callbacks)
    trainer.fit(train, val, epochs=60, batch_size=16, progress=False)
    val_loss = [r["val_loss"] for r in trainer.history]
    assert sorted(val_loss[-3:])[1] > 1.25 * min(val_loss[10:])  # the old rule's 25% rise
    assert len({r["val_accuracy"] for r in trainer.history[-20:]}) <= 2
    assert "overfitting" not in trainer.diagnose().codes
