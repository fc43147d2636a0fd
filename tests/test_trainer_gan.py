"""A two-optimizer GAN step on the digits, through the Trainer's open step contract.

It logs `d_loss`/`g_loss` (averaged on the device), steps two named optimizers, learns (its
samples come to look like digits to a classifier trained on real ones), checkpoints into a run
folder, and a run SIGKILLed mid-epoch resumes to exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from layerwise.runs import Run

GAN_CODE = '''
import os, signal, sys
import torch
import torch.nn.functional as F
from torch import nn

from layerwise.data import load_dataset
from layerwise.runs import Run
from layerwise.train import Callback, ModelCheckpoint, Trainer

LATENT = 16


class GAN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.generator = nn.Sequential(
            nn.Linear(LATENT, 128), nn.LeakyReLU(0.2), nn.Linear(128, 64), nn.Tanh()
        )
        self.discriminator = nn.Sequential(
            nn.Linear(64, 128), nn.LeakyReLU(0.2), nn.Dropout(0.2), nn.Linear(128, 1)
        )


class GANTrainer(Trainer):
    def train_step(self, batch):
        real, _ = batch
        critic = self.model.discriminator
        fake = self.model.generator(torch.randn(len(real), LATENT, device=real.device))
        real_logits, fake_logits = critic(real), critic(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(
            real_logits, torch.full_like(real_logits, 0.9)  # one-sided label smoothing
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        self.backward(d_loss, "discriminator")
        self.optimizer_step("discriminator")
        fooled = critic(fake)
        g_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        self.backward(g_loss, "generator")
        self.optimizer_step("generator")
        return {"d_loss": d_loss, "g_loss": g_loss}


def adam(part):
    return lambda model: torch.optim.Adam(
        getattr(model, part).parameters(), lr=2e-4, betas=(0.5, 0.999)
    )


def digits_in_tanh_range():
    x, y = load_dataset("digits").train
    return x.reshape(len(x), -1) * 2 - 1, y


def make_trainer(gan, callbacks=(), doctor=True):
    return GANTrainer(
        gan,
        loss=None,
        metrics=(),
        optimizer={"discriminator": adam("discriminator"), "generator": adam("generator")},
        schedule={"discriminator": {"name": "cosine"}, "generator": "constant"},
        callbacks=callbacks,
        seed=3,
        doctor=doctor,
    )


class KillAt(Callback):
    """SIGKILL this process after a given step: a crash no Python code can clean up after."""

    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer):
        if trainer.state.step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    mode, root, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.manual_seed(0)
    gan = GAN()
    if mode == "resume":
        run = Run.open(os.path.join(root, "gan"))
    else:
        run = Run.create(root, "gan", "name: gan\\n")
    callbacks = [ModelCheckpoint(run, every_steps=7)]
    if mode.startswith("kill@"):
        callbacks.append(KillAt(int(mode[5:])))
    trainer = make_trainer(gan, callbacks)
    if mode == "resume":
        weights, state = run.load_checkpoint("last")
        gan.load_state_dict(weights)
        trainer.load_state_dict(state)
    trainer.fit(digits_in_tanh_range(), epochs=epochs, batch_size=64)
    print("HISTORY", __import__("json").dumps(trainer.history))
'''


@pytest.fixture(scope="module")
def gan_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gan_code")
    (folder / "gan_step.py").write_text(textwrap.dedent(GAN_CODE))
    sys.path.insert(0, str(folder))
    import gan_step

    yield folder / "gan_step.py", gan_step
    sys.path.remove(str(folder))
    sys.modules.pop("gan_step", None)


def test_the_gan_logs_both_losses_steps_both_optimizers_and_learns(gan_module):
    from sklearn.linear_model import LogisticRegression

    _, gan_step = gan_module
    x, y = gan_step.digits_in_tanh_range()
    judge = LogisticRegression(max_iter=3000).fit(x.numpy(), y.numpy())

    def confidence(gan) -> float:
        """How sure a classifier of real digits is about 500 samples: ~0.3 for noise."""
        with torch.no_grad():
            samples = gan.generator(torch.randn(500, gan_step.LATENT, generator=g)).numpy()
        return float(judge.predict_proba(samples).max(axis=1).mean())

    torch.manual_seed(0)
    gan = gan_step.GAN()
    g = torch.Generator().manual_seed(1)
    before = confidence(gan)
    trainer = gan_step.make_trainer(gan)
    history = trainer.fit((x, y), epochs=30, batch_size=64)

    assert set(trainer.optimizers) == {"discriminator", "generator"}
    last = history[-1]
    assert {"d_loss", "g_loss", "lr_discriminator", "lr_generator"} <= set(last)
    assert "loss" not in last and "accuracy" not in last  # nothing the step did not log
    assert last["lr_generator"] == pytest.approx(2e-4)
    assert last["lr_discriminator"] < 2e-5  # its cosine schedule ran its course
    # Each optimizer moved only its own network.
    state = trainer.state_dict()
    assert set(state["optimizers"]) == {"discriminator", "generator"}
    assert set(state["schedules"]) == {"discriminator", "generator"}
    g = torch.Generator().manual_seed(1)
    after = confidence(gan)
    assert before < 0.4 and after > 0.5, (before, after)
    # The doctor watched by default, took the first log (d_loss) as the loss, and found nothing
    # fatal.
    assert trainer.stop_reason is None
    probes = next(c for c in trainer.callbacks if type(c).__name__ == "Probes")
    sampled = [record["loss"] for record in probes.log.steps]
    assert len(sampled) > 30 and all(0 < loss < 10 for loss in sampled)
    assert "fatal" not in [f.severity for f in trainer.diagnose().findings]


def _run(script: Path, mode: str, root: Path, epochs: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), mode, str(root), str(epochs)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )


def _history(result: subprocess.CompletedProcess) -> list[dict]:
    line = next(x for x in result.stdout.splitlines() if x.startswith("HISTORY "))
    return json.loads(line.removeprefix("HISTORY "))


@pytest.mark.slow
def test_a_sigkilled_gan_resumes_bit_for_bit(gan_module, tmp_path):
    script, _ = gan_module
    epochs = 4  # 21 batches per epoch: step 50 is inside epoch 3, two steps past a checkpoint
    killed = _run(script, "kill@50", tmp_path / "a", epochs)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _, saved = Run(tmp_path / "a" / "gan").load_checkpoint("last")
    assert saved["train_state"] == {"epoch": 2, "step": 49, "batch_in_epoch": 7}
    resumed = _run(script, "resume", tmp_path / "a", epochs)
    assert resumed.returncode == 0, resumed.stderr
    reference = _run(script, "fresh", tmp_path / "b", epochs)
    assert reference.returncode == 0, reference.stderr

    final_a, _ = Run(tmp_path / "a" / "gan").load_checkpoint("last")
    final_b, _ = Run(tmp_path / "b" / "gan").load_checkpoint("last")
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        assert torch.equal(final_a[key], final_b[key]), key
    strip = [{k: v for k, v in row.items() if k != "time"} for row in _history(resumed)]
    expected = [{k: v for k, v in row.items() if k != "time"} for row in _history(reference)]
    assert strip == expected  # the same d_loss/g_loss, epoch by epoch, to the last bit
