"""Predictions on many files for ``medsight predict``: one CSV row per file (per beat for ECG records).

A file that cannot be used gets a row saying why and never stops the others: a user's mistake
(a ``MedsightError``, an unreadable file) in its own words, anything else as an unexpected error.
Three kinds of model, three kinds of row: a classifier labels images (``predict_images``), a
segmentation run draws masks (``segment_images``), an ECG beat model labels every beat of a record
(``classify_records``). A 3D model given a folder reads each DICOM series in it as one volume
(``series_folders``) and answers it with the functions ``POST /api/predict`` calls on a stored series:
a row per series (``classify_inputs``, ``segment_inputs``), the folder's other files a row each.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from medsight.errors import MedsightError
from medsight.predict.decode import Limits
from medsight.predict.errors import UploadTooLargeError
from medsight.predict.loaded import LoadedModel
from medsight.predict.predictor import Prediction, Predictor
from medsight.predict.series import StoredSeries, input_spec
from medsight.predict.series_folders import FolderSeries, find_series, input_files, read_folder_series
from medsight.progress import progress_bar

if TYPE_CHECKING:  # imported when an ECG model is used: image predictions need not load wfdb
    from medsight.predict.ecg import BeatModel, RecordPrediction

Row = dict[str, str]
Log = Callable[[str], None]
PredictSeries = Callable[[str, StoredSeries], Row]  # (a stem for its files, the series) -> its fields
IMAGE_FIELDS = (
    *("file", "series", "slices", "status", "label", "probabilities", "classes"),
    *("threshold", "model", "error"),
)
MASK_FIELDS = (
    *("file", "series", "slices", "status", "foreground_share", "foreground_voxels", "volume_ml"),
    *("threshold", "mask", "overlay", "probs", "seg", "model", "error"),
)
BEAT_FIELDS = (
    *("file", "status", "beat", "time_s", "p_pvc", "label"),
    *("reference", "beats_from", "model", "error"),
)
ECG_SUFFIXES = (".hea", ".dat", ".atr", ".npz", ".zip")
ONE_FILE_RECORDS = (".npz", ".zip")  # a record in one file: MIT-BIH's npz, or a zip of a WFDB record's files


def _guarded(row: Row, work: Callable[[], Row]) -> Row:
    """``row`` with the fields ``work`` gives and status ok, or status refused and the reason."""
    try:
        return row | {"status": "ok"} | work()
    except (MedsightError, OSError) as err:
        return row | {"status": "refused", "error": str(err)}
    except Exception as err:  # noqa: BLE001 - a bug on one file must not cost the others their answers
        return row | {"status": "refused", "error": f"unexpected error ({type(err).__name__}: {err})"}


def _base(fields: tuple[str, ...], model: LoadedModel) -> Row:
    """An empty row of ``fields`` naming the model."""
    return dict.fromkeys(fields, "") | {"model": f"{model.name}:{model.version}"}


def _within(path: Path, max_bytes: int) -> Path:
    if path.stat().st_size > max_bytes:  # never read a file the limit refuses anyway
        raise UploadTooLargeError(f"{path.name}: larger than the limit of {max_bytes} bytes.")
    return path


def _split(inputs: list[Path], model: LoadedModel, max_bytes: int) -> tuple[list[FolderSeries], list[Path]]:
    """A 3D model's DICOM series (one volume each) in the folders, and the files predicted on one by one."""
    if input_spec(model).spatial_dims != 3:
        return [], input_files(inputs)
    return find_series(inputs, max_bytes)


def _each_series(
    found: list[FolderSeries],
    limits: Limits,
    model: LoadedModel,
    fields: tuple[str, ...],
    work: PredictSeries,
) -> tuple[list[Row], list[Path]]:
    """A row per series (refused, saying why, when it cannot be read or predicted on), and the slices
    whose pixels could not be decoded (each gets its own row on the per-file path)."""
    if not found:  # a 2D model, or no DICOM series among the inputs: no empty progress bar
        return [], []
    base = _base(fields, model)
    rows: list[Row] = []
    unreadable: list[Path] = []

    def one(index: int, series: FolderSeries) -> Row:
        stored = read_folder_series(series, limits, unreadable)
        return {"slices": str(len(stored.slices))} | work(f"series{index:03d}-{series.name}", stored)

    for index, series in enumerate(progress_bar(found, "predicting on series")):
        where = {"file": str(series.folder), "series": series.uid}
        rows.append(_guarded(base | where, lambda i=index, s=series: one(i, s)))
    return rows, unreadable


def classify_inputs(
    inputs: list[Path], predictor: Predictor, model: LoadedModel, explain: str, explain_dir: Path | None
) -> list[Row]:
    """``predict_images`` on the files, and for a 3D model a row per DICOM series in the folders, as
    ``POST /api/predict`` answers a stored series (``Predictor.predict_volume``)."""
    found, files = _split(inputs, model, predictor.limits.max_bytes)

    def one(stem: str, stored: StoredSeries) -> Row:
        prediction = predictor.predict_volume(stored.volume, model, explain)
        _write_maps(explain_dir, stem, prediction)
        return _labelled(prediction)

    rows, unreadable = _each_series(found, predictor.limits, model, IMAGE_FIELDS, one)
    return rows + predict_images(files + unreadable, predictor, model, explain, explain_dir)


def segment_inputs(model: LoadedModel, inputs: list[Path], out_dir: Path, limits: Limits) -> list[Row]:
    """``segment_images`` on the files, and for a 3D model a row per DICOM series in the folders, segmented
    as ``POST /api/predict`` segments a stored series: the overlay of the slice with the most structure and
    one multi-frame DICOM SEG over the folder's own slices."""
    from medsight.predict.dicom_results import segmentation_object
    from medsight.predict.series_segmentation import segment_series

    found, files = _split(inputs, model, limits.max_bytes)

    def one(stem: str, stored: StoredSeries) -> Row:
        prediction = segment_series(stored, model, limits)
        seg = segmentation_object(prediction, stored.slices)  # made before anything is written
        written = {"overlay": out_dir / f"{stem}_overlay.png", "seg": out_dir / f"{stem}_seg.dcm"}
        out_dir.mkdir(parents=True, exist_ok=True)
        written["overlay"].write_bytes(prediction.pngs["overlay"])
        seg.save_as(written["seg"], enforce_file_format=True)
        return {kind: str(path) for kind, path in written.items()} | {
            "foreground_share": f"{prediction.foreground_fraction:.6g}",
            "foreground_voxels": str(prediction.foreground_pixels),
            "volume_ml": f"{prediction.area / 1000:.6g}",
            "threshold": f"{prediction.threshold:.6g}",
        }

    rows, unreadable = _each_series(found, limits, model, MASK_FIELDS, one)
    return rows + segment_images(model, files + unreadable, out_dir, limits.max_bytes)


def _write_maps(explain_dir: Path | None, stem: str, prediction: Prediction) -> None:
    if explain_dir is not None:
        explain_dir.mkdir(parents=True, exist_ok=True)
        (explain_dir / f"{stem}.overlay.png").write_bytes(prediction.overlay_png)
        (explain_dir / f"{stem}.heatmap.png").write_bytes(prediction.heatmap_png)


def _labelled(prediction: Prediction) -> Row:
    return {
        "label": prediction.label,
        "probabilities": json.dumps([round(p, 6) for p in prediction.probabilities]),
        "classes": json.dumps(prediction.classes),
        "threshold": "" if prediction.threshold is None else f"{prediction.threshold:.6g}",
    }


def predict_images(
    files: list[Path], predictor: Predictor, model: LoadedModel, explain: str, explain_dir: Path | None
) -> list[Row]:
    """Label, probabilities and threshold per image; overlay and heatmap PNGs into ``explain_dir``."""
    if explain_dir is not None:
        explain_dir.mkdir(parents=True, exist_ok=True)

    def one(index: int, path: Path) -> Row:
        data = _within(path, predictor.limits.max_bytes).read_bytes()
        prediction = predictor.predict_file(data, path.name, model, explain)
        _write_maps(explain_dir, f"{index:05d}-{path.stem}", prediction)
        return _labelled(prediction)

    base = _base(IMAGE_FIELDS, model)
    return [
        _guarded(base | {"file": str(path)}, lambda i=i, path=path: one(i, path))
        for i, path in enumerate(progress_bar(files, "predicting"))
    ]


def segment_images(model: LoadedModel, files: list[Path], out_dir: Path, max_bytes: int) -> list[Row]:
    """A mask per image (PNGs, and a DICOM SEG for a DICOM input) into ``out_dir``."""
    from medsight.predict.segmentation import segment_file

    assert model.segmenter is not None, "a segmentation model"

    def one(index: int, path: Path) -> Row:
        stem = f"{index:05d}-{path.name.split('.')[0]}"
        written = segment_file(model.segmenter, _within(path, max_bytes), out_dir, stem=stem)
        return {k: str(v) for k, v in written.items() if isinstance(v, Path)} | {
            "foreground_share": f"{written['foreground_share']:.6g}",
            "threshold": f"{written['threshold']:.6g}",
        }

    base = _base(MASK_FIELDS, model)
    return [
        _guarded(base | {"file": str(path)}, lambda i=i, path=path: one(i, path))
        for i, path in enumerate(progress_bar(files, "segmenting"))
    ]


def ecg_records(files: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """The records among ``files`` (a WFDB record once, whichever of its files were named) and the rest."""
    files = list(files)
    records = {
        f if f.suffix in ONE_FILE_RECORDS else f.with_suffix("") for f in files if f.suffix in ECG_SUFFIXES
    }
    return sorted(records), [f for f in files if f.suffix not in ECG_SUFFIXES]


def _classify_record(trained: BeatModel, record: Path, limits: Limits, log: Log) -> RecordPrediction:
    """A record's beats; a ``.zip`` read as ``POST /api/predict`` reads one (in memory, within ``limits``)."""
    from medsight.predict.ecg import classify_record
    from medsight.predict.served_ecg import classify_zip

    if record.suffix == ".zip":
        return classify_zip(trained, _within(record, limits.max_bytes), limits, log)
    return classify_record(trained, record, log=log)


def classify_records(
    model: LoadedModel, files: list[Path], plots: Path | None, log: Log, limits: Limits
) -> list[Row]:
    """A row per beat of each record (a ``.zip`` read within ``limits``); a strip plot per record into
    ``plots``."""
    from medsight.predict.ecg import beat_model, plot_record

    trained = beat_model(model)
    records, others = ecg_records(files)
    base = _base(BEAT_FIELDS, model)
    rows = [
        base
        | {"file": str(f), "status": "refused"}
        | {
            "error": f"{f.name}: not an ECG record; give WFDB records (NAME.hea with NAME.dat), .zip or "
            ".npz files."
        }
        for f in others
    ]
    for record in progress_bar(records, "classifying beats"):
        try:
            prediction = _classify_record(trained, record, limits, log)
        except (MedsightError, OSError) as err:
            rows.append(base | {"file": str(record), "status": "refused", "error": str(err)})
            continue
        rows += [base | {"file": str(record), "status": "ok"} | beat for beat in prediction.rows()]
        called = int(prediction.is_pvc.sum())
        log(f"{record.name}: {len(prediction.beats)} beats ({prediction.beats_from}), {called} called PVC")
        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            plot_record(prediction, trained.info["ecg"]["settings"], plots / f"{record.name}_strip.png")
    return rows
