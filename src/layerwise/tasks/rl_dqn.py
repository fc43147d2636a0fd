"""DQN: a Q-network learnt from a replay buffer against a target network (Double DQN, Huber).

Each `train_step` is one gradient update on a minibatch drawn from the replay buffer. Every
`gradient_steps` updates it first plays `train_freq` steps in each environment copy, acting
ε-greedily (ε falls linearly from `epsilon_start` to `epsilon_end` over `exploration_steps`
environment steps); the first round also fills the buffer with `learning_starts` steps. The
target network is the online network copied every `target_update` updates. With `double` the
online network picks the next action and the target network values it (van Hasselt et al.,
2016), which removes most of plain DQN's over-estimation. The TD error is scored with the Huber
loss (`train.loss.name: huber`, Mnih et al., 2015) or the squared error (`mse`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from layerwise.tasks.rl_agent import AgentTrainer


@dataclass(frozen=True)
class DQNSettings:
    """The algorithm's settings (`train.loss.args` of a `dqn` recipe)."""

    gamma: float = 0.99
    double: bool = True
    target_update: int = 128  # gradient updates between copies of the online network
    buffer_size: int = 100_000
    learning_starts: int = 1_000  # environment steps played before the first update
    train_freq: int = 256  # steps per environment copy between rounds of updates
    gradient_steps: int = 128  # updates per round
    epsilon_start: float = 1.0
    epsilon_end: float = 0.04
    exploration_steps: int = 8_000  # environment steps over which ε falls


class ReplayBuffer:
    """A ring of the last `capacity` transitions, as preallocated tensors; sampled by indexing."""

    def __init__(self, capacity: int, obs_dim: int) -> None:
        self.capacity = capacity
        self.obs = torch.zeros(capacity, obs_dim)
        self.next_obs = torch.zeros(capacity, obs_dim)
        self.action = torch.zeros(capacity, dtype=torch.long)
        self.reward = torch.zeros(capacity)
        self.terminated = torch.zeros(capacity)
        self.position = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(
        self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, terminated: Tensor
    ) -> None:
        """Store a batch of transitions (one row per environment copy)."""
        rows = (self.position + torch.arange(len(obs))) % self.capacity
        self.obs[rows], self.next_obs[rows] = obs, next_obs
        self.action[rows], self.reward[rows] = action, reward
        self.terminated[rows] = terminated.float()
        self.position = int(rows[-1] + 1) % self.capacity
        self.size = min(self.size + len(obs), self.capacity)

    def sample(self, n: int) -> dict[str, Tensor]:
        """`n` transitions drawn uniformly with replacement (torch's global generator)."""
        rows = torch.randint(self.size, (n,))
        return {
            "obs": self.obs[rows],
            "action": self.action[rows],
            "reward": self.reward[rows],
            "next_obs": self.next_obs[rows],
            "terminated": self.terminated[rows],
        }

    def state_dict(self) -> dict[str, Any]:
        used = slice(0, self.size)
        return {
            "obs": self.obs[used].clone(),
            "next_obs": self.next_obs[used].clone(),
            "action": self.action[used].clone(),
            "reward": self.reward[used].clone(),
            "terminated": self.terminated[used].clone(),
            "position": self.position,
            "size": self.size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.position = int(state["size"]), int(state["position"])
        used = slice(0, self.size)
        for key in ("obs", "next_obs", "action", "reward", "terminated"):
            getattr(self, key)[used] = state[key]


class DQNTrainer(AgentTrainer):
    """Train a `QNetwork` by DQN (see the module docstring).

    Args:
        settings: `DQNSettings`.
        batch_size: transitions per update.
        td_loss: `huber` or `mse`.
        *args, **kwargs: `AgentTrainer`'s (`env_id`, `n_envs`) and the Trainer's.
    """

    def __init__(
        self,
        *args: Any,
        settings: DQNSettings = DQNSettings(),
        batch_size: int = 64,
        td_loss: str = "huber",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.params.update(settings=settings, batch_size=batch_size, td_loss=td_loss)
        self.settings, self.minibatch, self.td_loss = settings, batch_size, td_loss
        self.updates = 0
        self.target: torch.nn.Module | None = None
        self.buffer: ReplayBuffer | None = None

    def init_agent(self) -> None:
        self.target = copy.deepcopy(self.model).requires_grad_(False)
        self.buffer = ReplayBuffer(self.settings.buffer_size, self.pool.obs_dim)

    def epsilon(self) -> float:
        """ε at the current environment step (linear, then flat)."""
        s = self.settings
        fraction = min(1.0, self.env_steps / max(1, s.exploration_steps))
        return s.epsilon_start + fraction * (s.epsilon_end - s.epsilon_start)

    def collect(self, steps: int) -> None:
        """Play `steps` ε-greedy lock-steps into the replay buffer."""
        for _ in range(steps):
            obs = self.pool.obs
            greedy = self.model.act(obs.to(self.device)).cpu()
            # Both draws every step, so the random stream does not depend on ε.
            explore = torch.rand(len(obs)) < self.epsilon()
            random_actions = torch.randint(self.pool.num_actions, (len(obs),))
            actions = torch.where(explore, random_actions, greedy)
            t = self.play(actions)
            self.buffer.add(t.obs, t.action, t.reward, t.next_obs, t.terminated)

    def train_step(self, batch: Any) -> dict[str, Tensor]:
        s = self.settings
        if self.updates % s.gradient_steps == 0:
            warmup = max(0, s.learning_starts - len(self.buffer)) // self.n_envs
            self.collect(warmup + s.train_freq)
        if self.updates % s.target_update == 0:
            self.target.load_state_dict(self.model.state_dict())
        sample = self.to_device(self.buffer.sample(self.minibatch))
        with torch.no_grad():
            next_q = self.target(sample["next_obs"])
            if s.double:
                next_action = self.model(sample["next_obs"]).argmax(dim=1, keepdim=True)
            else:
                next_action = next_q.argmax(dim=1, keepdim=True)
            next_value = next_q.gather(1, next_action).squeeze(1)
            target = sample["reward"] + s.gamma * (1 - sample["terminated"]) * next_value
        with self.autocast:
            q = self.model(sample["obs"]).gather(1, sample["action"][:, None]).squeeze(1)
            score = F.smooth_l1_loss if self.td_loss == "huber" else F.mse_loss
            loss = score(q, target)
        self.backward(loss)
        self.optimizer_step()
        self.updates += 1
        return {"loss": loss.detach(), "q": q.detach().mean(), "epsilon": self.epsilon()}

    def agent_state(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "target": {k: v.clone() for k, v in self.target.state_dict().items()},
            "buffer": self.buffer.state_dict(),
        }

    def load_agent_state(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.target.load_state_dict(state["target"])
        self.buffer.load_state_dict(state["buffer"])
