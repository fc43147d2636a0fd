"""PPO: a policy-gradient actor-critic with the clipped surrogate objective (Schulman et al., 2017).

A round starts by playing `n_steps` in each environment copy with the current policy (actions
sampled), then computes advantages by GAE(γ, λ) with the critic's values; an episode cut at the
step limit (not ended by the game) is bootstrapped with the value of its last observation. The
round then makes `n_epochs` passes over the rollout in shuffled minibatches of
`data.batch_size`; each `train_step` is one of those minibatch updates:

    loss = -min(r·A, clip(r, 1-ε, 1+ε)·A) + vf_coef·(V - R)² - ent_coef·entropy

with r the probability ratio of the new and the rollout policy, A the advantage (normalised per
minibatch) and R the return target. The rollout and the minibatch order of the round are part
of the saved state, so a run stopped in the middle of a round resumes bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Categorical

from layerwise.tasks.rl_agent import AgentTrainer


@dataclass(frozen=True)
class PPOSettings:
    """The algorithm's settings (`train.loss.args` of a `ppo` recipe)."""

    n_steps: int = 32  # steps per environment copy in a rollout
    n_epochs: int = 20  # passes over each rollout
    gamma: float = 0.98
    gae_lambda: float = 0.8
    clip: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    normalize_advantage: bool = True


class PPOTrainer(AgentTrainer):
    """Train an `ActorCritic` by PPO (see the module docstring).

    Args:
        settings: `PPOSettings`.
        batch_size: rollout rows per minibatch update.
        *args, **kwargs: `AgentTrainer`'s (`env_id`, `n_envs`) and the Trainer's.
    """

    def __init__(
        self,
        *args: Any,
        settings: PPOSettings = PPOSettings(),
        batch_size: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.params.update(settings=settings, batch_size=batch_size)
        self.settings, self.minibatch = settings, batch_size
        self.updates = 0
        self.rollout: dict[str, Tensor] = {}
        self.order = torch.empty(0, dtype=torch.long)  # (n_epochs, rows): minibatch order

    @property
    def rollout_rows(self) -> int:
        return self.settings.n_steps * self.n_envs

    @property
    def minibatches(self) -> int:
        """Minibatches per pass over a rollout (the last one may be short)."""
        return math.ceil(self.rollout_rows / self.minibatch)

    @property
    def updates_per_round(self) -> int:
        return self.settings.n_epochs * self.minibatches

    # ------------------------------------------------------------------ a round
    @torch.no_grad()
    def collect_rollout(self) -> None:
        """Play `n_steps` lock-steps with sampled actions; compute advantages and returns."""
        s, n = self.settings, self.n_envs
        obs, actions, log_probs, values, rewards, dones = [], [], [], [], [], []
        for _ in range(s.n_steps):
            current = self.pool.obs.to(self.device)
            logits, value = self.model(current)
            dist = Categorical(logits=logits)
            action = dist.sample()
            t = self.play(action.cpu())
            reward = t.reward.to(self.device)
            cut = (t.done & ~t.terminated).to(self.device)
            if cut.any():  # bootstrap an episode cut at the step limit with its last value
                _, last_value = self.model(t.next_obs.to(self.device))
                reward = reward + s.gamma * last_value * cut
            obs.append(current)
            actions.append(action)
            log_probs.append(dist.log_prob(action))
            values.append(value)
            rewards.append(reward)
            dones.append(t.done.to(self.device).float())
        _, next_value = self.model(self.pool.obs.to(self.device))
        advantages = torch.zeros(s.n_steps, n, device=self.device)
        running = torch.zeros(n, device=self.device)
        for step in reversed(range(s.n_steps)):
            following = next_value if step == s.n_steps - 1 else values[step + 1]
            alive = 1.0 - dones[step]
            delta = rewards[step] + s.gamma * following * alive - values[step]
            running = delta + s.gamma * s.gae_lambda * alive * running
            advantages[step] = running
        returns = advantages + torch.stack(values)
        self.rollout = {
            "obs": torch.stack(obs).reshape(-1, self.pool.obs_dim),
            "action": torch.stack(actions).reshape(-1),
            "log_prob": torch.stack(log_probs).reshape(-1),
            "advantage": advantages.reshape(-1),
            "returns": returns.reshape(-1),
        }
        self.order = torch.stack([torch.randperm(self.rollout_rows) for _ in range(s.n_epochs)])

    def train_step(self, batch: Any) -> dict[str, Tensor]:
        s = self.settings
        k = self.updates % self.updates_per_round
        if k == 0:
            self.collect_rollout()
        epoch, part = divmod(k, self.minibatches)
        rows = self.order[epoch, part * self.minibatch : (part + 1) * self.minibatch]
        mb = {key: value[rows.to(value.device)] for key, value in self.rollout.items()}
        advantage = mb["advantage"]
        if s.normalize_advantage and len(advantage) > 1:
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        with self.autocast:
            logits, value = self.model(mb["obs"])
            dist = Categorical(logits=logits.float())
            log_ratio = dist.log_prob(mb["action"]) - mb["log_prob"]
            ratio = log_ratio.exp()
            policy_loss = -torch.min(
                ratio * advantage, ratio.clamp(1 - s.clip, 1 + s.clip) * advantage
            ).mean()
            value_loss = F.mse_loss(value.float(), mb["returns"])
            entropy = dist.entropy().mean()
            loss = policy_loss + s.vf_coef * value_loss - s.ent_coef * entropy
        self.backward(loss)
        self.optimizer_step()
        self.updates += 1
        with torch.no_grad():
            approx_kl = ((ratio - 1) - log_ratio).mean()  # the k3 estimator of KL(old || new)
            clipped = ((ratio - 1).abs() > s.clip).float().mean()
        return {
            "loss": loss.detach(),
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": entropy.detach(),
            "approx_kl": approx_kl,
            "clip_fraction": clipped,
        }

    # ------------------------------------------------------------------ resume
    def agent_state(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "rollout": {k: v.clone() for k, v in self.rollout.items()},
            "order": self.order.clone(),
        }

    def load_agent_state(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.rollout = {k: v.to(self.device) for k, v in state["rollout"].items()}
        self.order = state["order"]
