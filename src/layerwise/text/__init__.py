"""Text as models see it: tokenisers, a vocabulary, padding, n-grams and length buckets.

`TextPipeline` strings them together (raw text -> padded token ids), is fitted on training texts
and saved with a run as JSON, so `layerwise predict RUN "a raw sentence"` reads raw text. This
package sits below `data` and `models` (it imports neither) and uses only torch and, for
subwords, the `tokenizers` package.
"""

from layerwise.text.batch import (
    PAD_ID,
    bucket_order,
    hashed_ngrams,
    lengths_of,
    pad,
    pad_flat,
    padding_mask,
    to_offsets,
    trim,
)
from layerwise.text.pipeline import PIPELINE_FILE, TextPipeline, check_texts
from layerwise.text.tokenize import (
    CharTokenizer,
    SubwordTokenizer,
    WordTokenizer,
    make_tokenizer,
    tokenizer_from_config,
)
from layerwise.text.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "PAD_ID",
    "PIPELINE_FILE",
    "SPECIALS",
    "UNK",
    "CharTokenizer",
    "SubwordTokenizer",
    "TextPipeline",
    "Vocab",
    "WordTokenizer",
    "bucket_order",
    "check_texts",
    "hashed_ngrams",
    "lengths_of",
    "make_tokenizer",
    "pad",
    "pad_flat",
    "padding_mask",
    "to_offsets",
    "tokenizer_from_config",
    "trim",
]
