"""Reinforcement learning: DQN and PPO agents on gymnasium games, trained through the Trainer.

A recipe picks the algorithm with `model.name` (`dqn`: a Q-network; `ppo`: an actor-critic) and
the game with `data.name: gym`:

    data:
      name: gym
      args: {env: CartPole-v1, n_envs: 8, steps_per_epoch: 10000, eval_episodes: 10}
      batch_size: 256            # transitions (DQN) or rollout rows (PPO) per update
    model: {name: ppo, args: {hidden: [64, 64]}}
    train:
      loss: {name: ppo, args: {n_steps: 32, n_epochs: 20, gamma: 0.98, gae_lambda: 0.8}}
      metrics: []
      monitor: eval_return

`train.loss` is the algorithm's objective: `huber` or `mse` on the TD error for DQN (its `args`
are `DQNSettings`: replay, target network, ε schedule, Double DQN), `ppo` for PPO (`args` are
`PPOSettings`). An epoch is `steps_per_epoch` environment steps (rounded up to whole rounds);
after each one `RLMonitor` plays `eval_episodes` greedy episodes and logs `eval_return` (the
monitor of the best checkpoint), with the training episodes' mean `episode_return`, `episodes`
and `env_steps`. At the end the last and the best weights each play `final_eval_episodes` (100)
greedy episodes from other seeds than the evaluations that chose the best checkpoint: the test
metrics `return` and `best_return`. The run folder gets
`episodes.csv` (every training episode) and `plots/learning_curve.png`.

`play(run, episodes)` replays a trained agent and can save an episode as a GIF.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerwise.diagnose.doctor import PROBES_FILE, doctor_callbacks
from layerwise.errors import DataError, LayerwiseError, RecipeError, did_you_mean
from layerwise.models import create_model
from layerwise.recipe import Recipe
from layerwise.report import write_report
from layerwise.runs import Run
from layerwise.tasks.common import checkpoint_to_load, close_run, restore_last, trainer_settings
from layerwise.tasks.rl_agent import AgentTrainer, StepFeed
from layerwise.tasks.rl_dqn import DQNSettings, DQNTrainer
from layerwise.tasks.rl_env import (
    EVAL_SEED,
    TEST_SEED,
    evaluate_greedy,
    make_env,
    record_episode,
)
from layerwise.tasks.rl_ppo import PPOSettings, PPOTrainer
from layerwise.train import Callback, MetricsLogger, ModelCheckpoint, ProgressBar
from layerwise.train.callbacks.stop_on_signal import guarded_fit

Echo = Callable[[str], None] | None
RL_MODELS = ("dqn", "ppo")
LOSSES = {"dqn": ("huber", "mse"), "ppo": ("ppo",)}
MONITORS = ("eval_return", "episode_return", "loss")
ENV_ARGS = {
    "env": None,
    "n_envs": None,
    "steps_per_epoch": 10_000,
    "eval_episodes": 10,
    "final_eval_episodes": 100,
}
DEFAULT_ENVS = {"dqn": 1, "ppo": 8}


@dataclass(frozen=True)
class RLSpec:
    """What an RL recipe asks for, checked (see the module docstring)."""

    algorithm: str
    env_id: str
    n_envs: int
    steps_per_epoch: int
    eval_episodes: int
    final_eval_episodes: int
    settings: DQNSettings | PPOSettings
    batch_size: int
    td_loss: str
    monitor: str
    obs_dim: int
    num_actions: int
    reward_threshold: float | None

    @property
    def env_steps_per_round(self) -> int:
        per_copy = self.settings.train_freq if self.algorithm == "dqn" else self.settings.n_steps
        return per_copy * self.n_envs

    @property
    def updates_per_round(self) -> int:
        if self.algorithm == "dqn":
            return self.settings.gradient_steps
        return self.settings.n_epochs * math.ceil(
            self.settings.n_steps * self.n_envs / self.batch_size
        )

    @property
    def steps_per_trainer_epoch(self) -> int:
        """Trainer steps (updates) per epoch: whole rounds covering `steps_per_epoch`."""
        rounds = math.ceil(self.steps_per_epoch / self.env_steps_per_round)
        return rounds * self.updates_per_round


def is_rl(recipe: Recipe) -> bool:
    """Does `recipe` train an RL agent (its model is `dqn` or `ppo`)?"""
    return recipe.model.name.lower() in RL_MODELS


def rl_spec(recipe: Recipe) -> RLSpec:
    """Check an RL recipe and gather its settings; raise `RecipeError` naming a bad field."""
    algorithm = recipe.model.name.lower()
    if recipe.data.name != "gym":
        raise RecipeError(
            f"data.name is '{recipe.data.name}'; a {algorithm} agent learns by playing a game",
            hint="data: {name: gym, args: {env: CartPole-v1}}",
        )
    args = {**ENV_ARGS, **recipe.data.args}
    unknown = sorted(set(args) - set(ENV_ARGS))
    if unknown:
        raise RecipeError(
            f"data.args.{unknown[0]} is not a setting of the gym data",
            hint=did_you_mean(unknown[0], ENV_ARGS),
        )
    if args["env"] is None:
        raise RecipeError("data.args.env is missing", hint="e.g. env: CartPole-v1")
    if args["n_envs"] is None:
        args["n_envs"] = DEFAULT_ENVS[algorithm]
    for key in ("n_envs", "steps_per_epoch", "eval_episodes", "final_eval_episodes"):
        _positive_int(f"data.args.{key}", args[key])
    loss = recipe.train.loss
    if loss.name not in LOSSES[algorithm]:
        raise RecipeError(
            f"train.loss.name is '{loss.name}'; a {algorithm} agent trains with "
            f"{' or '.join(LOSSES[algorithm])}",
            hint=f"train.loss.name: {LOSSES[algorithm][0]}"
            + (" (the TD error's loss)" if algorithm == "dqn" else " (the clipped objective)"),
        )
    if recipe.train.metrics:
        raise RecipeError(
            f"train.metrics is {recipe.train.metrics}; an RL agent has no labels to score",
            hint="metrics: [] (returns are logged as eval_return and episode_return)",
        )
    monitor = "eval_return" if recipe.train.monitor == "val_loss" else recipe.train.monitor
    if monitor not in MONITORS:
        raise RecipeError(
            f"train.monitor is '{monitor}', which an RL run does not log",
            hint=did_you_mean(monitor, MONITORS),
        )
    settings_type = DQNSettings if algorithm == "dqn" else PPOSettings
    settings = _settings(settings_type, loss.args)
    env, _ = make_env(args["env"])
    spec = env.spec
    env.close()
    return RLSpec(
        algorithm=algorithm,
        env_id=args["env"],
        n_envs=args["n_envs"],
        steps_per_epoch=args["steps_per_epoch"],
        eval_episodes=args["eval_episodes"],
        final_eval_episodes=args["final_eval_episodes"],
        settings=settings,
        batch_size=recipe.data.batch_size,
        td_loss=loss.name,
        monitor=monitor,
        obs_dim=int(env.observation_space.shape[0]),
        num_actions=int(env.action_space.n),
        reward_threshold=spec.reward_threshold if spec is not None else None,
    )


def _positive_int(field: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RecipeError(f"{field} must be a positive integer, got {value!r}", hint="e.g. 10")


def _settings(kind: type, given: dict[str, Any]) -> Any:
    """`kind` (a settings dataclass) from `train.loss.args`, each value checked by type."""
    known = {f.name: f for f in fields(kind)}
    settings = kind()
    for key, value in given.items():
        if key not in known:
            raise RecipeError(
                f"train.loss.args.{key} is not a {kind.__name__.removesuffix('Settings')} setting",
                hint=did_you_mean(key, known),
            )
        default = getattr(settings, key)
        field = f"train.loss.args.{key}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise RecipeError(f"{field} must be true or false, got {value!r}", hint="")
        elif isinstance(default, int):
            _positive_int(field, value)
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise RecipeError(f"{field} must be a number >= 0, got {value!r}", hint="e.g. 0.99")
        settings = replace(settings, **{key: value})
    for key in ("gamma", "gae_lambda", "epsilon_start", "epsilon_end"):
        value = getattr(settings, key, None)
        if value is not None and not 0 <= value <= 1:
            raise RecipeError(
                f"train.loss.args.{key} must lie in [0, 1], got {value!r}", hint="e.g. 0.99"
            )
    return settings


# ------------------------------------------------------------------------------ building
def build_agent_model(recipe: Recipe, spec: RLSpec) -> nn.Module:
    args = {"obs_dim": spec.obs_dim, "num_actions": spec.num_actions, **recipe.model.args}
    return create_model(recipe.model.name.lower(), **args)


def build_agent_trainer(
    recipe: Recipe, spec: RLSpec, model: nn.Module, callbacks: Sequence[Callback] = ()
) -> AgentTrainer:
    """The DQN or PPO Trainer of `recipe` (optimizer, schedule, clipping, device, threads)."""
    from layerwise.train import OPTIMIZERS, SCHEDULES

    settings = trainer_settings(recipe, callbacks)
    OPTIMIZERS.get(settings["optimizer"])  # a misspelt name stops here, before a run folder
    if settings["schedule"] is not None:
        SCHEDULES.get(settings["schedule"]["name"])
    optimizer_args = settings["optimizer_args"]
    if "betas" in optimizer_args:
        optimizer_args["betas"] = tuple(optimizer_args["betas"])
    common = dict(
        env_id=spec.env_id,
        n_envs=spec.n_envs,
        **settings,
        precision=recipe.train.precision,
        doctor=False,  # the recipe's doctor, if any, is among `callbacks`
    )
    if spec.algorithm == "dqn":
        return DQNTrainer(
            model,
            settings=spec.settings,
            batch_size=spec.batch_size,
            td_loss=spec.td_loss,
            **common,
        )
    return PPOTrainer(model, settings=spec.settings, batch_size=spec.batch_size, **common)


class RLMonitor(Callback):
    """After every epoch: greedy evaluation and the epoch's episode statistics, added to the
    epoch's logs. It runs before the doctor, the metrics log and the checkpoint (`order`), so
    all of them see `eval_return`; it draws no random number, so watching changes nothing."""

    order = -7

    def __init__(self, spec: RLSpec) -> None:
        self.spec = spec

    def on_epoch_end(self, trainer: AgentTrainer) -> None:
        returns = greedy_returns(trainer.model, self.spec.env_id, self.spec.eval_episodes)
        logs = {
            "eval_return": statistics.fmean(returns),
            "eval_return_std": statistics.pstdev(returns),
            "env_steps": trainer.env_steps,
        }
        finished = trainer.epoch_episodes(trainer.state.epoch)
        logs["episodes"] = len(finished)
        if finished:
            logs["episode_return"] = statistics.fmean(finished)
        trainer.logs.update(logs)  # the same dict as trainer.history[-1]


def greedy_returns(
    model: nn.Module, env_id: str, episodes: int, seed: int = EVAL_SEED
) -> list[float]:
    """Returns of `episodes` greedy episodes of `model` (in eval mode, without gradients)."""
    was_training, threads = model.training, torch.get_num_threads()
    model.eval()
    device = next(model.parameters()).device
    torch.set_num_threads(1)  # batches of at most `episodes` rows: more threads only wait
    try:
        return evaluate_greedy(model.act, env_id, episodes, seed=seed, device=device)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)


def run_callbacks(
    recipe: Recipe, spec: RLSpec, run: Run, echo: Echo, progress: bool
) -> list[Callback]:
    doctor = recipe.doctor
    callbacks: list[Callback] = [
        RLMonitor(spec),
        *doctor_callbacks(
            probes=doctor.probes,
            every=doctor.probe_every,
            path=run.path / PROBES_FILE,
            recipe=recipe.model_dump(mode="json"),
            task="rl",
            echo=echo if doctor.live else None,
            stop_on_fatal=doctor.stop_on_fatal,
        ),
        MetricsLogger(run),
        ModelCheckpoint(
            run,
            spec.monitor,
            "min" if spec.monitor == "loss" else "max",
            every_steps=recipe.train.checkpoint_every_steps,
        ),
    ]
    return callbacks + ([ProgressBar()] if progress else [])


# ------------------------------------------------------------------------------ the story
def train_rl(
    recipe: Recipe | None = None,
    runs_root: str | Path = "runs",
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    echo: Echo = print,
    callbacks: Sequence[Callback] = (),
) -> tuple[Run, dict[str, float]]:
    """Train an RL recipe into a new run folder, or `resume` one from its last checkpoint, bit
    for bit; returns the run and its test metrics (greedy returns of the final weights)."""
    from layerwise.train import seed_everything

    if resume is not None:
        run, recipe = Run.reopen(resume, runs_root, recipe)
        if run.info().get("status") == "finished":
            return run, run.info().get("test_metrics") or {}
    seed_everything(recipe.seed)
    spec = rl_spec(recipe)
    model = build_agent_model(recipe, spec)
    build_agent_trainer(recipe, spec, model)  # bad optimizer or schedule names stop here
    if resume is None:
        run = Run.create(runs_root, recipe.name, recipe.to_yaml())
    everything = [*run_callbacks(recipe, spec, run, echo, progress), *callbacks]
    trainer = build_agent_trainer(recipe, spec, model, everything)
    restore_last(run, model, trainer, resume=resume is not None)
    _fit(run, trainer, spec, recipe)
    return run, finish_rl(run, trainer, spec)


def _fit(run: Run, trainer: AgentTrainer, spec: RLSpec, recipe: Recipe) -> None:
    """Fit under `guarded_fit` (a signal checkpoints and stops, an error marks the run failed),
    closing the game pool whatever happens."""
    try:
        with guarded_fit(run, trainer):
            trainer.fit(StepFeed(spec.steps_per_trainer_epoch), epochs=recipe.train.epochs)
    finally:
        if trainer.pool is not None:
            trainer.pool.close()


def finish_rl(run: Run, trainer: AgentTrainer, spec: RLSpec) -> dict[str, float]:
    """Greedy test returns of the last and best weights, the episode log, the learning curve,
    the diagnosis and the report; returns the test metrics."""
    trainer.start_agent()  # a run resumed after its last step still restores its episode log
    # Test episodes are not the evaluation episodes that chose the best checkpoint.
    returns = greedy_returns(trainer.model, spec.env_id, spec.final_eval_episodes, TEST_SEED)
    metrics: dict[str, float] = {
        "return": statistics.fmean(returns),
        "return_std": statistics.pstdev(returns),
        "return_min": min(returns),
        "eval_episodes": len(returns),
        "env_steps": trainer.env_steps,
        "train_episodes": len(trainer.episode_log),
    }
    if run.has_checkpoint("best"):
        best = build_agent_model(run.recipe(), spec)
        best.load_state_dict(run.load_checkpoint("best")[0])
        best_returns = greedy_returns(best, spec.env_id, spec.final_eval_episodes, TEST_SEED)
        metrics["best_return"] = statistics.fmean(best_returns)
        metrics["best_return_std"] = statistics.pstdev(best_returns)
    if spec.reward_threshold is not None:
        metrics["reward_threshold"] = float(spec.reward_threshold)
    run.append_metrics({"epoch": trainer.state.epoch, "split": "test", **metrics})
    write_episodes(run, trainer.episode_log)
    plot_learning_curve(run, spec)
    diagnosis = close_run(run, trainer, metrics)
    # The learning curve is the RL run's curve plot: a panel per log (`plot_run_curves`) would
    # draw a dozen (losses, KL, clip fraction, ε, counters) for what one figure says better.
    write_report(run, diagnosis=diagnosis, summary_text=_summary(trainer.model, spec))
    return metrics


def write_episodes(run: Run, log: Sequence[tuple[int, int, float, int]]) -> Path:
    """`episodes.csv`: one row per training episode (epoch, env_steps at its end, return,
    length)."""
    path = run.path / "episodes.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "env_steps", "return", "length"])
        writer.writerows(log)
    return path


def plot_learning_curve(run: Run, spec: RLSpec) -> Path:
    """`plots/learning_curve.png`: training episode returns (and their running mean over 20)
    and the greedy evaluation after each epoch, against environment steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with (run.path / "episodes.csv").open() as handle:
        rows = [(int(r["env_steps"]), float(r["return"])) for r in csv.DictReader(handle)]
    evals = [
        (m["env_steps"], m["eval_return"])
        for m in run.read_metrics()
        if "eval_return" in m and m.get("split") != "test"
    ]
    figure, axes = plt.subplots(figsize=(7, 4))
    if rows:
        steps, returns = zip(*rows, strict=True)
        axes.plot(steps, returns, ".", ms=2, alpha=0.35, color="tab:blue", label="episode")
        window = 20
        running = [
            statistics.fmean(returns[max(0, i - window + 1) : i + 1]) for i in range(len(returns))
        ]
        axes.plot(steps, running, color="tab:blue", label=f"mean of last {window} episodes")
    if evals:
        steps, values = zip(*evals, strict=True)
        axes.plot(steps, values, "o-", color="tab:orange", label="greedy evaluation")
    if spec.reward_threshold is not None:
        axes.axhline(spec.reward_threshold, ls="--", color="gray", label="solved threshold")
    axes.set_xlabel("environment steps")
    axes.set_ylabel("return")
    axes.set_title(f"{spec.algorithm.upper()} on {spec.env_id}")
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    path = run.plots_dir / "learning_curve.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _summary(model: nn.Module, spec: RLSpec) -> str:
    count = sum(p.numel() for p in model.parameters())
    return (
        f"{spec.algorithm.upper()} on {spec.env_id}: {spec.obs_dim} observations, "
        f"{spec.num_actions} actions, {spec.n_envs} environment copies\n"
        f"settings: {spec.settings}\n\n{count:,} parameters\n{model}"
    )


# ------------------------------------------------------------------------------ using a run
def load_agent(run: Run, which: str = "best") -> tuple[nn.Module, RLSpec]:
    """The network of an RL run with its `best` (or `last`) weights, in eval mode."""
    recipe = run.recipe()
    if not is_rl(recipe):
        raise LayerwiseError(
            f"run '{run.name}' trains a '{recipe.model.name}', not an RL agent",
            hint="play a run of a dqn or ppo recipe",
        )
    which = checkpoint_to_load(run, which)
    spec = rl_spec(recipe)
    model = build_agent_model(recipe, spec)
    model.load_state_dict(run.load_checkpoint(which)[0])
    return model.eval(), spec


def play(
    run: Run,
    episodes: int = 5,
    *,
    gif: str | Path | None = None,
    seed: int | None = None,
    which: str = "best",
) -> list[float]:
    """Returns of `episodes` greedy episodes of a trained agent; with `gif`, the first episode
    is also saved as an animated GIF (rendered `rgb_array` frames, Pillow)."""
    if not isinstance(episodes, int) or not 1 <= episodes <= 10_000:
        raise DataError(f"--episodes must be 1..10000, got {episodes}", hint="e.g. --episodes 5")
    if gif is not None:
        _check_gif_path(Path(gif))
    model, spec = load_agent(run, which)
    seed = TEST_SEED if seed is None else seed
    returns = greedy_returns(model, spec.env_id, episodes, seed=seed)
    if gif is not None:
        save_gif(model, spec.env_id, Path(gif), seed)
    return returns


def _check_gif_path(path: Path) -> None:
    if path.suffix.lower() != ".gif":
        raise DataError(f"--gif {path}: the file name must end in .gif", hint="e.g. --gif cart.gif")
    if not path.parent.is_dir():
        raise DataError(
            f"--gif {path}: folder {path.parent} does not exist", hint="create it, or pick another"
        )


def save_gif(model: nn.Module, env_id: str, path: Path, seed: int = TEST_SEED) -> Path:
    """One greedy episode as a GIF at half size and 25 frames per second."""
    import os

    from PIL import Image

    _check_gif_path(path)
    # pygame renders off screen; without a display SDL would warn about XDG_RUNTIME_DIR.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    _, frames = record_episode(model.act, env_id, seed)
    images = [
        Image.fromarray(frame).resize((frame.shape[1] // 2, frame.shape[0] // 2))
        for frame in frames[::2]
    ]
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)
    return path
