"""Plain values that go into and come out of the store (no database session attached)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from pydicom import Dataset

from medsight.errors import BadInputError

BURNED_IN_TEXT_RISK = "burned_in_text_risk"
_REQUIRED = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def parse_da(value: str) -> dt.date | None:
    """A DICOM DA value (YYYYMMDD) as a date; None when empty or malformed (the date is not required)."""
    try:
        return dt.datetime.strptime(value.strip(), "%Y%m%d").date() if value.strip() else None
    except ValueError:
        return None


@dataclass(frozen=True)
class InstanceMeta:
    """What the index keeps about one de-identified instance; every value is already de-identified."""

    patient_pseudonym: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    modality: str = ""
    study_date: dt.date | None = None
    study_description: str = ""
    series_description: str = ""
    body_part: str = ""
    transfer_syntax: str = ""
    rows: int | None = None
    columns: int | None = None
    frames: int | None = None
    flags: list[str] = field(default_factory=list)

    @classmethod
    def from_dataset(cls, ds: Dataset, flags: list[str] | None = None) -> InstanceMeta:
        """Fill from a dataset that has already been de-identified (PatientID holds the pseudonym)."""
        missing = [keyword for keyword in _REQUIRED if not _text(ds, keyword)]
        if missing:
            raise BadInputError(f"the DICOM file has no {', '.join(missing)}: it cannot be indexed.")
        file_meta = getattr(ds, "file_meta", None)
        has_pixels = "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
        return cls(
            patient_pseudonym=_text(ds, "PatientID"),
            study_uid=_text(ds, "StudyInstanceUID"),
            series_uid=_text(ds, "SeriesInstanceUID"),
            sop_uid=_text(ds, "SOPInstanceUID"),
            sop_class_uid=_text(ds, "SOPClassUID"),
            modality=_text(ds, "Modality"),
            study_date=parse_da(_text(ds, "StudyDate")),
            study_description=_text(ds, "StudyDescription"),
            series_description=_text(ds, "SeriesDescription"),
            body_part=_text(ds, "BodyPartExamined"),
            transfer_syntax=_text(file_meta, "TransferSyntaxUID") if file_meta is not None else "",
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            frames=_int(ds, "NumberOfFrames") or (1 if has_pixels else None),
            flags=sorted(set(flags or [])),
        )


@dataclass(frozen=True)
class AddResult:
    status: Literal["stored", "duplicate"]
    sop_instance_uid: str
    sha: str  # for a duplicate: the blob of the instance already stored


@dataclass(frozen=True)
class StudyRecord:
    study_uid: str
    patient_pseudonym: str
    study_date: dt.date | None
    modalities: str
    description: str
    series_count: int
    instance_count: int


@dataclass(frozen=True)
class SeriesRecord:
    series_uid: str
    study_uid: str
    modality: str
    body_part: str
    description: str
    instance_count: int


@dataclass(frozen=True)
class InstanceRecord:
    sop_uid: str
    series_uid: str
    study_uid: str
    sop_class_uid: str
    sha: str
    size: int
    transfer_syntax: str
    rows: int | None
    columns: int | None
    frames: int | None
    flags: list[str]
    burned_in_text_risk: bool
    cleared_by: str | None
    cleared_at: dt.datetime | None
    created_at: dt.datetime

    @property
    def excluded(self) -> bool:
        """Kept out of training and export: flagged for burned-in text and not yet cleared by an admin."""
        return self.burned_in_text_risk and self.cleared_at is None


@dataclass(frozen=True)
class LabelRecord:
    name: str
    value: str
    source: str
    sop_uid: str | None
    study_uid: str | None


@dataclass(frozen=True)
class ModelRecord:
    name: str
    version: str
    run_path: str
    metrics: dict[str, Any]
    created_at: dt.datetime
