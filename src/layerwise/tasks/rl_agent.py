"""What the RL agents share: a Trainer whose steps gather their own experience.

An agent is trained by the ordinary Trainer loop. Its "data" is `StepFeed`, a fixed number of
step indices per epoch; each `train_step` plays the environments as far as the algorithm needs
(DQN: a few steps into the replay buffer; PPO: a whole rollout, once per round of minibatch
updates) and makes one optimizer step. So progress, checkpoints, SIGINT/SIGTERM handling and the
doctor's probes work as for any model: the acting forward passes run without gradients, which
the probes leave out, and the one forward with gradients in a step is the one they describe.

Bit-for-bit resume: `state_dict()` adds `agent` to the Trainer's state: the environments'
state (`EnvPool.state_dict`), the episode log, counters and what each algorithm keeps between
steps (replay buffer and target network; the rollout and its minibatch order). Every random
draw (exploration, action sampling, replay sampling, minibatch order) comes from torch's global
generator, whose state the Trainer already saves; environment resets take seeds that are a pure
function of the episode number.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from layerwise.errors import CheckpointError
from layerwise.tasks.rl_env import EnvPool, Transition
from layerwise.train import Trainer


class StepFeed:
    """The Trainer's `train` data for an agent: `steps` batches per epoch, each one its index.

    It has the batcher interface (`__len__`, `set_epoch`, `iter_from`), so a resumed run
    starts again at the step it stopped on.
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        """Nothing to reshuffle: the experience is gathered by the steps themselves."""

    def iter_from(self, start: int) -> Iterator[Tensor]:
        for index in range(start, self.steps):
            yield torch.tensor([index])


class AgentTrainer(Trainer):
    """A Trainer that plays `env_id` with `n_envs` copies (see the module docstring).

    Subclasses implement `train_step` and `act_greedy`, and keep their own between-step state
    in `agent_state` / `load_agent_state`.

    Args:
        env_id: the gymnasium environment.
        n_envs: copies stepped together.
        *args, **kwargs: the Trainer's (no loss function or metrics: the steps compute their own).
    """

    def __init__(self, *args: Any, env_id: str, n_envs: int = 1, **kwargs: Any) -> None:
        kwargs.setdefault("loss", None)
        kwargs.setdefault("metrics", ())
        super().__init__(*args, **kwargs)
        self.params.update(env_id=env_id, n_envs=n_envs)
        self.env_id, self.n_envs = env_id, n_envs
        self.pool: EnvPool | None = None
        self.env_steps = 0
        # One row per finished episode: (epoch it ended in, 1-based; env steps by then; return;
        # length).
        self.episode_log: list[tuple[int, int, float, int]] = []
        self._pending_agent: dict[str, Any] | None = None

    # ------------------------------------------------------------------ setup and state
    def _setup(self, batcher: Any, for_training: bool = True) -> None:
        super()._setup(batcher, for_training)
        if for_training:
            self.start_agent()

    def start_agent(self) -> None:
        """Make the environments (once), then apply a resumed agent state."""
        if self.pool is None:
            self.pool = EnvPool(self.env_id, self.n_envs, seed=self.seed)
            self.init_agent()
        if self._pending_agent is not None:
            state, self._pending_agent = self._pending_agent, None
            self.pool.load_state_dict(state["pool"])
            self.env_steps = int(state["env_steps"])
            log = state["episode_log"]
            self.episode_log = [(int(e), int(s), float(r), int(n)) for e, s, r, n in log.tolist()]
            self.load_agent_state(state["algorithm"])

    def init_agent(self) -> None:
        """Build what the algorithm keeps besides the model (target network, buffers)."""

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.pool is not None:
            state["agent"] = {
                "pool": self.pool.state_dict(),
                "env_steps": self.env_steps,
                "episode_log": torch.tensor(self.episode_log, dtype=torch.float64).reshape(-1, 4),
                "algorithm": self.agent_state(),
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "agent" not in state:
            raise CheckpointError(
                "the checkpoint holds no agent state (environments, replay buffer)",
                hint="it was not written by an RL run; start a new run",
            )
        super().load_state_dict(state)
        self._pending_agent = state["agent"]

    def agent_state(self) -> dict[str, Any]:
        return {}

    def load_agent_state(self, state: dict[str, Any]) -> None:
        """Restore what `agent_state` returned."""

    # ------------------------------------------------------------------ acting
    def play(self, actions: Tensor) -> Transition:
        """One lock-step of the pool, with the episode bookkeeping."""
        transition = self.pool.step(actions)
        self.env_steps += len(actions)
        for total, length in transition.finished:
            self.episode_log.append((self.state.epoch + 1, self.env_steps, total, length))
        return transition

    def act_greedy(self, obs: Tensor) -> Tensor:
        """The greedy action for each observation (what evaluation and `play` use)."""
        return self.model.act(obs)

    def epoch_episodes(self, epoch: int) -> list[float]:
        """Returns of the training episodes that ended in `epoch` (1-based)."""
        return [total for e, _, total, _ in self.episode_log if e == epoch]
