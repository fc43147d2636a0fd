"""Transfer learning: start from a pretrained backbone, give it a new head, fine-tune it.

    >>> from layerwise.transfer import load_backbone, freeze, discriminative_optimizer
    >>> model = load_backbone("run", "runs/mnist_04", num_classes=5)  # or cifar_resnet, torchvision
    >>> freeze(model, "backbone")  # only the new head trains
    >>> trainer = Trainer(model, optimizer=discriminative_optimizer(model, "adam", 1e-3, 0.3),
    ...                   callbacks=[GradualUnfreezing(every=1)])

See docs/transfer.md. Importing this package registers the `class_subset` and `faces_orl`
datasets and the `minilm` tokenizer (MiniLM's WordPiece, for `backbone.source: minilm`).
"""

from layerwise.transfer import datasets as _datasets  # noqa: F401  (registers datasets)
from layerwise.transfer.backbone import (
    SOURCES,
    from_cifar_resnet,
    from_run,
    from_torchvision,
    load_backbone,
)
from layerwise.transfer.checkpoint import (
    CheckpointMismatchError,
    load_weights,
    read_state_dict,
)
from layerwise.transfer.features import FeatureExtractor, FeatureModel
from layerwise.transfer.groups import (
    LayerGroup,
    discriminative_groups,
    find_head,
    freeze,
    frozen_groups,
    group_names,
    layer_groups,
    replace_head,
    unfreeze,
)
from layerwise.transfer.minilm import (
    MiniLMClassifier,
    MiniLMTokenizer,
    encode_texts,
    register_tokenizer,
)
from layerwise.transfer.optim import discriminative_optimizer
from layerwise.transfer.unfreeze import GradualUnfreezing

register_tokenizer()

__all__ = [
    "SOURCES",
    "CheckpointMismatchError",
    "FeatureExtractor",
    "FeatureModel",
    "GradualUnfreezing",
    "LayerGroup",
    "MiniLMClassifier",
    "MiniLMTokenizer",
    "discriminative_groups",
    "discriminative_optimizer",
    "encode_texts",
    "find_head",
    "freeze",
    "from_cifar_resnet",
    "from_run",
    "from_torchvision",
    "frozen_groups",
    "group_names",
    "layer_groups",
    "load_backbone",
    "load_weights",
    "read_state_dict",
    "replace_head",
    "unfreeze",
]
