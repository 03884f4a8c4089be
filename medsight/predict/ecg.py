"""Classify every beat of a new ECG record with a trained beat model (``mitdb-pvc`` and the like).

The record is prepared exactly as the training records were: streamed window by window at the
model's sampling rate (another rate is resampled, with a note), filtered, cut into windows around
each beat and normalised by the record's own beats (``medsight.data.ecg``). The beats are the
record's reference annotations when it has them (so its predictions can be compared with them);
otherwise R peaks are found with wfdb's XQRS detector, chunk by chunk, so a 30-minute record is
never in memory at once. Each beat gets the PVC probability and the label at the run's threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from medsight.data.ecg import BeatSettings, RecordBeats, beat_inputs, record_beats
from medsight.errors import BadInputError, DataNotFoundError
from medsight.io.ecg import BeatAnnotations, EcgHeader, open_ecg, read_beats, stream_signal
from medsight.predict.errors import PredictInputError
from medsight.predict.loaded import LoadedModel

if TYPE_CHECKING:
    from medsight.optimize.ensemble import Ensemble
    from medsight.train.inference import TrainedModel

Log = Callable[[str], None]
PEAK_SEARCH_S = 0.06  # a detection is moved to the largest deflection within ±60 ms: the R peak


@dataclass
class RecordPrediction:
    """One record's beats with their PVC probabilities; ``reference`` when the record is annotated."""

    header: EcgHeader
    fs: float  # the model's rate, at which ``beats.samples`` count
    beats: RecordBeats
    p_pvc: np.ndarray  # (n,) float
    threshold: float
    beats_from: str  # "annotations" or "XQRS detector"

    @property
    def is_pvc(self) -> np.ndarray:
        return self.p_pvc >= self.threshold

    @property
    def reference(self) -> np.ndarray | None:
        return self.beats.is_pvc if self.beats_from == "annotations" else None

    def rows(self) -> list[dict[str, str]]:
        reference = self.reference
        return [
            {
                "beat": str(i),
                "time_s": f"{sample / self.fs:.3f}",
                "p_pvc": f"{p:.6f}",
                "label": "PVC" if p >= self.threshold else "other",
                "reference": "" if reference is None else ("PVC" if reference[i] else "other"),
                "beats_from": self.beats_from,
            }
            for i, (sample, p) in enumerate(zip(self.beats.samples, self.p_pvc, strict=True))
        ]


def is_beat_model(trained: BeatModel) -> bool:
    return "ecg" in trained.info


BeatModel: TypeAlias = (
    "TrainedModel | Ensemble"  # an ensemble answers predict_images, info and threshold as a run does
)


def beat_model(model: LoadedModel) -> BeatModel:
    """What classifies a record's beats: the run, or an ensemble whose members cut beats alike."""
    if not model.is_ensemble:
        return model.trained
    recorded = [member.info.get("ecg", {}).get("settings") for member in model.members]
    settings = [BeatSettings.from_dict(s) if s else None for s in recorded]
    if any(s != settings[0] for s in settings[1:]):
        raise PredictInputError(
            "the ensemble's members cut ECG beats differently (window, rate, filters or neighbour "
            "channels), so no beat can be given to all of them; ensemble beat models trained with the "
            "same beat settings."
        )
    return model.serving  # the ensemble: the members' weighted mean at its own validation threshold


def classify_record(trained: BeatModel, path: Path, *, log: Log = print) -> RecordPrediction:
    """Every beat of the record at ``path`` (``x.npz``, or WFDB ``x``/``x.hea``) classified."""
    if not is_beat_model(trained):
        raise BadInputError("this model does not classify ECG beats; give it images.")
    settings = BeatSettings.from_dict(trained.info["ecg"]["settings"])
    header = open_ecg(path)
    try:
        reference, beats_from = read_beats(header), "annotations"
    except DataNotFoundError:
        reference, beats_from = detect_beats(header, settings, log=log), "XQRS detector"
    beats = record_beats(header, settings, beats=reference, log=log)
    if len(beats) == 0:
        raise BadInputError(f"{path}: no whole beat found in this record; is it an ECG lead?")
    threshold = 0.5 if trained.threshold is None else trained.threshold
    probs = trained.predict_images(beat_inputs(beats, settings))
    return RecordPrediction(header, settings.fs, beats, probs[:, 1], threshold, beats_from)


def detect_beats(header: EcgHeader, settings: BeatSettings, *, log: Log = print) -> BeatAnnotations:
    """R peaks by wfdb's XQRS, streamed in windows with margins; positions at the record's own rate."""
    from wfdb import processing

    margin_s = 2.0  # a QRS cut by a window's edge is found whole in the neighbouring window's margin
    found: list[np.ndarray] = []
    for chunk in stream_signal(
        header, chunk_seconds=settings.chunk_seconds, margin_seconds=margin_s, log=log
    ):
        if len(chunk.data) < chunk.fs:  # less than a second: nothing to detect in
            continue
        peaks = processing.xqrs_detect(chunk.data, fs=chunk.fs, verbose=False)
        if len(peaks):
            radius = max(1, round(PEAK_SEARCH_S * chunk.fs))
            peaks = processing.correct_peaks(chunk.data, peaks, radius, radius, peak_dir="compare")
        absolute = np.asarray(peaks, dtype=np.int64) + chunk.data_start
        found.append(absolute[(absolute >= chunk.start) & (absolute < chunk.stop)])
    samples = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    log(f"{header.name}: no beat annotations; {len(samples)} beats found by the XQRS detector (wfdb).")
    return BeatAnnotations(samples, np.zeros(len(samples), dtype=bool))


def plot_record(prediction: RecordPrediction, settings: dict, path: Path) -> Path:
    """10 s where the most beats were called PVC (or disagree with the annotations), drawn at the record's
    own rate (the beats, counted at the model's rate, are placed on it)."""
    from medsight.evaluate.ecg import STRIP_SECONDS, busiest_stretch, draw_strip

    header, truth = prediction.header, prediction.reference
    beats = np.round(prediction.beats.samples * (header.fs / prediction.fs)).astype(np.int64)
    weight = prediction.is_pvc.astype(int) + (0 if truth is None else 2 * (prediction.is_pvc != truth))
    start = busiest_stretch(beats, weight, round(STRIP_SECONDS * header.fs))
    title = f"record {header.name}: beats called by the model (beats from {prediction.beats_from})"
    return draw_strip(
        header,
        BeatSettings.from_dict(settings),
        start,
        beats,
        prediction.is_pvc,
        truth,
        title,
        path,
    )
