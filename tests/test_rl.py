"""Reinforcement learning (layerwise.tasks.rl*): replay buffer, environment pool, ε schedule,
the agents' steps, bit-for-bit resume, and a whole run with `play` and its GIF.

Everything plays CartPole-v1 for a few hundred steps with tiny networks; the learning itself
(return >= 475) is measured by benchmarks/rl.py.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("gymnasium")

from layerwise.errors import LayerwiseError, RecipeError
from layerwise.models import create_model
from layerwise.recipe import parse_recipe
from layerwise.tasks.rl_agent import StepFeed
from layerwise.tasks.rl_dqn import DQNSettings, DQNTrainer, ReplayBuffer
from layerwise.tasks.rl_env import EnvPool, evaluate_greedy, require_gymnasium
from layerwise.tasks.rl_ppo import PPOSettings, PPOTrainer
from layerwise.train import Callback

TINY_DQN = DQNSettings(
    buffer_size=64,  # smaller than the steps played: the ring wraps
    learning_starts=32,
    train_freq=8,
    gradient_steps=4,
    target_update=6,
    exploration_steps=100,
)
TINY_PPO = PPOSettings(n_steps=8, n_epochs=3)


def dqn_trainer(seed_weights: int = 0, callbacks=()) -> DQNTrainer:
    torch.manual_seed(seed_weights)
    model = create_model("dqn", obs_dim=4, num_actions=2, hidden=[16])
    return DQNTrainer(
        model,
        env_id="CartPole-v1",
        settings=TINY_DQN,
        batch_size=16,
        optimizer="adam",
        lr=1e-2,
        seed=3,
        doctor=False,
        progress=False,
        threads=1,
        callbacks=list(callbacks),
    )


def ppo_trainer(seed_weights: int = 0, callbacks=()) -> PPOTrainer:
    torch.manual_seed(seed_weights)
    model = create_model("ppo", obs_dim=4, num_actions=2, hidden=[16])
    return PPOTrainer(
        model,
        env_id="CartPole-v1",
        n_envs=2,
        settings=TINY_PPO,
        batch_size=6,  # 16 rows per rollout: minibatches of 6, 6 and 4
        optimizer="adam",
        lr=1e-2,
        seed=3,
        doctor=False,
        progress=False,
        threads=1,
        callbacks=list(callbacks),
    )


# ---------------------------------------------------------------------------- pieces
def test_replay_buffer_is_a_ring_and_round_trips():
    buffer = ReplayBuffer(capacity=5, obs_dim=2)
    for start in (0, 3, 6):  # 9 transitions into 5 slots
        rows = torch.arange(start, start + 3, dtype=torch.float32)
        obs = rows[:, None].repeat(1, 2)
        buffer.add(obs, rows.long(), rows, obs + 100, torch.tensor([False, True, False]))
    assert len(buffer) == 5 and buffer.position == 4
    # The oldest four (0-3) were overwritten; 4..8 remain, 5 and 6 and 7 and 8 in slots 0-3.
    assert sorted(buffer.reward.tolist()) == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert buffer.reward[:4].tolist() == [5.0, 6.0, 7.0, 8.0]
    sample = buffer.sample(32)
    assert sample["obs"].shape == (32, 2)
    assert torch.equal(sample["next_obs"], sample["obs"] + 100)
    assert torch.equal(sample["reward"].long(), sample["action"])
    copy = ReplayBuffer(capacity=5, obs_dim=2)
    copy.load_state_dict(torch.load(_saved(buffer.state_dict()), weights_only=True))
    for key in ("obs", "next_obs", "action", "reward", "terminated"):
        assert torch.equal(getattr(copy, key), getattr(buffer, key))
    assert (copy.position, copy.size) == (4, 5)


def _saved(state) -> io.BytesIO:
    handle = io.BytesIO()
    torch.save(state, handle)
    handle.seek(0)
    return handle


def test_env_pool_state_resumes_an_episode_exactly():
    pool = EnvPool("CartPole-v1", n=2, seed=7)
    actions = torch.tensor([[i % 2, (i // 3) % 2] for i in range(60)])
    for a in actions[:25]:
        pool.step(a)
    state = torch.load(_saved(pool.state_dict()), weights_only=True)
    rest = [pool.step(a) for a in actions[25:]]
    other = EnvPool("CartPole-v1", n=2, seed=7)
    other.load_state_dict(state)
    again = [other.step(a) for a in actions[25:]]
    for first, second in zip(rest, again, strict=True):
        assert torch.equal(first.next_obs, second.next_obs)
        assert torch.equal(first.done, second.done)
        assert first.finished == second.finished
    assert any(t.finished for t in rest)  # episodes ended, and were reset alike


def test_epsilon_falls_linearly_then_stays():
    trainer = dqn_trainer()
    for steps, expected in ((0, 1.0), (50, 0.52), (100, 0.04), (10_000, 0.04)):
        trainer.env_steps = steps
        assert trainer.epsilon() == pytest.approx(expected)


def test_greedy_evaluation_is_repeatable():
    model = create_model("dqn", obs_dim=4, num_actions=2, hidden=[8])
    first = evaluate_greedy(model.act, "CartPole-v1", 3)
    assert first == evaluate_greedy(model.act, "CartPole-v1", 3)
    assert all(1 <= r <= 500 for r in first)


def test_missing_gymnasium_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # import gymnasium raises ImportError
    with pytest.raises(LayerwiseError) as raised:
        require_gymnasium()
    assert "gymnasium" in raised.value.message
    assert "pip install 'layerwise[rl]'" in raised.value.hint


# ---------------------------------------------------------------------------- the steps
def test_dqn_learns_from_replay_and_copies_its_target():
    trainer = dqn_trainer()
    trainer.fit(StepFeed(10), epochs=1)
    # Round 1 fills 32 + 8 steps, round 2 and 3 play 8 more each (10 updates, 4 per round).
    assert trainer.env_steps == 56
    assert len(trainer.buffer) == 56
    assert trainer.updates == 10
    # The target was last copied at update 6; four updates since moved the online network.
    online = dict(trainer.model.named_parameters())
    assert any(not torch.equal(v, online[k]) for k, v in trainer.target.named_parameters())
    assert set(trainer.history[0]) >= {"loss", "q", "epsilon"}


def test_ppo_round_covers_every_row_each_pass():
    trainer = ppo_trainer()
    trainer.fit(StepFeed(9), epochs=1)  # one round: 3 passes x 3 minibatches
    assert trainer.env_steps == 16
    assert trainer.order.shape == (3, 16)
    for row in trainer.order:
        assert sorted(row.tolist()) == list(range(16))
    logs = trainer.history[0]
    assert 0 <= logs["clip_fraction"] <= 1 and logs["entropy"] > 0


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, trainer) -> None:
        if trainer.state.step == self.step:
            trainer.stop("test", source="test")


@pytest.mark.parametrize(("make", "steps", "stop"), [(dqn_trainer, 12, 17), (ppo_trainer, 9, 13)])
def test_resume_mid_epoch_is_bit_for_bit(make, steps, stop):
    """Train 3 epochs straight; train again, stop mid-epoch (mid-round for PPO), save weights and
    state as a checkpoint does, load them into a fresh trainer, finish: identical weights."""
    straight = make()
    straight.fit(StepFeed(steps), epochs=3)

    stopped = make(callbacks=[StopAt(stop)])
    stopped.fit(StepFeed(steps), epochs=3)
    assert stopped.state.step == stop
    weights = torch.load(_saved(stopped.model.state_dict()), weights_only=True)
    state = torch.load(_saved(stopped.state_dict()), weights_only=True)

    resumed = make(seed_weights=99)  # other initial weights: everything must come from the state
    resumed.model.load_state_dict(weights)
    resumed.load_state_dict(state)
    resumed.fit(StepFeed(steps), epochs=3)

    for (name, a), (_, b) in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert resumed.env_steps == straight.env_steps
    assert resumed.episode_log == straight.episode_log
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]


# ---------------------------------------------------------------------------- recipes
RECIPE = """\
name: rl_tiny
seed: 0
data:
  name: gym
  args: {env: CartPole-v1, n_envs: 2, steps_per_epoch: 32, eval_episodes: 2,
         final_eval_episodes: 3}
  batch_size: 8
model: {name: ppo, args: {hidden: [8]}}
train:
  epochs: 2
  checkpoint_every_steps: 3
  optimizer: {name: adam, lr: 0.01}
  loss: {name: ppo, args: {n_steps: 16, n_epochs: 2}}
  metrics: []
  threads: 1
doctor: {data_checks: false, label_noise: false, live: false}
"""


@pytest.mark.parametrize(
    ("override", "culprit"),
    [
        ("data.args.env=CartPol-v1", "unknown gymnasium environment 'CartPol-v1'"),
        ("data.args.n_env=2", "data.args.n_env is not a setting"),
        ("train.loss.name=huber", "a ppo agent trains with ppo"),
        ("train.loss.args.gama=0.9", "train.loss.args.gama is not a PPO setting"),
        ("train.loss.args.n_steps=0", "train.loss.args.n_steps must be a positive integer"),
        ("train.metrics=[accuracy]", "no labels to score"),
        ("train.monitor=val_accuracy", "train.monitor is 'val_accuracy'"),
    ],
)
def test_bad_rl_recipes_are_refused_before_a_run_exists(tmp_path, override, culprit):
    from layerwise.tasks.rl import train_rl

    recipe = parse_recipe(RECIPE, overrides=[override])
    with pytest.raises(RecipeError) as raised:
        train_rl(recipe, tmp_path / "runs", progress=False, echo=None)
    assert culprit in raised.value.message
    assert not (tmp_path / "runs" / "rl_tiny").exists()


class Crash(Callback):
    """A kill: the process dies mid-epoch; only the checkpoints on disk survive."""

    order = 30

    def on_batch_end(self, trainer) -> None:
        if trainer.state.step == 14:  # epoch 2 (8 updates each), mid-round, after the step-12 save
            raise RuntimeError("killed")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights_and_plays(tmp_path):
    from layerwise.experiment import resume, train
    from layerwise.tasks.rl import play

    recipe = parse_recipe(RECIPE)
    run, metrics = train(recipe, tmp_path / "a", progress=False, echo=None)
    assert metrics["eval_episodes"] == 3 and metrics["env_steps"] == 2 * 32
    with pytest.raises(RuntimeError, match="killed"):
        train(recipe, tmp_path / "b", progress=False, echo=None, callbacks=[Crash()])
    again, metrics_again = resume("rl_tiny", tmp_path / "b", progress=False, echo=None)
    assert metrics_again == metrics
    for which in ("last", "best"):
        first, _ = run.load_checkpoint(which)
        second, _ = again.load_checkpoint(which)
        assert all(torch.equal(first[k], second[k]) for k in first), which
    assert (again.path / "episodes.csv").read_text() == (run.path / "episodes.csv").read_text()
    assert (again.plots_dir / "learning_curve.png").stat().st_size > 1000
    assert "learning_curve" in again.report_path.read_text()
    evals = [m for m in again.read_metrics() if "eval_return" in m]
    assert [m["epoch"] for m in evals] == [1, 2]
    assert (again.path / "probes.jsonl").exists()  # the doctor's probes ran through the steps

    gif = tmp_path / "episode.gif"
    returns = play(again, 2, gif=gif)
    assert len(returns) == 2 and all(r >= 1 for r in returns)
    from PIL import Image

    with Image.open(gif) as image:
        assert image.n_frames >= min(returns[0] // 4, 10)
        assert image.size == (300, 200)


def test_learning_curve_reads_a_resumed_run(tmp_path):
    """`plot_learning_curve` takes its points from the files, so a run's whole history shows."""
    from layerwise.runs import Run
    from layerwise.tasks.rl import plot_learning_curve, rl_spec, write_episodes

    recipe = parse_recipe(RECIPE)
    run = Run.create(tmp_path, "curve", recipe.to_yaml())
    write_episodes(run, [(1, 20, 20.0, 20), (1, 50, 30.0, 30), (2, 90, 40.0, 40)])
    run.append_metrics({"epoch": 1, "env_steps": 64, "eval_return": 25.0})
    run.append_metrics({"epoch": 2, "env_steps": 128, "eval_return": 45.0})
    path = plot_learning_curve(run, rl_spec(recipe))
    assert path == Path(run.plots_dir / "learning_curve.png") and path.stat().st_size > 1000
