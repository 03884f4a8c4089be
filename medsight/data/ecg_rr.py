"""``mitdb-pvc-rr``: the MIT-BIH beats of ``mitdb-pvc`` as a multimodal data set.

The same beats, records and inter-patient split as ``mitdb-pvc`` (``ecg_dataset.py``), with the
beat's timing moved out of the signal and into tabular features, so that fusion can be tested
on real data: a PVC comes early and is followed by a compensatory pause (de Chazal et al., *IEEE
TBME* 2004, whose inter-patient classifier used exactly these RR features beside the morphology).

- signal (the "image", ``(N, 2, L)``): the filtered beat and the beat minus its record's median
  beat, as in ``mitdb-pvc``;
- tabular (6 numeric columns, standardised on the training records only): RR before and after the
  beat and the local mean RR, in seconds, and the three ratios ``mitdb-pvc`` feeds as constant
  channels (RR before / local, RR after / local, local / the record's mean).

The first beat of a record has no RR before it and the last none after: each borrows its other
side, as ``data/ecg.py`` does.
"""

from __future__ import annotations

import numpy as np

from medsight.data.dataset import ImageDataset, Split
from medsight.data.tabular import fit_tabular

NAME = "mitdb-pvc-rr"
SIGNAL_CHANNELS = ("ecg", "ecg minus record median beat")
RATIO_CHANNELS = ("RR before / local RR", "RR after / local RR", "local RR / record RR")
COLUMNS = ("rr_before_s", "rr_after_s", "rr_local_s", "rr_before_ratio", "rr_after_ratio", "rr_local_ratio")


def rr_columns(split: Split, samples: np.ndarray, fs: float, channels: list[str]) -> np.ndarray:
    """(N, 6) RR features of a split's beats; ``samples`` are their R-peak positions, record by record."""
    ratios = split.images[:, [channels.index(c) for c in RATIO_CHANNELS], 0].astype(np.float64)
    before, after = np.empty(len(split)), np.empty(len(split))
    records = split.patient_ids
    for record in np.unique(records):
        rows = np.flatnonzero(records == record)
        rr = np.diff(samples[rows]).astype(np.float64) / fs
        if len(rr) == 0:  # a record with one beat: no interval; its ratios are 1, so is the RR
            before[rows] = after[rows] = 1.0
            continue
        before[rows] = np.concatenate([rr[:1], rr])
        after[rows] = np.concatenate([rr, rr[-1:]])
    local = before / ratios[:, 0]
    return np.column_stack([before, after, local, ratios])


def ecg_rr_dataset(beats: ImageDataset, name: str = NAME) -> ImageDataset:
    """``beats`` (``load_ecg_beats``) with the two signal channels as the image and RR features as tabular."""
    ecg = beats.extra["ecg"]
    channels, fs = list(ecg["channels"]), float(ecg["settings"]["fs"])
    names = list(beats.splits)
    tables = [rr_columns(beats.splits[s], ecg["beat_samples"][s], fs, channels) for s in names]
    table = np.concatenate(tables)
    raw = {column: table[:, k].tolist() for k, column in enumerate(COLUMNS)}
    in_train = np.concatenate([np.full(len(beats.splits[s]), s == "train") for s in names])
    where = [f"beat {k}" for k in range(len(table))]
    spec, features, _ = fit_tabular(raw, dict.fromkeys(COLUMNS, "numeric"), in_train, where)
    signal = [channels.index(c) for c in SIGNAL_CHANNELS]
    splits, start = {}, 0
    for s in names:
        split, stop = beats.splits[s], start + len(beats.splits[s])
        splits[s] = Split(split.images[:, signal], split.labels, split.patient_ids, features[start:stop])
        start = stop
    return ImageDataset(
        name=name,
        classes=list(beats.classes),
        spatial_dims=1,
        modality=beats.modality,
        splits=splits,
        source=beats.source + "; signal: 2 channels, RR intervals as tabular features",
        licence=beats.licence,
        citation=beats.citation,
        extra={"ecg": {**ecg, "channels": list(SIGNAL_CHANNELS)}},
        tabular_spec=spec,
    )
