"""ECG records and beats: reading WFDB and npz, streaming, beat windows, the inter-patient split,
bad input, the sequence models, and a tiny train + evaluate on three real MIT-BIH records."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medsight.data.ecg import (
    RR_CHANNELS,
    BeatSettings,
    RecordBeats,
    beat_inputs,
    filter_ecg,
    neighbours_median,
    record_beats,
)
from medsight.data.ecg_dataset import inter_patient_split, load_ecg_beats
from medsight.data.ecg_registry import import_ecg
from medsight.data.registry import load_dataset, registry_dir
from medsight.data.transforms import augmentation
from medsight.errors import BadInputError, ConfigError, DataNotFoundError
from medsight.io.ecg import open_ecg, read_beats, read_signal, stream_signal
from medsight.models import build_model
from medsight.optimize.ensemble import make_ensemble

QUIET = {"log": lambda _: None}
# three records of high, middle and low PVC burden: a 1/1/1 split with PVCs in every split
TINY_RECORDS = ("116", "119", "200")


@pytest.fixture
def wfdb_100(shared_data: Path) -> Path:
    return shared_data / "ecg" / "wfdb" / "100"


@pytest.fixture
def npz_100(shared_data: Path) -> Path:
    return shared_data / "ecg" / "mitdb" / "100.npz"


def test_wfdb_and_npz_copies_of_record_100_agree(wfdb_100, npz_100):
    wfdb, npz = open_ecg(wfdb_100), open_ecg(npz_100)
    assert (
        (wfdb.fs, wfdb.n_samples, wfdb.lead) == (npz.fs, npz.n_samples, npz.lead) == (360.0, 650000, "MLII")
    )
    assert wfdb.leads == ("MLII", "V5")
    np.testing.assert_allclose(read_signal(wfdb), read_signal(npz), atol=1e-6)  # both in mV
    beats_wfdb, beats_npz = read_beats(wfdb), read_beats(npz)
    np.testing.assert_array_equal(beats_wfdb.samples, beats_npz.samples)  # '+' rhythm marks left out
    np.testing.assert_array_equal(beats_wfdb.is_pvc, beats_npz.is_pvc)
    assert len(beats_wfdb.samples) == 2273 and beats_wfdb.is_pvc.sum() == 1


@pytest.mark.parametrize("kind", ["wfdb", "npz"])
def test_streaming_gives_the_samples_of_a_full_read(kind, wfdb_100, npz_100):
    header = open_ecg(wfdb_100 if kind == "wfdb" else npz_100)
    whole = read_signal(header)
    chunks = list(stream_signal(header, chunk_seconds=37, margin_seconds=1.5))
    assert len(chunks) == 49 and max(len(c.data) for c in chunks) < len(whole) / 40  # never all at once
    np.testing.assert_array_equal(np.concatenate([c.core() for c in chunks]), whole)
    for chunk in chunks:  # margins too are the record's own samples
        np.testing.assert_array_equal(
            chunk.data, whole[chunk.data_start : chunk.data_start + len(chunk.data)]
        )


def test_beats_cut_from_a_stream_equal_beats_of_the_whole_record_filtered_at_once(npz_100):
    header = open_ecg(npz_100)
    settings = BeatSettings(chunk_seconds=45)
    streamed = record_beats(header, settings, **QUIET)
    filtered = filter_ecg(read_signal(header), header.fs, settings)
    whole = np.stack([filtered[s - settings.before : s + settings.after] for s in streamed.samples])
    np.testing.assert_allclose(streamed.windows, whole, atol=1e-5)
    assert streamed.dropped == 2 and len(streamed) == 2271  # first and last beats lack a whole window


def test_beat_windows_are_centred_on_the_r_peak(npz_100):
    beats = record_beats(open_ecg(npz_100), **QUIET)
    settings = BeatSettings()
    peaks = np.abs(beats.windows).argmax(axis=1)
    assert np.median(np.abs(peaks - settings.before)) <= 2  # the R peak sits at the annotated sample
    assert beat_inputs(beats, settings).shape[1] == 5  # by default: the beat, its difference, the RR context
    settings = BeatSettings(neighbour_beats=8)
    inputs = beat_inputs(beats, settings)
    assert inputs.shape == (len(beats), 8, settings.length) and inputs.dtype == np.float32
    channel = {name: inputs[:, i] for i, name in enumerate(settings.channels)}
    assert np.median(np.ptp(channel["ecg"], axis=1)) == pytest.approx(1.0)  # per-record scale
    np.testing.assert_array_equal(channel["previous beat"][1:], channel["ecg"][:-1])
    np.testing.assert_array_equal(channel["next beat"][:-1], channel["ecg"][1:])
    rr = inputs[:, [settings.channels.index(name) for name in RR_CHANNELS]]
    assert np.all(np.ptp(rr, axis=2) == 0)  # RR context: constant in time
    assert np.median(rr[:, 0, 0]) == pytest.approx(1.0, abs=0.05)  # a normal beat's RR is the local RR


def test_neighbours_median_leaves_the_beat_out_and_mirrors_at_the_ends():
    beats = np.arange(6, dtype=np.float32)[:, None] * np.ones((1, 4), dtype=np.float32)
    median = neighbours_median(beats, 2)[:, 0]
    # beat 2: beats 0, 1, 3, 4 -> 2; beat 0: 2, 1 (mirrored) and 1, 2 -> 1.5; a lone PVC is not its own template
    np.testing.assert_allclose(median, [1.5, 1.5, 2.0, 3.0, 3.5, 3.5])
    spike = np.zeros((9, 4), dtype=np.float32)
    spike[4] = 5.0
    assert np.all(neighbours_median(spike, 2)[4] == 0)


def test_beat_settings_recorded_before_neighbour_channels_read_back_with_five_channels():
    recorded = {k: list(v) if isinstance(v, tuple) else v for k, v in BeatSettings().as_dict().items()}
    del recorded["neighbour_beats"]  # what a data set recorded before the setting existed
    legacy = BeatSettings.from_dict(recorded)
    assert legacy.neighbour_beats == 0 and legacy.baseline_s == BeatSettings().baseline_s
    assert legacy.channels == ("ecg", "ecg minus record median beat", *RR_CHANNELS)
    beats = RecordBeats(
        "r", np.ones((3, 10), np.float32), np.arange(3), np.zeros(3, bool), np.ones((3, 3)), 0
    )
    assert beat_inputs(beats, legacy).shape == (3, 5, 10)


def test_inter_patient_split_keeps_records_apart_and_spreads_the_pvc_burden():
    burden = {
        f"r{i}": b for i, b in enumerate([0, 0.001, 0.002, 0.003, 0.01, 0.02, 0.03, 0.04, 0.1, 0.2, 0.3, 0.4])
    }
    split = inter_patient_split(burden, seed=0)
    assert split == inter_patient_split(burden, seed=0)  # seeded
    assert sorted(sum(split.values(), [])) == sorted(burden)  # every record, once
    assert [len(split[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    for name in ("val", "test"):  # one of the four highest-burden records each
        assert len(set(split[name]) & {"r8", "r9", "r10", "r11"}) == 1
    assert inter_patient_split(burden, seed=1) != split
    with pytest.raises(BadInputError, match="at least 3"):
        inter_patient_split({"a": 0.1, "b": 0.2})


def test_mitdb_pvc_split_shares_no_record(shared_data):
    folder = shared_data / "ecg" / "mitdb"
    dataset = load_ecg_beats(folder, **QUIET)
    records = {s: set(dataset.splits[s].patient_ids.tolist()) for s in ("train", "val", "test")}
    assert not (
        records["train"] & records["val"]
        or records["train"] & records["test"]
        or records["val"] & records["test"]
    )
    assert set().union(*records.values()) == {p.stem for p in folder.glob("*.npz")}
    assert records == {s: set(r) for s, r in dataset.extra["ecg"]["records"].items()}
    assert (dataset.spatial_dims, dataset.modality, dataset.classes) == (1, "ecg", ["other", "pvc"])
    assert all(split.labels.sum() > 0 for split in dataset.splits.values())
    assert "test " + ", ".join(sorted(records["test"])) in dataset.source  # `data info` says where each went


def _copy_record(source: Path, folder: Path, parts=(".hea", ".dat", ".atr")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in parts:
        shutil.copy(source.with_suffix(suffix), folder / f"100{suffix}")
    return folder / "100"


def test_a_record_without_its_annotation_file_is_refused_with_what_to_do(wfdb_100, tmp_path):
    record = _copy_record(wfdb_100, tmp_path, parts=(".hea", ".dat"))
    with pytest.raises(DataNotFoundError, match=r"no annotation file 100\.atr.*Put 100\.atr beside"):
        record_beats(open_ecg(record), **QUIET)


def test_a_record_at_another_rate_is_resampled_with_a_note_or_refused(wfdb_100, tmp_path):
    import wfdb

    source = open_ecg(wfdb_100)
    seconds = 60
    signal_360 = read_signal(source)[: seconds * 360]
    signal_250 = read_signal(open_ecg(wfdb_100), fs=250, **QUIET)[: seconds * 250]
    beats = read_beats(source)
    keep = beats.samples < (seconds - 1) * 360
    wfdb.wrsamp(
        "r250",
        fs=250,
        units=["mV"],
        sig_name=["MLII"],
        p_signal=signal_250[:, None].astype(np.float64),
        fmt=["16"],
        adc_gain=[200.0],
        baseline=[0],
        write_dir=str(tmp_path),
    )
    positions = np.round(beats.samples[keep] * 250 / 360).astype(np.int64)
    wfdb.wrann("r250", "atr", positions, symbol=["N"] * len(positions), write_dir=str(tmp_path))
    header = open_ecg(tmp_path / "r250")
    assert header.fs == 250

    with pytest.raises(BadInputError, match="sampled at 250 Hz, but 360 Hz is expected"):
        record_beats(header, resample=False, **QUIET)
    notes: list[str] = []
    resampled = record_beats(header, log=notes.append)
    assert any("resampled to 360 Hz" in n for n in notes)  # said, not silent
    assert resampled.windows.shape[1] == BeatSettings().length
    assert abs(len(resampled) - keep.sum()) <= 2
    original = filter_ecg(signal_360, 360.0)
    centre = BeatSettings().before
    for window, sample in zip(resampled.windows[5:10], resampled.samples[5:10], strict=True):
        # the same beat, whether recorded at 360 Hz or recorded at 250 and resampled
        np.testing.assert_allclose(
            window[centre - 20 : centre + 20], original[sample - 20 : sample + 20], atol=0.05
        )


def test_bad_leads_files_and_missing_data_set(wfdb_100, tmp_path, monkeypatch):
    with pytest.raises(BadInputError, match="no lead 'V1'.*MLII, V5"):
        open_ecg(wfdb_100, lead="V1")
    with pytest.raises(DataNotFoundError, match="no ECG record there"):
        open_ecg(tmp_path / "nothing")
    np.savez(tmp_path / "bad.npz", ecg_mlii_adc=np.zeros(10, np.int16))
    with pytest.raises(BadInputError, match="missing arrays adc_gain_per_mV, fs_hz"):
        open_ecg(tmp_path / "bad.npz")
    truncated = tmp_path / "truncated.npz"  # a copy cut short: refused in words, not with a traceback
    truncated.write_bytes((wfdb_100.parent.parent / "mitdb" / "100.npz").read_bytes()[:3000])
    with pytest.raises(BadInputError, match="truncated.npz: not a readable ECG npz.*copy it again"):
        open_ecg(truncated)
    short = _copy_record(wfdb_100, tmp_path / "short", parts=(".hea", ".dat", ".atr"))
    short.with_suffix(".dat").write_bytes(wfdb_100.with_suffix(".dat").read_bytes()[:100_000])
    with pytest.raises(BadInputError, match="100.dat holds 100000 bytes, but the header declares 1950000"):
        open_ecg(short)
    monkeypatch.setenv("MEDSIGHT_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="no ECG records in .*ecg/mitdb.*set MEDSIGHT_DATA"):
        load_dataset("mitdb-pvc")


@pytest.mark.parametrize("name", ["cnn1d", "lstm", "gru", "cnn-gru"])
def test_sequence_models_classify_1d_signals(name):
    model = build_model(name, 1, 5, 2)
    assert model(torch.randn(3, 5, 252)).shape == (3, 2)
    with pytest.raises(ConfigError, match="1D signals"):
        build_model(name, 2, 1, 2)


def test_signal_augmentation_is_seeded_and_leaves_the_rr_context_alone():
    augment = augmentation("ecg", 1, "strong")
    x = torch.randn(5, 252)
    x[2:] = torch.tensor([0.7, 1.3, 1.0]).view(3, 1)
    outputs = []
    for _ in range(2):
        augment.set_random_state(seed=3)
        outputs.append(torch.stack([augment(x) for _ in range(20)]))
    torch.testing.assert_close(outputs[0], outputs[1])
    assert torch.equal(outputs[0][:, 2:], x[2:].expand(20, 3, 252))
    assert not torch.equal(outputs[0][:, :2], x[:2].expand(20, 2, 252))


@pytest.fixture
def tiny_ecg_data(shared_data, tmp_path) -> Path:
    """A data folder holding three MIT-BIH records: mitdb-pvc splits them 1/1/1."""
    folder = tmp_path / "data" / "ecg" / "mitdb"
    folder.mkdir(parents=True)
    for record in TINY_RECORDS:
        (folder / f"{record}.npz").symlink_to(shared_data / "ecg" / "mitdb" / f"{record}.npz")
    return tmp_path / "data"


def test_a_folder_of_records_imports_with_a_given_split_or_a_drawn_one(tiny_ecg_data, run_cli, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_DATA", str(tiny_ecg_data))
    folder = tiny_ecg_data / "ecg" / "mitdb"
    given = ("--train-records", "200", "--val-records", "116", "--test-records", "119")
    imported = run_cli("data", "import", folder, "--name", "my-ecg", *given)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "imported 'my-ecg' (ECG beats" in imported.stdout
    dataset = load_dataset("my-ecg")  # what training, evaluation and serving read, by name
    assert dataset.modality == "ecg" and dataset.spatial_dims == 1 and dataset.licence is None
    assert dataset.extra["ecg"]["records"] == {"train": ["200"], "val": ["116"], "test": ["119"]}
    assert set(dataset.splits["test"].patient_ids) == {"119"} and "records given" in dataset.source
    import_ecg(folder, registry_dir(), name="drawn-ecg", seed=0)  # drawn as mitdb-pvc draws its own
    assert (
        load_dataset("drawn-ecg").extra["ecg"]["records"] == load_dataset("mitdb-pvc").extra["ecg"]["records"]
    )

    with_neighbours = run_cli(
        "data", "import", folder, "--name", "near-ecg", *given, "--neighbour-beats", "4"
    )
    assert with_neighbours.returncode == 0, with_neighbours.stdout + with_neighbours.stderr
    near = load_dataset("near-ecg")  # the beat settings are the data set's: training and serving cut alike
    assert near.extra["ecg"]["settings"]["neighbour_beats"] == 4
    assert near.extra["ecg"]["channels"] == list(BeatSettings(neighbour_beats=4).channels)
    assert near.splits["test"].images.shape[1] == 8 and dataset.splits["test"].images.shape[1] == 5
    with pytest.raises(BadInputError, match="neighbour beats 65"):
        import_ecg(
            folder,
            registry_dir(),
            name="bad-ecg",
            records=dataset.extra["ecg"]["records"],
            neighbour_beats=65,
        )

    refusals = {
        "in both train and val": {"train": ["200"], "val": ["200"], "test": ["119"]},
        "unknown: 999": {"train": ["200", "999"], "val": ["116"], "test": ["119"]},
        "no records for val, test": {"train": ["200"], "val": [], "test": []},
    }
    for message, records in refusals.items():
        with pytest.raises(BadInputError, match=message):
            import_ecg(folder, registry_dir(), name="bad-ecg", records=records)
    refused = run_cli("data", "import", folder, "--name", "bad-ecg", "--size", "64")
    assert refused.returncode != 0 and "--size: a folder of ECG records" in refused.stdout + refused.stderr
    refused = run_cli("data", "import", folder, "--name", "bad-ecg", *given, "--seed", "3")
    assert (
        refused.returncode != 0
        and "--seed: the split is given record by record" in refused.stdout + refused.stderr
    )
    assert not (registry_dir() / "bad-ecg").exists()  # nothing half-registered


def test_tiny_train_and_evaluate_on_three_records(tiny_ecg_data, shared_data, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_DATA", str(tiny_ecg_data))
    info = load_dataset("mitdb-pvc").info()  # what `medsight data info mitdb-pvc` prints
    assert "inter-patient split" in info["source"] and info["spatial_dims"] == 1
    assert all(split["size"] > 1000 for split in info["splits"].values())

    config = tmp_path / "ecg.yaml"
    config.write_text(yaml.safe_dump({"bootstrap": 100, "model_options": {"widths": [8, 16], "kernel": 5}}))
    run = tmp_path / "run"
    result = run_cli(
        "train",
        "--dataset",
        "mitdb-pvc",
        "--out",
        run,
        "--epochs",
        "2",
        "--config",
        config,
        MEDSIGHT_DATA=str(tiny_ecg_data),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PVC: sensitivity" in result.stdout

    recorded = yaml.safe_load((run / "config.yaml").read_text())["config"]
    assert recorded["model"] == "cnn1d" and recorded["intensity"] == "none" and recorded["tta"] is False
    assert recorded["augment"] == "strong"  # signals: noise and artefacts, against noisy unseen patients
    metrics = json.loads((run / "metrics.json").read_text())
    ecg = metrics["ecg"]
    assert ecg["threshold"] == metrics["threshold"]
    test_records = [row["record"] for row in ecg["test"]["per_record"]]
    val_records = [row["record"] for row in ecg["val"]["per_record"]]
    assert len(test_records) == len(val_records) == 1 and set(test_records) != set(val_records)
    assert ecg["test"]["pvcs"] == sum(row["pvcs"] for row in ecg["test"]["per_record"]) > 0
    report = (run / "report.html").read_text()
    assert "PVC detection per record" in report and f"<td>{test_records[0]}</td>" in report
    for plot in ("ecg_strip", "examples", "explanations", "ecg_saliency"):
        assert (run / "plots" / f"{plot}.png").stat().st_size > 5000, plot
    assert 'alt="ecg_saliency"' in report
    assert metrics["faithfulness"]["method"] == "occlusion over time"

    # an ensemble of ECG runs reports PVCs per record as a run does (the run twice: the same numbers)
    ensemble = tmp_path / "ensemble"
    make_ensemble([run, run], ensemble, n_boot=50, **QUIET)
    assert json.loads((ensemble / "metrics.json").read_text())["ecg"]["test"] == ecg["test"]
    assert "PVC detection per record" in (ensemble / "report.html").read_text()
    assert (ensemble / "plots" / "ecg_strip.png").stat().st_size > 5000

    # new records through `medsight predict`: an annotated npz (its reference beside each call), a WFDB
    # record without annotations (beats found by XQRS), and a file that is no record, refused alone
    bare = _copy_record(shared_data / "ecg" / "wfdb" / "100", tmp_path / "bare", parts=(".hea", ".dat"))
    (tmp_path / "note.txt").write_text("not an ECG")
    annotated = shared_data / "ecg" / "mitdb" / "100.npz"
    out, plots = tmp_path / "beats.csv", tmp_path / "strips"
    args = ("predict", run, annotated, bare.with_suffix(".hea"), tmp_path / "note.txt", "--out", out)
    predicted = run_cli(*args, "--explain-dir", plots, MEDSIGHT_DATA=str(tiny_ecg_data), timeout=300)
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    rows = list(csv.DictReader(out.open()))
    by_file = {
        name: [r for r in rows if Path(r["file"]).name == name] for name in ("100.npz", "100", "note.txt")
    }
    reference = read_beats(open_ecg(annotated))
    from_annotations, detected = by_file["100.npz"], by_file["100"]
    assert len(from_annotations) > 0.99 * len(reference.samples)  # all but a beat at either end
    assert {r["beats_from"] for r in from_annotations} == {"annotations"}
    assert {r["reference"] for r in from_annotations} == {"PVC", "other"}  # record 100 has one PVC
    assert {r["beats_from"] for r in detected} == {"XQRS detector"} and {
        r["reference"] for r in detected
    } == {""}
    assert abs(len(detected) - len(from_annotations)) <= 0.02 * len(from_annotations)
    assert all(0.0 <= float(r["p_pvc"]) <= 1.0 and r["label"] in ("PVC", "other") for r in rows if r["p_pvc"])
    assert (
        by_file["note.txt"][0]["status"] == "refused"
        and "not an ECG record" in by_file["note.txt"][0]["error"]
    )
    assert (plots / "100_strip.png").stat().st_size > 5000

    # the ensemble classifies a record's beats as its members' mean (here the run twice: the run's beats)
    ensembled = tmp_path / "ensembled.csv"
    by_ensemble = run_cli(
        "predict", ensemble, annotated, "--out", ensembled, MEDSIGHT_DATA=str(tiny_ecg_data)
    )
    assert by_ensemble.returncode == 0, by_ensemble.stdout + by_ensemble.stderr
    ensemble_rows = list(csv.DictReader(ensembled.open()))
    assert [(r["time_s"], r["label"]) for r in ensemble_rows] == [
        (r["time_s"], r["label"]) for r in from_annotations
    ]
    assert (
        max(
            abs(float(a["p_pvc"]) - float(b["p_pvc"]))
            for a, b in zip(ensemble_rows, from_annotations, strict=True)
        )
        < 1e-5
    )


@pytest.mark.slow
def test_recurrent_model_exports_to_onnx_and_quantizes_dynamically(tmp_path):
    import onnxruntime as ort

    from medsight.optimize.export import export_onnx
    from medsight.optimize.quantize import choose_method, quantize_dynamic_int8

    torch.manual_seed(0)
    model = build_model("lstm", 1, 5, 2, hidden=16).eval()
    export_onnx(model, torch.zeros(2, 5, 252), tmp_path / "lstm.onnx")
    x = torch.randn(5, 5, 252)  # another batch size than the example: the batch stays free
    session = ort.InferenceSession(str(tmp_path / "lstm.onnx"))
    expected = model(x).detach().numpy()
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-5)

    assert choose_method(model) == "dynamic"  # recurrent weights dominate: per-batch activation ranges
    quantize_dynamic_int8(tmp_path / "lstm.onnx", tmp_path / "lstm.int8.onnx")
    quantized = ort.InferenceSession(str(tmp_path / "lstm.int8.onnx"))
    np.testing.assert_allclose(quantized.run(None, {"input": x.numpy()})[0], expected, atol=0.05)


def test_saliency_over_time_follows_the_weights_and_is_drawn_under_the_strip(shared_data, tmp_path):
    from PIL import Image

    from medsight.evaluate.ecg import draw_strip
    from medsight.explain.faithfulness import randomised_copy, rank_correlation
    from medsight.explain.timeline import occlusion_over_time

    header = open_ecg(shared_data / "ecg" / "mitdb" / "119.npz")  # a quarter of its beats are PVCs
    beats = record_beats(header, **QUIET)
    inputs, labels = (
        torch.from_numpy(beat_inputs(beats, BeatSettings())),
        torch.from_numpy(beats.is_pvc.astype(np.int64)),
    )
    torch.manual_seed(0)
    model = build_model("cnn1d", 1, inputs.shape[1], 2, widths=[8, 16])
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):  # a few seconds: enough to tell PVCs apart on the record it learns from
        batch = torch.randint(0, len(inputs), (64,))
        loss = torch.nn.functional.cross_entropy(model.train()(inputs[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    pvcs = np.flatnonzero(beats.is_pvc)[:8]
    targets = np.ones(len(pvcs), dtype=np.int64)
    maps = occlusion_over_time(model, inputs[pvcs], targets)
    assert maps.shape == (len(pvcs), inputs.shape[-1]) and np.allclose(maps.max(axis=1), 1.0)
    # Adebayo et al.'s sanity check: a map that survives re-initialised weights explains the signal, not the model
    randomised = occlusion_over_time(randomised_copy(model, 1.0), inputs[pvcs], targets)
    rhos = [rank_correlation(a, b) for a, b in zip(maps, randomised, strict=True)]
    assert np.mean([r for r in rhos if r is not None]) < 0.5, rhos

    settings, start = BeatSettings(), int(beats.samples[pvcs[0]]) - 360
    shown = np.flatnonzero((beats.samples >= start) & (beats.samples < start + 3600))
    maps_shown = occlusion_over_time(model, inputs[shown], labels[shown].numpy())
    saliency = dict(zip(shown.tolist(), maps_shown, strict=True))
    called = beats.is_pvc  # the reference as the calls: the drawing is under test here, not the model
    plain = draw_strip(header, settings, start, beats.samples, called, called, "t", tmp_path / "plain.png")
    under = draw_strip(
        header, settings, start, beats.samples, called, called, "t", tmp_path / "saliency.png", saliency
    )
    assert Image.open(under).height > Image.open(plain).height  # the saliency panel below the trace


def test_an_ensemble_whose_members_cut_beats_differently_is_refused_for_records(tmp_path):
    from types import SimpleNamespace

    from medsight.data.ecg_dataset import CLASSES
    from medsight.optimize.ensemble import Ensemble
    from medsight.predict.ecg import beat_model
    from medsight.predict.errors import PredictInputError
    from medsight.predict.loaded import LoadedModel

    def member(before_s: float, **recorded) -> SimpleNamespace:
        settings = {**BeatSettings(before_s=before_s).as_dict(), **recorded}
        return SimpleNamespace(
            info={"ecg": {"settings": {k: v for k, v in settings.items() if v is not None}}}
        )

    def ensemble(*members: SimpleNamespace) -> LoadedModel:
        weights = [1 / len(members)] * len(members)
        served = Ensemble(list(members), [tmp_path] * len(members), weights, False, CLASSES, 0.5, "mitdb-pvc")
        return LoadedModel("beats", "1", tmp_path, list(members), weights, served, False, 0.5)

    assert beat_model(ensemble(member(0.25), member(0.25))).threshold == 0.5
    # recorded before neighbour channels existed: the same beats as today's default
    assert beat_model(ensemble(member(0.25), member(0.25, neighbour_beats=None))).threshold == 0.5
    for other in (member(0.3), member(0.25, neighbour_beats=8)):
        with pytest.raises(PredictInputError, match="cut ECG beats differently"):
            beat_model(ensemble(member(0.25), other))
