"""De-identification of DICOM: PS3.15 Annex E Basic Application Level Confidentiality Profile + options.

What it does
------------
- Applies every row of PS3.15 Table E.1-1 (Basic Profile column) of the chosen edition (default
  2026c, about 655 rows), read from the machine-readable copy shipped by ``dicom-anonymizer``, with
  medsight's own engine (``table.py``, ``actions.py``, ``engine.py``). Actions D (dummy), Z (empty),
  X (remove), K (keep), C (clean), U (keyed UID replacement) and the choices X/Z, X/D, Z/D, X/Z/D,
  X/Z/U* (resolved as in ``table.RESOLVE_CHOICE``), at every depth of nested sequences, including the
  repeating curve (50xx,xxxx) and overlay (60xx,3000 / 60xx,4000) groups; an overlay whose data is
  removed loses its whole group. Group lengths, the file preamble and file-meta AE titles are dropped.
- Removes every private attribute except those on the profile's safe list (empty by default).
- Replaces UIDs by ``2.25.<decimal>`` UIDs from HMAC-SHA256 with the site secret: the same input UID
  gives the same output at every run on every machine of the site, so studies and series stay
  grouped; PatientID and PatientName become ``MS-`` + 12 base32 characters, also keyed.
- Options (Table E.1-1 columns, derived in ``profiles.py``): Retain Longitudinal Temporal Information
  with Modified Dates (one whole-day shift of -365..-1 days per patient, from the keyed original
  PatientID; every DA and DT value left in the object is shifted, times of day are kept; birth date
  stays removed), Retain Patient Characteristics (age, sex, size, weight, ...), Retain Device Identity,
  Retain UIDs, Clean Descriptors (descriptions and comments keep only words from a vocabulary of
  imaging terms, ``actions.SAFE_WORDS``, and small numbers with units; everything else is dropped).
  Profiles: ``basic`` (no option), ``research`` (modified dates, patient characteristics, clean
  descriptors), or any :class:`DeidProfile` built from a config mapping.
- Records PatientIdentityRemoved = YES, LongitudinalTemporalInformationModified, DeidentificationMethod
  and DeidentificationMethodCodeSequence (CID 7050 codes of the profile and options).
- Flags, without changing pixels: ``burned_in_text_risk`` (BurnedInAnnotation = YES, or absent on
  US, SC, secondary capture, VL, encapsulated document and scanned-document objects),
  ``recognizable_visual_features`` (RecognizableVisualFeatures = YES) and ``missing_patient_id``.
- Keeps the original -> pseudonym map only if a linkage recorder is given (``LinkageRecorder``).

What it does NOT do
-------------------
The result is de-identified by the rules above; it is not guaranteed free of identifying information.
- Text burned into the pixels (ultrasound and screen captures, scanned documents) stays: such
  images are only flagged. Overlays stored in unused high bits of Pixel Data are not removed.
- Faces stay recognizable in the pixels of 3D CT/MR head volumes (surface or volume renderings) and
  photographs; no defacing is done.
- Values of private attributes kept on a safe list are not inspected; attributes newer than the
  table's edition, or standard attributes that the table does not list, are kept as they are (as the
  standard's Basic Profile does). Free text in such attributes, unusual vendor use of standard
  attributes and rare names that coincide with imaging words ("BRAIN") can leak.
- Structured reports: the Content Sequence is de-identified item by item (names dummied, long free
  text cleaned), which protects better than nothing but does not implement Clean Structured Content.
- The date shift hides absolute dates, not intervals, ages or the season of a short-shifted study.
- Anyone holding the site secret can recompute pseudonyms from a known original ID; keep it secret.
"""

from medsight.deid.engine import (
    BURNED_IN_TEXT_RISK,
    MISSING_PATIENT_ID,
    RECOGNIZABLE_FEATURES,
    Deidentifier,
    DeidResult,
    LinkageRecorder,
    burned_in_flags,
    deidentify,
)
from medsight.deid.profiles import PROFILES, DeidProfile, SafePrivateTag, get_profile
from medsight.deid.table import DEFAULT_EDITION, EDITIONS, load_table
from medsight.deid.uids import date_shift_days, patient_pseudonym, pseudonymise_uid

__all__ = [
    "BURNED_IN_TEXT_RISK",
    "DEFAULT_EDITION",
    "EDITIONS",
    "MISSING_PATIENT_ID",
    "PROFILES",
    "RECOGNIZABLE_FEATURES",
    "DeidProfile",
    "DeidResult",
    "Deidentifier",
    "LinkageRecorder",
    "SafePrivateTag",
    "burned_in_flags",
    "date_shift_days",
    "deidentify",
    "get_profile",
    "load_table",
    "patient_pseudonym",
    "pseudonymise_uid",
]
