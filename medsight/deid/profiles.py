"""De-identification profiles: the Basic Profile plus a named set of PS3.15 Table E.1-1 options.

dicom-anonymizer ships only the Basic Profile column, so the option columns are derived here, by
rules over the table's rows (written out below, each with the reason). They only ever make the
Basic Profile *keep* more (K), or *clean* (C) instead of removing; an option never removes more.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from medsight.deid.table import ConfidentialityTable, MaskRule, lookup_action, resolve
from medsight.errors import ConfigError, validation_error


class SafePrivateTag(BaseModel):
    """A private attribute known to carry no identity: (group, private creator, element offset 0x00-0xFF)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    group: int = Field(ge=0x0009, le=0xFFFF)
    creator: str = Field(min_length=1, max_length=64)
    offset: int = Field(ge=0x00, le=0xFF)


class DeidProfile(BaseModel):
    """A named set of PS3.15 options; all False is the Basic Profile alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field("custom", min_length=1, max_length=40)
    retain_longitudinal_modified_dates: bool = False
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    retain_uids: bool = False
    clean_descriptors: bool = False
    max_date_shift_days: int = Field(365, ge=1, le=3650)
    # Empty by default: no private attribute is kept unless a site lists it (the Retain Safe Private
    # option). Kept private values are not inspected: list only attributes that hold no free text.
    safe_private_tags: tuple[SafePrivateTag, ...] = ()


PROFILES: dict[str, DeidProfile] = {
    "basic": DeidProfile(name="basic"),
    "research": DeidProfile(
        name="research",
        retain_longitudinal_modified_dates=True,
        retain_patient_characteristics=True,
        clean_descriptors=True,
    ),
}

# CID 7050 "De-identification Method", coding scheme DCM.
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES = {
    "retain_longitudinal_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
}
SAFE_PRIVATE_CODE = ("113111", "Retain Safe Private Option")


def profile_codes(profile: DeidProfile) -> list[tuple[str, str]]:
    """The CID 7050 codes of the Basic Profile and the options ``profile`` applies."""
    codes = [BASIC_PROFILE_CODE] + [code for option, code in OPTION_CODES.items() if getattr(profile, option)]
    return codes + ([SAFE_PRIVATE_CODE] if profile.safe_private_tags else [])


def _config_error(err: ValidationError) -> ConfigError:
    return validation_error(err, list(DeidProfile.model_fields), "de-identification option")


def get_profile(profile: DeidProfile | str | Mapping[str, Any]) -> DeidProfile:
    """A profile by name (``basic``, ``research``), as given, or built from a config mapping."""
    if isinstance(profile, DeidProfile):
        return profile
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ConfigError(
                f"unknown de-identification profile {profile!r}; valid profiles: {', '.join(PROFILES)}."
            )
        return PROFILES[profile]
    if isinstance(profile, Mapping):
        try:
            return DeidProfile.model_validate(dict(profile))
        except ValidationError as err:
            raise _config_error(err) from err
    raise ConfigError(
        f"a de-identification profile is a name ({', '.join(PROFILES)}) or a mapping of options."
    )


# -- option columns -----------------------------------------------------------------------------------
# Retain Patient Characteristics: physical characteristics kept (K); free-text history cleaned (C).
PATIENT_CHARACTERISTICS_KEEP = (
    "PatientAge", "PatientSex", "PatientSize", "PatientWeight", "PatientSizeCodeSequence", "EthnicGroup",
    "EthnicGroupCodeSequence", "SmokingStatus", "PregnancyStatus", "PatientSexNeutered", "LastMenstrualDate",
)  # fmt: skip
PATIENT_CHARACTERISTICS_CLEAN = (
    "AdditionalPatientHistory", "Allergies", "MedicalAlerts", "Occupation", "PatientState", "SpecialNeeds",
    "PreMedication",
)  # fmt: skip
# Retain Device Identity: identifiers of the equipment (not of people or places) kept.
DEVICE_IDENTITY_KEEP = (
    "DeviceSerialNumber", "DeviceUID", "DeviceLabel", "DeviceAlternateIdentifier", "UniqueDeviceIdentifier",
    "ManufacturerDeviceIdentifier", "ManufacturerDeviceClassUID", "StationName", "StationAETitle",
    "DetectorID", "XRayDetectorID", "XRayDetectorLabel", "GantryID", "GeneratorID", "PlateID", "CassetteID",
    "LensSerialNumber", "SourceSerialNumber", "TreatmentMachineName", "SecondaryCaptureDeviceID",
    "HardcopyCreationDeviceID", "ModifyingDeviceID", "PerformedStationAETitle", "PerformedStationName",
    "PerformedStationNameCodeSequence", "ScheduledStationAETitle", "ScheduledStationName",
    "ScheduledStationNameCodeSequence",
)  # fmt: skip
# Clean Descriptors: free-text descriptions and comments of studies, series, protocols and images.
DESCRIPTOR_PATTERN = re.compile(r"(Description|Comments?)$")
DESCRIPTOR_EXTRA = (
    "ProtocolName", "ReasonForStudy", "ReasonForVisit", "ReasonForTheRequestedProcedure",
    "ReasonForTheImagingServiceRequest", "ContrastBolusAgent", "AcquisitionContextDescription",
)  # fmt: skip
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
DATE_VRS = frozenset({"DA", "DT", "TM"})
# Birth date and time stay removed with modified dates: PS3.15 retains age, not birth date.
NOT_SHIFTED = ("PatientBirthDate", "PatientBirthTime")

# An option only replaces an action by a less destructive one (K keeps most, then C).
_RANK = {"K": 0, "C": 1, "U": 2, "U*": 2, "D": 3, "Z": 4, "X": 5}


def _tags(keywords: tuple[str, ...]) -> set[int]:
    tags = {tag_for_keyword(keyword) for keyword in keywords}
    if None in tags:  # a typo here would silently retain nothing: fail at import instead
        raise RuntimeError(f"unknown DICOM keyword in {keywords}")
    return {int(tag) for tag in tags if tag is not None}


def _vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:  # attributes newer than pydicom's dictionary
        return None


def option_actions(profile: DeidProfile, table: ConfidentialityTable) -> dict[int, str]:
    """Per-tag actions of the options ``profile`` applies (Table E.1-1 option columns, derived)."""
    wanted: list[tuple[int, str]] = []
    for tag, action in table.exact.items():
        vr, keyword = _vr(tag), keyword_for_tag(tag)
        if profile.retain_uids and ("U" in action or vr == "UI"):
            wanted.append((tag, "K"))
        if profile.retain_longitudinal_modified_dates and vr in DATE_VRS and keyword not in NOT_SHIFTED:
            wanted.append((tag, "C"))
        descriptor = bool(DESCRIPTOR_PATTERN.search(keyword)) or keyword in DESCRIPTOR_EXTRA
        if profile.clean_descriptors and vr in TEXT_VRS and descriptor:
            wanted.append((tag, "C"))
    if profile.retain_patient_characteristics:
        wanted += [(tag, "K") for tag in _tags(PATIENT_CHARACTERISTICS_KEEP)]
        wanted += [(tag, "C") for tag in _tags(PATIENT_CHARACTERISTICS_CLEAN)]
    if profile.retain_device_identity:
        wanted += [(tag, "K") for tag in _tags(DEVICE_IDENTITY_KEEP)]
    actions: dict[int, str] = {}
    for tag, action in wanted:
        if tag not in table.exact:  # not listed: the Basic Profile keeps it already
            continue
        current = actions.get(tag, resolve(table.exact[tag]))
        if _RANK[action] < _RANK[current]:
            actions[tag] = action
    return actions


@dataclass
class Rules:
    """The single action medsight applies to each listed tag, for one profile and one edition."""

    exact: dict[int, str]
    masks: list[MaskRule]

    def action_for(self, tag: int) -> str | None:
        return lookup_action(self.exact, self.masks, tag)


def build_rules(table: ConfidentialityTable, profile: DeidProfile) -> Rules:
    exact = {tag: resolve(action) for tag, action in table.exact.items()}
    exact.update(option_actions(profile, table))
    masks = [
        MaskRule(m.group, m.element, m.group_mask, m.element_mask, resolve(m.action)) for m in table.masks
    ]
    return Rules(exact=exact, masks=masks)
