"""The PS3.15 actions on one data element: D, Z, X, K, C, U (and U* for image-reference sequences).

``apply_action`` changes the element inside its dataset. Sequences are handed back to the engine
through ``Context.walk`` so every item is de-identified by the same rules, to any depth.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence

DUMMY_TEXT = "ANONYMIZED"
DUMMY_VALUES = {
    "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000D", "IS": "0", "DS": "0",
    "UR": "urn:medsight:anonymized", "AE": DUMMY_TEXT,
}  # fmt: skip
STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
FREE_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"})
MAX_LENGTH = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240, "UC": 10240, "UT": 10240}

# Clean (C) of free text keeps only words from this vocabulary of imaging terms and small numbers with
# units, so names, places, phone numbers and record numbers inside a description are dropped. What is
# left is upper-cased; if nothing is left the value becomes empty. Mistakes go towards dropping words.
_SAFE_WORDS_TEXT = """
HEAD BRAIN NECK SPINE CERVICAL THORACIC LUMBAR SACRUM SACRAL COCCYX CHEST THORAX LUNG LUNGS HEART CARDIAC
CORONARY ABDOMEN ABDOMINAL ABD PELVIS PELVIC LIVER HEPATIC KIDNEY KIDNEYS RENAL PANCREAS SPLEEN BOWEL COLON
RECTUM STOMACH BLADDER PROSTATE UTERUS OVARY BREAST BREASTS KNEE HIP SHOULDER ELBOW WRIST HAND FOOT FEET
ANKLE ARM LEG FEMUR TIBIA HUMERUS SKULL SINUS SINUSES ORBIT ORBITS FACIAL TEMPORAL IAC PITUITARY SELLA
AORTA AORTIC CAROTID CAROTIDS VESSELS VASCULAR BONE BONES JOINT EXTREMITY EXTREMITIES UPPER LOWER WHOLE
BODY THYROID CIRCLE WILLIS VENTRICLE ATRIUM VALVE MEDIASTINUM PLEURA ADRENAL GALLBLADDER BILIARY
CT MR MRI PET SPECT NM US XR CR DX MG RF XA SC OT CTA MRA MRV ANGIO ANGIOGRAM ANGIOGRAPHY ULTRASOUND
DOPPLER ECHO MAMMOGRAM MAMMOGRAPHY TOMOSYNTHESIS FLUORO SCAN SCOUT LOCALIZER LOCALISER SURVEY TOPOGRAM
AXIAL AX CORONAL COR SAGITTAL SAG OBLIQUE TRANSVERSE 2D 3D 4D MPR MIP MINIP VR RECON RECONSTRUCTION
HELICAL SPIRAL SEQUENTIAL ROUTINE STANDARD PROTOCOL SERIES STUDY EXAM EXAMINATION IMAGE IMAGES VIEW VIEWS
AP PA LAT LATERAL LEFT RIGHT LT RT BILATERAL BILAT UNILATERAL SINGLE MULTI PHASE ARTERIAL VENOUS PORTAL
DELAYED EARLY LATE DYNAMIC PERFUSION DIFFUSION DWI DTI ADC EPI FMRI BOLD FLAIR T1 T2 T1W T2W PD STIR GRE
SE FSE TSE SWI TOF FIESTA SPGR MPRAGE FAT SAT FATSAT FS WATER SUPPRESSION SUPPRESSED INVERSION RECOVERY
CONTRAST WITH WITHOUT W WO AND OR OF FOR TO IN ON AT THE A NO NON PRE POST IV ORAL ENHANCED UNENHANCED
PLAIN THIN THICK SLICE SLICES MM CM SOFT TISSUE WINDOW KERNEL FILTER SHARP SMOOTH LOW HIGH DOSE RES
RESOLUTION FAST QUICK SCREENING FOLLOW UP FOLLOWUP BASELINE REST STRESS EXERCISE GATED NONGATED CALCIUM
SCORE SCORING BIOPSY GUIDED INJECTION TRAUMA STROKE TUMOR TUMOUR MASS NODULE FRACTURE INFECTION
PAIN EMBOLISM PE SEIZURE HEADACHE CANCER STAGING RESTAGING METASTASES METS CALIBRATION PHANTOM TEST QA
DERIVED PRIMARY SECONDARY ORIGINAL REFORMAT REFORMATTED SUBTRACTION SUBTRACTED MAP MAPS FIELD FUNCTIONAL
"""
SAFE_WORDS = frozenset(_SAFE_WORDS_TEXT.split())
_NUMBER = re.compile(r"\d{1,2}(\.\d{1,3})?|\d{1,4}(\.\d{1,3})?(MM|CM|ML|KV|KVP|MAS|MA|MS|T|D|DEG|SEC|S)")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:\.[0-9]+)?")


def clean_text(text: str, vr: str = "LT") -> str:
    """Keep only safe words and small numbers (see SAFE_WORDS); upper-cased, single-spaced."""
    words = [w.upper() for w in _TOKEN.findall(str(text))]
    kept = " ".join(w for w in words if w in SAFE_WORDS or _NUMBER.fullmatch(w))
    return kept[: MAX_LENGTH.get(vr, 64)].strip()


def _shift_day(text: str, days: int, vr: str) -> str:
    digits = text.replace(".", "") if vr == "DA" else text  # DA: also the retired ACR-NEMA YYYY.MM.DD
    padded = (digits + "0101")[:8] if len(digits) in (4, 6) else digits[:8]
    shifted = date(int(padded[:4]), int(padded[4:6]), int(padded[6:8])) + timedelta(days=days)
    return shifted.strftime("%Y%m%d")[: max(len(digits[:8]), 4)] + digits[8:]


def shift_value(value: str, vr: str, days: int) -> str:
    """A DA or DT value moved by whole days (time of day and zone kept); "" if it cannot be read."""
    value = str(value).strip()
    if not value:
        return value
    try:
        if vr == "DA" and "-" in value:  # a range
            return "-".join(_shift_day(part, days, vr) if part else "" for part in value.split("-"))
        return _shift_day(value, days, vr)
    except ValueError:  # not a date: dropping it is safer than keeping it
        return ""


@dataclass
class Context:
    """What actions need from the engine: the UID map, the date shift and the way back into sequences."""

    map_uid: Callable[[str], str]
    walk: Callable[[Dataset, bool], None]
    shift_days: int | None


def _values(element: DataElement) -> list:
    if element.value is None:
        return []
    return list(element.value) if element.VM > 1 else [element.value]


def _set(element: DataElement, values: list) -> None:
    element.value = values[0] if len(values) == 1 else values


def empty(element: DataElement) -> None:
    element.value = Sequence() if element.VR == "SQ" else ("" if element.VR in STRING_VRS else None)


def dummy(element: DataElement, ctx: Context) -> None:
    vr = element.VR
    if vr == "SQ":
        if keyword_for_tag(element.tag).endswith("CodeSequence"):  # a code that may name a person or place
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "ANON", "99MEDSIGHT", "Removed"
            element.value = Sequence([item] if len(element.value) else [])
        else:  # keep the structure, de-identify the items strictly (free text cleaned too)
            for item in element.value:
                ctx.walk(item, True)
    elif vr == "UI":
        _set(element, [ctx.map_uid(v) for v in _values(element) if str(v).strip()] or [""])
    elif vr in ("DA", "DT") and ctx.shift_days is not None and _values(element):
        _set(element, [shift_value(v, vr, ctx.shift_days) for v in _values(element)])
    elif vr in DUMMY_VALUES:
        element.value = DUMMY_VALUES[vr]
    elif vr in STRING_VRS:
        element.value = DUMMY_TEXT
    elif vr in NUMBER_VRS:
        element.value = 0
    else:  # OB, OW, OD, OF, OL, OV, UN: zero bytes, a length every binary VR accepts
        element.value = b"\x00" * 8


def clean(element: DataElement, ctx: Context) -> None:
    vr = element.VR
    if vr == "SQ":
        for item in element.value:
            ctx.walk(item, True)
    elif vr in ("DA", "DT") and ctx.shift_days is not None:
        _set(element, [shift_value(v, vr, ctx.shift_days) for v in _values(element)] or [""])
    elif vr == "TM" and ctx.shift_days is not None:
        pass  # a shift by whole days leaves the time of day as it was
    elif vr in FREE_TEXT_VRS:
        _set(element, [clean_text(v, vr) for v in _values(element)] or [""])
    elif vr == "PN" and _values(element):
        element.value = DUMMY_TEXT
    else:
        empty(element)


def apply_action(dataset: Dataset, element: DataElement, action: str, ctx: Context) -> None:
    """Apply one resolved action (``D Z X K C U U*``) to ``element`` of ``dataset``."""
    vr = element.VR
    if action == "X":
        del dataset[element.tag]
    elif action == "Z":
        empty(element)
    elif action == "D":
        dummy(element, ctx)
    elif action == "C":
        clean(element, ctx)
    elif action in ("U", "U*") and vr == "UI":
        _set(element, [ctx.map_uid(v) if str(v).strip() else "" for v in _values(element)] or [""])
    elif action == "U*" and vr == "SQ":
        for item in element.value:  # kept for its references only: strict, free text cleaned too
            ctx.walk(item, True)
    elif action == "K" and vr == "SQ":
        for item in element.value:  # K keeps a sequence but cleans its items (PS3.15 E.1.1)
            ctx.walk(item, False)
    elif action == "K" and vr in ("DA", "DT") and ctx.shift_days is not None:
        _set(element, [shift_value(v, vr, ctx.shift_days) for v in _values(element)] or [""])
    elif action == "K":
        pass
    else:  # U on something that is not a UID: no value of meaning can be kept
        empty(element)
