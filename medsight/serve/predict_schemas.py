"""Request and response bodies of predictions, results, studies' history and model cards."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ExplainMethod = Literal["gradcam", "occlusion"]
Task = Literal["classification", "segmentation", "ecg"]
_ROI = (
    "a segmentation model trained inside regions of interest (e.g. a field of view): send each image's "
    "own as the field 'roi' beside it"
)


class PredictRequest(BaseModel):
    """Predict on an instance or a whole series already in the store (a JSON or form body instead of a file)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    instance: str | None = Field(
        None, min_length=1, max_length=64, description="a stored (de-identified) SOP Instance UID"
    )
    series: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="a stored (de-identified) Series Instance UID: the whole series as one volume (3D models)",
    )
    model: str | None = Field(
        None, max_length=200, description="NAME or NAME:VERSION; default: the default model"
    )
    explain: ExplainMethod = "gradcam"

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        # before the fields: a misspelt key must still hear which keys are wanted
        if isinstance(data, dict) and (data.get("instance") is None) == (data.get("series") is None):
            raise ValueError("give exactly one of 'instance' (a stored SOP Instance UID) and 'series'")
        return data


class ModelRef(BaseModel):
    name: str
    version: str


class TimingMs(BaseModel):
    preprocess: float = Field(description="decode, checks and conversion (ms)")
    inference: float = Field(
        description="the model's passes (ms); with Grad-CAM on the eager model, one forward and one backward "
        "pass give the probabilities and the map together"
    )
    explain: float = Field(
        description="passes for the map alone, if any, and drawing the heatmap and overlay (ms)"
    )


class SegmentationOut(BaseModel):
    """What a segmentation model found: the mask's size, its images and its DICOM SEG."""

    foreground_fraction: float = Field(description="share of the image's pixels in the mask")
    foreground_pixels: int
    shape: list[int] = Field(
        description="the mask's size in pixels (rows, columns), the image's own; a series': (slices, rows, columns)"
    )
    area_mm2: float | None = Field(
        None, description="the mask's area, when the image gives its pixel spacing"
    )
    volume_mm3: float | None = Field(None, description="a 3D mask's volume, when the image gives its spacing")
    volume_ml: float | None = Field(
        None, description="a series' mask volume in mL: each slice's mask over the slab it stands for"
    )
    overlay_slice: int | None = Field(
        None, description="a series: the slice drawn in the overlay (the most structure; 0 = first)"
    )
    pixel_spacing_mm: list[float] | None = None
    roi_applied: bool = Field(
        False, description="a region of interest (field 'roi') was applied: nothing outside it is structure"
    )
    roi_note: str | None = Field(
        None, description="set when the model was trained with a region of interest and none was given"
    )
    mask_url: str | None = Field(description="the mask as a PNG, 0 and 255 (2D images)")
    seg_sop_instance_uid: str | None = Field(
        description="the mask as a DICOM SEG in the study (DICOM inputs)"
    )


class BeatOut(BaseModel):
    sample: int = Field(description="the beat's R peak, in samples at the model's sampling rate")
    time_s: float
    label: str
    probability: float = Field(description="probability of the positive class (e.g. PVC)")
    reference: str | None = Field(description="the record's own annotation of the beat, when it has them")


class EcgOut(BaseModel):
    """Every beat of an ECG record with the model's call, the counts per class and the strip plot."""

    sampling_rate_hz: float = Field(description="the model's rate, at which `beats[].sample` count")
    record_sampling_rate_hz: float
    seconds: float
    beats_from: str = Field(description="the record's annotations, or wfdb's XQRS detector")
    counts: dict[str, int] = Field(description="beats per predicted class")
    beats: list[BeatOut]
    notes: list[str] = Field(description="what was done to the record, e.g. resampled to the model's rate")
    strip_url: str | None = Field(
        description="10 s of the record at its own rate, beats coloured by prediction"
    )


class ResultOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    id: str
    task: Task = Field(
        "classification", description="what the model does; says which of the blocks below is set"
    )
    label: str = Field(
        description="the predicted class (binary models: at the validation threshold); a segmentation's "
        "structure; an ECG record's positive class when any beat is called it"
    )
    probabilities: list[float] = Field(description="one per class, in the order of `classes` (classifiers)")
    classes: list[str]
    threshold: float | None = Field(description="probability of the positive class at which it is called")
    model: ModelRef
    timing_ms: TimingMs
    explain_method: ExplainMethod | None = Field(description="the heatmap's method (classifiers only)")
    heatmap_url: str | None = Field(
        description="the raw map as a grey PNG (a segmentation's: the probability of the structure)"
    )
    overlay_url: str | None = Field(description="the image with the map (or the mask) over it, as a PNG")
    segmentation: SegmentationOut | None = None
    ecg: EcgOut | None = None
    study_id: str = Field(description="de-identified Study Instance UID, or upload-<hash> for a picture")
    study_instance_uid: str | None
    sop_instance_uid: str | None = Field(description="the de-identified source instance, when stored")
    sr_sop_instance_uid: str | None = Field(description="the result as a DICOM Comprehensive SR")
    sc_sop_instance_uid: str | None = Field(description="the overlay as a DICOM Secondary Capture")
    source_format: str
    user: str | None
    created_at: dt.datetime


class StudyOut(BaseModel):
    id: str = Field(description="de-identified Study Instance UID, or upload-<hash> for a picture")
    kind: Literal["dicom", "upload"]
    result_count: int
    latest_label: str
    latest_at: dt.datetime
    results: list[ResultOut]


class ModelVersionOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    name: str
    version: str
    task: Task = "classification"
    registered_at: dt.datetime
    is_default: bool
    dataset: dict[str, Any] = Field(description="name, source, licence, citation, training size")
    classes: list[str] | None
    metrics: dict[str, Any] = Field(description="per split: headline metrics with 95% bootstrap CIs")
    threshold: dict[str, Any] = Field(description="value and how it was chosen")
    calibration: dict[str, Any] = Field(description="expected calibration error (ECE) per split")
    intended_use: str
    limitations: list[str]
    architecture: dict[str, Any]
    serving_variant: str | None
    heatmap: str | None = Field(
        None, description="how the heatmap is made, e.g. an ensemble's: its members' maps, weighted"
    )
    trained_with_roi: bool = Field(False, description=_ROI)


class ModelSummaryOut(BaseModel):
    name: str
    version: str
    task: Task = "classification"
    registered_at: dt.datetime
    is_default: bool
    dataset: str | None
    test_auc: float | None
    trained_with_roi: bool = Field(False, description=_ROI)


class ModelCardOut(BaseModel):
    name: str
    latest: ModelVersionOut
    versions: list[ModelVersionOut] = Field(description="version history, oldest first")
