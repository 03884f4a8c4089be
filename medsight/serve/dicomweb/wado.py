"""WADO-RS (PS3.18 10.4): stored (de-identified) instances as multipart/related, their metadata as
DICOM JSON, and single frames of uncompressed images.

Every instance read goes through ``Store.get_instance_bytes``, which verifies the blob and writes
the audit event (who, which instance, from where), so a retrieval is audited instance by instance.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pydicom
from pydicom.uid import UID

from medsight.errors import BadInputError
from medsight.serve.dicomweb.dicom_json import metadata_json
from medsight.serve.errors import HttpError
from medsight.store import InstanceRecord, Store, User


def instance_bytes(
    store: Store, records: list[InstanceRecord], user: User, client: str | None
) -> Iterator[bytes]:
    """The stored files, one at a time (the response streams them; a study is never all in memory)."""
    for record in records:
        yield store.get_instance_bytes(record.sop_uid, user=user, client=client)


def metadata(
    store: Store, records: list[InstanceRecord], user: User, client: str | None, base_url: str
) -> list[dict[str, Any]]:
    return [
        metadata_json(store.get_instance_bytes(record.sop_uid, user=user, client=client), record, base_url)
        for record in records
    ]


def parse_frame_list(text: str, n_frames: int) -> list[int]:
    """``1,3,5`` as frame numbers (1-based, PS3.18 10.4.1.1.5); each must exist."""
    try:
        numbers = [int(item) for item in text.split(",")]
    except ValueError:
        raise BadInputError(
            f"frame list {text!r} must be comma-separated frame numbers, e.g. 1,2,3."
        ) from None
    bad = [n for n in numbers if not 1 <= n <= n_frames]
    if bad:
        raise BadInputError(f"frame(s) {bad} do not exist: the instance has frames 1 to {n_frames}.")
    return numbers


def frames(data: bytes, numbers: list[int]) -> list[bytes]:
    """The raw bytes of the given frames of an uncompressed instance."""
    ds = pydicom.dcmread(BytesIO(data))
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if syntax.is_compressed:
        raise HttpError(
            406,
            f"frames are served only for uncompressed instances; this one is stored as {syntax.name}: "
            "retrieve the whole instance instead.",
        )
    if "PixelData" not in ds or int(ds.BitsAllocated) % 8:
        raise BadInputError("this instance has no byte-aligned Pixel Data to cut frames from.")
    size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
    pixels = ds.PixelData
    return [pixels[(n - 1) * size : n * size] for n in numbers]
