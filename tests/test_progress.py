"""Progress everywhere: `Trainer.fit` prints a line per epoch unless told not to, early stopping
says when, why and whose weights are kept, the LR finder and auto-fix report as they go, and a
finding shown live that no longer holds at the end is reported as resolved, not dropped."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from layerwise import cli
from layerwise.diagnose import doctor as doctor_module
from layerwise.diagnose.doctor import Doctor, diagnose_run
from layerwise.diagnose.findings import Diagnosis, Finding
from layerwise.errors import DataError
from layerwise.runs import Run
from layerwise.train import Callback, EarlyStopping, ProgressBar, Trainer
from layerwise.tune import autofix
from layerwise.tune.lr_finder import LRRangeTest


def blobs(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % 2
    return torch.randn(n, 4) + 2 * y[:, None], y


def epoch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("epoch ")]


# ------------------------------------------------------------------------------ fit
def test_fit_prints_a_line_per_epoch_by_default(capsys):
    Trainer(nn.Linear(4, 2), doctor=False).fit(blobs(), epochs=3, batch_size=8)
    lines = epoch_lines(capsys.readouterr().out)
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all(" loss " in line and "accuracy" in line for line in lines)


def test_progress_is_quiet_on_request(capsys):
    Trainer(nn.Linear(4, 2), doctor=False).fit(blobs(), epochs=2, batch_size=8, progress=False)
    quiet = Trainer(nn.Linear(4, 2), doctor=False, progress=False)
    quiet.fit(blobs(), epochs=2, batch_size=8)
    assert capsys.readouterr().out == ""
    quiet.fit(blobs(), epochs=3, batch_size=8, progress=True)  # one fit asks for it
    assert [line.split()[1] for line in epoch_lines(capsys.readouterr().out)] == ["3/3"]


def test_the_trainer_shows_one_bar_however_often_it_fits(capsys):
    trainer = Trainer(nn.Linear(4, 2), doctor=False)
    for epochs in (1, 2, 3):
        trainer.fit(blobs(), epochs=epochs, batch_size=8)
    assert sum(isinstance(c, ProgressBar) for c in trainer.callbacks) == 1
    assert len(epoch_lines(capsys.readouterr().out)) == 3
    trainer.fit(blobs(), epochs=4, batch_size=8, progress=False)
    assert not any(isinstance(c, ProgressBar) for c in trainer.callbacks)


def test_a_progress_bar_given_by_the_caller_is_the_only_one(capsys):
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, force_tty=False)
    trainer = Trainer(nn.Linear(4, 2), doctor=False, callbacks=[bar])
    trainer.fit(blobs(), epochs=2, batch_size=8)
    assert capsys.readouterr().out == ""
    assert len(epoch_lines(stream.getvalue())) == 2
    assert [c for c in trainer.callbacks if isinstance(c, ProgressBar)] == [bar]


# ------------------------------------------------------------------------------ early stopping
class SaysGoodbye(Callback):
    """Prints at the end of fit, as the doctor does when a finding was resolved."""

    def on_fit_end(self, trainer):
        print("goodbye")


def test_early_stopping_without_restoring_says_the_last_weights_are_kept(capsys):
    stopper = EarlyStopping("loss", patience=2, min_delta=1e9, restore_best_weights=False)
    trainer = Trainer(nn.Linear(4, 2), doctor=False, callbacks=[stopper, SaysGoodbye()])
    trainer.fit(blobs(), epochs=20, batch_size=8)
    *_, epoch, stop, goodbye = capsys.readouterr().out.strip().splitlines()
    # The stop is told right under the epoch that decided it, once, before anything at fit end.
    assert epoch.startswith("epoch 3/20 ") and goodbye == "goodbye"
    assert stop.startswith("early stopping at epoch 3/20: loss has not improved for 2 epochs")
    assert stop.endswith("keeping the last weights, epoch 3's (restore_best_weights is off)")


# ------------------------------------------------------------------------------ findings
OVERFIT = Finding("overfitting", "warning", "val_loss 0.9 vs loss 0.1", epoch=2)


@pytest.fixture
def overfitting_for_a_while(monkeypatch):
    """Rules that see overfitting at epochs 2-3 only (the rules are not under test here)."""

    def rules(context, stage=None):
        spell = not context.final and len(context.history) in (2, 3)
        return [OVERFIT] if spell else []

    monkeypatch.setattr(doctor_module, "run_rules", rules)
    if hasattr(doctor_module, "evaluate"):  # the final diagnosis: (findings, explained ones)
        monkeypatch.setattr(doctor_module, "evaluate", lambda c, stage=None: (rules(c), []))


def fit_with_a_watching_doctor(epochs: int = 5) -> tuple[Trainer, list[str]]:
    said: list[str] = []
    trainer = Trainer(
        nn.Linear(4, 2), doctor=False, progress=False, callbacks=[Doctor(echo=said.append)]
    )
    trainer.fit(blobs(), epochs=epochs, batch_size=8)
    return trainer, said


def test_a_withdrawn_finding_is_shown_as_resolved(overfitting_for_a_while):
    trainer, said = fit_with_a_watching_doctor()
    assert said == [
        "doctor: epoch 2: overfitting: val_loss 0.9 vs loss 0.1",
        "doctor: overfitting at epoch 2 — resolved by the end",
    ]
    diagnosis = trainer.diagnose()
    assert diagnosis.healthy and [f.code for f in diagnosis.resolved] == ["overfitting"]
    assert diagnosis.render().splitlines() == [
        "No problems found at the end.",
        "[resolved] overfitting at epoch 2 — resolved by the end",
    ]
    again = Diagnosis.from_dict(diagnosis.to_dict())
    assert again.resolved == diagnosis.resolved and again.healthy


def test_a_finding_that_still_holds_is_not_resolved(monkeypatch):
    monkeypatch.setattr(doctor_module, "run_rules", lambda context, stage=None: [OVERFIT])
    if hasattr(doctor_module, "evaluate"):
        monkeypatch.setattr(doctor_module, "evaluate", lambda c, stage=None: ([OVERFIT], []))
    trainer, said = fit_with_a_watching_doctor(epochs=3)
    assert said == ["doctor: epoch 2: overfitting: val_loss 0.9 vs loss 0.1"]
    diagnosis = trainer.diagnose()
    assert diagnosis.codes == ["overfitting"] and diagnosis.resolved == []
    assert "resolved" not in diagnosis.render()


class FinishedRun:
    name = "tiny"

    def __init__(self, diagnosis: Diagnosis) -> None:
        self.diagnosis = diagnosis.to_dict()

    def read_diagnosis(self):
        return self.diagnosis

    def info(self):
        return {"status": "finished"}


def test_the_cli_summary_lists_what_was_resolved(capsys):
    cli._print_doctor_summary(FinishedRun(Diagnosis([], resolved=[OVERFIT])))
    assert capsys.readouterr().out.splitlines() == [
        "doctor: no problems found at the end",
        "  [resolved] overfitting at epoch 2 — resolved by the end",
    ]
    under = Finding("underfitting", "warning", "loss 2.3 at chance", epoch=5)
    cli._print_doctor_summary(FinishedRun(Diagnosis([under], resolved=[OVERFIT])))
    assert capsys.readouterr().out.splitlines() == [
        "doctor: 1 finding(s); details: layerwise doctor tiny",
        "  [warning] underfitting: loss 2.3 at chance",
        "  [resolved] overfitting at epoch 2 — resolved by the end",
    ]


def test_diagnosing_a_run_again_keeps_what_was_resolved_during_training(tmp_path):
    run = Run.create(tmp_path, "tiny", "name: tiny\nmodel: {name: mlp}\n")
    run.write_diagnosis(Diagnosis([], resolved=[OVERFIT]).to_dict())
    assert diagnose_run(run, save=False).resolved == [OVERFIT]


# ------------------------------------------------------------------------------ tuning
def test_the_lr_finder_reports_about_every_tenth_of_the_sweep():
    said: list[str] = []
    sweep = LRRangeTest(1e-4, 1e-2, num_steps=40, echo=said.append)
    trainer = Trainer(nn.Linear(4, 2), doctor=False, progress=False, metrics=(), callbacks=[sweep])
    trainer.fit(blobs(64), epochs=5, batch_size=8)
    steps = [int(line.split()[2].split("/")[0]) for line in said]
    assert steps == [8, 16, 24, 32, 40]
    assert all(line.startswith("lr-find: step ") and " loss " in line for line in said)
    rates = [float(line.split()[4]) for line in said]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(1e-2, rel=1e-2)


def test_auto_fix_trains_each_round_with_progress_when_asked(tmp_path, monkeypatch):
    asked = []

    def refusing_train(recipe, runs_root, **kwargs):
        asked.append(kwargs)
        raise DataError("refused", diagnosis=Diagnosis([]))

    monkeypatch.setattr(autofix, "train", refusing_train)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: {name: mlp}\n")
    said: list[str] = []
    autofix.auto_fix(recipe, runs_root=tmp_path, echo=said.append, progress=True)
    autofix.auto_fix(recipe, runs_root=tmp_path, echo=said.append)
    assert asked[0]["progress"] is True and asked[0]["echo"] == said.append
    assert asked[1]["progress"] is False and asked[1]["echo"] is None
