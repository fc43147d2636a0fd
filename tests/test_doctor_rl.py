"""`layerwise doctor RUN` on RL and GAN runs: the task is read from what the run logged.

A PPO agent's loss is its policy and value objective: the value part grows with the returns the
agent learns to reach (CartPole's returns go from ~20 to 500), so a loss that rises while the
agent gets better is health, not a learning rate too high. The live doctor of an RL run is told
`task="rl"` and its curve rules stay silent; a finished run folder has no data profile to say
so, and the doctor used to judge it as a classifier.
"""

from __future__ import annotations

import yaml

from cli_runner import layerwise
from layerwise.diagnose.doctor import diagnose_run, run_task, scope_notes
from layerwise.diagnose.findings import Diagnosis
from layerwise.diagnose.rules import RuleContext, run_rules
from layerwise.runs import Run

PPO_RECIPE = {
    "name": "rl_ppo",
    "data": {"name": "gym", "args": {"env": "CartPole-v1", "n_envs": 8}, "batch_size": 256},
    "model": {"name": "ppo", "args": {"hidden": [64, 64]}},
    "train": {"epochs": 6, "optimizer": {"name": "adam", "lr": 0.001}, "monitor": "eval_return"},
}
# What a healthy PPO run on CartPole logs per epoch: the loss climbs with the returns.
LOSSES = [4.1, 11.8, 27.5, 41.0, 38.2, 35.9]
RETURNS = [21.4, 64.0, 171.5, 320.2, 500.0, 500.0]


def ppo_records() -> list[dict]:
    return [
        {
            "epoch": epoch,
            "step": 40 * epoch,
            "split": "train",
            "loss": loss,
            "policy_loss": -0.01,
            "value_loss": 2 * loss,
            "eval_return": ret,
            "env_steps": 10_000 * epoch,
        }
        for epoch, (loss, ret) in enumerate(zip(LOSSES, RETURNS, strict=True), start=1)
    ]


def ppo_run(root) -> Run:
    run = Run.create(root, "rl_ppo", yaml.safe_dump(PPO_RECIPE))
    for record in ppo_records():
        run.append_metrics(record)
    run.set_status("finished")
    return run


def history() -> list[dict]:
    return [{k: v for k, v in r.items() if k != "split"} for r in ppo_records()]


def test_a_ppo_history_read_as_a_classifier_raises_lr_too_high():
    """The bug: judged as classification, the rising PPO loss reads as a learning rate too
    high (the epoch loss rose above its best and stayed up)."""
    as_classifier = RuleContext(history=history(), recipe=PPO_RECIPE, task="classification")
    assert "lr_too_high" in [f.code for f in run_rules(as_classifier)]


def test_the_task_is_read_from_what_the_run_logged():
    assert run_task(None, history()) == "rl"
    gan = [{"epoch": 1, "d_loss": 0.6, "g_loss": 1.9, "fid": 40.0}]
    assert run_task(None, gan) == "gan"
    assert run_task(None, [{"epoch": 1, "loss": 0.3, "accuracy": 0.9}]) == "classification"
    assert run_task({"task": "regression"}, history()) == "regression"  # the profile wins


def test_doctor_run_on_a_ppo_run_raises_no_curve_finding_and_says_why(tmp_path):
    run = ppo_run(tmp_path)
    diagnosis = diagnose_run(run)
    assert diagnosis.codes == [] and diagnosis.explained == []
    (note,) = diagnosis.notes
    assert "RL run" in note and "lr_too_high" in note
    assert "21.4 at epoch 1, best 500 at epoch 5, 500 at epoch 6" in note
    stored = Diagnosis.from_dict(run.read_diagnosis())
    assert stored.notes == diagnosis.notes  # diagnosis.json keeps the statement
    assert stored.render().splitlines() == ["No problems found.", f"[note] {note}"]

    result = layerwise("doctor", "rl_ppo", "--runs-dir", str(tmp_path), cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("No problems found.")
    assert "[note] an RL run" in result.stdout


def test_rl_rules_still_judge_a_nan_loss():
    records = history()
    records[-1]["loss"] = float("nan")
    ctx = RuleContext(history=records, recipe=PPO_RECIPE, task=run_task(None, records))
    assert [f.code for f in run_rules(ctx)] == ["loss_nan"]


def test_supervised_runs_get_no_note():
    assert scope_notes("classification", history()) == []
    assert scope_notes("rl", [{"epoch": 1, "loss": 1.0}])[0].endswith("as for any model")
