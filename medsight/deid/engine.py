"""The de-identification engine: walks a dataset, applies the profile's rules, marks what was done."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol

from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from medsight.deid.actions import Context, apply_action
from medsight.deid.profiles import DeidProfile, Rules, build_rules, get_profile, profile_codes
from medsight.deid.table import DEFAULT_EDITION, load_table
from medsight.deid.uids import date_shift_days, patient_pseudonym, pseudonymise_uid
from medsight.keys import load_or_create_key

BURNED_IN_TEXT_RISK = "burned_in_text_risk"
RECOGNIZABLE_FEATURES = "recognizable_visual_features"
MISSING_PATIENT_ID = "missing_patient_id"

# Images that often carry text in their pixels when they do not say otherwise (BurnedInAnnotation absent).
RISKY_MODALITIES = frozenset({"US", "IVUS", "SC", "DOC", "OT"})
RISKY_SOP_CLASS_ROOTS = (
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture and the multi-frame SC classes (.7.1 - .7.4)
    "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound (.6.1, .6.2, .6.3)
    "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame (.3.1, and the retired .3)
    "1.2.840.10008.5.1.4.1.1.104",  # Encapsulated documents (PDF, CDA, ...)
    "1.2.840.10008.5.1.4.1.1.77.1",  # VL images: photographs, endoscopy, scanned documents
)
DOCUMENT_CONVERSION_TYPES = frozenset({"SD", "SI", "DF", "DV", "WSD", "SYN"})
# Inside D/C sequences, unlisted values of these VRs are cleaned: long free text and names. Short
# strings (LO, SH) are kept there, as they hold the code values and meanings of structured content.
STRICT_VRS = frozenset({"ST", "LT", "UT", "UC", "PN"})
# File meta kept; anything else in group 0002 (AE titles, addresses, private information) is dropped.
FILE_META_KEPT = frozenset({0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013})


class LinkageRecorder(Protocol):
    """Receives each (kind, original, pseudonym) pair when linkage is enabled.

    ``kind`` is ``"patient_id"`` or ``"uid"``. The same pair may arrive more than once. medsight's
    store keeps these encrypted under a separate key; without a recorder nothing is kept.
    """

    def __call__(self, kind: str, original: str, pseudonym: str) -> None: ...


@dataclass
class DeidResult:
    dataset: Dataset
    patient_pseudonym: str
    flags: list[str] = field(default_factory=list)
    date_shift_days: int | None = None
    profile: str = "basic"


@cache
def _rules(edition: str, profile: DeidProfile) -> Rules:
    """Rules are shared between de-identifiers of one edition and profile (they are never changed)."""
    return build_rules(load_table(edition), profile)


def _in_family(uid: str, root: str) -> bool:
    return uid == root or uid.startswith(root + ".")


def burned_in_flags(dataset: Dataset) -> list[str]:
    """Flags for text or faces that may be in the pixels; the pixels themselves are never changed."""
    flags = []
    burned_in = str(dataset.get("BurnedInAnnotation", "") or "").strip().upper()
    sop_class = str(dataset.get("SOPClassUID", "") or "")
    risky = (
        str(dataset.get("Modality", "") or "").upper() in RISKY_MODALITIES
        or any(_in_family(sop_class, root) for root in RISKY_SOP_CLASS_ROOTS)
        or str(dataset.get("ConversionType", "") or "").upper() in DOCUMENT_CONVERSION_TYPES
    )
    if burned_in == "YES" or (burned_in not in ("YES", "NO") and risky):
        flags.append(BURNED_IN_TEXT_RISK)
    if str(dataset.get("RecognizableVisualFeatures", "") or "").strip().upper() == "YES":
        flags.append(RECOGNIZABLE_FEATURES)
    return flags


class Deidentifier:
    """De-identify datasets with one profile, one site secret and one edition of PS3.15 Table E.1-1."""

    def __init__(
        self,
        profile: DeidProfile | str | Mapping[str, Any] = "basic",
        secret: bytes | None = None,
        linkage: LinkageRecorder | Callable[[str, str, str], None] | None = None,
        edition: str = DEFAULT_EDITION,
    ) -> None:
        self.profile = get_profile(profile)
        if secret is None:
            secret = load_or_create_key("site", "MEDSIGHT_SITE_SECRET")
        pseudonymise_uid("1.2", secret)  # refuse a bad secret now, not at the first file
        self.secret = secret
        self.linkage = linkage
        self.table = load_table(edition)
        self.rules = _rules(edition, self.profile)
        self._safe_private = {(t.group, t.creator, t.offset) for t in self.profile.safe_private_tags}

    def __call__(self, dataset: Dataset) -> DeidResult:
        ds = copy.deepcopy(dataset)  # the caller's dataset is never touched
        flags = burned_in_flags(ds)
        patient_id = str(ds.get("PatientID", "") or "").strip()
        if not patient_id:  # one pseudonym per study rather than one for every patient without an ID
            flags.append(MISSING_PATIENT_ID)
        patient_key = patient_id or "study:" + str(ds.get("StudyInstanceUID", "") or "")
        pseudonym = patient_pseudonym(patient_key, self.secret)
        shift = None
        if self.profile.retain_longitudinal_modified_dates:
            shift = date_shift_days(patient_key, self.secret, self.profile.max_date_shift_days)
        uid_map: dict[str, str] = {}

        def map_uid(uid: str) -> str:
            uid = str(uid).strip().rstrip("\x00")
            if uid not in uid_map:
                uid_map[uid] = pseudonymise_uid(uid, self.secret)
            return uid_map[uid]

        ctx = Context(
            map_uid=map_uid, walk=lambda item, strict: self._walk(item, ctx, strict), shift_days=shift
        )
        self._remove_overlays(ds)
        self._walk(ds, ctx, strict=False)
        self._clean_file(ds, ctx)
        self._mark(ds, pseudonym, shift)
        if self.linkage is not None:
            if patient_id:
                self.linkage("patient_id", patient_id, pseudonym)
            for original, new in uid_map.items():
                self.linkage("uid", original, new)
        return DeidResult(ds, pseudonym, flags, shift, self.profile.name)

    # -- the walk ---------------------------------------------------------------------------------------
    def _walk(self, ds: Dataset, ctx: Context, strict: bool) -> None:
        """Apply the rules to every element of ``ds``; sequences come back here through ``ctx.walk``.

        ``strict`` is set inside sequences the table replaces with dummies (D) or cleans (C), such as
        the SR Content Sequence: there, free text and names the table does not list are cleaned too.
        """
        self._remove_private(ds, ctx)
        for tag in list(ds.keys()):
            tag = BaseTag(tag)
            if tag.is_private:
                continue  # kept by the safe list
            # Group lengths would be wrong after the changes; command (0000,eeee) and file meta
            # (0002,eeee) elements have no place in a dataset's body (file meta is handled apart).
            if tag.element == 0x0000 or tag.group in (0x0000, 0x0002):
                del ds[tag]
                continue
            element = ds[tag]
            action = self.rules.action_for(tag)
            if action is None:
                action = "C" if strict and element.VR in STRICT_VRS else "K"
            apply_action(ds, element, action, ctx)

    def _remove_private(self, ds: Dataset, ctx: Context) -> None:
        kept_blocks: set[tuple[int, int]] = set()
        private = [t for t in map(BaseTag, ds.keys()) if t.is_private]
        for tag in private:
            if tag.element < 0x0100:
                continue  # private creators: decided below, once we know which blocks keep elements
            creator = ds.get((tag.group, tag.element >> 8))
            name = str(creator.value).strip() if creator is not None else ""
            if (tag.group, name, tag.element & 0xFF) in self._safe_private:
                kept_blocks.add((tag.group, tag.element >> 8))
                if ds[tag].VR == "SQ":
                    for item in ds[tag].value:
                        self._walk(item, ctx, True)
            else:
                del ds[tag]
        for tag in private:
            if tag.element < 0x0100 and (tag.group, tag.element) not in kept_blocks:
                del ds[tag]

    def _remove_overlays(self, ds: Dataset) -> None:
        """Without its Overlay Data (60xx,3000 is X) an overlay is invalid, so its whole group goes."""
        groups = {
            t.group for t in map(BaseTag, ds.keys()) if 0x6000 <= t.group <= 0x60FF and t.group % 2 == 0
        }
        for group in groups:
            if self.rules.action_for((group << 16) | 0x3000) == "X":
                for tag in [t for t in map(BaseTag, ds.keys()) if t.group == group]:
                    del ds[tag]

    def _clean_file(self, ds: Dataset, ctx: Context) -> None:
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            for tag in list(meta.keys()):
                if int(tag) not in FILE_META_KEPT:
                    del meta[tag]
                else:  # (0002,0003) is U in the table: it follows the SOP Instance UID's pseudonym
                    apply_action(meta, meta[tag], self.rules.action_for(tag) or "K", ctx)
        if hasattr(ds, "preamble") and ds.preamble is not None:
            ds.preamble = b"\x00" * 128  # the preamble is free bytes that may hold anything
        if hasattr(ds, "filename"):
            ds.filename = None  # the original path may name the patient

    def _mark(self, ds: Dataset, pseudonym: str, shift: int | None) -> None:
        ds.PatientID = pseudonym
        ds.PatientName = pseudonym
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if shift is not None else "REMOVED"
        codes = profile_codes(self.profile)
        method = [f"medsight PS3.15 E.1 table {self.table.edition}", f"profile {self.profile.name}"]
        method += [meaning for _, meaning in codes]
        value = ds.get("DeidentificationMethod")
        previous = [] if not value else [value] if isinstance(value, str) else list(value)
        ds.DeidentificationMethod = [text[:64] for text in previous + method]
        items = list(ds.get("DeidentificationMethodCodeSequence", None) or [])
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)


def deidentify(
    dataset: Dataset, profile: DeidProfile | str | Mapping[str, Any] = "basic", secret: bytes | None = None
) -> DeidResult:
    """De-identify one dataset (a copy); see :class:`Deidentifier` to reuse the set-up for many."""
    return Deidentifier(profile, secret)(dataset)
