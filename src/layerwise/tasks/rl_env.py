"""Gymnasium environments for the RL agents: a pool stepped in lock-step, its resumable state,
and greedy evaluation.

`EnvPool` runs `n` copies of a discrete-action environment with a flat observation. Every
episode starts from `reset(seed=...)` with a seed that is a pure function of (run seed, copy,
episode number), so no environment RNG has to be saved. Episodes are cut at the environment's
`max_episode_steps` by the pool itself (the raw environment is stepped, without gymnasium's
wrappers), which keeps everything a resumed run needs in plain numbers: for the classic-control
games the physical state vector `env.unwrapped.state` is the whole environment, and
`state_dict()` saves it bit for bit (float64). An environment without such a vector restarts its
unfinished episodes on resume (said by `exact_resume`).

gymnasium is an optional dependency (the `rl` extra): `require_gymnasium()` names the install
command when it is missing.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from layerwise.errors import DataError, LayerwiseError, RecipeError

INSTALL = "pip install 'layerwise[rl]'"
EVAL_SEED = 1_000_003  # evaluation episodes use seeds no training episode uses
TEST_SEED = 2_000_003  # and the final test others again: not the ones that chose "best"


def require_gymnasium() -> Any:
    """The gymnasium module, or a `LayerwiseError` saying how to install it."""
    try:
        return importlib.import_module("gymnasium")
    except ImportError:
        raise LayerwiseError(
            "reinforcement learning needs the gymnasium package, which is not installed",
            hint=INSTALL,
        ) from None


def make_env(env_id: str, render: bool = False) -> Any:
    """The raw (unwrapped) environment `env_id` and its episode step limit.

    Refuses an unknown name (with the nearest registered ones), continuous action spaces and
    non-flat observations, which the agents here do not handle.
    """
    gym = require_gymnasium()
    if not isinstance(env_id, str) or env_id not in gym.registry:
        close = difflib.get_close_matches(str(env_id), [k for k in gym.registry], n=3)
        raise RecipeError(
            f"data.args.env: unknown gymnasium environment {env_id!r}",
            hint=f"did you mean {' or '.join(close)}?" if close else "e.g. env: CartPole-v1",
        )
    try:
        wrapped = gym.make(env_id, render_mode="rgb_array" if render else None)
    except Exception as exc:  # a missing extra of gymnasium's own (box2d, mujoco, ...)
        raise LayerwiseError(
            f"data.args.env: gymnasium could not make {env_id!r}: {exc}",
            hint="pick a classic-control game (CartPole-v1, Acrobot-v1, MountainCar-v0)",
        ) from None
    spaces = gym.spaces
    if not isinstance(wrapped.action_space, spaces.Discrete):
        raise RecipeError(
            f"data.args.env: {env_id} has {type(wrapped.action_space).__name__} actions; "
            "dqn and ppo here take discrete actions",
            hint="pick a game with discrete actions (CartPole-v1, Acrobot-v1, MountainCar-v0)",
        )
    shape = wrapped.observation_space.shape
    if not isinstance(wrapped.observation_space, spaces.Box) or shape is None or len(shape) != 1:
        raise RecipeError(
            f"data.args.env: {env_id} observes {wrapped.observation_space}; the RL networks take "
            "a flat vector",
            hint="pick a game with a vector observation (CartPole-v1, Acrobot-v1)",
        )
    limit = wrapped.spec.max_episode_steps if wrapped.spec is not None else None
    return wrapped.unwrapped, limit


def reset_seed(seed: int, copy: int, episode: int) -> int:
    """The reset seed of one episode: a pure function, so resuming needs no environment RNG."""
    return int(np.random.SeedSequence([seed, copy, episode]).generate_state(1)[0])


@dataclass
class Transition:
    """What one lock-step of the pool returns (tensors with one row per copy)."""

    obs: Tensor  # the observation each action was taken in
    action: Tensor
    reward: Tensor
    next_obs: Tensor  # the observation after it (the last one of an ended episode)
    terminated: Tensor  # the episode ended by the game (no value beyond it)
    done: Tensor  # ended for any reason (terminated or cut at the step limit)
    finished: list[tuple[float, int]] = field(default_factory=list)  # (return, length) ended


class EnvPool:
    """`n` copies of one environment, stepped together; see the module docstring."""

    def __init__(self, env_id: str, n: int = 1, seed: int = 0) -> None:
        made = [make_env(env_id) for _ in range(n)]
        self.env_id, self.seed = env_id, seed
        self.envs = [env for env, _ in made]
        self.limit = made[0][1]
        self.num_actions = int(self.envs[0].action_space.n)
        self.obs_dim = int(self.envs[0].observation_space.shape[0])
        self.episodes = [0] * n  # episodes started per copy
        self.elapsed = [0] * n  # steps into the current episode
        self.returns = [0.0] * n  # return so far of the current episode
        self.obs = torch.stack([self._reset(i) for i in range(n)])

    @property
    def exact_resume(self) -> bool:
        """Can `state_dict` capture an episode in progress exactly (a physical state vector)?"""
        return all(isinstance(getattr(env, "state", None), np.ndarray) for env in self.envs)

    def _reset(self, i: int) -> Tensor:
        obs, _ = self.envs[i].reset(seed=reset_seed(self.seed, i, self.episodes[i]))
        self.episodes[i] += 1
        self.elapsed[i], self.returns[i] = 0, 0.0
        return torch.as_tensor(np.asarray(obs, dtype=np.float32))

    def step(self, actions: Tensor) -> Transition:
        """Take one action in every copy; ended episodes are reset (their next observation is
        kept in the transition, the fresh one becomes `self.obs`)."""
        n = len(self.envs)
        rewards, next_obs, terminated, done = [0.0] * n, [], [False] * n, [False] * n
        finished: list[tuple[float, int]] = []
        fresh = list(self.obs)
        for i, (env, action) in enumerate(zip(self.envs, actions.tolist(), strict=True)):
            obs, reward, term, trunc, _ = env.step(int(action))
            self.elapsed[i] += 1
            self.returns[i] += float(reward)
            trunc = bool(trunc) or (self.limit is not None and self.elapsed[i] >= self.limit)
            rewards[i], terminated[i], done[i] = float(reward), bool(term), bool(term) or trunc
            next_obs.append(torch.as_tensor(np.asarray(obs, dtype=np.float32)))
            if done[i]:
                finished.append((self.returns[i], self.elapsed[i]))
                fresh[i] = self._reset(i)
            else:
                fresh[i] = next_obs[i]
        transition = Transition(
            obs=self.obs,
            action=actions.clone(),
            reward=torch.tensor(rewards, dtype=torch.float32),
            next_obs=torch.stack(next_obs),
            terminated=torch.tensor(terminated),
            done=torch.tensor(done),
            finished=finished,
        )
        self.obs = torch.stack(fresh)
        return transition

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Plain numbers and tensors (loadable with `weights_only=True`)."""
        physical = (
            [torch.from_numpy(np.array(env.state, dtype=np.float64)) for env in self.envs]
            if self.exact_resume
            else None
        )
        return {
            "episodes": list(self.episodes),
            "elapsed": list(self.elapsed),
            "returns": list(self.returns),
            "obs": self.obs.clone(),
            "physical": physical,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["episodes"]) != len(self.envs):
            raise DataError(
                f"the saved state has {len(state['episodes'])} environment copies, this pool "
                f"{len(self.envs)}",
                hint="resume with the recipe the run was started with",
            )
        self.episodes = list(state["episodes"])
        if state["physical"] is None:  # no state vector: start the unfinished episodes again
            for i in range(len(self.envs)):
                self.episodes[i] -= 1
                self.obs[i] = self._reset(i)
            return
        for env, physical in zip(self.envs, state["physical"], strict=True):
            env.reset(seed=0)  # clears per-episode flags; the state vector is then replaced
            env.state = physical.numpy().astype(np.float64)
        self.elapsed = list(state["elapsed"])
        self.returns = list(state["returns"])
        self.obs = state["obs"].clone()

    def close(self) -> None:
        for env in self.envs:
            env.close()


def evaluate_greedy(
    policy: Callable[[Tensor], Tensor],
    env_id: str,
    episodes: int,
    seed: int = EVAL_SEED,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Returns of `episodes` episodes played by `policy` (observations -> actions), all copies
    stepped together so the network sees one batch per step. Seeds are fixed, so the same
    weights always score the same (and evaluating draws no random number)."""
    envs, limit = zip(*(make_env(env_id) for _ in range(episodes)), strict=True)
    limit = limit[0]
    obs = [env.reset(seed=reset_seed(seed, i, 0))[0] for i, env in enumerate(envs)]
    returns = [0.0] * episodes
    active = list(range(episodes))
    steps = 0
    while active:
        batch = torch.as_tensor(np.stack([obs[i] for i in active]), dtype=torch.float32)
        actions = policy(batch.to(device)).tolist()
        steps += 1
        still = []
        for i, action in zip(active, actions, strict=True):
            obs[i], reward, term, trunc, _ = envs[i].step(int(action))
            returns[i] += float(reward)
            if not (term or trunc or (limit is not None and steps >= limit)):
                still.append(i)
        active = still
    for env in envs:
        env.close()
    return returns


def record_episode(
    policy: Callable[[Tensor], Tensor], env_id: str, seed: int = EVAL_SEED
) -> tuple[float, list[np.ndarray]]:
    """Play one greedy episode with `rgb_array` rendering; returns its return and frames."""
    env, limit = make_env(env_id, render=True)
    obs, _ = env.reset(seed=reset_seed(seed, 0, 0))
    frames, total, steps = [env.render()], 0.0, 0
    while True:
        action = int(policy(torch.as_tensor(obs, dtype=torch.float32)[None])[0])
        obs, reward, term, trunc, _ = env.step(action)
        total += float(reward)
        steps += 1
        frames.append(env.render())
        if term or trunc or (limit is not None and steps >= limit):
            break
    env.close()
    return total, frames
