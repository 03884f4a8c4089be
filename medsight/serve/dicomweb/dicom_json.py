"""DICOM JSON (PS3.18 F.2) for what the index knows, and URLs of studies, series and instances."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataelem import DataElement

from medsight.store import InstanceRecord, SeriesRecord, StudyRecord

PIXEL_TAGS = {"7FE00010", "7FE00008", "7FE00009"}  # Pixel Data, Float and Double Float Pixel Data
INLINE_LIMIT = 64 * 1024  # other binary values up to this size are sent inline (base64)


def attr(vr: str, *values: Any) -> dict[str, Any]:
    """One attribute; empty values are left out (an attribute with no Value is "known, but empty")."""
    kept = [value for value in values if value not in (None, "")]
    if vr == "PN":
        kept = [{"Alphabetic": str(value)} for value in kept]
    return {"vr": vr, "Value": kept} if kept else {"vr": vr}


def study_url(base_url: str, study_uid: str) -> str:
    return f"{base_url}/studies/{study_uid}"


def series_url(base_url: str, study_uid: str, series_uid: str) -> str:
    return f"{study_url(base_url, study_uid)}/series/{series_uid}"


def instance_url(base_url: str, record: InstanceRecord) -> str:
    return f"{series_url(base_url, record.study_uid, record.series_uid)}/instances/{record.sop_uid}"


def _sorted(attributes: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(attributes.items()))


def study_json(study: StudyRecord, n_series: int, n_instances: int, base_url: str) -> dict[str, Any]:
    modalities = [m for m in study.modalities.split("\\") if m]
    return _sorted(
        {
            "00080020": attr("DA", study.study_date.strftime("%Y%m%d") if study.study_date else None),
            "00080050": attr("SH"),  # Accession Number: removed by de-identification, so always empty
            "00080061": attr("CS", *modalities),
            "00081030": attr("LO", study.description),
            "00081190": attr("UR", study_url(base_url, study.study_uid)),
            "00100010": attr(
                "PN", study.patient_pseudonym
            ),  # de-identification sets the name to the pseudonym
            "00100020": attr("LO", study.patient_pseudonym),
            "0020000D": attr("UI", study.study_uid),
            "00201206": attr("IS", n_series),
            "00201208": attr("IS", n_instances),
        }
    )


def series_json(series: SeriesRecord, n_instances: int, base_url: str, study: StudyRecord) -> dict[str, Any]:
    return _sorted(
        {
            "00080060": attr("CS", series.modality),
            "0008103E": attr("LO", series.description),
            "00081190": attr("UR", series_url(base_url, series.study_uid, series.series_uid)),
            "00100020": attr("LO", study.patient_pseudonym),
            "00180015": attr("CS", series.body_part),
            "0020000D": attr("UI", series.study_uid),
            "0020000E": attr("UI", series.series_uid),
            "00201209": attr("IS", n_instances),
        }
    )


def instance_json(record: InstanceRecord, base_url: str) -> dict[str, Any]:
    return _sorted(
        {
            "00080016": attr("UI", record.sop_class_uid),
            "00080018": attr("UI", record.sop_uid),
            "00081190": attr("UR", instance_url(base_url, record)),
            "00083002": attr("UI", record.transfer_syntax),  # Available Transfer Syntax UID: as stored
            "0020000D": attr("UI", record.study_uid),
            "0020000E": attr("UI", record.series_uid),
            "00280008": attr("IS", record.frames),
            "00280010": attr("US", record.rows),
            "00280011": attr("US", record.columns),
        }
    )


def metadata_json(data: bytes, record: InstanceRecord, base_url: str) -> dict[str, Any]:
    """The stored (de-identified) instance as DICOM JSON, pixel data given as a BulkDataURI to its frames."""
    dataset = pydicom.dcmread(BytesIO(data))
    url = instance_url(base_url, record)

    def bulk_uri(element: DataElement) -> str:
        return url  # a large non-pixel value: retrieving the instance gives it (rare: overlays, waveforms)

    attributes = dataset.to_json_dict(bulk_data_threshold=INLINE_LIMIT, bulk_data_element_handler=bulk_uri)
    frames = ",".join(str(n) for n in range(1, (record.frames or 1) + 1))
    for tag in PIXEL_TAGS & attributes.keys():
        attributes[tag] = {"vr": attributes[tag]["vr"], "BulkDataURI": f"{url}/frames/{frames}"}
    return _sorted(attributes)
