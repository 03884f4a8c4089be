"""Predictions the service keeps: the model from the registry, DICOM uploads ingested, results stored.

Order matters for "nothing half-stored": the upload is decoded, checked against the model and
predicted on *before* anything is written. Only then is a DICOM ingested (de-identified and stored
exactly as ``medsight ingest`` and STOW-RS do), the SR and overlay Secondary Capture added to its
study, and the result row written (with its audit event, in one transaction). A refused input leaves
one audit event saying so and nothing else.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import pydicom
from pydicom import Dataset

from medsight.errors import MedsightError
from medsight.predict.dicom_results import result_objects, to_bytes
from medsight.predict.errors import PredictInputError
from medsight.predict.predictor import LoadedModel, Prediction, Predictor
from medsight.predict.series import read_stored_series
from medsight.store import InstanceMeta, Store, User, audit
from medsight.store.model_cards import serving_key
from medsight.store.results import NewResult, ResultRecord, add_result


@dataclass
class ServedPrediction:
    prediction: Prediction
    result: ResultRecord


class PredictionService:
    """``predict_upload``, ``predict_instance`` and ``predict_series`` for the API, over one store and one
    model cache."""

    def __init__(self, store: Store, predictor: Predictor | None = None, deid_profile: str = "basic") -> None:
        self.store = store
        self.predictor = predictor or Predictor()
        self.deid_profile = deid_profile

    def model(self, spec: str | None) -> LoadedModel:
        """``spec`` = NAME, NAME:VERSION, or None for the default model (NotFoundError when unknown)."""
        found = serving_key(self.store, spec)
        return self.predictor.model(found.name, found.version, found.run_path)

    def predict_upload(
        self,
        data: bytes,
        filename: str | None,
        model: str | None,
        explain: str,
        user: User,
        client: str | None = None,
    ) -> ServedPrediction:
        """Predict on uploaded bytes; a DICOM is ingested and its result goes into its study."""
        loaded = self.model(model)
        prediction = self._predict(data, filename, loaded, explain, user, client)
        assert prediction.source is not None
        if prediction.source.format != "dicom":
            return self._keep(prediction, user, client, upload_id=prediction.source.sha256[:32])
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
        """Predict with a 3D model on a whole stored series (one volume); the result goes into its study."""
        loaded = self.model(model)
        start = time.perf_counter()
        try:
            stored = read_stored_series(self.store, series_uid, loaded, self.predictor.limits, user, client)
            read_ms = (time.perf_counter() - start) * 1000
            prediction = self.predictor.predict_volume(stored.volume, loaded, explain)
        except MedsightError as err:
            detail = {"model": f"{loaded.name}:{loaded.version}", "refused": type(err).__name__}
            audit.record(self.store, "predict", "series", None, user, client, outcome="failed", detail=detail)
            raise
        prediction.timing_ms["preprocess"] = round(prediction.timing_ms["preprocess"] + read_ms, 2)
        return self._keep(prediction, user, client, source=stored.source)

    def _predict(
        self, data: bytes, name: str | None, model: LoadedModel, explain: str, user: User, client: str | None
    ) -> Prediction:
        try:
            return self.predictor.predict_file(data, name, model, explain)
        except MedsightError as err:
            # Which kind of refusal, never the message: it may quote a file name a patient is named in.
            detail = {"model": f"{model.name}:{model.version}", "refused": type(err).__name__}
            audit.record(self.store, "predict", "upload", None, user, client, outcome="failed", detail=detail)
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
        prediction: Prediction,
        user: User,
        client: str | None,
        *,
        source: Dataset | None = None,
        upload_id: str | None = None,
    ) -> ServedPrediction:
        sr_uid = sc_uid = None
        if source is not None:
            objects = result_objects(prediction, source)
            self.store.add_instances(
                [(to_bytes(ds), InstanceMeta.from_dataset(ds)) for ds in objects], user=user, client=client
            )
            sr_uid, sc_uid = (str(ds.SOPInstanceUID) for ds in objects)
        new = NewResult(
            model_name=prediction.model["name"],
            model_version=prediction.model["version"],
            label=prediction.label,
            classes=prediction.classes,
            probabilities=prediction.probabilities,
            threshold=prediction.threshold,
            source_format=prediction.source.format if prediction.source else "dicom",
            explain_method=prediction.explain_method,
            heatmap_png=prediction.heatmap_png,
            overlay_png=prediction.overlay_png,
            timing=prediction.timing_ms,
            study_uid=str(source.StudyInstanceUID) if source is not None else None,
            sop_uid=str(source.SOPInstanceUID) if source is not None else None,
            upload_id=upload_id,
            sr_sop_uid=sr_uid,
            sc_sop_uid=sc_uid,
        )
        return ServedPrediction(prediction, add_result(self.store, new, user, client))
