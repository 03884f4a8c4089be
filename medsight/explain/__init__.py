"""Explanations: Grad-CAM and occlusion maps, overlays, and faithfulness scores (MONAI visualize)."""

from typing import Any

from medsight.explain.faithfulness import faithfulness_report
from medsight.explain.maps import METHODS, Explanation, explain, explain_images, target_layer_for
from medsight.explain.overlay import map_png, overlay_png

__all__ = [
    "METHODS",
    "Explanation",
    "explain",
    "explain_images",
    "explain_run",
    "explanation_figures",
    "faithfulness_report",
    "map_png",
    "overlay_png",
    "target_layer_for",
]


def __getattr__(name: str) -> Any:
    # the run-level step draws with pyplot and reads reports: loaded only when asked for, so serving
    # a heatmap does not pay for it
    if name in ("explain_run", "explanation_figures"):
        from medsight.explain import run

        return getattr(run, name)
    raise AttributeError(f"module 'medsight.explain' has no attribute {name!r}")
