"""Ingest: images arrive (files, folders, zips, C-STORE, STOW-RS), are checked, de-identified, stored.

The flow is io → deid → store, and this package only orchestrates it (``Ingestor``):

1. Sources: files, folders (recursive, hidden files skipped) and ``.zip`` archives, read in memory
   member by member — nothing is extracted to disk. Members with absolute or ``..`` paths
   (zip-slip), encrypted members, zips inside zips and zip bombs (a member unpacking more than
   200 times its packed size, or an archive declaring more than ``max_archive_bytes``) are refused.
   Every file is held to ``max_file_bytes``.
2. Format from the content, never the name: DICOM (every transfer syntax the installed pydicom
   plugins decode — the pixel data is decoded once to prove it), PNG/JPEG and NIfTI (converted to
   DICOM Secondary Capture with highdicom; see ``convert``).
3. De-identification with ``medsight.deid.Deidentifier`` (the profile, the site secret).
4. Storage with ``Store.add_instances`` in batches (blob and rows commit together or not at all).

Every source gets an outcome — stored, duplicate (the de-identified SOP Instance UID is already
stored) or refused with a reason — and one bad file never stops the others. Instances flagged for
burned-in text are stored with the flag (and kept out of training and export until an admin
clears them). Reasons name the file as the user gave it and the problem, never a header value.
"""

from medsight.ingest.convert import Candidate, candidates_from_bytes, check_dicom
from medsight.ingest.ingestor import Ingestor, IngestOutcome, IngestReport
from medsight.ingest.sources import MAX_ZIP_RATIO, Refused, unsafe_member_name

__all__ = [
    "MAX_ZIP_RATIO",
    "Candidate",
    "IngestOutcome",
    "IngestReport",
    "Ingestor",
    "Refused",
    "candidates_from_bytes",
    "check_dicom",
    "unsafe_member_name",
]
