"""layerwise: build, train, diagnose and ship neural networks on plain PyTorch.

Five lines for the common case:

    from layerwise import Trainer, create_model, load_dataset
    data = load_dataset("digits")
    trainer = Trainer(create_model("cnn", num_classes=10), optimizer="adam", lr=2e-3)
    trainer.fit(data.train, data.val, epochs=20)
    print(trainer.evaluate(data.test))
    print(trainer.diagnose().render())   # the doctor watched every layer while it trained
"""

from layerwise.data import DatasetBundle, load_dataset, make_batcher
from layerwise.diagnose import Doctor, Probes, auto_fix, diagnose_run, lr_find
from layerwise.errors import (
    CheckpointError,
    DataError,
    LayerwiseError,
    RecipeError,
    RunError,
    ShapeError,
)
from layerwise.models import create_model
from layerwise.nn import Sequential, init_weights, summary
from layerwise.recipe import Recipe, load_recipe
from layerwise.runs import Run
from layerwise.train import (
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    Trainer,
    create_loss,
    create_metric,
    create_optimizer,
    create_schedule,
)

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "CheckpointError",
    "DataError",
    "DatasetBundle",
    "Doctor",
    "EarlyStopping",
    "LayerwiseError",
    "ModelCheckpoint",
    "Probes",
    "Recipe",
    "RecipeError",
    "Run",
    "RunError",
    "Sequential",
    "ShapeError",
    "Trainer",
    "auto_fix",
    "create_loss",
    "create_metric",
    "create_model",
    "create_optimizer",
    "create_schedule",
    "diagnose_run",
    "init_weights",
    "load_dataset",
    "load_recipe",
    "lr_find",
    "make_batcher",
    "summary",
]
