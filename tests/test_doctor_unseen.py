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


# ------------------------------------------------------------ the last false alarms (issue 9)
# Logged by the field set's runs (benchmarks/doctor_field, fresh seeds), as `trainer.history`
# and the probes' sampled steps; a user with these logs asks the doctor with `run_rules`.
IRIS_CM_LOSS = [1.1122, 0.8347, 0.6561, 0.5344, 0.4914, 0.4784, 0.3943, 0.3664, 0.3793, 0.3285]
IRIS_CM_LOSS += [0.3045, 0.2783, 0.2563, 0.2414, 0.2482, 0.2637, 0.2132, 0.1871, 0.1818, 0.2156]
IRIS_CM_LOSS += [0.2703, 0.2914, 0.2798, 0.2022, 0.1665, 0.1633, 0.1341, 0.1407, 0.15, 0.1321]
IRIS_CM_LOSS += [0.1412, 0.1289, 0.1222, 0.12, 0.124, 0.1134, 0.1161, 0.1083, 0.1094, 0.1053]
IRIS_CM_LOSS += [0.1142, 0.106, 0.1038, 0.0998, 0.1002, 0.0994, 0.1084, 0.1124, 0.1283, 0.1442]
IRIS_CM_LOSS += [0.0922, 0.0912, 0.1152, 0.0927, 0.0944, 0.0974, 0.121, 0.1068, 0.0879, 0.0969]
IRIS_CM_LOSS += [0.0891, 0.0994, 0.1012, 0.0933, 0.0863, 0.0851, 0.0871, 0.1114, 0.1079, 0.0867]
IRIS_CM_LOSS += [0.0851, 0.0913, 0.0897, 0.0889, 0.0799, 0.0928, 0.0815, 0.0806, 0.0899, 0.0943]
# The highest sampled batch loss of each epoch (7 batches of 16 rows, every one sampled).
IRIS_CM_WORST_BATCH = [1.38, 0.942, 0.728, 0.602, 0.7, 0.711, 0.515, 0.441, 0.489, 0.406, 0.389]
IRIS_CM_WORST_BATCH += [0.393, 0.343, 0.371, 0.401, 0.43, 0.327, 0.369, 0.333, 0.335, 0.634]
IRIS_CM_WORST_BATCH += [0.528, 0.523, 0.317, 0.291, 0.228, 0.158, 0.269, 0.227, 0.215, 0.317]
IRIS_CM_WORST_BATCH += [0.196, 0.196, 0.161, 0.183, 0.156, 0.312, 0.162, 0.179, 0.157, 0.234]
IRIS_CM_WORST_BATCH += [0.213, 0.212, 0.22, 0.201, 0.16, 0.248, 0.202, 0.338, 0.276, 0.264]
IRIS_CM_WORST_BATCH += [0.248, 0.216, 0.245, 0.181, 0.165, 0.296, 0.159, 0.223, 0.183, 0.194]
IRIS_CM_WORST_BATCH += [0.415, 0.182, 0.181, 0.187, 0.195, 0.27, 0.264, 0.269, 0.217, 0.161]
IRIS_CM_WORST_BATCH += [0.184, 0.239, 0.269, 0.155, 0.207, 0.192, 0.181, 0.249, 0.16]
ADAM_DIGITS_LOSS = [0.5733, 0.4469, 0.4646, 0.419, 0.2677, 0.2724, 0.1906, 0.4437, 0.5159]
ADAM_DIGITS_LOSS += [0.7681, 0.2021, 0.1194, 0.101, 0.0789, 0.069, 0.111]
ADAM_DIGITS_WORST_BATCH = [2.3, 3.474, 1.459, 2.897, 0.589, 2.499, 0.93, 1.148, 1.301, 5.211]
ADAM_DIGITS_WORST_BATCH += [2.709, 0.564, 0.168, 0.437, 0.321, 0.066]


def logged(losses: list[float], worst_batch: list[float] | None = None, **series: list[float]):
    """(history, probe step records) as a Trainer with the doctor's probes logs them."""
    history = [
        {"epoch": e, "loss": v, **{k: s[e - 1] for k, s in series.items()}}
        for e, v in enumerate(losses, start=1)
    ]
    steps = [
        {"kind": "step", "step": 10 * e, "epoch": e, "loss": v}
        for e, v in enumerate(worst_batch or [], start=1)
    ]
    return history, steps


def test_one_climb_of_a_healthy_run_is_not_an_oscillating_loss():
    """Iris in centimetres, a 4-32-3 MLP, Adam at 1e-2, 80 epochs (field seed 201): the epoch
    loss climbs once from 0.18 to 0.29 (1.6x, the size of a divergence) and is won back three
    epochs later, but no batch after the first epoch scores worse than an untrained model
    (ln 3 = 1.10). Adam at 0.05 on digits climbs once from 0.19 to 0.77 while batches in five
    epochs score above ln 10: updates throwing the model past where it started, again and
    again, which is what an oscillating rate does."""
    from layerwise.diagnose.rules import RuleContext, run_rules

    history, steps = logged(IRIS_CM_LOSS, IRIS_CM_WORST_BATCH)
    iris = run_rules(RuleContext(history, steps, num_classes=3), stage="training")
    assert "oscillating_loss" not in [f.code for f in iris]
    history, steps = logged(ADAM_DIGITS_LOSS, ADAM_DIGITS_WORST_BATCH)
    adam = run_rules(RuleContext(history, steps, num_classes=10), stage="training")
    found = next(f for f in adam if f.code == "oscillating_loss")
    assert [c["low"] for c in found.evidence["climbs"]] == [0.1906]
    assert [o["epoch"] for o in found.evidence["overshoots"]] == [2, 4, 6, 10, 11]
    # The same single climb without the probes' batches: one event, not a repetition.
    bare = run_rules(RuleContext(history, None, num_classes=10), stage="training")
    assert "oscillating_loss" not in [f.code for f in bare]
    # Two climbs are a repetition by themselves (field seed 204: 0.35 -> 0.68, 0.025 -> 0.40,
    # its worst batch 2.08, under ln 10): named without any batch overshooting.
    twice = [0.6723, 0.3679, 0.3487, 0.4266, 0.6621, 0.6793, 0.5961, 0.3895, 0.0927, 0.0785]
    twice += [0.0578, 0.0253, 0.1736, 0.1888, 0.2842, 0.4032]
    found = run_rules(RuleContext(logged(twice)[0], None, num_classes=10), stage="training")
    assert [len(f.evidence["climbs"]) for f in found if f.code == "oscillating_loss"] == [2]


def test_an_accuracy_gap_with_held_out_results_flat_within_noise_is_not_overfitting():
    """A 1-D CNN over embeddings on 2,000 synthetic token documents, Adam 2e-3, 8 epochs (field
    seed 200): train accuracy 0.96 against 0.77 on the 500 val rows, the val loss's running
    median up 0.495 -> 0.512 (0.4 of its standard error over 500 rows) and val accuracy at
    0.772 against its best 0.778: a gap, but held-out results are no worse beyond their
    noise. A 512x512 MLP on 200 MNIST images (the same gap, 0.15) whose val loss climbs
    steadily 0.52 -> 0.64 for 45 epochs while it memorises is overfitting."""
    from layerwise.diagnose.rules import RuleContext, run_rules

    text, _ = logged(
        [0.6624, 0.5407, 0.4408, 0.3698, 0.3096, 0.2588, 0.214, 0.1695],
        val_loss=[0.6255, 0.5454, 0.5061, 0.4946, 0.4924, 0.4963, 0.5118, 0.5239],
        accuracy=[0.6187, 0.7553, 0.8227, 0.8467, 0.888, 0.9107, 0.94, 0.9567],
        val_accuracy=[0.656, 0.736, 0.764, 0.774, 0.778, 0.774, 0.772, 0.768],
    )
    sizes = {"sizes": {"train": 1500, "val": 500}}
    found = run_rules(RuleContext(text, None, sizes, num_classes=2), stage="training")
    assert text[-1]["accuracy"] - text[-1]["val_accuracy"] > 0.15  # the gap the rule reads
    assert "overfitting" not in [f.code for f in found]

    val = [1.5548, 0.7416, 0.8045, 0.5858, 0.5211, 0.555, 0.5179]
    val += [0.5179 + 0.12 * k / 43 for k in range(1, 44)]  # its steady climb (measured ends)
    memorising, _ = logged(
        [2.0247, 0.9991, 0.4535, 0.2215, 0.0858, 0.0298] + [0.014 * 0.92**k for k in range(44)],
        val_loss=val,
        accuracy=[0.255, 0.73, 0.845, 0.945, 0.985] + [1.0] * 45,
        val_accuracy=[0.546, 0.764, 0.722, 0.8, 0.84, 0.836, 0.854] + [0.846] * 43,
    )
    data = {"sizes": {"train": 200, "val": 500}}
    found = run_rules(RuleContext(memorising, None, data, num_classes=10), stage="training")
    overfit = next(f for f in found if f.code == "overfitting")
    assert overfit.evidence["rests_on"] == ["accuracy_gap"]
    assert overfit.evidence["val_loss_recent"] > overfit.evidence["val_loss_min"]
    # An MLP on 1,500 IMDB word-presence rows trained 8 epochs (field seed 203): the gap with a
    # val loss up 0.421 -> 0.499 in medians, 1.7 of its standard errors: worse, named.
    imdb, _ = logged(
        [0.6364, 0.4188, 0.272, 0.1796, 0.1306, 0.0899, 0.0653, 0.0477],
        val_loss=[0.5406, 0.4311, 0.4078, 0.4215, 0.4914, 0.4726, 0.4995, 0.5484],
        accuracy=[0.6753, 0.8567, 0.9087, 0.9527, 0.962, 0.9807, 0.988, 0.996],
        val_accuracy=[0.804, 0.812, 0.828, 0.818, 0.792, 0.816, 0.818, 0.802],
    )
    found = run_rules(RuleContext(imdb, None, sizes, num_classes=2), stage="training")
    overfit = next(f for f in found if f.code == "overfitting")
    assert overfit.evidence["rests_on"] == ["accuracy_gap"]
    assert 1 < (0.4995 - 0.4215) / overfit.evidence["sampling_error"] < 2
