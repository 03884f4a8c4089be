"""Architecture registry: 2D/3D CNN classifiers built by name."""

from medsight.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
