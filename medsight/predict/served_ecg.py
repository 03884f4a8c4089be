"""An ECG beat model in service: an uploaded record -> every beat's call, counts per class, a strip plot.

A WFDB record comes as several files (``NAME.hea``, ``NAME.dat``, ``NAME.atr`` when annotated), or as
one MIT-BIH ``.npz``, or as one ``.zip`` of the record's files (read in memory by ``safe_zip``; an npz is
itself a zip, of ``.npy`` arrays, and is told from a record's zip by its members' content). The client's file names are never used, not even to tell the parts apart: the
header is the part that parses as a WFDB header; the signal file is the part whose size is exactly the
one the header declares (samples x signals x bytes per sample of its format); a remaining part must
read as WFDB annotations. The parts are written into a private temporary folder under the names the
header itself gives (checked to be plain names), and the record is then classified by
``ecg.classify_record`` and drawn by ``ecg.plot_record``: what ``medsight predict`` does with a record.
``medsight predict`` reads a ``.zip`` record through the same path (``classify_zip``).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsight.errors import MedsightError
from medsight.io.ecg import BEAT_SYMBOLS, FORMAT_BYTES, declared_signal_bytes
from medsight.predict.decode import Limits, check_size
from medsight.predict.ecg import BeatModel, RecordPrediction, beat_model, classify_record, plot_record
from medsight.predict.errors import PredictInputError, UnsupportedFormatError, UploadTooLargeError
from medsight.predict.loaded import LoadedModel
from medsight.predict.safe_zip import is_zip, read_members
from medsight.predict.timing import elapsed_ms

Part = tuple[str | None, bytes]  # (the client's file name, only for messages; the bytes)
MAX_PARTS = 3  # header, signal, annotations
PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
NOT_A_RECORD = (
    "not an ECG record; send a WFDB record as several 'file' parts (NAME.hea, NAME.dat, and NAME.atr when "
    "it has beat annotations), one .zip of those files, or one MIT-BIH .npz file."
)
ZIP_ONE_RECORD = "zip one record's NAME.hea, NAME.dat and NAME.atr (or give those files as they are)"
NPY_MAGIC = b"\x93NUMPY"


@dataclass
class EcgPrediction:
    label: str  # the positive class when any beat is called it, else the other
    classes: list[str]
    threshold: float
    model: dict[str, str]
    source_format: str  # "wfdb" or "npz"
    upload_id: str  # the first 32 hex digits of the SHA-256 of the parts, in order
    details: dict = field(repr=False)  # the API's ``ecg`` block without its link
    strip_png: bytes = field(repr=False)
    timing_ms: dict[str, float] = field(default_factory=dict)


def _header_of(data: bytes) -> object | None:
    """The WFDB header in ``data`` (wfdb's parse), or None when it is not one."""
    import wfdb

    if len(data) > 64 * 1024 or b"\x00" in data:
        return None  # a header is a few lines of text
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines or not PLAIN_NAME.fullmatch(lines[0].split()[0].split("/")[0]):
        return None
    with tempfile.TemporaryDirectory(prefix="medsight-ecg-") as folder:
        (Path(folder) / "probe.hea").write_text(text)
        try:
            return wfdb.rdheader(str(Path(folder) / "probe"))
        except Exception:  # wfdb raises plain Exceptions for malformed headers  # noqa: BLE001
            return None


def _signal_bytes(header) -> tuple[str, int]:  # noqa: ANN001 - a wfdb Record
    """The one signal file the header names and the bytes it must hold."""
    names = set(header.file_name or [])
    if len(names) != 1:
        raise PredictInputError(
            "this record keeps its signals in several files (or none); send a record with one signal file."
        )
    (name,) = names
    stem, _, suffix = name.partition(".")
    if not PLAIN_NAME.fullmatch(stem) or suffix != "dat":
        raise PredictInputError(
            "the header names a signal file that is not NAME.dat; send a standard record."
        )
    sizes = declared_signal_bytes(header)
    if sizes is None:
        unknown = sorted(set(header.fmt) - set(FORMAT_BYTES))
        raise PredictInputError(
            f"signal format {', '.join(unknown) or 'with a byte offset'} is not taken; convert the record to "
            "format 16 or 212 (wfdb.wrsamp)."
        )
    return name, sizes[name]


def _write_wfdb(parts: list[Part], header_index: int, header, folder: Path) -> Path:  # noqa: ANN001
    """The parts under the names the header gives; the record's path (``folder/NAME``)."""
    record = header.record_name
    if not PLAIN_NAME.fullmatch(record):
        raise PredictInputError("the header's record name is not a plain name (letters, digits, - and _).")
    signal_name, size = _signal_bytes(header)
    others = [data for i, (_, data) in enumerate(parts) if i != header_index]
    signal = [data for data in others if len(data) == size]
    if not signal:
        raise PredictInputError(
            f"no part holds the signal file {signal_name} the header describes ({size} bytes); send the "
            "record's .dat file with its .hea."
        )
    (folder / f"{record}.hea").write_bytes(parts[header_index][1])
    (folder / signal_name).write_bytes(signal[0])
    rest = [data for data in others if data is not signal[0]]
    if rest:
        (folder / f"{record}.atr").write_bytes(rest[0])
        if not _marks_beats(folder / record):
            raise PredictInputError(
                "a part is neither the header, nor the signal file, nor readable WFDB annotations; send "
                "NAME.hea, NAME.dat and NAME.atr only."
            )
    return folder / record


def _marks_beats(record: Path) -> bool:
    """Whether ``record``.atr reads as WFDB annotations that mark beats (garbage can parse as annotations)."""
    import wfdb

    try:
        return bool(BEAT_SYMBOLS.intersection(wfdb.rdann(str(record), "atr").symbol))
    except Exception:  # noqa: BLE001 - wfdb's own errors on a file that is not annotations
        return False


def _is_annotations(data: bytes) -> bool:
    with tempfile.TemporaryDirectory(prefix="medsight-ecg-") as folder:
        (Path(folder) / "probe.atr").write_bytes(data)
        return _marks_beats(Path(folder) / "probe")


def _record_in_zip(members: list[Part], log: Callable[[str], None]) -> list[Part]:
    """The zipped record's parts (header, signal, annotations when there are any); other files left out."""
    headers = [part for part in members if _header_of(part[1]) is not None]
    if len(headers) != 1:
        found = "no WFDB header" if not headers else f"{len(headers)} WFDB headers (one per record)"
        raise PredictInputError(f"the zip holds {len(members)} files and {found}; {ZIP_ONE_RECORD}.")
    header = headers[0]
    _, size = _signal_bytes(_header_of(header[1]))
    others = [part for part in members if part is not header]
    signal = [part for part in others if len(part[1]) == size][:1]
    rest = [part for part in others if all(part is not s for s in signal)]
    annotations = [part for part in rest if _is_annotations(part[1])]
    if len(annotations) > 1:
        raise PredictInputError(
            f"the zip holds {len(annotations)} beat annotation files; keep one (NAME.atr): {ZIP_ONE_RECORD}."
        )
    if left_out := len(rest) - len(annotations):
        log(
            f"{left_out} file(s) in the zip are not part of the record (header, signal, beats) and were left out."
        )
    return [header, *signal, *annotations]


def _unzipped(data: bytes, limits: Limits, log: Callable[[str], None]) -> list[Part] | None:
    """The record's parts from a zip of its files; None when the zip is an npz (every member a .npy)."""
    members = read_members(data, limits.max_bytes)
    if members and all(content.startswith(NPY_MAGIC) for _, content in members):
        return None
    if not members:
        raise PredictInputError(f"the zip holds no files; {ZIP_ONE_RECORD}.")
    return _record_in_zip(members, log)


def write_record(
    parts: list[Part], folder: Path, limits: Limits, log: Callable[[str], None] = lambda _: None
) -> tuple[Path, str]:
    """The uploaded record written into ``folder``: its path and its form ("wfdb" or "npz")."""
    if not parts:
        raise PredictInputError(NOT_A_RECORD)
    if len(parts) > MAX_PARTS:
        raise PredictInputError(f"{len(parts)} files: a record is at most {MAX_PARTS} ({NOT_A_RECORD})")
    for _, data in parts:
        check_size(data, limits, "a part of the record")
    if sum(len(data) for _, data in parts) > limits.max_bytes:
        raise UploadTooLargeError(
            f"the record is larger than this server's limit of {limits.max_bytes} bytes."
        )
    if len(parts) == 1 and is_zip(parts[0][1]):  # an npz, or a zip of the record's files
        unzipped = _unzipped(parts[0][1], limits, log)
        if unzipped is None:
            (folder / "record.npz").write_bytes(parts[0][1])
            return folder / "record.npz", "npz"
        parts = unzipped
    headers = [(i, h) for i, (_, data) in enumerate(parts) if (h := _header_of(data)) is not None]
    if not headers:
        raise UnsupportedFormatError(NOT_A_RECORD)
    if len(headers) > 1:
        raise PredictInputError("more than one WFDB header among the files; send one record at a time.")
    if len(parts) == 1:
        raise PredictInputError("the record's signal file (NAME.dat) is missing; send it with the header.")
    index, header = headers[0]
    return _write_wfdb(parts, index, header, folder), "wfdb"


def _details(prediction: RecordPrediction, classes: list[str], notes: list[str]) -> dict:
    called = prediction.is_pvc
    reference = prediction.reference
    names = np.asarray(classes, dtype=object)
    beats = [
        {
            "sample": int(sample),
            "time_s": round(float(sample) / prediction.fs, 3),
            "label": str(names[int(c)]),
            "probability": round(float(p), 6),
            "reference": None if reference is None else str(names[int(reference[i])]),
        }
        for i, (sample, p, c) in enumerate(
            zip(prediction.beats.samples, prediction.p_pvc, called, strict=True)
        )
    ]
    return {
        "sampling_rate_hz": prediction.fs,
        "record_sampling_rate_hz": prediction.header.fs,
        "seconds": round(prediction.header.seconds, 3),
        "beats_from": prediction.beats_from,
        "counts": {classes[0]: int((~called).sum()), classes[1]: int(called.sum())},
        "beats": beats,
        "notes": notes,
    }


@contextmanager
def record_folder(shown: str = "the upload") -> Iterator[Path]:
    """A private temporary folder for a record's parts; a refusal names ``shown``, never the folder."""
    with tempfile.TemporaryDirectory(prefix="medsight-ecg-") as tmp:
        folder = Path(tmp)
        try:
            yield folder
        except MedsightError as err:  # say what was wrong, never where our temporary folder is
            raise type(err)(str(err).replace(f"{folder}/", "").replace(str(folder), shown)) from None


def classify_zip(
    trained: BeatModel, path: Path, limits: Limits, log: Callable[[str], None]
) -> RecordPrediction:
    """Every beat of the record zipped in ``path`` (or of the MIT-BIH npz it is), read as an uploaded zip
    is: in memory within ``limits``, its parts told apart by content, never extracted under their names."""
    data = path.read_bytes()
    if not is_zip(data):
        raise UnsupportedFormatError(f"{path.name}: not a zip archive; {ZIP_ONE_RECORD}.")
    with record_folder(path.name) as folder:
        record, _ = write_record([(path.name, data)], folder, limits, log)
        return classify_record(trained, record, log=log)


def classify_upload(parts: list[Part], model: LoadedModel, limits: Limits) -> EcgPrediction:
    """Every beat of the uploaded record classified, and its strip plot drawn."""
    trained = beat_model(model)
    start, notes = time.perf_counter(), []
    with record_folder() as folder:
        path, form = write_record(parts, folder, limits, notes.append)
        preprocess_ms, start = elapsed_ms(start), time.perf_counter()
        prediction = classify_record(trained, path, log=notes.append)
        inference_ms, start = elapsed_ms(start), time.perf_counter()
        strip = plot_record(prediction, trained.info["ecg"]["settings"], folder / "strip.png")
        strip_png = strip.read_bytes()
    classes = list(model.classes)
    digest = hashlib.sha256(b"".join(hashlib.sha256(data).digest() for _, data in parts)).hexdigest()
    return EcgPrediction(
        label=classes[1] if prediction.is_pvc.any() else classes[0],
        classes=classes,
        threshold=prediction.threshold,
        model={"name": model.name, "version": model.version},
        source_format=form,
        upload_id=digest[:32],
        details=_details(prediction, classes, notes),
        strip_png=strip_png,
        timing_ms={"preprocess": preprocess_ms, "inference": inference_ms, "explain": elapsed_ms(start)},
    )
