"""The open step contract: logs averaged on the device, nested batches, several optimizers."""

from __future__ import annotations

import collections
import dataclasses
import gzip
import io
import json
import random
import re

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from layerwise.data import make_batcher
from layerwise.data.batch import batch_size, split_batch, to_device, tree_map
from layerwise.errors import CheckpointError, DataError, LayerwiseError, RecipeError
from layerwise.train import (
    Callback,
    EarlyStopping,
    ProgressBar,
    StepLogs,
    Trainer,
    create_metric,
    monitor_mode,
)


# ----------------------------------------------------------------------------- logs
def test_step_logs_are_weighted_by_batch_size_and_read_once():
    logs = StepLogs()
    logs.update({"loss": torch.tensor(1.0), "extra": 3}, weight=30)
    logs.update({"loss": torch.tensor(4.0), "extra": 0}, weight=10)  # a short last batch
    assert logs.compute() == {"loss": pytest.approx(1.75), "extra": pytest.approx(2.25)}
    state = logs.state_dict()
    torch.save(state, buffer := io.BytesIO())
    restored = StepLogs()
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert restored.compute() == logs.compute()


def test_a_non_scalar_log_is_a_clear_error():
    with pytest.raises(LayerwiseError, match=r"'output'.*shape \(4, 2\)"):
        StepLogs().update({"output": torch.zeros(4, 2)})


def test_epoch_logs_are_what_the_step_returned_averaged_over_samples():
    class Constant(Trainer):
        def train_step(self, batch):
            x, _ = batch
            self.backward(self.model(x).sum() * 0)
            self.optimizer_step()
            return {"loss": x[:, 0].mean(), "rows": float(len(x))}

    x = torch.arange(10.0).reshape(10, 1)  # batches of 4, 4, 2
    trainer = Constant(nn.Linear(1, 1), metrics=[], doctor=False, device="cpu")
    history = trainer.fit((x, torch.zeros(10)), epochs=1, batch_size=4, shuffle=False)
    assert history[0]["loss"] == pytest.approx(4.5)  # the mean of all 10 rows, not of 3 batches
    assert history[0]["rows"] == pytest.approx((4 * 4 + 4 * 4 + 2 * 2) / 10)
    assert "accuracy" not in history[0]  # metrics that no step updated are not logged


def test_a_step_that_returns_the_bare_loss_still_works():
    class Old(Trainer):
        def train_step(self, batch):
            return super().train_step(batch)["loss"]

    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    history = Old(nn.Linear(4, 2), doctor=False).fit((x, y), epochs=1, batch_size=8)
    assert history[0]["loss"] > 0


# ------------------------------------------------------------------------- batches
@dataclasses.dataclass
class Scene:
    images: list[torch.Tensor]
    boxes: list[torch.Tensor]


def test_tree_map_keeps_every_structure():
    Pair = collections.namedtuple("Pair", "a b")
    tree = {"x": (torch.ones(2), [torch.zeros(3)]), "p": Pair(torch.ones(1), 5), "s": "id"}
    doubled = tree_map(lambda t: t * 2, tree)
    assert isinstance(doubled["p"], Pair) and doubled["p"].b == 5 and doubled["s"] == "id"
    assert doubled["x"][0].tolist() == [2.0, 2.0] and isinstance(doubled["x"][1], list)
    scene = Scene(
        [torch.ones(3, 4, 5), torch.ones(3, 6, 6)], [torch.zeros(2, 4), torch.zeros(0, 4)]
    )
    moved = to_device(scene, torch.device("cpu"))
    assert isinstance(moved, Scene) and moved.images[1].shape == (3, 6, 6)


def test_split_and_size_of_batches():
    tokens, label = torch.zeros(5, 7, dtype=torch.long), torch.zeros(5)
    inputs, target = split_batch({"tokens": tokens, "lengths": torch.ones(5), "label": label})
    assert list(inputs) == ["tokens", "lengths"] and target is label
    assert split_batch((tokens,)) == (tokens, None)
    assert batch_size({"tokens": tokens}) == 5
    assert batch_size([torch.ones(3, 4, 5), torch.ones(3, 6, 6)]) == 2  # one tensor per sample
    with pytest.raises(DataError, match="override"):
        split_batch((tokens, label, label))


def test_dict_data_is_batched_by_indexing_and_rows_are_checked():
    data = {"tokens": torch.arange(20).reshape(10, 2), "label": torch.arange(10)}
    batcher = make_batcher(data, batch_size=4, shuffle=True, seed=1)
    batches = list(batcher)
    assert [len(b["label"]) for b in batches] == [4, 4, 2]
    seen = torch.cat([b["label"] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    for b in batches:  # rows stay together
        assert torch.equal(b["tokens"][:, 0], b["label"] * 2)
    with pytest.raises(DataError, match="different numbers of rows"):
        make_batcher({"tokens": torch.zeros(10, 2), "label": torch.zeros(9)})


class Ragged(Dataset):
    """Samples of different sizes: what detection and raw text look like."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        return {"values": torch.full((i % 4 + 1,), float(i)), "target": torch.tensor(i % 2)}


def _collate(items):
    return [item["values"] for item in items], torch.stack([item["target"] for item in items])


def test_a_dataloader_with_lists_of_variable_size_tensors_trains_and_replays():
    class MeanOfEach(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.out = nn.Linear(1, 2)

        def forward(self, values):
            return self.out(torch.stack([v.mean() for v in values]).unsqueeze(1))

    loader = DataLoader(Ragged(), batch_size=5, shuffle=True, collate_fn=_collate)
    batcher = make_batcher(loader, seed=4)
    batcher.set_epoch(3)
    first = [b[1].tolist() for b in batcher]
    assert [b[1].tolist() for b in batcher] == first  # the order is a function of (seed, epoch)
    assert [b[1].tolist() for b in batcher.iter_from(1)] == first[1:]
    trainer = Trainer(MeanOfEach(), doctor=False, device="cpu")
    history = trainer.fit(loader, epochs=2)
    assert len(history) == 2 and history[-1]["loss"] > 0
    assert isinstance(trainer.predict(make_batcher(loader, shuffle=False)), torch.Tensor)


def test_a_dataloader_whose_order_cannot_be_replayed_is_refused():
    sampler = torch.utils.data.WeightedRandomSampler([1.0] * 12, 12)
    loader = DataLoader(Ragged(), batch_size=4, sampler=sampler, collate_fn=_collate)
    with pytest.raises(DataError, match="cannot be replayed"):
        make_batcher(loader)


# ---------------------------------------------------------------- optimizers and state
class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 2), nn.Linear(4, 2)


class TwoStep(Trainer):
    def train_step(self, batch):
        x, y = batch
        loss_a = nn.functional.cross_entropy(self.model.a(x), y)
        self.backward(loss_a, "a")
        self.optimizer_step("a")
        loss_b = nn.functional.cross_entropy(self.model.b(x) + self.model.a(x).detach(), y)
        self.backward(loss_b, "b")
        self.optimizer_step("b")
        return {"a_loss": loss_a, "b_loss": loss_b}


def _two_step(callbacks=()):
    torch.manual_seed(0)
    return TwoStep(
        TwoHeads(),
        optimizer={
            "a": lambda m: torch.optim.SGD(m.a.parameters(), lr=0.1),
            "b": lambda m: torch.optim.Adam(m.b.parameters(), lr=0.01),
        },
        schedule={"a": "cosine", "b": {"name": "step", "step_size": 1}},
        metrics=[],
        callbacks=callbacks,
        doctor=False,
        device="cpu",
    )


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step, self.snapshot = step, None

    def on_batch_end(self, trainer):
        if trainer.state.step == self.step:
            self.snapshot = (
                {k: v.clone() for k, v in trainer.model.state_dict().items()},
                trainer.state_dict(),
            )
            trainer.stop("snapshot taken")


def test_two_optimizers_and_their_schedules_resume_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 4, generator=g), torch.randint(0, 2, (60,), generator=g)
    full = _two_step()
    full.fit((x, y), epochs=3, batch_size=8)

    stopper = StopAt(step=11)  # 8 batches per epoch: inside epoch 2
    first = _two_step([stopper])
    first.fit((x, y), epochs=3, batch_size=8)
    weights, state = stopper.snapshot
    assert set(state["optimizers"]) == set(state["schedules"]) == {"a", "b"}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)

    resumed = _two_step()
    resumed.model.load_state_dict(weights)
    resumed.load_state_dict(state)
    history = resumed.fit((x, y), epochs=3, batch_size=8)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    strip = [{k: v for k, v in row.items() if k != "time"} for row in history]
    assert strip == [{k: v for k, v in row.items() if k != "time"} for row in full.history]
    assert {"a_loss", "b_loss", "lr_a", "lr_b"} <= set(history[-1])


def test_a_named_backward_leaves_the_other_networks_gradients_alone():
    trainer = _two_step()
    trainer.fit((torch.randn(8, 4), torch.randint(0, 2, (8,))), epochs=1, batch_size=8)
    loss = trainer.model.a(torch.randn(3, 4)).sum() + trainer.model.b(torch.randn(3, 4)).sum()
    trainer.backward(loss, "b")
    assert all(p.grad is None for p in trainer.model.a.parameters())
    assert all(p.grad is not None for p in trainer.model.b.parameters())


def test_a_state_with_other_optimizers_is_refused():
    trainer = _two_step()
    trainer.fit((torch.randn(8, 4), torch.randint(0, 2, (8,))), epochs=1, batch_size=8)
    state = trainer.state_dict()
    plain = Trainer(nn.Linear(4, 2), doctor=False, schedule="cosine")
    plain.load_state_dict(state)
    with pytest.raises(CheckpointError, match=r"optimizers \['a', 'b'\].*\['main'\]"):
        plain.fit((torch.randn(8, 4), torch.randint(0, 2, (8,))), epochs=2, batch_size=8)


def test_several_optimizers_need_functions_and_one_schedule_each():
    with pytest.raises(RecipeError, match="function model -> optimizer"):
        Trainer(TwoHeads(), optimizer={"a": "adam"}, doctor=False).configure_optimizers()
    trainer = _two_step()
    trainer.schedule_spec = "cosine"
    with pytest.raises(RecipeError, match="one schedule was given for several optimizers"):
        trainer.fit((torch.randn(8, 4), torch.randint(0, 2, (8,))), epochs=1, batch_size=8)


# -------------------------------------------------------------------- callbacks
def test_callbacks_run_in_order_of_their_order():
    calls = []

    def make(name, order):
        return type(
            name, (Callback,), {"order": order, "on_fit_start": lambda s, t: calls.append(name)}
        )()

    trainer = Trainer(
        nn.Linear(4, 2),
        doctor=False,
        callbacks=[make("late", 5), make("early", -5), make("user", 0)],
    )
    trainer.fit((torch.randn(8, 4), torch.randint(0, 2, (8,))), epochs=1, batch_size=8)
    assert calls == ["early", "user", "late"]


def test_early_stopping_says_why_it_stopped():
    out = io.StringIO()
    stopper = EarlyStopping("loss", patience=1, min_delta=1e9)
    trainer = Trainer(
        nn.Linear(4, 2), doctor=False, callbacks=[stopper, ProgressBar(stream=out, force_tty=False)]
    )
    trainer.fit((torch.randn(16, 4), torch.randint(0, 2, (16,))), epochs=10, batch_size=8)
    reason = trainer.stop_reason
    assert reason.source == "EarlyStopping" and not reason.fatal
    assert reason.message.startswith(
        "early stopping at epoch 2/10: loss has not improved for 1 epoch (best "
    )
    assert reason.message.endswith("at epoch 1); keeping the weights of epoch 1, the best")
    assert out.getvalue().rstrip().endswith(reason.message)


def test_the_monitor_direction_comes_from_the_metric():
    metrics = [
        create_metric("accuracy"),
        create_metric("mae"),
        create_metric("f1", average="macro"),
    ]
    assert monitor_mode("val_accuracy", metrics) == "max"
    assert monitor_mode("mae", metrics) == "min"
    assert monitor_mode("val_f1_macro", metrics) == "max"
    assert monitor_mode("val_g_loss", metrics) == "min"
    assert monitor_mode("val_accuracy", metrics, "min") == "min"
    with pytest.raises(RecipeError, match="better high or low"):
        monitor_mode("val_score", metrics)


def test_the_doctor_is_attached_by_default_and_answers_diagnose():
    trainer = Trainer(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), device="cpu")
    trainer.fit((torch.randn(64, 4), torch.randint(0, 2, (64,))), epochs=2, batch_size=16)
    names = [type(c).__name__ for c in trainer.callbacks]
    assert names[:2] == ["Probes", "Doctor"]
    assert trainer.diagnose().to_dict()["findings"] is not None
    quiet = Trainer(nn.Linear(4, 2), doctor=False, device="cpu")
    quiet.fit((torch.randn(8, 4), torch.randint(0, 2, (8,))), epochs=1, batch_size=8)
    assert [type(c).__name__ for c in quiet.callbacks] == ["ProgressBar"]  # no doctor
    with pytest.raises(LayerwiseError, match="no doctor"):
        quiet.diagnose()


# ------------------------------------------------------------------- real text
def _reviews(path, n, seed):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("<br />", " "))


class BagOfWords(nn.Module):
    """fastText-style: the mean embedding of a review's words (padding left out), then a line."""

    def __init__(self, vocabulary: int, dim: int = 32) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(vocabulary, dim, mode="mean")
        self.out = nn.Linear(dim, 2)

    def forward(self, tokens, lengths):
        words = tokens[torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]]
        offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)[:-1]])
        return self.out(self.bag(words, offsets))


@pytest.mark.shared
def test_padded_token_ids_and_lengths_train_an_embedding_bag_on_imdb(shared_data):
    train = _reviews(shared_data / "imdb" / "imdb_train.jsonl.gz", 2500, seed=0)
    test = _reviews(shared_data / "imdb" / "imdb_test.jsonl.gz", 1500, seed=1)
    counts = collections.Counter(w for r in train for w in _words(r["text"]))
    vocabulary = {w: i + 2 for i, (w, c) in enumerate(counts.most_common()) if c >= 2}

    def encode(rows, length=300):
        tokens = torch.zeros(len(rows), length, dtype=torch.long)  # 0 pads, 1 is unknown
        lengths = torch.zeros(len(rows), dtype=torch.long)
        for i, row in enumerate(rows):
            ids = [vocabulary.get(w, 1) for w in _words(row["text"])][:length]
            tokens[i, : len(ids)] = torch.tensor(ids)
            lengths[i] = len(ids)
        return {
            "tokens": tokens,
            "lengths": lengths,
            "label": torch.tensor([r["label"] for r in rows]),
        }

    torch.manual_seed(0)
    trainer = Trainer(BagOfWords(len(vocabulary) + 2), optimizer="adam", lr=1e-2, device="cpu")
    history = trainer.fit(encode(train), epochs=6, batch_size=64)
    assert history[-1]["loss"] < history[0]["loss"] / 3
    scores = trainer.evaluate(encode(test))
    assert scores["accuracy"] > 0.8, scores  # 1,500 unseen reviews; chance is 0.5
    logits = trainer.predict(
        {"tokens": encode(test[:5])["tokens"], "lengths": encode(test[:5])["lengths"]}
    )
    assert logits.shape == (5, 2)


def test_with_params_makes_a_trainer_of_the_same_class_and_arguments():
    trainer = TwoStep(nn.Linear(4, 2), lr=0.3, grad_clip=1.0, metrics=["accuracy"], doctor=False)
    other = trainer.with_params(metrics=(), grad_clip=None)
    assert type(other) is TwoStep and other.model is trainer.model
    assert other.optimizer_args["lr"] == 0.3 and other.grad_clip is None and other.metrics == []
    assert trainer.grad_clip == 1.0 and len(trainer.metrics) == 1


class TakesTokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(3, 2)

    def forward(self, tokens):
        return self.out(tokens)


def test_a_dict_batch_that_does_not_fit_forward_or_has_no_target_is_a_clear_error():
    misnamed = {"tokenz": torch.randn(8, 3), "label": torch.randint(0, 2, (8,))}
    with pytest.raises(
        DataError, match=r"inputs \(tokenz\) do not fit TakesTokens.forward\(tokens\)"
    ):
        Trainer(TakesTokens(), doctor=False).fit(misnamed, epochs=1, batch_size=4)
    with pytest.raises(DataError, match="no target") as info:
        Trainer(TakesTokens(), doctor=False).fit({"tokens": torch.randn(8, 3)}, epochs=1)
    assert "'label'" in info.value.hint


def test_predict_joins_per_sample_lists_on_the_cpu():
    class Boxes(Trainer):
        def predict_step(self, batch):
            x, _ = self.unpack(batch)
            return [row[: int(i) % 3 + 1] for i, row in enumerate(x)]

    out = Boxes(nn.Linear(3, 2), doctor=False).predict(torch.randn(5, 3), batch_size=2)
    assert [len(t) for t in out] == [1, 2, 1, 2, 1] and all(t.device.type == "cpu" for t in out)
