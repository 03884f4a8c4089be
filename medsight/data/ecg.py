"""ECG beats as network inputs: filtering, R-peak-centred windows, RR context, per-record scale.

Each annotated beat becomes one ``(C, L)`` example, the way inter-patient beat classifiers
that generalise to unseen patients describe it (de Chazal et al., *IEEE TBME* 2004;
Mondéjar-Guerra et al., *BSPC* 2019): the beat's morphology *and* its timing.

- Filtering: baseline wander removed by two median filters (200 ms, then 600 ms; de Chazal
  2004) and a linear-phase FIR low-pass at 40 Hz (mains hum, muscle noise). Both are local, so a
  record filtered window by window (streamed) gives the same samples as one filtered at once.
- Window: ``before_s`` before and ``after_s`` after the annotated R peak.
- Per-record normalisation: amplitudes divided by the record's median beat height (peak to
  peak), and a second channel with the record's median beat subtracted: how this beat differs
  from *this patient's* usual beat, which is what a PVC does.
- Neighbours (``neighbour_beats``, off by default): the beat minus the median of the beats around
  it, and the previous and next beats themselves (each window centred on its own R peak), so the
  network compares a beat with its neighbours as a cardiologist reads a strip. On MIT-BIH records
  held out from training it halved the false PVC alarms at a fixed sensitivity, but on mitdb-pvc's
  test records a very noisy record (105) drew many more (BENCHMARKS.md, "what was tried for PPV").
- RR context, one constant channel each: the RR interval before and after the beat divided by
  the local average RR (a PVC comes early and is followed by a compensatory pause), and the
  local average RR divided by the record's (heart rate changes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage, signal

from medsight.io.ecg import (
    BeatAnnotations,
    EcgHeader,
    SignalReader,
    read_beats,
    scale_positions,
    stream_signal,
)

Log = Callable[[str], None]
RR_CHANNELS = ("RR before / local RR", "RR after / local RR", "local RR / record RR")
NEIGHBOUR_CHANNELS = ("ecg minus neighbours' median beat", "previous beat", "next beat")


@dataclass(frozen=True)
class BeatSettings:
    """How beats are cut; recorded with the data set so new records are prepared the same way."""

    fs: float = 360.0  # the rate models are trained at: other records are resampled to it
    before_s: float = 0.25
    after_s: float = 0.45
    lowpass_hz: float = 40.0
    baseline_s: tuple[float, float] = (0.2, 0.6)
    local_beats: int = 16  # local RR: mean over this many beats each side
    neighbour_beats: int = 0  # neighbour channels, their median beat over this many beats each side; 0: none
    chunk_seconds: float = 60.0  # streaming window: a 30-minute record is read in 30 pieces

    @property
    def before(self) -> int:
        return round(self.before_s * self.fs)

    @property
    def after(self) -> int:
        return round(self.after_s * self.fs)

    @property
    def length(self) -> int:
        return self.before + self.after

    def margin_seconds(self) -> float:
        """Context each streamed window needs: the filters' reach plus a beat window."""
        return sum(self.baseline_s) / 2 + 0.2 + max(self.before_s, self.after_s)

    @property
    def channels(self) -> tuple[str, ...]:
        """The network input's channels, in order (``beat_inputs``)."""
        neighbours = NEIGHBOUR_CHANNELS if self.neighbour_beats else ()
        return ("ecg", "ecg minus record median beat", *neighbours, *RR_CHANNELS)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, recorded: dict) -> BeatSettings:
        """Settings as a data set or model recorded them (JSON turned tuples into lists; settings added
        since are missing from older records and take their defaults, which keep the old behaviour)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()})


@dataclass
class RecordBeats:
    """One record's beats: filtered windows in mV (not yet normalised), positions, labels, RR."""

    name: str
    windows: np.ndarray  # (n, L) float32
    samples: np.ndarray  # (n,) R-peak positions at ``settings.fs``
    is_pvc: np.ndarray  # (n,) bool
    rr: np.ndarray  # (n, 3) RR context, see ``rr_context``
    dropped: int  # beats too close to the record's ends for a whole window

    def __len__(self) -> int:
        return len(self.samples)


# --------------------------------------------------------------------------- filters


def _odd(n: float) -> int:
    return int(n) // 2 * 2 + 1


def lowpass_taps(fs: float, cutoff_hz: float) -> np.ndarray:
    """A linear-phase FIR low-pass (Hamming window) about 1/6 s long: sharp enough, no phase shift."""
    return signal.firwin(_odd(fs / 6), cutoff_hz, fs=fs)


def filter_ecg(x: np.ndarray, fs: float, settings: BeatSettings = BeatSettings()) -> np.ndarray:
    """Baseline wander out (two median filters), high-frequency noise out (FIR low-pass), float32."""
    x = np.asarray(x, dtype=np.float32)
    short, long = (_odd(s * fs) for s in settings.baseline_s)
    baseline = ndimage.median_filter(
        ndimage.median_filter(x, size=short, mode="nearest"), long, mode="nearest"
    )
    return np.convolve(x - baseline, lowpass_taps(fs, settings.lowpass_hz), mode="same").astype(np.float32)


def filtered_strip(header: EcgHeader, start: int, stop: int, settings: BeatSettings = BeatSettings()):
    """Samples ``[start, stop)`` of a record at its own rate, filtered as the beats were (for plots): the
    filters are laid out in seconds and Hz, so a record at another rate than the model's is filtered alike."""
    margin = round(settings.margin_seconds() * header.fs)
    lo = max(0, start - margin)
    with SignalReader(header) as reader:
        raw = reader.read(lo, stop + margin)
    return filter_ecg(raw, header.fs, settings)[start - lo : stop - lo]


# --------------------------------------------------------------------------- beats


def rr_context(samples: np.ndarray, fs: float, local_beats: int) -> np.ndarray:
    """(n, 3): RR before / local RR, RR after / local RR, local RR / the record's mean RR.

    The first beat has no RR before it and the last none after: each borrows its other side.
    """
    n = len(samples)
    if n < 2:
        return np.ones((n, 3), dtype=np.float32)
    rr = np.diff(samples).astype(np.float64) / fs
    before = np.concatenate([rr[:1], rr])
    after = np.concatenate([rr, rr[-1:]])
    kernel = np.ones(2 * local_beats + 1)
    # mean over the beats in reach: edges divide by how many beats were there
    local = np.convolve(before, kernel, mode="same") / np.convolve(np.ones(n), kernel, mode="same")
    return np.stack([before / local, after / local, local / before.mean()], axis=1).astype(np.float32)


def record_beats(
    header: EcgHeader,
    settings: BeatSettings = BeatSettings(),
    *,
    beats: BeatAnnotations | None = None,
    resample: bool = True,
    log: Log = print,
) -> RecordBeats:
    """Stream ``header``'s record window by window and cut a filtered window around each beat.

    The beats are the record's reference annotations unless ``beats`` gives others (e.g. R peaks
    found by a detector in a record that has no annotations).
    """
    beats = beats if beats is not None else read_beats(header)
    samples = scale_positions(beats.samples, header, settings.fs)
    windows = np.zeros((len(samples), settings.length), dtype=np.float32)
    found = np.zeros(len(samples), dtype=bool)
    chunks = stream_signal(
        header,
        chunk_seconds=settings.chunk_seconds,
        margin_seconds=settings.margin_seconds(),
        fs=settings.fs,
        resample=resample,
        log=log,
    )
    for chunk in chunks:
        filtered = filter_ecg(chunk.data, settings.fs, settings)
        end = chunk.data_start + len(filtered)
        inside = (samples >= chunk.start) & (samples < chunk.stop)
        for i in np.flatnonzero(inside):
            lo = samples[i] - settings.before
            if lo >= chunk.data_start and samples[i] + settings.after <= end:
                windows[i] = filtered[lo - chunk.data_start : lo - chunk.data_start + settings.length]
                found[i] = True
    rr = rr_context(samples, settings.fs, settings.local_beats)
    return RecordBeats(
        header.name, windows[found], samples[found], beats.is_pvc[found], rr[found], int((~found).sum())
    )


def beat_inputs(beats: RecordBeats, settings: BeatSettings) -> np.ndarray:
    """(n, C, L) float32 network inputs of one record (``settings.channels``), normalised by its own beats."""
    if len(beats) == 0:
        return np.zeros((0, len(settings.channels), beats.windows.shape[1]), dtype=np.float32)
    height = np.median(np.ptp(beats.windows, axis=1))
    ecg = beats.windows / max(float(height), 1e-3)  # a flat record stays flat rather than exploding
    template = np.median(ecg, axis=0)
    channels = [ecg, ecg - template]
    if settings.neighbour_beats:
        channels += [ecg - neighbours_median(ecg, settings.neighbour_beats), *adjacent_beats(ecg)]
    context = np.repeat(beats.rr[:, :, None], ecg.shape[1], axis=2)
    return np.concatenate([np.stack(channels, axis=1), context], axis=1).astype(np.float32)


def neighbours_median(beats: np.ndarray, k: int) -> np.ndarray:
    """(n, L): for each beat, the median of the ``k`` beats before and the ``k`` after it (not itself).

    At a record's ends the missing neighbours are mirrored about the end beat, so every beat has 2k
    of them (a record of k beats or fewer is mirrored again and again)."""
    padded = np.pad(beats, ((k, k), (0, 0)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * k + 1, axis=0)  # (n, L, 2k+1)
    return np.median(np.delete(windows, k, axis=2), axis=2)


def adjacent_beats(beats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The previous and the next beat of each beat; the first and last beats stand in for themselves."""
    previous = np.concatenate([beats[:1], beats[:-1]])
    following = np.concatenate([beats[1:], beats[-1:]])
    return previous, following
