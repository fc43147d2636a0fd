"""The framework tax of layerwise and its peers: time per training step against a hand loop.

The same model (an MLP or a small CNN on MNIST rows, or an LSTM classifier on IMDB reviews cut to
100 token ids; each defined once in plain PyTorch), the same initial weights, the same rows, the
same optimizer (torch's Adam, lr 1e-3) and loss, trained through:

- `hand`: the loop every PyTorch tutorial writes (batches cut from in-memory tensors by a
  permutation index; forward, loss, backward, step, zero_grad);
- `layerwise`: `Trainer.fit` with `metrics=[]` and the doctor off, the same work as `hand` (the
  doctor's cost is measured at real epoch lengths by benchmarks/probe_overhead.py: its probes
  sample a fixed number of steps per epoch, which these short timed epochs would inflate);
- `lightning`: a `LightningModule` and `lightning.Trainer` (no logger, checkpoint, progress bar or
  model summary) fed by a `DataLoader(TensorDataset)`, as its docs show;
- `keras`: Keras 3 on the torch backend (`KERAS_BACKEND=torch`), the same layers in
  `channels_first`, the torch weights copied in (the LSTM's two torch biases summed into Keras's
  one; both order the gates i, f, g, o), `model.fit` on NumPy arrays, Adam with torch's epsilon;
- `skorch`: `NeuralNet` around the module (`train_split=None`);
- `fastai`: a `Learner` over `DataLoaders.from_dsets` with torch's Adam (`OptimWrapper`), no
  progress bar or logging; fastai validates after every epoch, on one batch here.

Per step, not per run: each contender trains `steps` and then `3 * steps` batches in one epoch
from a fresh copy of the initial weights; the time per step is the difference over the extra
`2 * steps`, so what a framework spends once per `fit` (building a trainer, callbacks,
validation) is left out and what it spends every step is kept. All contenders run in one process,
interleaved round by round with the order rotating, and each ratio to `hand` is the median of the
per-round ratios, so the load from other processes hits all alike.

Same work, checked: before timing a cell, every contender trains its first `AGREE_STEPS` batches
unshuffled (the same batches in the same order) from the initial weights, and the loss each then
gives on a fixed held-out batch is compared with the hand loop's (`agreement` in the JSON: the
losses and the largest difference, which should be float noise, ~1e-5; Keras's Adam places
epsilon slightly differently). The loss after each timed (shuffled) run is kept too.

Run: .venv/bin/python benchmarks/peers.py [--rounds 5] [--paired] [--quick]
     [--cells mlp:32,mlp:128,cnn:32,cnn:128,lstm:32,lstm:128]   (e.g. --cells lstm:32,lstm:128)
Needs the `bench` extra (`pip install -e '.[bench]'`, which `make bench` installs).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine, table, write_json

LR = 1e-3
STEPS = {"mlp:32": 50, "mlp:128": 30, "cnn:32": 15, "cnn:128": 8, "lstm:32": 12, "lstm:128": 6}
AGREE_STEPS = 5
IMDB = {"reviews": 3000, "length": 100, "vocab": 10_000}  # each review cut (or padded) to 100 ids
LSTM = {"embed": 64, "hidden": 128}


class LSTMClassifier(nn.Module):
    """Token ids (N, T) -> embedding -> one LSTM layer -> the last step's output -> 2 logits."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, LSTM["embed"])
        self.lstm = nn.LSTM(LSTM["embed"], LSTM["hidden"], batch_first=True)
        self.head = nn.Linear(LSTM["hidden"], 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(self.embed(tokens))
        return self.head(outputs[:, -1])


def make_module(kind: str) -> nn.Module:
    if kind == "lstm":
        return LSTMClassifier(IMDB["vocab"])
    if kind == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
            nn.Linear(256, 10),
        )  # fmt: skip
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def keras_model(kind: str, module: nn.Module):
    """The same layers in Keras 3, with the module's weights (kernels transposed as Keras keeps
    them: Dense (in, out), Conv2D (kh, kw, in, out))."""
    import keras
    from keras import layers

    if kind == "lstm":
        return _compiled(_keras_lstm(module), keras)
    if kind == "mlp":
        stack = [layers.Input((1, 28, 28)), layers.Flatten(), layers.Dense(512, "relu"),
                 layers.Dense(256, "relu"), layers.Dense(10)]  # fmt: skip
    else:
        conv = partial(layers.Conv2D, padding="same", data_format="channels_first")
        pool = partial(layers.MaxPooling2D, data_format="channels_first")
        stack = [layers.Input((1, 28, 28)), conv(32, 3, activation="relu"), pool(),
                 conv(64, 3, activation="relu"), pool(),
                 layers.Flatten(), layers.Dense(128, "relu"),
                 layers.Dense(10)]  # fmt: skip
        # Flatten as torch does, (C, H, W): Flatten(data_format="channels_first") would move the
        # channels last first, and the copied Dense weights would meet the features reordered

    model = keras.Sequential(stack)
    torch_layers = [m for m in module if isinstance(m, (nn.Linear, nn.Conv2d))]
    keras_layers = [layer for layer in model.layers if layer.weights]
    for theirs, ours in zip(keras_layers, torch_layers, strict=True):
        weight = ours.weight.detach().numpy()
        kernel = weight.T if weight.ndim == 2 else weight.transpose(2, 3, 1, 0)
        theirs.set_weights([kernel, ours.bias.detach().numpy()])
    return _compiled(model, keras)


def _keras_lstm(module: LSTMClassifier):
    import keras
    from keras import layers

    embed, lstm, head = (
        layers.Embedding(IMDB["vocab"], LSTM["embed"]),
        layers.LSTM(LSTM["hidden"]),
        layers.Dense(2),
    )
    model = keras.Sequential([layers.Input((IMDB["length"],), dtype="int64"), embed, lstm, head])
    numpy = {name: p.detach().numpy() for name, p in module.named_parameters()}
    embed.set_weights([numpy["embed.weight"]])
    lstm.set_weights(
        [
            numpy["lstm.weight_ih_l0"].T,
            numpy["lstm.weight_hh_l0"].T,
            numpy["lstm.bias_ih_l0"] + numpy["lstm.bias_hh_l0"],
        ]
    )
    head.set_weights([numpy["head.weight"].T, numpy["head.bias"]])
    return model


def _compiled(model, keras):
    model.compile(
        optimizer=keras.optimizers.Adam(LR, epsilon=1e-8),  # torch's Adam default
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


class Contenders:
    """Each contender: (init module, x, y, batch) -> (seconds of the fit, the trained module or
    a function giving logits for the check batch)."""

    def __init__(self, kind: str, batch: int) -> None:
        self.kind, self.batch = kind, batch
        self.shuffle = True  # off for the agreement check: the same batches in the same order

    def hand(self, module, x, y):
        optimizer = torch.optim.Adam(module.parameters(), lr=LR)
        loss_fn = nn.CrossEntropyLoss()
        start = time.perf_counter()
        perm = torch.randperm(len(x)) if self.shuffle else torch.arange(len(x))
        for lo in range(0, len(x), self.batch):
            index = perm[lo : lo + self.batch]
            loss = loss_fn(module(x[index]), y[index])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start, module

    def layerwise(self, module, x, y):
        from layerwise.train import Trainer

        trainer = Trainer(
            module,
            optimizer=torch.optim.Adam(module.parameters(), lr=LR),
            metrics=[],
            doctor=False,
            progress=False,
            threads=None,
        )
        start = time.perf_counter()
        trainer.fit((x, y), epochs=1, batch_size=self.batch, shuffle=self.shuffle)
        return time.perf_counter() - start, module

    def lightning(self, module, x, y):
        import lightning as L

        class Module(L.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.net = module

            def training_step(self, batch, _):
                inputs, targets = batch
                return nn.functional.cross_entropy(self.net(inputs), targets)

            def configure_optimizers(self):
                return torch.optim.Adam(self.parameters(), lr=LR)

        trainer = L.Trainer(
            max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        )  # fmt: skip
        loader = DataLoader(TensorDataset(x, y), batch_size=self.batch, shuffle=self.shuffle)
        start = time.perf_counter()
        trainer.fit(Module(), loader)
        return time.perf_counter() - start, module

    def keras(self, module, x, y):
        model = keras_model(self.kind, module)
        xs, ys = x.numpy(), y.numpy()
        start = time.perf_counter()
        model.fit(xs, ys, batch_size=self.batch, epochs=1, shuffle=self.shuffle, verbose=0)
        return time.perf_counter() - start, _keras_logits(model)

    def skorch(self, module, x, y):
        from skorch import NeuralNet

        net = NeuralNet(
            module, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=LR,
            max_epochs=1, batch_size=self.batch, train_split=None, verbose=0,
            iterator_train__shuffle=self.shuffle,
        )  # fmt: skip
        start = time.perf_counter()
        net.fit(x, y)
        return time.perf_counter() - start, module

    def fastai(self, module, x, y):
        from fastai.data.core import DataLoaders
        from fastai.learner import Learner
        from fastai.optimizer import OptimWrapper

        dls = DataLoaders.from_dsets(
            TensorDataset(x, y), TensorDataset(x[: self.batch], y[: self.batch]),
            bs=self.batch, device="cpu", shuffle=self.shuffle,
        )  # fmt: skip
        learner = Learner(
            dls, module, loss_func=nn.CrossEntropyLoss(),
            opt_func=partial(OptimWrapper, opt=torch.optim.Adam), lr=LR,
        )  # fmt: skip
        start = time.perf_counter()
        with learner.no_logging():  # no progress bar: fastai.callback.progress is not imported
            learner.fit(1, lr=LR)
        return time.perf_counter() - start, module


CONTENDERS = ["hand", "layerwise", "lightning", "keras", "skorch", "fastai"]


def _keras_logits(model) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda inputs: torch.as_tensor(np.asarray(model(inputs.numpy())))


def check_logits(trained, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if isinstance(trained, nn.Module):
            trained.eval()
        return trained(x)


def check_loss(trained, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(nn.functional.cross_entropy(check_logits(trained, x), y))


def agreement(contenders: Contenders, init: nn.Module, x, y, check_x, check_y) -> dict:
    """Each contender's logits and loss on the check batch after the same first `AGREE_STEPS`
    batches in the same order: equal up to float noise when all did the same work. The logits
    tell more than the loss, which a few steps barely move: each contender's largest logit
    difference to the hand loop's is set against how far the hand loop moved its logits."""
    rows = AGREE_STEPS * contenders.batch
    contenders.shuffle = False
    logits = {}
    for name in CONTENDERS:
        _, trained = getattr(contenders, name)(copy.deepcopy(init), x[:rows], y[:rows])
        logits[name] = check_logits(trained, check_x)
    contenders.shuffle = True
    initial = check_logits(copy.deepcopy(init), check_x)
    keras_start = check_logits(_keras_logits(keras_model(contenders.kind, init)), check_x)
    moved = float((logits["hand"] - initial).abs().max())
    losses = {n: float(nn.functional.cross_entropy(v, check_y)) for n, v in logits.items()}
    apart = {n: float((v - logits["hand"]).abs().max()) for n, v in logits.items()}
    worst = max(apart, key=apart.get)
    print(
        f"  agreement after {AGREE_STEPS} unshuffled steps: the hand loop moved its logits by "
        f"up to {moved:.3g}; the farthest contender ({worst}) is {apart[worst]:.2g} from it"
    )
    return {
        "steps": AGREE_STEPS,
        "initial_loss": float(nn.functional.cross_entropy(initial, check_y)),
        "loss": losses,
        "abs_loss_difference_to_hand": {n: abs(v - losses["hand"]) for n, v in losses.items()},
        "keras_max_logit_difference_before_training": float((keras_start - initial).abs().max()),
        "hand_max_logit_change": moved,
        "max_logit_difference_to_hand": apart,
    }


def measure(cell: str, x: torch.Tensor, y: torch.Tensor, rounds: int) -> dict:
    kind, batch = cell.split(":")[0], int(cell.split(":")[1])
    steps = STEPS[cell]
    torch.manual_seed(0)
    init = make_module(kind)
    contenders = Contenders(kind, batch)
    short, long = x[: steps * batch], x[: 3 * steps * batch]
    short_y, long_y = y[: steps * batch], y[: 3 * steps * batch]
    check_x, check_y = x[-512:], y[-512:]
    assert 3 * steps * batch <= len(x) - 512, "the check rows must stay out of training"
    agreed = agreement(contenders, init, x, y, check_x, check_y)
    if rounds == 0:
        return {"agreement": agreed}
    per_step: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    losses: dict[str, float] = {}
    for r in range(rounds):
        order = CONTENDERS[r % len(CONTENDERS) :] + CONTENDERS[: r % len(CONTENDERS)]
        for name in order:
            run: Callable = getattr(contenders, name)
            t_short, _ = run(copy.deepcopy(init), short, short_y)
            t_long, trained = run(copy.deepcopy(init), long, long_y)
            per_step[name].append((t_long - t_short) / (2 * steps))
            losses[name] = check_loss(trained, check_x, check_y)
        print(f"  {cell} round {r + 1}/{rounds} load {os.getloadavg()[0]:.1f}", flush=True)
    ratios = {
        name: statistics.median(
            a / h for a, h in zip(per_step[name], per_step["hand"], strict=True)
        )
        for name in CONTENDERS
    }
    return {
        "steps_timed": 2 * steps,
        "ms_per_step_median": {n: 1e3 * statistics.median(v) for n, v in per_step.items()},
        "ratio_to_hand": ratios,
        "agreement": agreed,
        "check_loss_after_long_run": losses,
        "per_round_ms": {n: [1e3 * s for s in v] for n, v in per_step.items()},
    }


def paired(cell: str, x: torch.Tensor, y: torch.Tensor, epochs: int = 4) -> dict:
    """layerwise against the hand loop step by step: after every `Trainer.fit` step a callback
    runs one hand-loop step on its own copy of the weights, and the two are timed apart, so
    both see the machine at the same moment (as benchmarks/overhead.py does for the MLP and
    CNN). The trainer's time includes calling that callback. The first epoch is a warm-up."""
    from layerwise.train import Trainer
    from layerwise.train.callbacks import Callback

    kind, batch = cell.split(":")[0], int(cell.split(":")[1])
    rows = 3 * STEPS[cell] * batch
    x, y = x[:rows], y[:rows]
    torch.manual_seed(0)
    init = make_module(kind)
    hand = copy.deepcopy(init)
    hand_optimizer = torch.optim.Adam(hand.parameters(), lr=LR)

    class HandStepAfterEach(Callback):
        def on_epoch_start(self, trainer) -> None:
            self.order, self.step = torch.randperm(len(x)), 0
            self.trainer_s = self.hand_s = 0.0
            self.mark = time.perf_counter()

        def on_batch_end(self, trainer) -> None:
            start = time.perf_counter()
            self.trainer_s += start - self.mark
            index = self.order[self.step * batch : (self.step + 1) * batch]
            self.step += 1
            nn.functional.cross_entropy(hand(x[index]), y[index]).backward()
            hand_optimizer.step()
            hand_optimizer.zero_grad(set_to_none=True)
            self.mark = time.perf_counter()
            self.hand_s += self.mark - start

    pair, module = HandStepAfterEach(), copy.deepcopy(init)
    trainer = Trainer(
        module, optimizer=torch.optim.Adam(module.parameters(), lr=LR), metrics=[],
        doctor=False, progress=False, threads=None, callbacks=[pair],
    )  # fmt: skip
    ratios = []
    for epoch in range(1, epochs + 1):
        trainer.fit((x, y), epochs=epoch, batch_size=batch)
        if epoch > 1:
            ratios.append(pair.trainer_s / pair.hand_s)
    print(f"  {cell} paired layerwise/hand per epoch: {', '.join(f'{r:.3f}' for r in ratios)}")
    return {"epochs_counted": len(ratios), "ratios": ratios, "median": statistics.median(ratios)}


def training_rows(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The training rows of a kind: 20,000 MNIST images, or IMDB reviews as token ids (the
    first `IMDB["length"]` words, a `IMDB["vocab"]`-word vocabulary), in a fixed shuffled order
    so the unshuffled agreement batches hold both classes."""
    from layerwise.data import load_dataset

    if kind != "lstm":
        x, y = load_dataset("mnist").train
        return x[:20_000].contiguous(), y[:20_000].contiguous()
    bundle = load_dataset(
        "imdb", subset=IMDB["reviews"], max_size=IMDB["vocab"], max_length=IMDB["length"]
    )
    x, y = bundle.train
    assert bundle.model_args["vocab_size"] <= IMDB["vocab"]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order].contiguous(), y[order].contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="0: the agreement check only")
    parser.add_argument(
        "--cells",
        default=",".join(STEPS),
        help="model:batch pairs; --cells lstm:32,lstm:128 runs only the LSTM row",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "peers.json")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="also time layerwise against the hand loop step by step in each cell "
        "(--rounds 0 --paired: only that and the agreement check)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run (1 round, mlp:32 and lstm:32); no JSON"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.cells, args.output = 1, "mlp:32,lstm:32", None
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    cells = args.cells.split(",")
    unknown = sorted(set(cells) - set(STEPS))
    if unknown:
        parser.error(f"unknown cells {unknown}; choose from {', '.join(STEPS)}")
    data = {kind: training_rows(kind) for kind in {cell.split(":")[0] for cell in cells}}
    load_start = os.getloadavg()
    results = {cell: measure(cell, *data[cell.split(":")[0]], args.rounds) for cell in cells}
    if args.paired:
        for cell in cells:
            results[cell]["paired_layerwise_over_hand"] = paired(cell, *data[cell.split(":")[0]])
    headers = ["contender", *results]
    rows = [
        [name, *(f"{r['ratio_to_hand'][name]:.2f} ({r['ms_per_step_median'][name]:.1f} ms)"
                 if args.rounds else
                 f"{r['agreement']['max_logit_difference_to_hand'][name]:.1e} logits apart"
                 for r in results.values())]
        for name in CONTENDERS
    ]  # fmt: skip
    print(table(headers, rows))
    write_json(
        args.output,
        {
            "machine": machine(),
            "threads": args.threads,
            "rounds": args.rounds,
            "imdb_lstm": {**IMDB, **LSTM},
            "load_average": {"start": load_start, "end": os.getloadavg()},
            "cells": results,
        },
    )


if __name__ == "__main__":
    main()
