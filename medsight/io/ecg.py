"""Read ECG records: PhysioNet WFDB files and the MIT-BIH ``.npz`` copies, whole or streamed.

A record is opened first (``open_ecg``: its header, nothing of the signal), then its samples
are read in windows (``stream_signal``), so a 30-minute record never needs to be in memory at
once: WFDB files are read with ``wfdb.rdrecord(sampfrom=, sampto=)``, npz files by seeking in
the compressed member, forward only. Signals come out in millivolts, one lead.

Two forms are understood:
- WFDB (Goldberger et al., *Circulation* 2000): ``NAME.hea`` + ``NAME.dat`` and the reference
  beat annotations ``NAME.atr`` (read with the ``wfdb`` package);
- npz: ``ecg_mlii_adc`` (int16 ADC units), ``adc_gain_per_mV``, ``fs_hz``, ``beat_samples`` and
  ``pvc_samples`` (the MIT-BIH copy in the shared data folder).

A record sampled at another rate than the caller expects is resampled (polyphase, with a
logged note) or refused, as the caller chooses: never read at the wrong rate silently.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from medsight.errors import BadInputError, DataNotFoundError

Log = Callable[[str], None]
# WFDB annotation codes that mark a beat (PhysioNet's "beat annotations"); the rest mark rhythm,
# noise or comments and have no QRS complex of their own
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
PVC_SYMBOL = "V"
NPZ_SIGNAL = "ecg_mlii_adc"
NPZ_KEYS = (NPZ_SIGNAL, "adc_gain_per_mV", "fs_hz")
RESAMPLE_PAD = 128  # input samples each side of a resampled window: the polyphase filter's reach


@dataclass(frozen=True)
class EcgHeader:
    """What is known about a record before any sample is read."""

    name: str
    path: Path  # the .npz file, or the WFDB record path without extension
    kind: str  # "wfdb" or "npz"
    fs: float
    n_samples: int
    lead: str
    leads: tuple[str, ...]
    adc_gain: float = 1.0  # npz only: ADC units per mV

    @property
    def seconds(self) -> float:
        return self.n_samples / self.fs


@dataclass
class BeatAnnotations:
    """Reference beat positions (samples at the record's own rate) and which beats are PVCs."""

    samples: np.ndarray  # int64, increasing
    is_pvc: np.ndarray  # bool, one per beat


@dataclass
class SignalChunk:
    """One window of a streamed signal at rate ``fs``.

    ``start``/``stop`` is the window's own part (chunks tile the record without overlap);
    ``data`` covers ``[data_start, data_start + len(data))``, i.e. the window plus the margin the
    caller asked for on each side (less at the record's ends).
    """

    start: int
    stop: int
    data_start: int
    data: np.ndarray
    fs: float

    def core(self) -> np.ndarray:
        return self.data[self.start - self.data_start : self.stop - self.data_start]


# --------------------------------------------------------------------------- opening


# bytes per sample of the WFDB signal formats (PhysioNet's "signal" man page)
FORMAT_BYTES = {
    "8": 1,
    "16": 2,
    "61": 2,
    "80": 1,
    "160": 2,
    "212": 1.5,
    "310": 4 / 3,
    "311": 4 / 3,
    "24": 3,
    "32": 4,
}


def open_ecg(path: str | Path, lead: str = "MLII") -> EcgHeader:
    """The header of an ECG record: ``x.npz``, or a WFDB record given as ``x``, ``x.hea`` or ``x.dat``."""
    path = Path(path)
    if path.suffix == ".npz":
        return _open_npz(path, lead)
    record = path.with_suffix("") if path.suffix in (".hea", ".dat", ".atr") else path
    if not record.with_suffix(".hea").is_file():
        raise DataNotFoundError(
            f"{path}: no ECG record there; give an .npz file or a WFDB record (NAME.hea with its .dat)."
        )
    return _open_wfdb(record, lead)


def _open_wfdb(record: Path, lead: str) -> EcgHeader:
    import wfdb

    try:
        header = wfdb.rdheader(str(record))
    except Exception as err:  # wfdb raises plain Exceptions for malformed headers
        raise BadInputError(f"{record}.hea: not a readable WFDB header ({err}).") from err
    _check_signal_files(record, header)
    leads = tuple(header.sig_name or ())
    if lead not in leads:
        raise BadInputError(
            f"{record}: no lead '{lead}' in this record (it has {', '.join(leads) or 'none'}); "
            "choose one of those with lead=..."
        )
    return EcgHeader(record.name, record, "wfdb", float(header.fs), int(header.sig_len), lead, leads)


def declared_signal_bytes(header) -> dict[str, int] | None:  # noqa: ANN001 - a wfdb Record
    """The bytes each signal file must hold, by file name, as the header declares them; None when a
    format or a byte offset is not sized here."""
    offsets = header.byte_offset or [None] * len(header.fmt or [])
    per_file: dict[str, float] = {}
    for name, fmt, offset in zip(header.file_name or [], header.fmt or [], offsets, strict=True):
        if fmt not in FORMAT_BYTES or offset:
            return None
        per_file[name] = per_file.get(name, 0) + FORMAT_BYTES[fmt]
    return {name: math.ceil(header.sig_len * per_sample) for name, per_sample in per_file.items()}


def _check_signal_files(record: Path, header) -> None:  # noqa: ANN001 - a wfdb Record
    """Each signal file holds the bytes its header declares: a truncated copy is refused by name, where the
    reader would fail with a broadcasting error or read a shorter record without a word."""
    for name, expected in (declared_signal_bytes(header) or {}).items():  # unsized: wfdb reads it as it can
        path = record.parent / name
        found = path.stat().st_size if path.is_file() else 0
        if found < expected:
            raise BadInputError(
                f"{record}: its signal file {name} holds {found} bytes, but the header declares {expected} "
                f"({header.sig_len} samples); copy the record again."
            )


def _open_npz(path: Path, lead: str) -> EcgHeader:
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such file.")
    if lead != "MLII":
        raise BadInputError(f"{path}: npz records hold lead MLII only, not '{lead}'.")
    try:
        shape, fs, gain = _npz_facts(path)
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError) as err:  # truncated or not an npz
        raise BadInputError(
            f"{path}: not a readable ECG npz ({type(err).__name__}); copy it again, or move it out of the folder."
        ) from None
    if len(shape) != 1 or fs <= 0 or gain <= 0:
        raise BadInputError(f"{path}: expected a 1-D signal, fs_hz > 0 and adc_gain_per_mV > 0.")
    return EcgHeader(path.stem, path, "npz", fs, int(shape[0]), "MLII", ("MLII",), gain)


def _npz_facts(path: Path) -> tuple[tuple[int, ...], float, float]:
    """The signal's shape (read from its header: the signal stays on disk), the rate and the ADC gain."""
    with zipfile.ZipFile(path) as archive:
        names = {n.removesuffix(".npy") for n in archive.namelist()}
        missing = [k for k in NPZ_KEYS if k not in names]
        if missing:
            raise BadInputError(
                f"{path}: missing arrays {', '.join(missing)}; an ECG npz holds {', '.join(NPZ_KEYS)} "
                "and the annotations beat_samples, pvc_samples."
            )
        with archive.open(f"{NPZ_SIGNAL}.npy") as member:
            shape, _, _ = _npy_header(member)
    with np.load(path) as arrays:  # the small scalars only
        return shape, float(arrays["fs_hz"]), float(arrays["adc_gain_per_mV"])


def _npy_header(member) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)  # shape, fortran order, dtype
    return np.lib.format.read_array_header_2_0(member)


# --------------------------------------------------------------------------- annotations


def read_beats(header: EcgHeader, extension: str = "atr") -> BeatAnnotations:
    """The record's reference beats, or a DataNotFoundError saying which file is missing."""
    if header.kind == "npz":
        with np.load(header.path) as arrays:
            if "beat_samples" not in arrays.files:
                raise DataNotFoundError(
                    f"{header.path}: no beat annotations (beat_samples); beat windows are centred on "
                    "annotated beats. Add beat_samples (and pvc_samples) to the file."
                )
            samples = arrays["beat_samples"].astype(np.int64)
            pvc = arrays["pvc_samples"].astype(np.int64) if "pvc_samples" in arrays.files else []
        return _sorted(samples, np.isin(samples, pvc))
    annotation = header.path.with_suffix(f".{extension}")
    if not annotation.is_file():
        raise DataNotFoundError(
            f"{header.path}: no annotation file {annotation.name}; beat windows are centred on the "
            f"reference beats. Put {annotation.name} beside {header.path.name}.hea (PhysioNet ships it "
            "with every MIT-BIH record), or name another annotator with extension=..."
        )
    import wfdb

    try:
        ann = wfdb.rdann(str(header.path), extension)
    except Exception as err:
        raise BadInputError(f"{annotation}: not a readable WFDB annotation file ({err}).") from err
    symbols = np.asarray(ann.symbol)
    beats = np.isin(symbols, list(BEAT_SYMBOLS))
    return _sorted(np.asarray(ann.sample, dtype=np.int64)[beats], symbols[beats] == PVC_SYMBOL)


def _sorted(samples: np.ndarray, is_pvc: np.ndarray) -> BeatAnnotations:
    order = np.argsort(samples, kind="stable")
    return BeatAnnotations(samples[order], np.asarray(is_pvc, dtype=bool)[order])


# --------------------------------------------------------------------------- samples


class SignalReader:
    """Reads ``[start, stop)`` of one lead in mV; requests must move forward (as a stream does).

    npz members are compressed: seeking back would decompress from the start again, so the last
    block read is kept and an overlapping request reuses it.
    """

    def __init__(self, header: EcgHeader) -> None:
        self.header = header
        self._archive = self._member = None
        self._kept_start, self._kept = 0, np.zeros(0, np.float32)
        if header.kind == "npz":
            self._archive = zipfile.ZipFile(header.path)
            self._member = self._archive.open(f"{NPZ_SIGNAL}.npy")
            _, _, self._dtype = _npy_header(self._member)
            self._offset = self._member.tell()

    def __enter__(self) -> SignalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in (self._member, self._archive):
            if handle is not None:
                handle.close()

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(self.header.n_samples, stop)
        if stop <= start:
            return np.zeros(0, np.float32)
        if self.header.kind == "wfdb":
            return self._read_wfdb(start, stop)
        kept_stop = self._kept_start + len(self._kept)
        if start < self._kept_start:
            raise ValueError("SignalReader reads forward only")
        reuse = self._kept[start - self._kept_start :] if start < kept_stop else self._kept[:0]
        fresh = self._read_npz(max(start, kept_stop), stop) if stop > kept_stop else self._kept[:0]
        block = np.concatenate([reuse[: stop - start], fresh])
        self._kept_start, self._kept = start, block
        return block.copy()

    def _read_wfdb(self, start: int, stop: int) -> np.ndarray:
        import wfdb

        record = wfdb.rdrecord(
            str(self.header.path), sampfrom=start, sampto=stop, channel_names=[self.header.lead]
        )
        return record.p_signal[:, 0].astype(np.float32)

    def _read_npz(self, start: int, stop: int) -> np.ndarray:
        size = self._dtype.itemsize
        self._member.seek(self._offset + start * size)  # forward: decompresses only what it skips
        raw = np.frombuffer(self._member.read((stop - start) * size), dtype=self._dtype)
        return (raw.astype(np.float32) / np.float32(self.header.adc_gain)).astype(np.float32)


def rate_ratio(header: EcgHeader, fs: float | None, resample: bool, log: Log) -> Fraction:
    """Output/input sample-rate ratio; a mismatch is resampled with a note, or refused."""
    if fs is None or math.isclose(fs, header.fs):
        return Fraction(1)
    if not resample:
        raise BadInputError(
            f"{header.name}: sampled at {header.fs:g} Hz, but {fs:g} Hz is expected (the model was trained "
            "on that rate). Resample the record, or allow resampling (resample=True)."
        )
    log(
        f"note: {header.name} is sampled at {header.fs:g} Hz; resampled to {fs:g} Hz (polyphase filter, "
        "scipy.signal.resample_poly) and its annotations moved to match."
    )
    return Fraction(fs / header.fs).limit_denominator(1000)


def stream_signal(
    header: EcgHeader,
    *,
    chunk_seconds: float = 60.0,
    margin_seconds: float = 0.0,
    fs: float | None = None,
    resample: bool = True,
    log: Log = print,
) -> Iterator[SignalChunk]:
    """The record as consecutive windows of ``chunk_seconds`` (at rate ``fs``), each with a margin.

    Only one window and its margins are in memory at a time. Margins let a caller filter each
    window as if the whole record had been filtered at once.
    """
    ratio = rate_ratio(header, fs, resample, log)
    out_fs = float(header.fs * ratio)
    total = math.floor(header.n_samples * ratio)
    chunk = max(1, round(chunk_seconds * out_fs))
    margin = max(0, math.ceil(margin_seconds * out_fs))
    with SignalReader(header) as reader:
        for start in range(0, total, chunk):
            stop = min(total, start + chunk)
            lo, hi = max(0, start - margin), min(total, stop + margin)
            yield SignalChunk(start, stop, lo, _read_span(reader, lo, hi, ratio), out_fs)


def _read_span(reader: SignalReader, lo: int, hi: int, ratio: Fraction) -> np.ndarray:
    """Output samples ``[lo, hi)``; at another rate, resampled from input padded on both sides."""
    if ratio == 1:
        return reader.read(lo, hi)
    from scipy.signal import resample_poly

    up, down = ratio.numerator, ratio.denominator
    # start the input on a multiple of ``down`` so output sample j lands on the global grid
    first = max(0, (math.floor(lo / ratio) - RESAMPLE_PAD) // down * down)
    raw = reader.read(first, math.ceil(hi / ratio) + RESAMPLE_PAD)
    out = resample_poly(raw, up, down).astype(np.float32)
    offset = first * up // down
    return out[lo - offset : hi - offset]


def read_signal(
    header: EcgHeader, fs: float | None = None, *, resample: bool = True, log: Log = print
) -> np.ndarray:
    """The whole lead at once (for short records and tests; long ones: ``stream_signal``)."""
    whole = header.seconds + 1.0
    chunks = stream_signal(header, chunk_seconds=whole, fs=fs, resample=resample, log=log)
    return next(chunks).data if header.n_samples else np.zeros(0, np.float32)


def scale_positions(samples: np.ndarray, header: EcgHeader, fs: float | None) -> np.ndarray:
    """Annotation positions at rate ``fs`` (unchanged when it is the record's own)."""
    if fs is None or math.isclose(fs, header.fs):
        return samples
    return np.round(samples * (fs / header.fs)).astype(np.int64)
