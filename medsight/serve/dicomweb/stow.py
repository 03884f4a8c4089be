"""STOW-RS (PS3.18 10.5): each part of the upload goes through the same ingest path as
``medsight ingest`` (validate, de-identify, store), and the answer lists what was stored and what not.

Status codes as PS3.18 10.5.3 gives them: 200 when every instance was stored (a duplicate of an
instance already held counts as stored: the client's copy is safe), 202 when some were and some
failed, 409 when none was. Every stored instance carries Warning Reason B000 (coercion of data
elements): de-identification changed it, and the standard wants the sender told. A failed part's
reason in words goes, besides the standard's Failure Reason code, in a private element
(0009,xx01) of creator "MEDSIGHT", so a client can show why.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.errors import InvalidDicomError

from medsight.deid import pseudonymise_uid
from medsight.keys import load_or_create_key
from medsight.serve.dicomweb.dicom_json import attr, instance_url, study_url
from medsight.serve.dicomweb.media import DICOM, Part
from medsight.serve.settings import ServeSettings
from medsight.store import Store, User, audit

if TYPE_CHECKING:
    from medsight.ingest import IngestOutcome

# Failure Reason (0008,1197) and Warning Reason (0008,1196) codes, PS3.4 B.2.3 and PS3.18 10.5.3.
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
COERCED = 0xB000
PRIVATE_CREATOR = "MEDSIGHT"


@dataclass
class PartHeader:
    """The few original attributes read from a part before ingest: to check and to answer with."""

    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""


def read_header(content: bytes) -> PartHeader | None:
    """The part's UIDs, or None when it is not readable as DICOM (ingest then says why, in words)."""
    try:
        ds = pydicom.dcmread(BytesIO(content), stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError, AttributeError):
        return None
    return PartHeader(
        str(ds.get("SOPClassUID", "") or ""),
        str(ds.get("SOPInstanceUID", "") or ""),
        str(ds.get("StudyInstanceUID", "") or ""),
    )


def _in_study(header: PartHeader, study_uid: str) -> bool:
    """Whether a part belongs to the study in the URL: by its original or its de-identified UID."""
    original = header.study_instance_uid
    secret = load_or_create_key("site", "MEDSIGHT_SITE_SECRET")
    return original == study_uid or pseudonymise_uid(original, secret) == study_uid


def _failed(header: PartHeader | None, code: int, reason: str) -> dict[str, Any]:
    header = header or PartHeader()
    return {
        "00081150": attr("UI", header.sop_class_uid),
        "00081155": attr("UI", header.sop_instance_uid),
        "00081197": attr("US", code),
        "00090010": attr("LO", PRIVATE_CREATOR),
        "00091001": attr("LT", reason),
    }


def _refusal_code(outcome: IngestOutcome) -> int:
    if outcome.retryable:  # the store or the disk failed, not the file
        return OUT_OF_RESOURCES
    text = (outcome.reason or "").lower()
    return OUT_OF_RESOURCES if "larger than" in text else PROCESSING_FAILURE


@dataclass
class StowResult:
    status_code: int
    body: dict[str, Any]


def _screen(
    parts: list[Part], headers: list[PartHeader | None], study_uid: str | None
) -> tuple[list[tuple[str, bytes]], list[dict[str, Any]]]:
    """Parts to ingest (named ``part-N``) and the failures of those refused before ingest."""
    items, failed = [], []
    for number, (part, header) in enumerate(zip(parts, headers, strict=True), start=1):
        if part.content_type not in (None, DICOM):
            failed.append(
                _failed(header, CANNOT_UNDERSTAND, f"part {number} is {part.content_type}, not {DICOM}")
            )
        elif header is None:  # PNG, NIfTI, a zip or garbage: ingest would take some, STOW takes DICOM only
            failed.append(_failed(None, CANNOT_UNDERSTAND, f"part {number} is not a DICOM file (PS3.10)"))
        elif study_uid is not None and not _in_study(header, study_uid):
            failed.append(_failed(header, PROCESSING_FAILURE, f"part {number} belongs to another study"))
        else:
            items.append((f"part-{number}", part.content))
    return items, failed


def _referenced(store: Store, sop_uid: str, base_url: str) -> dict[str, Any]:
    record = store.get_instance(sop_uid)
    return {
        "00081150": attr("UI", record.sop_class_uid),
        "00081155": attr("UI", record.sop_uid),
        "00081190": attr("UR", instance_url(base_url, record)),
        "00081196": attr("US", COERCED),
    }


def store_parts(
    store: Store,
    parts: list[Part],
    *,
    settings: ServeSettings,
    user: User,
    client: str | None,
    base_url: str,
    study_uid: str | None = None,
) -> StowResult:
    """Ingest every acceptable part; the DICOM JSON answer and its status code."""
    from medsight.ingest import Ingestor  # imported on first use: ingest pulls in the image converters

    headers = [read_header(part.content) for part in parts]
    by_name = {f"part-{number}": header for number, header in enumerate(headers, start=1)}
    items, failed = _screen(parts, headers, study_uid)
    referenced, studies = [], set()
    if items:
        ingestor = Ingestor(
            store,
            profile=settings.deid_profile,
            max_file_bytes=settings.max_instance_bytes,
            user=user,
            client=client,
        )
        for outcome in ingestor.ingest_bytes(items).outcomes:
            if outcome.status in ("stored", "duplicate") and outcome.sop_instance_uid:
                referenced.append(_referenced(store, outcome.sop_instance_uid, base_url))
                studies.add(outcome.study_instance_uid)
            else:
                reason = f"{outcome.name}: {outcome.reason or 'refused by ingest'}"
                failed.append(_failed(by_name.get(outcome.name), _refusal_code(outcome), reason))
    stored_study = next(iter(studies)) if len(studies) == 1 else None  # de-identified, unlike the URL's
    body: dict[str, Any] = {}
    if stored_study:
        body["00081190"] = attr("UR", study_url(base_url, stored_study))
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    status = 200 if not failed else 202 if referenced else 409
    detail = {"parts": len(parts), "stored": len(referenced), "failed": len(failed)}
    verdict = "ok" if status == 200 else "failed"
    audit.record(store, "write", "stow", stored_study, user, client, outcome=verdict, detail=detail)
    return StowResult(status, dict(sorted(body.items())))
