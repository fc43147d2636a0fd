"""The ready-to-run recipes, installed as the package `layerwise.recipes`.

This folder stays at the repository root, where README, docs and tests name `recipes/...`;
pyproject.toml maps the package `layerwise.recipes` onto it, so a wheel (and `pip install -e .`)
carries every recipe here. `layerwise.recipes_bundled` finds them by name, which is how
`layerwise quickstart` and `layerwise train digits_cnn` work outside a checkout.
"""
