"""layerwise: build, train, diagnose and ship neural networks on plain PyTorch.

Five lines for the common case:

    from layerwise import Trainer, create_model, load_dataset
    data = load_dataset("digits")
    trainer = Trainer(create_model("cnn", num_classes=10), optimizer="adam", lr=2e-3)
    trainer.fit(data.train, data.val, epochs=20)
    print(trainer.evaluate(data.test))
    print(trainer.diagnose().render())   # the doctor watched every layer while it trained

The public names are imported on first use (PEP 562), so `import layerwise` and the `layerwise`
command start without importing torch; `from layerwise import Trainer` imports what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerwise.lazy import lazy_exports

__version__ = "0.1.0"  # keep in step with pyproject.toml (importlib.metadata would cost ~35 ms)

# Public name -> the module it is imported from. Moving a name is a one-line change here (and in
# the TYPE_CHECKING block below, which is what IDEs and type checkers read).
_EXPORTS: dict[str, str] = {
    "Callback": "layerwise.train",
    "CheckpointError": "layerwise.errors",
    "DataError": "layerwise.errors",
    "DatasetBundle": "layerwise.data",
    "Doctor": "layerwise.diagnose",
    "EarlyStopping": "layerwise.train",
    "LayerwiseError": "layerwise.errors",
    "ModelCheckpoint": "layerwise.train",
    "Probes": "layerwise.diagnose",
    "Recipe": "layerwise.recipe",
    "RecipeError": "layerwise.errors",
    "Run": "layerwise.runs",
    "RunError": "layerwise.errors",
    "Sequential": "layerwise.nn",
    "ShapeError": "layerwise.errors",
    "Trainer": "layerwise.train",
    "auto_fix": "layerwise.tune",
    "create_loss": "layerwise.train",
    "create_metric": "layerwise.train",
    "create_model": "layerwise.models",
    "create_optimizer": "layerwise.train",
    "create_schedule": "layerwise.train",
    "diagnose_run": "layerwise.diagnose",
    "init_weights": "layerwise.nn",
    "load_dataset": "layerwise.data",
    "load_recipe": "layerwise.recipe",
    "lr_find": "layerwise.tune",
    "make_batcher": "layerwise.data",
    "summary": "layerwise.nn",
}

__all__ = [  # a literal, so type checkers and IDEs see the re-exports
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

if TYPE_CHECKING:
    from layerwise.data import DatasetBundle, load_dataset, make_batcher
    from layerwise.diagnose import Doctor, Probes, diagnose_run
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
    from layerwise.tune import auto_fix, lr_find


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
