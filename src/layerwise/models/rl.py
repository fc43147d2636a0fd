"""Networks of the reinforcement-learning agents (`layerwise.tasks.rl`): a Q-network and an
actor-critic, both small MLPs over a flat observation.

They are registered as `dqn` and `ppo`, the algorithm each one is trained by, so a recipe's
`model.name` picks network and algorithm together (as `dcgan` picks a generator pair and its
game). Sizes come from the environment: `obs_dim` inputs, `num_actions` outputs (the task fills
both in). Layers are named (`fc1`, `act1`, ..., `head`) so the doctor's findings can point at
them; every module is an ordinary `nn.Module` and the forward pass is plain PyTorch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from layerwise.errors import RecipeError
from layerwise.models.mlp import check_widths
from layerwise.models.registry import MODELS

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def _check_sizes(obs_dim: int, num_actions: int) -> None:
    for field, value in (("obs_dim", obs_dim), ("num_actions", num_actions)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RecipeError(
                f"model.args.{field} must be a positive integer, got {value!r}",
                hint=f"leave {field} out: it is taken from the environment",
            )


def _trunk(obs_dim: int, hidden: Sequence[int], activation: str) -> OrderedDict[str, nn.Module]:
    check_widths("hidden", list(hidden))
    if activation not in ACTIVATIONS:
        raise RecipeError(
            f"model.args.activation is {activation!r}; the RL networks take "
            f"{' or '.join(ACTIVATIONS)}",
            hint="e.g. activation: relu",
        )
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width = obs_dim
    for i, out in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width, out)
        layers[f"act{i}"] = ACTIVATIONS[activation]()
        width = out
    return layers


class QNetwork(nn.Module):
    """Observation -> one Q-value per action (DQN's action-value estimate)."""

    def __init__(
        self, obs_dim: int, num_actions: int, hidden: Sequence[int], activation: str
    ) -> None:
        super().__init__()
        _check_sizes(obs_dim, num_actions)
        layers = _trunk(obs_dim, hidden, activation)
        layers["head"] = nn.Linear(hidden[-1] if hidden else obs_dim, num_actions)
        self.net = nn.Sequential(layers)
        self.obs_dim, self.num_actions = obs_dim, num_actions

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs)

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """The greedy action for each observation of a batch."""
        return self.forward(obs).argmax(dim=1)


class ActorCritic(nn.Module):
    """Observation -> (action logits, state value), two separate MLPs as in PPO's default
    policy (a shared trunk lets the value loss pull on the policy's features)."""

    def __init__(
        self, obs_dim: int, num_actions: int, hidden: Sequence[int], activation: str
    ) -> None:
        super().__init__()
        _check_sizes(obs_dim, num_actions)
        width = hidden[-1] if hidden else obs_dim
        actor = _trunk(obs_dim, hidden, activation)
        actor["head"] = nn.Linear(width, num_actions)
        critic = _trunk(obs_dim, hidden, activation)
        critic["head"] = nn.Linear(width, 1)
        self.actor, self.critic = nn.Sequential(actor), nn.Sequential(critic)
        # Small last layers (as PPO implementations do): the first policy is near uniform and
        # the first values near zero, so early updates are not driven by a random head.
        for head, gain in ((self.actor.head, 0.01), (self.critic.head, 1.0)):
            nn.init.orthogonal_(head.weight, gain)
            nn.init.zeros_(head.bias)
        self.obs_dim, self.num_actions = obs_dim, num_actions

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        return self.actor(obs), self.critic(obs).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """The likeliest action for each observation (the greedy policy evaluated)."""
        return self.actor(obs).argmax(dim=1)


@MODELS.register("dqn")
def dqn(
    obs_dim: int, num_actions: int, hidden: Sequence[int] = (256, 256), activation: str = "relu"
) -> QNetwork:
    """The Q-network a `dqn` recipe trains (see `layerwise.tasks.rl_dqn`)."""
    return QNetwork(obs_dim, num_actions, tuple(hidden), activation)


@MODELS.register("ppo")
def ppo(
    obs_dim: int, num_actions: int, hidden: Sequence[int] = (64, 64), activation: str = "tanh"
) -> ActorCritic:
    """The actor-critic a `ppo` recipe trains (see `layerwise.tasks.rl_ppo`)."""
    return ActorCritic(obs_dim, num_actions, tuple(hidden), activation)
