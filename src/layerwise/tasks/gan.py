"""GANs: train a generator against a discriminator with the Trainer's two-optimizer step.

`GANTrainer.train_step` is the whole algorithm: one discriminator step on real and generated
images (real targets `1 - label_smoothing`: one-sided label smoothing), then one generator step
through the updated discriminator. The two networks have their own optimizers, `discriminator`
and `generator`, so each has its own learning rate (two time-scale updates, TTUR) and both
optimizers' states are in every checkpoint. Logging, checkpoints, progress, the doctor and
SIGKILL-safe resume are the Trainer's callbacks, as for any model.

A recipe picks the GAN settings from fields it already has:

- `model`: `dcgan` or `cgan` with `latent_dim`, `width`, `spectral_norm`;
- `train.optimizer.lr`: the generator's rate; `train.optimizer.args.discriminator_lr`: the
  discriminator's (default: the same); other `args` (e.g. `betas: [0.5, 0.999]`) go to both;
- `train.loss.label_smoothing`: the one-sided smoothing of the real targets (0.1 -> 0.9).

After every epoch `GANMonitor` writes a grid of samples from fixed noise
(`plots/samples_epoch_NNN.png`) and scores the generator with the judge classifier
(`layerwise.tasks.gan_eval`): `fid` (Fréchet distance to real test images), the class
histogram's entropy and the feature spread as shares of the real data's (`mode_collapse`
reads them), and for a conditional GAN the judge's accuracy on each requested class and the
spread of each class's samples against the real class's (`mode_collapse` reads the weakest
class: a generator that ignores its noise draws one image per class). At the end
the run gets the real-vs-real floor, a latent interpolation strip and its report.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from layerwise.data import DatasetBundle, load_dataset
from layerwise.data.registry import DATASETS
from layerwise.diagnose.doctor import PROBES_FILE, doctor_callbacks
from layerwise.errors import CheckpointError, DataError, LayerwiseError, RecipeError
from layerwise.models import MODELS, create_model
from layerwise.models.gan import IMAGE_SHAPE, GANPair
from layerwise.recipe import Recipe
from layerwise.report import plot_run_curves, write_report
from layerwise.report.gan_plots import plot_frechet, save_grid
from layerwise.runs import Run
from layerwise.tasks import GAN_MODELS
from layerwise.tasks.common import checkpoint_to_load, close_run, restore_last
from layerwise.tasks.gan_eval import Judge, Scores, score_samples, train_judge
from layerwise.train import Callback, MetricsLogger, ModelCheckpoint, ProgressBar, Trainer
from layerwise.train.callbacks.stop_on_signal import guarded_fit

Echo = Callable[[str], None] | None
EVAL_SAMPLES = 5000  # generated (and real) images per evaluation, at most the test split's size
GRID_SEED, EVAL_SEED = 1234, 4321  # fixed noise: epoch grids and scores compare like with like


class GANTrainer(Trainer):
    """A Trainer whose step trains a `GANPair` (see the module docstring).

    Args:
        label_smoothing: one-sided label smoothing: real images are scored against
            `1 - label_smoothing`, generated ones against 0.
        *args, **kwargs: the Trainer's; `optimizer` must name `discriminator` and `generator`.
    """

    def __init__(self, *args: Any, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        kwargs.setdefault("loss", None)
        kwargs.setdefault("metrics", ())
        super().__init__(*args, **kwargs)
        self.params.update(label_smoothing=label_smoothing)
        self.label_smoothing = label_smoothing

    def train_step(self, batch: Any) -> dict[str, Tensor]:
        real, labels = batch
        gan: GANPair = self.model
        labels = labels if gan.conditional else None
        z = torch.randn(len(real), gan.latent_dim, device=real.device) * gan.latent_scale
        with self.autocast:
            fake = gan.generator(z, labels)
            real_logits, real_classes = self._score(real, labels)
            fake_logits, _ = self._score(fake.detach(), labels)
            d_loss = F.binary_cross_entropy_with_logits(
                real_logits, torch.full_like(real_logits, 1.0 - self.label_smoothing)
            ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
            if real_classes is not None:  # AC-GAN: the discriminator learns the digits
                d_loss = d_loss + F.cross_entropy(real_classes, labels)
        self.backward(d_loss, "discriminator")
        self.optimizer_step("discriminator")
        with self.autocast:
            fooled, fooled_classes = self._score(fake, labels)
            g_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
            if fooled_classes is not None:  # ... and the generator draws the digit asked for
                g_loss = g_loss + F.cross_entropy(fooled_classes, labels)
        self.backward(g_loss, "generator")
        self.optimizer_step("generator")
        return {
            "d_loss": d_loss.detach(),
            "g_loss": g_loss.detach(),
            "d_real": torch.sigmoid(real_logits.detach()).mean(),
            "d_fake": torch.sigmoid(fake_logits.detach()).mean(),
        }

    def _score(self, images: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Real/fake logits, and the auxiliary class logits of a conditional GAN (else None)."""
        if labels is None:
            return self.model.discriminator(images), None
        return self.model.discriminator(images, labels, classes=True)

    def eval_step(self, batch: Any) -> dict[str, Tensor]:
        return {}

    def predict_step(self, batch: Any) -> Tensor:
        z, labels = self.unpack(batch)
        return self.model.generator(z, labels if self.model.conditional else None)


class GANMonitor(Callback):
    """After every epoch: a sample grid PNG, and the judge's scores added to the epoch's logs.

    It runs before the doctor, the metrics log and the checkpoint (`order`), so all three see the
    scores. Its noise comes from its own seeded generators and sampling reads batch-norm
    statistics without updating them, so watching changes nothing in training (resume stays
    bit for bit).
    """

    order = -7

    def __init__(
        self,
        run: Run,
        judge: Judge,
        real_images: Tensor,
        samples: int,
        real_labels: Tensor | None = None,
    ) -> None:
        self.run, self.judge = run, judge
        self.samples = min(samples, len(real_images))
        labels = real_labels[: self.samples] if real_labels is not None else None
        self.real, _ = judge.stats(real_images[: self.samples], labels)  # + per-class spreads
        self.scores: Scores | None = None

    def on_epoch_end(self, trainer: Trainer) -> None:
        gan: GANPair = trainer.model
        epoch = trainer.state.epoch
        path = self.run.plots_dir / f"samples_epoch_{epoch:03d}.png"
        save_grid(fixed_grid(gan), path, grid_columns(gan))
        self.scores = evaluate_generator(gan, self.judge, self.real, self.samples)
        trainer.logs.update(self.scores.logs())  # the same dict as trainer.history[-1]


def fixed_grid(gan: GANPair, n: int = 64, label: int | None = None) -> Tensor:
    """`n` samples from fixed noise (a conditional GAN: classes 0..K-1 in turn, or `label`)."""
    generator = torch.Generator().manual_seed(GRID_SEED)
    labels = None
    if gan.conditional:
        labels = torch.full((n,), label) if label is not None else torch.arange(n) % gan.num_classes
    return gan.sample(n, labels, generator=generator)


def grid_columns(gan: GANPair) -> int | None:
    """One class per column for a conditional GAN (its grids cycle through the classes)."""
    return gan.num_classes if gan.conditional else None


def evaluate_generator(gan: GANPair, judge: Judge, real: Any, samples: int) -> Scores:
    """Score `samples` generated images (equal classes for a conditional GAN) against `real`."""
    generator = torch.Generator().manual_seed(EVAL_SEED)
    labels = torch.arange(samples) % gan.num_classes if gan.conditional else None
    images = torch.cat(
        [
            gan.sample(len(chunk), chunk if labels is not None else None, generator=generator)
            for chunk in (labels if labels is not None else torch.zeros(samples)).split(1000)
        ]
    )
    return score_samples(judge, images, real, labels)


def interpolation_strip(
    gan: GANPair, steps: int = 10, rows: int = 4, seed: int | None = None
) -> Tensor:
    """`rows` lines of `steps` images along straight lines between pairs of latent vectors."""
    generator = torch.Generator().manual_seed(GRID_SEED + 1 if seed is None else seed)
    ends = gan.noise(2 * rows, generator).view(rows, 2, -1)
    t = torch.linspace(0, 1, steps, device=ends.device).view(1, steps, 1)
    z = (ends[:, :1] * (1 - t) + ends[:, 1:] * t).reshape(rows * steps, -1)
    labels = None
    if gan.conditional:
        labels = (torch.arange(rows) % gan.num_classes).repeat_interleave(steps)
    return gan.sample(len(z), labels, z=z)


# ------------------------------------------------------------------------------ building
def is_gan(recipe: Recipe) -> bool:
    """Does `recipe` train a GAN (its model is a registered GAN pair)?"""
    return recipe.model.name.lower() in GAN_MODELS


def load_images(recipe: Recipe) -> DatasetBundle:
    """The recipe's dataset with pixels in [-1, 1] (the generator's tanh range)."""
    args = dict(recipe.data.args)
    if "normalize" in inspect.signature(DATASETS.get(recipe.data.name)).parameters:
        args["normalize"] = False
    data = load_dataset(recipe.data.name, **args)
    if tuple(data.input_shape) != IMAGE_SHAPE:
        raise DataError(
            f"dataset '{recipe.data.name}' has inputs of shape {tuple(data.input_shape)}; the GAN "
            f"models make images of shape {IMAGE_SHAPE}",
            hint="train dcgan/cgan on mnist (without data.args.flatten)",
        )
    for part in ("train", "val", "test"):
        split = getattr(data, part)
        if split is not None:
            x, y = split
            low, high = float(x.min()), float(x.max())
            if low < 0 or high > 1:
                raise DataError(
                    f"dataset '{recipe.data.name}': pixels run from {low:.3g} to {high:.3g}, "
                    "not 0..1",
                    hint="give the images unnormalised (pixels scaled to [0, 1])",
                )
            setattr(data, part, (x * 2 - 1, y))
    return data


def build_gan(recipe: Recipe, data: DatasetBundle | None) -> GANPair:
    """The recipe's GAN pair; a conditional one gets the data's classes (10 without `data`)."""
    args = dict(recipe.model.args)
    accepts = inspect.signature(MODELS.get(recipe.model.name)).parameters
    if "num_classes" in accepts and "num_classes" not in args and data is not None:
        args["num_classes"] = data.num_classes
    return create_model(recipe.model.name, **args)


def optimizers(recipe: Recipe) -> dict[str, Callable[[GANPair], torch.optim.Optimizer]]:
    """The two optimizers: the generator at `lr`, the discriminator at `discriminator_lr`."""
    from layerwise.train import OPTIMIZERS
    from layerwise.train.optimizers import create_optimizer

    spec = recipe.train.optimizer
    OPTIMIZERS.get(spec.name)  # a misspelt name stops here, before a run folder exists
    args = dict(spec.args)
    d_lr = args.pop("discriminator_lr", spec.lr)
    if not isinstance(d_lr, int | float) or isinstance(d_lr, bool) or not d_lr > 0:
        raise RecipeError(
            f"train.optimizer.args.discriminator_lr must be a positive number, got {d_lr!r}",
            hint="e.g. discriminator_lr: 0.0004 (twice the generator's lr: two time-scales)",
        )
    if "betas" in args:
        args["betas"] = tuple(args["betas"])

    def make(part: str, lr: float) -> Callable[[GANPair], torch.optim.Optimizer]:
        return lambda gan: create_optimizer(
            spec.name, getattr(gan, part), lr=lr, weight_decay=spec.weight_decay, **args
        )

    return {
        "discriminator": make("discriminator", float(d_lr)),
        "generator": make("generator", spec.lr),
    }


def build_trainer(recipe: Recipe, model: GANPair, callbacks: Sequence[Callback] = ()) -> GANTrainer:
    spec = recipe.train
    return GANTrainer(
        model,
        optimizer=optimizers(recipe),
        label_smoothing=spec.loss.label_smoothing,
        callbacks=list(callbacks),
        device=spec.device,
        precision=spec.precision,
        grad_clip=spec.grad_clip,
        seed=recipe.seed,
        doctor=False,  # the recipe's doctor, if any, is among `callbacks`
        threads=spec.threads,
        progress=False,
    )


def run_callbacks(
    recipe: Recipe, run: Run, data: DatasetBundle, judge: Judge, echo: Echo, progress: bool
) -> list[Callback]:
    spec = recipe.doctor
    monitor = "fid" if recipe.train.monitor in ("val_loss", "fid") else recipe.train.monitor
    mode = "min" if monitor == "fid" else "auto"  # a distance: lower is better
    callbacks: list[Callback] = [
        GANMonitor(run, judge, data.test[0], EVAL_SAMPLES, data.test[1]),
        *doctor_callbacks(
            probes=spec.probes,
            every=spec.probe_every,
            path=run.path / PROBES_FILE,
            recipe=recipe.model_dump(mode="json"),
            task="gan",
            num_classes=data.num_classes,
            echo=echo if spec.live else None,
            stop_on_fatal=spec.stop_on_fatal,
        ),
        MetricsLogger(run),
        ModelCheckpoint(run, monitor, mode, every_steps=recipe.train.checkpoint_every_steps),
    ]
    return callbacks + ([ProgressBar()] if progress else [])


# ------------------------------------------------------------------------------ the story
def train_gan(
    recipe: Recipe | None = None,
    runs_root: str | Path = "runs",
    *,
    resume: str | Path | None = None,
    judge: Judge | None = None,
    progress: bool = True,
    echo: Echo = print,
    callbacks: Sequence[Callback] = (),
) -> tuple[Run, dict[str, float]]:
    """Train a GAN recipe into a new run folder, or `resume` one from its last checkpoint, bit
    for bit; returns the run and its final scores.

    A new run trains its judge classifier first (unless `judge` is given) and keeps it in the
    run folder, so every epoch of the run, and a resumed run, is scored by the same judge.
    """
    from layerwise.train import seed_everything

    if resume is not None:
        run, recipe = Run.reopen(resume, runs_root, recipe)
        if run.info().get("status") == "finished":
            return run, run.info().get("test_metrics") or {}
    build_gan(recipe, None)  # bad model settings stop here, before the data is read
    seed_everything(recipe.seed)
    data = load_images(recipe)
    model = build_gan(recipe, data)
    optimizers(recipe)  # bad optimizer settings stop here
    if resume is None:
        if judge is None:
            judge = train_judge(data.train, data.test, seed=recipe.seed)
        run = Run.create(runs_root, recipe.name, recipe.to_yaml())
        judge.save(run.path)
    else:
        judge = Judge.load(run.path)
    everything = [*run_callbacks(recipe, run, data, judge, echo, progress), *callbacks]
    trainer = build_trainer(recipe, model, everything)
    restore_last(run, model, trainer, resume=resume is not None)
    with guarded_fit(run, trainer):
        trainer.fit(data.train, epochs=recipe.train.epochs, batch_size=recipe.data.batch_size)
    return run, finish_gan(run, trainer, judge, data)


def finish_gan(
    run: Run, trainer: GANTrainer, judge: Judge, data: DatasetBundle
) -> dict[str, float]:
    """Final scores (the last epoch's, the real-vs-real floor, per-class accuracy), the strip,
    the Fréchet curve, the diagnosis and the report; returns the scores."""
    gan: GANPair = trainer.model
    monitor = next(c for c in trainer.callbacks if isinstance(c, GANMonitor))
    samples = monitor.samples
    scores = monitor.scores or evaluate_generator(gan, judge, monitor.real, samples)
    metrics = scores.logs()
    metrics["fid_floor"] = real_floor(judge, data, samples)
    metrics["judge_accuracy"] = judge.test_accuracy
    if scores.class_accuracy is not None:
        metrics.update({f"class_accuracy_{k}": a for k, a in enumerate(scores.class_accuracy)})
    run.append_metrics({"epoch": trainer.state.epoch, "split": "test", **metrics})
    save_grid(fixed_grid(gan), run.plots_dir / "samples.png", grid_columns(gan))
    save_grid(interpolation_strip(gan), run.plots_dir / "interpolation.png", columns=10)
    history = [h for h in trainer.history if "fid" in h]
    if history:
        plot_frechet(
            [int(h["epoch"]) for h in history],
            [h["fid"] for h in history],
            metrics["fid_floor"],
            run.plots_dir / "frechet.png",
        )
    diagnosis = close_run(run, trainer, metrics)
    plot_run_curves(run)
    write_report(run, diagnosis=diagnosis, summary_text=_summary(gan))
    return metrics


def real_floor(judge: Judge, data: DatasetBundle, samples: int) -> float:
    """The Fréchet distance between `samples` real training images and as many test images:
    what a perfect generator would score with this sample size."""
    from layerwise.tasks.gan_eval import frechet_distance

    train_stats, _ = judge.stats(data.train[0][:samples])
    test_stats, _ = judge.stats(data.test[0][:samples])
    return frechet_distance(train_stats, test_stats)


def _summary(gan: GANPair) -> str:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return (
        f"generator: {count(gan.generator):,} parameters\n{gan.generator}\n\n"
        f"discriminator: {count(gan.discriminator):,} parameters\n{gan.discriminator}"
    )


# ------------------------------------------------------------------------------ using a run
def load_gan(run: Run, which: str = "last") -> GANPair:
    """The generator pair of a GAN run, with its `last` (or `best`, lowest Fréchet) weights."""
    recipe = run.recipe()
    if not is_gan(recipe):
        raise LayerwiseError(
            f"run '{run.name}' trains a '{recipe.model.name}', not a GAN",
            hint="generate images from a dcgan or cgan run",
        )
    which = checkpoint_to_load(run, which)
    args = dict(recipe.model.args)
    if recipe.model.name.lower() == "cgan" and "num_classes" not in args:
        args["num_classes"] = 10  # MNIST, the only data the GAN models make
    gan = create_model(recipe.model.name, **args)
    weights, _ = run.load_checkpoint(which)
    expected = gan.state_dict()
    differ = sorted(set(expected) ^ set(weights)) + sorted(
        k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape
    )
    if differ:  # e.g. a cgan run from before the conditional-batch-norm generator
        raise CheckpointError(
            f"run '{run.name}': its checkpoint does not fit the current '{recipe.model.name}' "
            f"layout ({len(differ)} weights differ: {', '.join(differ[:3])})",
            hint="the run was made by an older layout of the model; train its recipe again",
        )
    gan.load_state_dict(weights)
    return gan.eval()


def generate_grid(
    run: Run,
    n: int = 64,
    label: int | None = None,
    output: str | Path | None = None,
    seed: int | None = None,
    interpolate: bool = False,
) -> Path:
    """Write a grid of `n` generated digits (of class `label`, for a conditional GAN) as a PNG,
    or with `interpolate` a latent interpolation strip (rows of 10 steps between two random
    latent vectors); returns its path (default: `<run>/generated.png`)."""
    gan = load_gan(run)
    path = Path(output) if output is not None else run.path / "generated.png"
    if interpolate:
        return save_grid(interpolation_strip(gan, seed=seed), path, columns=10)
    if not 1 <= n <= 4096:
        raise DataError(f"--n must be 1..4096, got {n}", hint="e.g. --n 64")
    if label is not None:
        if not gan.conditional:
            raise DataError(
                f"run '{run.name}' is an unconditional GAN: it cannot be asked for a class",
                hint="leave --label out, or train a cgan recipe",
            )
        if not 0 <= label < gan.num_classes:
            raise DataError(
                f"--label {label} is not a class of run '{run.name}' (0..{gan.num_classes - 1})",
                hint=f"give a label from 0 to {gan.num_classes - 1}",
            )
    generator = torch.Generator().manual_seed(seed if seed is not None else GRID_SEED)
    labels = None
    if gan.conditional:
        labels = torch.full((n,), label) if label is not None else torch.arange(n) % gan.num_classes
    images = gan.sample(n, labels, generator=generator)
    columns = (
        gan.num_classes if gan.conditional and label is None and n >= gan.num_classes else None
    )
    return save_grid(images, path, columns)
