"""A model card as one self-contained HTML page (no scripts, no external files; every value escaped).

The content is the registered card (``medsight.predict.registration``): training data and its
licence, metrics with 95% CIs, threshold and how it was chosen, calibration, intended use and
limitations, and the version history.
"""

from __future__ import annotations

from html import escape
from typing import Any

from medsight.serve.predict_schemas import ModelCardOut, ModelVersionOut

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
.note{background:#fff6e0;border-left:4px solid #e0a000;padding:.5rem 1rem}
"""


def _e(value: Any) -> str:
    return escape("n/a" if value is None else str(value))


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else _e(value)


def _metric_name(name: str, metric: dict[str, Any]) -> str:
    """The metric's name, with its unit where it has one (HD95: mm, or px for images without spacing)."""
    return _e(name) + (f" ({_e(metric['unit'])})" if metric.get("unit") else "")


def _metrics_table(split: str, block: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_metric_name(name, m)}</td><td>{_num(m.get('value'))}</td><td>"
        + (f"{_num(m['ci95'][0])} – {_num(m['ci95'][1])}" if m.get("ci95") else "n/a")
        + "</td></tr>"
        for name, m in (block.get("metrics") or {}).items()
    )
    return (
        f"<h3>{_e(split)} split (n = {_e(block.get('n'))}, prevalence {_num(block.get('prevalence'))})</h3>"
        f"<table><tr><th>metric</th><th>value</th><th>95% CI (bootstrap)</th></tr>{rows}</table>"
    )


def _dataset(d: dict[str, Any]) -> str:
    fields = ("name", "source", "licence", "citation", "modality", "n_train")
    return "<table>" + "".join(f"<tr><th>{f}</th><td>{_e(d.get(f))}</td></tr>" for f in fields) + "</table>"


def _history(versions: list[ModelVersionOut]) -> str:
    rows = "".join(
        f"<tr><td>{_e(v.version)}</td><td>{_e(v.registered_at.isoformat(timespec='seconds'))}</td>"
        f"<td>{'yes' if v.is_default else ''}</td><td>{_e(v.dataset.get('name'))}</td>"
        f"<td>{_num(((v.metrics.get('test') or {}).get('metrics') or {}).get('auc', {}).get('value'))}</td></tr>"
        for v in versions
    )
    return (
        "<table><tr><th>version</th><th>registered</th><th>default</th><th>data set</th><th>test AUC</th></tr>"
        f"{rows}</table>"
    )


def _roi_line(version: ModelVersionOut) -> str:
    """For a segmentation model, whether it wants each image's region of interest beside it."""
    if version.task != "segmentation":
        return ""
    if version.trained_with_roi:
        return (
            "<p><strong>Region of interest.</strong> Trained inside each image's region of interest (e.g. "
            "a field-of-view mask): send an image's own beside it (field 'roi'); without one the whole "
            "image is segmented.</p>"
        )
    return "<p><strong>Region of interest.</strong> Trained on whole images; a region of interest is optional.</p>"


def render_card(card: ModelCardOut) -> str:
    """The card of ``card.latest`` with the history of all versions, as an HTML document."""
    v = card.latest
    threshold = v.threshold or {}
    calibration = "".join(f"<li>{_e(split)}: ECE {_num(ece)}</li>" for split, ece in v.calibration.items())
    limitations = "".join(f"<li>{_e(item)}</li>" for item in v.limitations)
    metrics = "".join(_metrics_table(split, block) for split, block in v.metrics.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Model card: {_e(v.name)} {_e(v.version)}</title><style>{_STYLE}</style></head>
<body><main>
<h1>Model card: {_e(v.name)} <small>version {_e(v.version)}</small></h1>
<p class="note"><strong>Intended use.</strong> {_e(v.intended_use)}</p>
<p>Classes: {_e(", ".join(v.classes or []))}. Architecture: {_e(v.architecture.get("model"))}.
Served as: {_e(v.serving_variant)}. Heatmap: {_e(v.heatmap)}.</p>
{_roi_line(v)}
<h2>Training data</h2>{_dataset(v.dataset)}
<h2>Performance</h2>{metrics or "<p>no metrics recorded</p>"}
<h2>Threshold</h2><p>{_num(threshold.get("value"))}: {_e(threshold.get("how_chosen"))}</p>
<h2>Calibration</h2><ul>{calibration or "<li>not recorded</li>"}</ul>
<h2>Limitations</h2><ul>{limitations or "<li>none recorded</li>"}</ul>
<h2>Version history</h2>{_history(card.versions)}
</main></body></html>
"""
