"""What an ECG beat classifier's report adds: PVC sensitivity and PPV, per record, and a strip.

Beat classifiers are judged per beat class by sensitivity and positive predictive value (the
AAMI EC57 convention; de Chazal et al., *IEEE TBME* 2004), and per record, since an
inter-patient model can do well on most patients and fail one. Both are at the operating
threshold chosen on the validation records only. The strip shows a stretch of one held-out
record with every beat coloured by what the model called it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medsight.data.dataset import ImageDataset  # noqa: E402
from medsight.data.ecg import BeatSettings, filtered_strip  # noqa: E402
from medsight.evaluate.plots import save_figure  # noqa: E402
from medsight.io.ecg import EcgHeader, open_ecg  # noqa: E402

STRIP_SECONDS = 10.0
PVC = 1  # class index of "pvc"


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def pvc_counts(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Beats, PVCs and the PVC class's sensitivity and PPV (None where undefined)."""
    truth, called = labels == PVC, predicted == PVC
    tp, fp, fn = int((truth & called).sum()), int((~truth & called).sum()), int((truth & ~called).sum())
    return {
        "beats": int(len(labels)),
        "pvcs": int(truth.sum()),
        "called_pvc": int(called.sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "sensitivity": _ratio(tp, tp + fn),
        "ppv": _ratio(tp, tp + fp),
    }


def ecg_split_metrics(dataset: ImageDataset, split: str, probs: np.ndarray, threshold: float) -> dict:
    """PVC sensitivity and PPV over the split's beats, and per record."""
    labels = dataset.splits[split].labels
    records = dataset.splits[split].patient_ids
    predicted = (probs[:, PVC] >= threshold).astype(np.int64)
    per_record = [
        {"record": str(r), **pvc_counts(labels[records == r], predicted[records == r])}
        for r in sorted(set(records.tolist()))
    ]
    return {**pvc_counts(labels, predicted), "per_record": per_record}


def ecg_metrics(dataset: ImageDataset, probs: dict[str, np.ndarray], threshold: float) -> dict:
    """The ``"ecg"`` block of metrics.json: every evaluated split at the validation threshold."""
    return {
        "threshold": threshold,
        "threshold_from": "validation records",
        **{split: ecg_split_metrics(dataset, split, p, threshold) for split, p in probs.items()},
    }


def ecg_summary(block: dict, split: str) -> str:
    m = block[split]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    return (
        f"{split} PVC: sensitivity {fmt(m['sensitivity'])}  PPV {fmt(m['ppv'])}  "
        f"({m['tp']} of {m['pvcs']} PVCs found, {m['fp']} false alarms in {m['beats']} beats, "
        f"{len(m['per_record'])} record{'s' if len(m['per_record']) != 1 else ''})"
    )


# --------------------------------------------------------------------------- report


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def ecg_section_html(metrics: dict) -> str:
    """The report's per-record table (empty when the run is not an ECG run)."""
    block = metrics.get("ecg")
    if not isinstance(block, dict):
        return ""
    parts = ["<h2>PVC detection per record</h2>"]
    for split in [s for s in ("test", "train") if s in block][:1] + ["val"]:
        m = block.get(split)
        if not m:
            continue
        rows = "".join(
            "<tr>"
            + "".join(
                f'<td class="num">{_cell(r[k])}</td>' if k != "record" else f"<td>{_cell(r[k])}</td>"
                for k in ("record", "beats", "pvcs", "called_pvc", "fp", "sensitivity", "ppv")
            )
            + "</tr>"
            for r in m["per_record"] + [{"record": "all", **m}]
        )
        parts.append(
            f"<h3>{html.escape(split)} records</h3><table><tr><th>Record</th><th>Beats</th><th>PVCs</th>"
            f"<th>Called PVC</th><th>False alarms</th><th>Sensitivity</th><th>PPV</th></tr>{rows}</table>"
        )
    parts.append(
        f'<p class="note">Threshold {_cell(block.get("threshold"))} on the PVC probability, chosen on the '
        "validation records only. Records are whole patients: none of them was seen in training. "
        "Sensitivity or PPV is n/a where a record has no PVC or no beat was called PVC.</p>"
    )
    return "\n".join(parts)


# --------------------------------------------------------------------------- plots


def busiest_stretch(samples: np.ndarray, weight: np.ndarray, width: int) -> int:
    """Start sample of the ``width``-long stretch holding the most weight (PVCs, errors)."""
    starts = samples - width // 4
    totals = [weight[(samples >= s) & (samples < s + width)].sum() for s in starts]
    return int(max(0, starts[int(np.argmax(totals))])) if len(starts) else 0


@dataclass
class StripView:
    """Which 10 s of which record a split's strip shows, and every beat of that record with its calls."""

    header: EcgHeader
    settings: BeatSettings
    start: int
    rows: np.ndarray  # the record's beats as row indices of the split
    samples: np.ndarray  # their R peaks
    predicted: np.ndarray  # called PVC
    truth: np.ndarray  # annotated PVC
    title: str

    def in_strip(self) -> np.ndarray:
        """Positions (into ``rows``) of the beats that the strip shows."""
        stop = self.start + round(STRIP_SECONDS * self.header.fs)
        return np.flatnonzero((self.samples >= self.start) & (self.samples < stop))

    def draw(
        self, path: Path, title: str | None = None, saliency: dict[int, np.ndarray] | None = None
    ) -> Path:
        return draw_strip(
            self.header,
            self.settings,
            self.start,
            self.samples,
            self.predicted,
            self.truth,
            title or self.title,
            path,
            saliency,
        )


def strip_view(
    dataset: ImageDataset, split: str, probs: np.ndarray, threshold: float, record: str | None = None
) -> StripView:
    """The record with most PVCs (or ``record``), at its busiest 10 s of PVCs and errors."""
    info = dataset.extra["ecg"]
    settings = BeatSettings.from_dict(info["settings"])
    split_data = dataset.splits[split]
    records = split_data.patient_ids
    labels, samples = split_data.labels, info["beat_samples"][split]
    predicted = probs[:, PVC] >= threshold
    if record is None:
        record = max(sorted(set(records.tolist())), key=lambda r: (labels[records == r].sum(), r))
    rows = np.flatnonzero(records == record)
    header = open_ecg(info["record_paths"][record])
    truth = labels[rows] == PVC
    wrong = predicted[rows] != truth
    start = busiest_stretch(samples[rows], truth + 2 * wrong, round(STRIP_SECONDS * header.fs))
    title = f"record {record} ({split})"
    return StripView(header, settings, start, rows, samples[rows], predicted[rows], truth, title)


def plot_strip(
    dataset: ImageDataset,
    split: str,
    probs: np.ndarray,
    threshold: float,
    path: Path,
    record: str | None = None,
) -> Path:
    """10 s of one record (the one with most PVCs, at its busiest), beats coloured by prediction."""
    return strip_view(dataset, split, probs, threshold, record).draw(path)


def draw_strip(
    header: EcgHeader,
    settings: BeatSettings,
    start: int,
    samples: np.ndarray,
    predicted: np.ndarray,
    truth: np.ndarray | None,
    title: str,
    path: Path,
    saliency: dict[int, np.ndarray] | None = None,
) -> Path:
    """``STRIP_SECONDS`` of a record from ``start``, each beat coloured by prediction (shape: the truth).

    ``saliency`` (beat position in ``samples`` -> its map over the beat window, 0..1) adds a panel
    under the trace with each beat's map at the times it covers.
    """
    stop = min(header.n_samples, start + round(STRIP_SECONDS * header.fs))
    strip = filtered_strip(header, start, stop, settings)
    if saliency is None:
        fig, ax = plt.subplots(figsize=(13, 3.4))
    else:
        fig, (ax, below) = plt.subplots(
            2, 1, figsize=(13, 4.8), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
        )
        _draw_saliency(below, saliency, samples, predicted, settings)
    ax.plot((start + np.arange(len(strip))) / header.fs, strip, color="0.25", linewidth=0.8)
    for i in np.flatnonzero((samples >= start) & (samples < stop)):
        x, y = samples[i] / header.fs, strip[samples[i] - start]
        colour = "tab:red" if predicted[i] else "tab:blue"
        marker = "o" if truth is None or not truth[i] else "v"  # the truth, by shape
        ax.scatter([x], [y], color=colour, marker=marker, s=46, zorder=3, edgecolor="k", linewidth=0.4)
        if truth is not None and predicted[i] != truth[i]:
            ax.annotate("error", (x, y), textcoords="offset points", xytext=(0, 10), ha="center", fontsize=7)
    ax.scatter([], [], color="tab:red", label="called PVC")
    ax.scatter([], [], color="tab:blue", label="called other")
    if truth is not None:
        ax.scatter([], [], color="w", edgecolor="k", marker="v", label="annotated PVC")
        ax.scatter([], [], color="w", edgecolor="k", marker="o", label="annotated other")
    ax.legend(loc="upper right", fontsize=7, ncol=4)
    ax.set(ylabel="mV (filtered)", title=title)
    ax.set_xlim(start / header.fs, stop / header.fs)
    (ax if saliency is None else below).set_xlabel("time (s)")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _draw_saliency(
    ax, saliency: dict[int, np.ndarray], samples: np.ndarray, predicted: np.ndarray, settings: BeatSettings
) -> None:
    """Each beat's map over the window it was classified from, in the colour of its call."""
    for i, weights in saliency.items():
        times = (samples[i] - settings.before + np.arange(len(weights))) / settings.fs
        colour = "tab:red" if predicted[i] else "tab:blue"
        ax.fill_between(times, 0, weights, color=colour, alpha=0.35, linewidth=0)
        ax.plot(times, weights, color=colour, linewidth=0.7)
    ax.set(ylim=(0, 1.05), ylabel="saliency")
    ax.grid(alpha=0.3)


def plot_beats(
    images: np.ndarray, labels: np.ndarray, probs: np.ndarray, threshold: float, path: Path
) -> Path:
    """The ECG channel of the most confident right and wrong beats of each class, overlaid."""
    predicted = (probs[:, PVC] >= threshold).astype(np.int64)
    confidence = np.where(predicted == PVC, probs[:, PVC], 1 - probs[:, PVC])
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True, squeeze=False)
    names = {0: "other", 1: "PVC"}
    for row, right in enumerate((True, False)):
        for col, truth in enumerate((0, 1)):
            ax = axes[row, col]
            pick = np.flatnonzero((labels == truth) & ((predicted == labels) == right))
            pick = pick[np.argsort(-confidence[pick], kind="stable")][:8]
            for i in pick:
                ax.plot(images[i, 0], linewidth=0.8, alpha=0.8)
            verdict = "called right" if right else "called wrong"
            ax.set_title(f"annotated {names[truth]}, {verdict} ({len(pick)} most confident)", fontsize=9)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("sample in the beat window")
    return save_figure(fig, path)


def ecg_plots(
    run_dir: Path, dataset: ImageDataset, split: str, probs: np.ndarray, threshold: float
) -> dict[str, Path]:
    folder = Path(run_dir) / "plots"
    split_data = dataset.splits[split]
    return {
        "examples": plot_beats(
            split_data.images, split_data.labels, probs, threshold, folder / "examples.png"
        ),
        "ecg_strip": plot_strip(dataset, split, probs, threshold, folder / "ecg_strip.png"),
    }
