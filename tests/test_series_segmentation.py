"""POST /api/predict with a 3D segmentation model on a whole stored series: the mask back on the acquired
(gantry-tilted, unevenly spaced) CT slices as one multi-frame DICOM SEG in the study, and refusals that
store nothing."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from predict_helpers import PASSWORD, bearer, tiny_segmentation_run
from scipy.ndimage import map_coordinates
from series_helpers import BONE_HU, BONE_SPACING, CT_SERIES, bone_segmentation_run, read_folder, with_series
from test_predict import _retrieve

from medsight.io.series import read_series, rescaled_pixels
from medsight.io.volume import canonical, resample
from medsight.predict.registration import register_run
from medsight.predict.series import along_normal
from medsight.serve import create_app
from medsight.store import Role, Store, add_user, create_token
from medsight.store.audit import query as audit_query
from medsight.store.results import count_results
from medsight.train.segmentation_inference import load_segmenter

RAS = np.array([-1.0, -1.0, 1.0])  # LPS -> RAS for points


@pytest.fixture(scope="module")
def bone_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bone_segmentation_run(tmp_path_factory)


def _client(store: Store) -> tuple[TestClient, str]:
    add_user(store, "doc", Role.CLINICIAN, PASSWORD)
    return TestClient(create_app(store)), create_token(store, "doc")


def _model_on_grid(run: Path, slices: list[pydicom.Dataset]) -> tuple[np.ndarray, object, float]:
    """The model's probabilities on the series read independently here (3 mm, RAS), the grid, the threshold."""
    segmenter = load_segmenter(run)
    grid = resample(canonical(read_series(slices)), BONE_SPACING)
    return segmenter.probabilities(grid.array[None]), grid, segmenter.threshold


def _at_pixels(probabilities: np.ndarray, grid, threshold: float, slices: list) -> np.ndarray:
    """The model's mask looked up at each acquired pixel's patient position (outside the grid: none)."""
    rows, columns = np.mgrid[0:512, 0:512]
    masks = []
    for dataset in slices:
        cosines = np.array(dataset.ImageOrientationPatient, float)
        row_mm, column_mm = (float(v) for v in dataset.PixelSpacing)
        lps = (
            np.array(dataset.ImagePositionPatient, float)
            + columns[..., None] * column_mm * cosines[:3]
            + rows[..., None] * row_mm * cosines[3:]
        )
        zyx = np.moveaxis(grid.index(lps * RAS), -1, 0)[::-1]
        sampled = map_coordinates(probabilities, zyx, order=1, mode="nearest")
        top = np.array(probabilities.shape)[:, None, None] - 0.5
        masks.append(np.all((zyx >= -0.5) & (zyx <= top), axis=0) & (sampled >= threshold))
    return np.stack(masks)


def test_a_stored_series_is_segmented_into_one_multiframe_seg(
    bone_run: Path, store: Store, shared_data: Path
) -> None:
    from medsight.ingest import Ingestor

    register_run(store, bone_run, "bone3d", "1", user="test")
    client, token = _client(store)
    report = Ingestor(store, workers=1).ingest_paths([shared_data / CT_SERIES], progress=False)
    stored = {o.sop_instance_uid for o in report.outcomes if o.sop_instance_uid}
    series = store.get_instance(next(iter(stored))).series_uid

    answer = client.post("/api/predict", json={"series": series, "model": "bone3d"}, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["task"] == "segmentation" and body["source_format"] == "dicom-series"
    seg = body["segmentation"]
    assert seg["shape"] == [28, 512, 512]  # the 28 acquired slices, not the 56 of the corrected grid

    # the stored (de-identified) slices, in the order along their normal, and the model's own mask on them
    slices = sorted(
        (pydicom.dcmread(io.BytesIO(store.get_instance_bytes(uid))) for uid in stored), key=along_normal
    )
    probabilities, grid, threshold = _model_on_grid(bone_run, slices)
    expected = _at_pixels(probabilities, grid, threshold, slices)
    assert seg["foreground_pixels"] == pytest.approx(int(expected.sum()), rel=1e-3)
    assert seg["foreground_fraction"] == pytest.approx(seg["foreground_pixels"] / expected.size)

    # one SEG in the study over DICOMweb: a frame per slice with bone, each referencing its stored source
    study, seg_uid = body["study_instance_uid"], seg["seg_sop_instance_uid"]
    found = client.get(f"/dicomweb/studies/{study}/instances", headers=bearer(token)).json()
    seg_series = next(i["0020000E"]["Value"][0] for i in found if i["00080018"]["Value"][0] == seg_uid)
    dataset = pydicom.dcmread(io.BytesIO(_retrieve(client, token, study, seg_series, seg_uid)))
    segmentation = hd.seg.Segmentation.from_dataset(dataset)
    with_bone = [d for d, m in zip(slices, expected, strict=True) if m.any()]
    assert segmentation.Modality == "SEG" and int(segmentation.NumberOfFrames) == len(with_bone) > 10
    referenced = {
        str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for frame in segmentation.PerFrameFunctionalGroupsSequence
    }
    assert referenced == {str(d.SOPInstanceUID) for d in with_bone} and referenced <= stored
    originals = {str(d.SOPInstanceUID) for d in read_folder(shared_data / CT_SERIES)}
    assert not referenced & originals  # the de-identified instances, never the scanner's UIDs
    read_back = segmentation.get_pixels_by_source_instance(
        [str(d.SOPInstanceUID) for d in slices], segment_numbers=[1], assert_missing_frames_are_empty=True
    )[..., 0]
    assert int(read_back.sum()) == seg["foreground_pixels"]
    assert np.mean(read_back.astype(bool) == expected) > 0.9999  # only float rounding at the threshold

    # the mask outlines bone on the acquired slices (the label the run learnt: HU > 300)
    bone = np.stack([rescaled_pixels(d) > BONE_HU for d in slices])
    dice = 2 * np.sum(bone & (read_back > 0)) / (bone.sum() + read_back.sum())
    assert dice > 0.5, dice
    # the volume from each slice's slab (1.08 to 7 mm apart), near the same count on the regular 3 mm grid
    assert seg["volume_ml"] == pytest.approx(seg["volume_mm3"] / 1000)
    grid_ml = float((probabilities >= threshold).sum() * np.prod(BONE_SPACING) / 1000)
    assert seg["volume_ml"] == pytest.approx(grid_ml, rel=0.15)
    shown = seg["overlay_slice"]
    assert expected[shown].sum() == expected.reshape(28, -1).sum(axis=1).max()
    overlay = client.get(body["overlay_url"], headers=bearer(token))
    assert np.asarray(Image.open(io.BytesIO(overlay.content))).shape == (512, 512, 3)


def test_series_a_model_cannot_take_are_refused_and_nothing_is_stored(
    bone_run: Path, store: Store, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from medsight.ingest import Ingestor

    register_run(store, bone_run, "bone3d", "1", user="test")
    register_run(store, tiny_segmentation_run(tmp_path_factory)[0], "vessels2d", "1", user="test")
    client, token = _client(store)
    slices = read_folder(shared_data / CT_SERIES)
    # the evenly spaced first 13 slices (4 mm) without the 6th: an 8 mm gap, slices missing
    holed = [with_series(d, "1.2.826.0.1.3680043.10.999.1", 71) for d in slices[:5] + slices[6:13]]
    single = [with_series(slices[5], "1.2.826.0.1.3680043.10.999.2", 72)]
    items = []
    for k, dataset in enumerate(holed + single):
        buffer = io.BytesIO()
        dataset.save_as(buffer)
        items.append((f"slice{k}.dcm", buffer.getvalue()))
    report = Ingestor(store, workers=1).ingest_bytes(items)
    uids = [o.sop_instance_uid for o in report.outcomes]
    holed_series, single_series = (store.get_instance(uids[k]).series_uid for k in (0, -1))
    study = store.get_instance(uids[0]).study_uid
    assert store.get_instance(uids[-1]).study_uid == study

    def in_study() -> int:
        found = client.get(f"/dicomweb/studies/{study}/instances", headers=bearer(token))
        return len(found.json())

    refusals = [
        ({"series": holed_series, "model": "bone3d"}, "gap of"),
        ({"series": single_series, "model": "bone3d"}, "too thin"),
        ({"series": holed_series, "model": "vessels2d"}, "not a series"),
    ]
    for request, words in refusals:
        answer = client.post("/api/predict", json=request, headers=bearer(token))
        assert answer.status_code == 422 and words in answer.json()["error"], answer.text
    assert count_results(store) == 0 and in_study() == 13  # no SEG, no result: nothing half-stored
    refused = [e for e in audit_query(store, action="predict") if e.outcome == "failed"]
    assert [(e.resource_type, e.detail["refused"]) for e in refused] == [
        ("series", "IncompatibleImageError")
    ] * 3
