"""Explanations of a trained run's answers (`layerwise explain`), through captum.

Image runs: saliency, integrated gradients and Grad-CAM over the input, the first layer's
filters and each conv layer's feature maps. Text runs: integrated gradients over the embedding
layer, one score per token. Inputs are read as `layerwise predict` reads them. The package sits
above `predict` (it loads runs the way predict does); captum is the optional `interpret` extra.
"""

from layerwise.explain.attribute import (
    ExplainError,
    IntegratedGradients,
    gradcam,
    integrated_gradients,
    last_conv_layer,
    saliency,
    stroke_ratio,
)
from layerwise.explain.layers import feature_maps, first_layer_filters
from layerwise.explain.run import METHODS, Explanation, explain_run
from layerwise.explain.text import TokenAttributions, token_attributions

__all__ = [
    "METHODS",
    "ExplainError",
    "Explanation",
    "IntegratedGradients",
    "TokenAttributions",
    "explain_run",
    "feature_maps",
    "first_layer_filters",
    "gradcam",
    "integrated_gradients",
    "last_conv_layer",
    "saliency",
    "stroke_ratio",
    "token_attributions",
]
