"""One self-contained HTML report per run, readable by a clinician or a reviewer.

Self-contained means one file: CSS inline, plots embedded as base64 data URIs, no CDN and no
link to fetch, so the page can be mailed, archived or opened offline and still shows everything.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from medsight.evaluate.ecg import ecg_section_html

HEADLINE_METRICS = (
    ("auc", "AUC (ROC)"),
    ("acc", "Accuracy at operating threshold"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("sensitivity", "Sensitivity (recall)"),
    ("specificity", "Specificity"),
    ("ppv", "PPV (precision)"),
    ("npv", "NPV"),
    ("f1", "F1"),
    ("acc_at_0_5", "Accuracy at 0.5 / argmax (MedMNIST protocol)"),
)

PLOT_CAPTIONS = {
    "training_curves": "Training and validation loss, validation AUC and learning rate per epoch.",
    "roc": "ROC curve on the test set; the dot marks the operating threshold chosen on validation.",
    "pr": "Precision-recall curve on the test set; dotted lines mark the prevalence (no-skill level).",
    "confusion": "Confusion matrix on the test set (rows: true class, columns: predicted class).",
    "calibration": "Reliability diagram on the test set: a calibrated model's bars follow the diagonal.",
    "examples": "Test cases: the most confident correct predictions (top) and the most confident errors "
    "(bottom).",
    "ecg_strip": "Ten seconds of one held-out record, filtered; every annotated beat marked by what the model "
    "called it (colour) and what the reference annotation says (shape).",
    "ecg_saliency": "The same ten seconds with, under each beat, its saliency over time (occlusion: how much "
    "the probability of the class the model called drops when 50 ms around that moment are hidden; each beat's "
    "peak is 1).",
    "explanations": "Where the model looked: test cases (most confident correct, then most confident wrong), "
    "each above its saliency map for the predicted class (red = most important).",
}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1000px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #335; padding-bottom: .3em; }
h2 { margin-top: 2em; color: #335; }
table { border-collapse: collapse; margin: .8em 0; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #eef; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .92em; }
.note { background: #f6f6e8; border-left: 4px solid #bb8; padding: .5em 1em; }
pre { background: #f4f4f4; padding: .8em; overflow-x: auto; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """Numbers to 3 decimals, integers as they are, None/NaN as "n/a"; always HTML-escaped."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return _esc(value)
    if isinstance(value, int):
        return _esc(value)
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.3f}"
    return _esc(value)


def _fmt_ci(ci: object) -> str:
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return "n/a"
    return f"{fmt(ci[0])} – {fmt(ci[1])}"


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], numeric_from: int = 1) -> str:
    """Rows are already-escaped cell strings; columns from ``numeric_from`` are right-aligned."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = [
            f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>" for i, c in enumerate(row)
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _flatten(config: Mapping, prefix: str = "") -> list[tuple[str, object]]:
    """Nested config as dotted keys, so it reads as one flat two-column table."""
    items: list[tuple[str, object]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items.extend(_flatten(value, f"{name}."))
        else:
            items.append((name, value))
    return items


# --------------------------------------------------------------------------- sections


def _data_section(dataset: Mapping) -> str:
    fields = [
        ("Name", "name"),
        ("Source", "source"),
        ("Modality", "modality"),
        ("Spatial dimensions", "spatial_dims"),
        ("Image shape", "image_shape"),
        ("Channels", "channels"),
        ("Classes", "classes"),
        ("Licence", "licence"),
        ("Citation", "citation"),
    ]
    rows = []
    for label, key in fields:
        value = dataset.get(key)
        if isinstance(value, list | tuple):
            separator = ", " if key == "classes" else " × "
            value = separator.join(str(v) for v in value)
        rows.append((_esc(label), fmt(value)))
    parts = ["<h2>Data</h2>", _table(("Field", "Value"), rows, numeric_from=99)]
    splits = dataset.get("splits") or {}
    if splits:
        split_rows = []
        for name, info in splits.items():
            counts = info.get("label_counts") or {}
            if isinstance(counts, Mapping):
                counts = ", ".join(f"{k}: {v}" for k, v in counts.items())
            shown = counts
            split_rows.append((_esc(name), fmt(info.get("size")), fmt(shown)))
        parts.append(_table(("Split", "Cases", "Cases per label"), split_rows, numeric_from=1))
    return "\n".join(parts)


def _threshold_text(metrics: Mapping) -> str:
    test = metrics.get("test") or {}
    if "sensitivity" not in test:  # multi-class: argmax
        return "<p>Multi-class prediction: the class with the highest probability (argmax); no threshold.</p>"
    rule = metrics.get("threshold_rule")
    rule_text = f" by the <b>{_esc(rule)}</b> rule" if rule else ""
    return (
        f'<p class="note">Operating threshold: <b>{fmt(test.get("threshold"))}</b> '
        f"(a case is called positive when its probability is at least this). It was chosen{rule_text} "
        "on the <b>validation set only</b>; the test set played no part in choosing it or the model.</p>"
    )


def _headline_section(metrics: Mapping) -> str:
    test = metrics.get("test") or {}
    val = metrics.get("val") or {}
    ci = test.get("ci") or {}
    rows = [
        (_esc(label), fmt(test.get(key)), _fmt_ci(ci.get(key)), fmt(val.get(key)))
        for key, label in HEADLINE_METRICS
        if key in test
    ]
    calib = test.get("calibration")
    if isinstance(calib, Mapping):
        val_calib = val.get("calibration") or {}
        rows.append(
            (
                _esc("Expected calibration error (lower is better)"),
                fmt(calib.get("ece")),
                "n/a",
                fmt(val_calib.get("ece")),
            )
        )
    n_boot = test.get("n_boot")
    resamples = f" over {fmt(n_boot)} resamples" if n_boot else ""
    ci_note = f"95% CI: percentile bootstrap{resamples} of test cases, stratified by label."
    parts = [
        "<h2>Results</h2>",
        _threshold_text(metrics),
        _table(("Metric", "Test", "Test 95% CI", "Validation"), rows),
        f"<p>{_esc(ci_note)} Test: {fmt(test.get('n'))} cases",
    ]
    if test.get("prevalence") is not None:
        parts[-1] += f", prevalence {fmt(test.get('prevalence'))}"
    parts[-1] += (
        ". Validation figures are optimistic: the checkpoint and threshold were chosen on them;"
        " judge the model by the test column.</p>"
    )
    parts.append(_per_class_table(test))
    parts.append(_run_facts(metrics))
    return "\n".join(p for p in parts if p)


def _per_class_table(split: Mapping) -> str:
    per_class = split.get("per_class")
    if not per_class:
        return ""
    rows = [
        (
            _esc(c.get("class")),
            fmt(c.get("support")),
            fmt(c.get("precision")),
            fmt(c.get("recall")),
            fmt(c.get("f1")),
            fmt(c.get("auc")),
        )
        for c in per_class
    ]
    header = ("Class", "Support", "Precision", "Recall", "F1", "AUC")
    return "<h3>Per class (test)</h3>" + _table(header, rows)


def _run_facts(metrics: Mapping) -> str:
    """Top-level scalars other than the splits (epochs trained, best epoch, time...)."""
    rows = [
        (_esc(k.replace("_", " ")), fmt(v))
        for k, v in metrics.items()
        if k not in ("val", "test") and not isinstance(v, Mapping | list)
    ]
    return "<h3>Run</h3>" + _table(("Fact", "Value"), rows) if rows else ""


def _mean_sd(block: object) -> str:
    if not isinstance(block, Mapping) or block.get("mean") is None:
        return "n/a"
    return f"{fmt(block.get('mean'))} ± {fmt(block.get('sd'))}"


def _faithfulness_section(metrics: Mapping) -> str:
    """Deletion/insertion AUC against a random map, and the weight-randomisation check (if explained)."""
    f = metrics.get("faithfulness")
    if not isinstance(f, Mapping):
        return ""
    method = {"gradcam": "Grad-CAM", "occlusion": "Occlusion"}.get(str(f.get("method")), str(f.get("method")))
    rows = [
        (
            _esc("Deletion AUC (lower is better)"),
            _mean_sd(f.get("deletion_auc")),
            _mean_sd(f.get("random_deletion_auc")),
        ),
        (
            _esc("Insertion AUC (higher is better)"),
            _mean_sd(f.get("insertion_auc")),
            _mean_sd(f.get("random_insertion_auc")),
        ),
    ]
    cascade = [
        (_esc(level.get("randomised")), _mean_sd(level), fmt(level.get("constant_maps")))
        for level in f.get("randomisation_cascade") or []
        if isinstance(level, Mapping)
    ]
    return "\n".join(
        [
            "<h2>Faithfulness of the explanations</h2>",
            f"<p>{fmt(f.get('n'))} {_esc(f.get('split', 'test'))} cases"
            + (
                f" (of {fmt(f['n_requested'])} asked for: fewer fit the time budget)"
                if f.get("n_requested", 0) > f.get("n", 0)
                else ""
            )
            + ", "
            f"maps for {_esc(f.get('target', 'the predicted class'))}. "
            "Deletion removes the pixels the map ranks highest first and insertion restores them into a blurred "
            "image (Petsiuk et al., BMVC 2018); a map that finds the evidence beats a random map of the same "
            "coarseness. Mean ± sd over cases.</p>",
            _table(("Check", _esc(method), "Random map"), rows),
            "<p>Weight randomisation (Adebayo et al., NeurIPS 2018): layers re-initialised from the output down; "
            "Spearman rank correlation with the trained model's maps. Near 0 means the maps depend on what "
            "the model learned, as they should; near 1 means they only trace the image.</p>",
            _table(("Layers re-initialised", "Spearman ρ", "Constant maps (left out)"), cascade)
            if cascade
            else "",
        ]
    )


def _image_data_uri(path: Path) -> str:
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{encoded}"


def _plots_section(plots: Mapping[str, Path]) -> str:
    if not plots:
        return ""
    parts = ["<h2>Plots</h2>"]
    for key, path in plots.items():
        caption = PLOT_CAPTIONS.get(key, key.replace("_", " ").capitalize())
        if not Path(path).is_file():  # say so rather than fail the whole report for one plot
            parts.append(f'<p class="note">Plot {_esc(key)} is missing ({_esc(Path(path).name)}).</p>')
            continue
        parts.append(
            f'<figure><img src="{_image_data_uri(Path(path))}" alt="{_esc(key)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>"
        )
    return "\n".join(parts)


def _config_section(config: Mapping) -> str:
    rows = [(_esc(k), _esc(v)) for k, v in _flatten(config)]
    return "<h2>Configuration</h2>" + _table(("Key", "Value"), rows, numeric_from=99)


def _notes_section(notes: list[str] | None) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{_esc(n)}</li>" for n in notes)
    return f"<h2>Notes</h2><ul>{items}</ul>"


# --------------------------------------------------------------------------- page


def write_report(
    path: Path,
    *,
    title: str,
    dataset: dict,
    config: dict,
    metrics: dict,
    plots: dict[str, Path],
    notes: list[str] | None = None,
) -> Path:
    """Write the run's report as one HTML file at ``path`` and return the path.

    Written to a temporary sibling first and renamed, so a failure never leaves half a report.
    """
    body = [
        f"<h1>{_esc(title)}</h1>",
        _data_section(dataset),
        _headline_section(metrics),
        ecg_section_html(metrics),
        _faithfulness_section(metrics),
        _plots_section(plots),
        _config_section(config),
        _notes_section(notes),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
