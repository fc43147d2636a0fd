"""Model families, one per file, each registered by name in `MODELS`.

Build them by name: `create_model("cnn", num_classes=10, variant="vgg")`. Every module in this
folder is imported here so that its `@MODELS.register` decorators run; a new family is a new file
and needs no edit in this one. (The family functions live in their modules, e.g.
`layerwise.models.mlp.mlp`, and are not re-exported so module and function names never clash.)
"""

import importlib
import pkgutil

from layerwise.models.registry import MODELS, create_model, list_models
from layerwise.models.resnet import CifarResNet, load_cifar_resnet

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODELS", "CifarResNet", "create_model", "list_models", "load_cifar_resnet"]
