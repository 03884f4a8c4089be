"""Predictions the service keeps: the model from the registry, DICOM uploads ingested, results stored.

Order matters for "nothing half-stored": the upload is decoded, checked against the model and
predicted on *before* anything is written. Only then is a DICOM ingested (de-identified and stored
exactly as ``medsight ingest`` and STOW-RS do), the SR and overlay Secondary Capture added to its
study, and the result row written (with its audit event, in one transaction). A refused input leaves
one audit event saying so and nothing else.

The model's task decides what is made: a classifier's label and heatmap (SR + Secondary Capture for a
DICOM), a segmentation model's mask (a DICOM SEG for a DICOM), an ECG model's beats (``predict_record``).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pydicom
from pydicom import Dataset

from medsight.errors import MedsightError
from medsight.predict.dicom_results import result_objects, segmentation_object, to_bytes
from medsight.predict.errors import IncompatibleImageError, PredictInputError
from medsight.predict.predictor import LoadedModel, Prediction, Predictor
from medsight.predict.series import StoredSeries, read_stored_series
from medsight.predict.series_segmentation import SeriesSegmentation, segment_series
from medsight.predict.served_ecg import EcgPrediction, Part, classify_upload
from medsight.predict.served_segmentation import SegmentationPrediction, segment_upload
from medsight.store import InstanceMeta, Store, User, audit
from medsight.store.model_cards import serving_key
from medsight.store.results import NewResult, ResultRecord, add_result

T = TypeVar("T")


@dataclass
class ServedPrediction:
    prediction: Prediction | SegmentationPrediction | EcgPrediction
    result: ResultRecord


class PredictionService:
    """``predict_files``, ``predict_instance`` and ``predict_series`` for the API, over one store and one
    model cache."""

    def __init__(self, store: Store, predictor: Predictor | None = None, deid_profile: str = "basic") -> None:
        self.store = store
        self.predictor = predictor or Predictor()
        self.deid_profile = deid_profile

    def model(self, spec: str | None) -> LoadedModel:
        """``spec`` = NAME, NAME:VERSION, or None for the default model (NotFoundError when unknown)."""
        found = serving_key(self.store, spec)
        return self.predictor.model(found.name, found.version, found.run_path)

    def predict_files(
        self,
        parts: list[Part],
        model: str | None,
        explain: str,
        user: User,
        client: str | None = None,
        roi: Part | None = None,
    ) -> ServedPrediction:
        """Uploaded files: one image (with its region of interest, for a segmentation model), or for an ECG
        model the files of one record (``served_ecg``)."""
        loaded = self.model(model)
        if roi is not None and loaded.task != "segmentation":
            raise PredictInputError(
                f"model '{loaded.name}' is not a segmentation model: a region of interest ('roi') is taken "
                "only beside an image for a segmentation model; send the request without it."
            )
        if loaded.task == "ecg":
            limits = self.predictor.limits
            prediction = self._audited(loaded, user, client, lambda: classify_upload(parts, loaded, limits))
            return self._keep_ecg(prediction, user, client)
        if len(parts) != 1:
            raise PredictInputError(
                f"{len(parts)} files: send one image as the field 'file' (several files are an ECG record's, "
                "for an ECG model)."
            )
        ((filename, data),) = parts
        prediction = self._predict(data, filename, loaded, explain, user, client, roi)
        assert prediction.source is not None
        if prediction.source.format != "dicom":
            return self._keep(prediction, user, client, upload_id=prediction.source.sha256[:32])
        # a DICOM is ingested (de-identified, stored) and its result goes into its study
        return self._keep(prediction, user, client, source=self._ingest(data, filename, user, client))

    def predict_instance(
        self, sop_uid: str, model: str | None, explain: str, user: User, client: str | None = None
    ) -> ServedPrediction:
        """Predict on an instance already in the store (read audited); the result goes into its study."""
        loaded = self.model(model)
        data = self.store.get_instance_bytes(sop_uid, user=user, client=client)
        prediction = self._predict(data, f"instance {sop_uid}", loaded, explain, user, client)
        return self._keep(prediction, user, client, source=pydicom.dcmread(io.BytesIO(data)))

    def predict_series(
        self, series_uid: str, model: str | None, explain: str, user: User, client: str | None = None
    ) -> ServedPrediction:
        """A 3D model on a whole stored series (one volume): a classifier's label, or a segmentation
        model's mask as one multi-frame DICOM SEG over the series' slices; the result goes into its study."""
        loaded = self.model(model)
        if loaded.task == "ecg":
            raise IncompatibleImageError(
                f"model '{loaded.name}' classifies ECG beats; whole series are predicted on by 3D models."
            )

        def predict() -> tuple[StoredSeries, Prediction | SeriesSegmentation]:
            start = time.perf_counter()
            stored = read_stored_series(self.store, series_uid, loaded, self.predictor.limits, user, client)
            read_ms = (time.perf_counter() - start) * 1000
            if loaded.task == "segmentation":
                prediction = segment_series(stored, loaded, self.predictor.limits)
            else:
                prediction = self.predictor.predict_volume(stored.volume, loaded, explain)
            prediction.timing_ms["preprocess"] = round(prediction.timing_ms["preprocess"] + read_ms, 2)
            return stored, prediction

        stored, prediction = self._audited(loaded, user, client, predict, target="series")
        if isinstance(prediction, SeriesSegmentation):
            return self._keep_segmentation(prediction, user, client, stored.slices, None)
        return self._keep(prediction, user, client, source=stored.source)

    def _predict(
        self,
        data: bytes,
        name: str | None,
        model: LoadedModel,
        explain: str,
        user: User,
        client: str | None,
        roi: Part | None = None,
    ) -> Prediction | SegmentationPrediction:
        def predict() -> Prediction | SegmentationPrediction:
            if model.task == "segmentation":
                return segment_upload(data, name, model, self.predictor.limits, roi)
            if model.task == "ecg":
                raise PredictInputError(
                    f"model '{model.name}' classifies the beats of ECG records, not images; send the record's "
                    "files (NAME.hea and NAME.dat, with NAME.atr if it has one) as several 'file' parts."
                )
            return self.predictor.predict_file(data, name, model, explain)

        return self._audited(model, user, client, predict)

    def _audited(
        self,
        model: LoadedModel,
        user: User,
        client: str | None,
        predict: Callable[[], T],
        target: str = "upload",
    ) -> T:
        """``predict()``; a refusal leaves one audit event saying which kind (never the message: it may
        quote a file name a patient is named in)."""
        try:
            return predict()
        except MedsightError as err:
            detail = {"model": f"{model.name}:{model.version}", "refused": type(err).__name__}
            audit.record(self.store, "predict", target, None, user, client, outcome="failed", detail=detail)
            raise

    def _ingest(self, data: bytes, filename: str | None, user: User, client: str | None) -> Dataset:
        """De-identify and store the DICOM upload; the stored (de-identified) dataset."""
        from medsight.ingest import Ingestor

        ingestor = Ingestor(self.store, profile=self.deid_profile, user=user, client=client, workers=1)
        (outcome,) = ingestor.ingest_bytes([(filename or "upload", data)]).outcomes
        if outcome.status == "refused" or not outcome.sop_instance_uid:
            raise PredictInputError(f"the DICOM file could not be stored: {outcome.reason}")
        stored = self.store.get_instance_bytes(outcome.sop_instance_uid, user=user, client=client)
        return pydicom.dcmread(io.BytesIO(stored))

    def _keep(
        self,
        prediction: Prediction | SegmentationPrediction,
        user: User,
        client: str | None,
        *,
        source: Dataset | None = None,
        upload_id: str | None = None,
    ) -> ServedPrediction:
        if isinstance(prediction, SegmentationPrediction):
            sources = [source] if source is not None else None
            return self._keep_segmentation(prediction, user, client, sources, upload_id)
        sr_uid = sc_uid = None
        if source is not None:
            sr_uid, sc_uid = self._add_to_study(result_objects(prediction, source), user, client)
        new = NewResult(
            **_answer(prediction),
            probabilities=prediction.probabilities,
            source_format=prediction.source.format if prediction.source else "dicom",
            explain_method=prediction.explain_method,
            heatmap_png=prediction.heatmap_png,
            overlay_png=prediction.overlay_png,
            **_place(source, upload_id),
            sr_sop_uid=sr_uid,
            sc_sop_uid=sc_uid,
        )
        return ServedPrediction(prediction, add_result(self.store, new, user, client))

    def _add_to_study(self, objects: list[Dataset], user: User, client: str | None) -> list[str]:
        """Store result objects (SR, Secondary Capture, SEG) beside their source; their SOP Instance UIDs."""
        self.store.add_instances(
            [(to_bytes(ds), InstanceMeta.from_dataset(ds)) for ds in objects], user=user, client=client
        )
        return [str(ds.SOPInstanceUID) for ds in objects]

    def _keep_segmentation(
        self,
        prediction: SegmentationPrediction,
        user: User,
        client: str | None,
        sources: list[Dataset] | None,
        upload_id: str | None,
    ) -> ServedPrediction:
        """The mask's result row, and for DICOM sources (one image, or a series' slices) a SEG over them."""
        seg_uid = None
        if sources:
            (seg_uid,) = self._add_to_study([segmentation_object(prediction, sources)], user, client)
        new = NewResult(
            **_answer(prediction),
            probabilities=[],
            source_format=prediction.source.format if prediction.source else "dicom",
            explain_method="none",
            heatmap_png=prediction.pngs.get("probs"),  # the probability map is a segmentation's heatmap
            overlay_png=prediction.pngs["overlay"],
            images={"mask": prediction.pngs["mask"]} if "mask" in prediction.pngs else {},
            **_place(sources[0] if sources else None, upload_id),
            task="segmentation",
            details=prediction.summary() | {"seg_sop_instance_uid": seg_uid},
        )
        return ServedPrediction(prediction, add_result(self.store, new, user, client))

    def _keep_ecg(self, prediction: EcgPrediction, user: User, client: str | None) -> ServedPrediction:
        new = NewResult(
            **_answer(prediction),
            probabilities=[],
            source_format=prediction.source_format,
            explain_method="none",
            heatmap_png=None,
            overlay_png=None,
            images={"strip": prediction.strip_png},
            upload_id=prediction.upload_id,
            task="ecg",
            details=prediction.details,
        )
        return ServedPrediction(prediction, add_result(self.store, new, user, client))


def _answer(prediction: Prediction | SegmentationPrediction | EcgPrediction) -> dict[str, Any]:
    """What every task's result row says alike: the model, the finding, the threshold, the timing."""
    return {
        "model_name": prediction.model["name"],
        "model_version": prediction.model["version"],
        "label": prediction.label,
        "classes": prediction.classes,
        "threshold": prediction.threshold,
        "timing": prediction.timing_ms,
    }


def _place(source: Dataset | None, upload_id: str | None) -> dict[str, str | None]:
    """Where a result belongs: the stored source's study and instance, or the upload's hash."""
    return {
        "study_uid": str(source.StudyInstanceUID) if source is not None else None,
        "sop_uid": str(source.SOPInstanceUID) if source is not None else None,
        "upload_id": upload_id,
    }
