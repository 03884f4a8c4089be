"""Tests of medsight.deid on real DICOM files with planted identifying information.

Each test de-identifies real files (../shared/data/dicom and pydicom's own test files), then looks for
what was planted in the serialised bytes of the result and in the text of every element.
"""

from __future__ import annotations

import copy
import io
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from medsight.deid import (
    BURNED_IN_TEXT_RISK,
    EDITIONS,
    PROFILES,
    Deidentifier,
    DeidProfile,
    deidentify,
    get_profile,
    load_table,
    patient_pseudonym,
    pseudonymise_uid,
)
from medsight.deid.actions import clean_text, shift_value
from medsight.deid.table import resolve
from medsight.errors import ConfigError

SECRET = bytes(range(32))
OTHER_SECRET = b"another site's secret, 32 bytes!"

PLANTED = [
    "Quixfeld",  # patient name
    "Marabel",
    "MRN80417733",  # patient ID
    "19570312",  # birth date
    "Wallabyway",  # address
    "5558675309",  # phone
    "Elsewhere General",  # institution
    "Hauserton",  # referring physician
    "Olgavanova",  # operator
    "ACC99123",  # accession number
    "SPS77312",  # scheduled procedure step ID (inside a sequence)
    "Zoltanek",  # a person name nested two sequences deep
    "OTHER5521",  # other patient ID (inside OtherPatientIDsSequence)
    "Privatename",  # private tag
    "Curvelabelname",  # retired curve group 50xx
    "Overlaycomment",  # overlay group 60xx
]


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)  # never the network: only files shipped with pydicom
    if path is None:
        pytest.fail(f"pydicom's test file {name} is not installed", pytrace=False)
    return Path(path)


def shared_file(shared_data: Path, relative: str) -> Path:
    matches = sorted(shared_data.glob(relative))
    if not matches:
        pytest.fail(f"{relative} is missing from {shared_data}", pytrace=False)
    return matches[0]


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    if getattr(ds, "file_meta", None) is not None and "TransferSyntaxUID" in ds.file_meta:
        ds.save_as(buffer)
    else:
        ds.save_as(buffer, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def all_text(ds: Dataset) -> str:
    return "\n".join(f"{element.tag} {element.value!s}" for element in ds.iterall())


def plant_phi(ds: Dataset) -> Dataset:
    ds.PatientName = "Quixfeld^Marabel"
    ds.PatientID = "MRN80417733"
    ds.PatientBirthDate = "19570312"
    ds.PatientAddress = "12 Wallabyway Sydney"
    ds.PatientTelephoneNumbers = "5558675309"
    ds.PatientSex, ds.PatientAge, ds.PatientWeight = "F", "067Y", "61.5"
    ds.InstitutionName = "St Elsewhere General Hospital"
    ds.ReferringPhysicianName = "Hauserton^Gregorius"
    ds.OperatorsName = "Olgavanova^Irina"
    ds.AccessionNumber = "ACC99123"
    ds.StudyDescription = "CT HEAD with contrast for Marabel Quixfeld"
    ds.StationName = "CTSCAN7"
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID = "OTHER5521", "Elsewhere General"
    ds.OtherPatientIDsSequence = Sequence([other])
    request = Dataset()
    request.ScheduledProcedureStepID, request.RequestedProcedureID = "SPS77312", "SPS77312-R"
    ds.RequestAttributesSequence = Sequence([request])
    # A sequence the table does not list (kept, K) holding identifying attributes two levels deep.
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-A0100", "SRT", "Brain"
    inner.PersonName = "Zoltanek^Bela"
    inner.ReferringPhysicianName = "Zoltanek^Bela"
    outer = Dataset()
    outer.CodeValue, outer.CodingSchemeDesignator, outer.CodeMeaning = "T-D1100", "SRT", "Head"
    outer.AnatomicRegionModifierSequence = Sequence([inner])
    outer.ScheduledProcedureStepID = "SPS77312"
    ds.AnatomicRegionSequence = Sequence([outer])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.77312"
    ds.ReferencedStudySequence = Sequence([study_ref])
    block = ds.private_block(0x0011, "ACME PHI STORE", create=True)
    block.add_new(0x01, "LO", "Privatename^Quixfeld")
    private_item = Dataset()
    private_item.PatientName = "Privatename^Nested"
    block.add_new(0x02, "SQ", Sequence([private_item]))
    ds.add_new(0x50002500, "LO", "Curvelabelname")  # Curve Label (retired, 50xx,2500)
    ds.add_new(0x60004000, "LT", "Overlaycomment Quixfeld")  # Overlay Comments
    return ds


def original_uids(ds: Dataset) -> list[str]:
    keywords = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
    uids = [str(ds[k].value) for k in keywords if k in ds]
    return uids + ["1.2.826.0.1.3680043.2.1125.77312"]


def real_files(shared_data: Path) -> list[Path]:
    return [
        shared_file(shared_data, "dicom/ct_head_ge/01.dcm"),
        shared_file(shared_data, "dicom/mr_brain_epi_ge/*-00001.dcm"),
        pydicom_file("CT_small.dcm"),
        pydicom_file("MR_small.dcm"),
        pydicom_file("US1_J2KR.dcm"),
        pydicom_file("SC_rgb.dcm"),
        pydicom_file("explicit_VR-UN.dcm"),
    ]


def assert_nothing_left(result_ds: Dataset, forbidden: list[str]) -> None:
    raw = to_bytes(result_ds).upper()
    text = all_text(result_ds).upper()
    for value in forbidden:
        assert value.upper().encode() not in raw, f"{value!r} left in the de-identified bytes"
        assert value.upper() not in text, f"{value!r} left in an element of the de-identified dataset"


# -- the standard's table -----------------------------------------------------------------------------
def test_table_has_every_row_of_each_edition():
    table = load_table("2026c")
    assert len(table) > 600
    assert len(table) == len(dicomfields_2026c.ALL_TAGS)
    assert len(table.masks) == 3  # curve data, overlay data, overlay comments
    assert table.action_for(0x00100010) == "Z"  # Patient's Name
    assert table.action_for(0x00080080) == "X/Z/D"  # Institution Name
    assert table.action_for(0x50120022) == "X"  # curve data, any 50xx group
    assert table.action_for(0x601E4000) == "X"  # overlay comments, any 60xx group
    assert table.action_for(0x60023000) == "X"  # overlay data
    assert table.action_for(0x60020010) is None  # overlay rows are not listed
    assert table.action_for(0x00280010) is None  # Rows
    for edition in EDITIONS:
        assert len(load_table(edition)) > 600
    with pytest.raises(ConfigError, match="2026c"):
        load_table("2099z")


def _planted_value(vr: str, n: int):
    if vr == "SQ":
        item = Dataset()
        item.PersonName = "Quixfeld^Marabel"
        item.TextValue = "Quixfeld was seen"
        return Sequence([item])
    values = {
        "DA": "19570312", "TM": "101010", "DT": "19570312101010", "AS": "045Y", "IS": "7", "DS": "7.5",
        "UI": f"1.2.826.0.1.3680043.2.1125.{n}", "AT": 0x00100010, "UR": "http://quixfeld.example",
    }  # fmt: skip
    if vr in values:
        return values[vr]
    if vr in ("US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"):
        return 7
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return b"QUIXFELD"
    return "QUIXFELD" if vr in ("CS", "AE", "SH") else "Quixfeld^Marabel"


def test_every_row_of_the_table_is_applied():
    """One dataset holding every attribute of the 2026c table: each must come out as its action says."""
    table = load_table("2026c")
    ds = Dataset()
    planted: dict[int, str] = {}
    for n, tag in enumerate(sorted(table.exact)):
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            vr = "UN"  # attributes newer than pydicom's dictionary
        ds.add_new(tag, vr, _planted_value(vr, n))
        planted[tag] = vr
    for tag in (0x50022500, 0x60024000, 0x60023000):  # one tag per masked row
        ds.add_new(tag, "OB" if tag == 0x60023000 else "LO", b"QUIXFELD" if tag == 0x60023000 else "Quixfeld")
    result = Deidentifier("basic", secret=SECRET)(ds).dataset
    out_of_table_marks = {0x00100010, 0x00100020}  # set to the pseudonym after the table's action
    for tag, vr in planted.items():
        action = resolve(table.exact[tag])
        name = f"{keyword_for_tag(tag) or hex(tag)} ({table.exact[tag]})"
        if tag >> 16 in (0x0000, 0x0002):  # command and file meta elements never stay in a body
            assert tag not in result, name
        elif tag in out_of_table_marks:
            assert str(result[tag].value).startswith("MS-"), name
        elif action == "X":
            assert tag not in result, name
        elif action == "Z":
            assert tag in result and result[tag].is_empty, name
        elif action in ("D", "U", "U*"):
            assert tag in result, name
            if vr == "SQ":
                continue  # items checked by the bytes search below
            assert not result[tag].is_empty and result[tag].value != ds[tag].value, name
        else:
            pytest.fail(f"basic profile resolved {name} to {action}")
    assert not any(t in result for t in (0x50022500, 0x60024000, 0x60023000))
    assert_nothing_left(result, ["QUIXFELD", "19570312", "1.2.826.0.1.3680043.2.1125."])


# -- planted PHI in real files ------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["basic", "research"])
def test_planted_phi_is_gone_from_real_files(shared_data, profile):
    deid = Deidentifier(profile, secret=SECRET)
    for path in real_files(shared_data):
        original = plant_phi(pydicom.dcmread(path))
        uids = original_uids(original)
        result = deid(original)
        assert_nothing_left(result.dataset, PLANTED + uids)
        ds = result.dataset
        assert (
            ds.PatientID
            == ds.PatientName
            == result.patient_pseudonym
            == patient_pseudonym("MRN80417733", SECRET)
        )
        assert re.fullmatch(r"MS-[A-Z2-7]{12}", result.patient_pseudonym)
        assert ds.PatientIdentityRemoved == "YES"
        assert not any(element.tag.is_private for element in ds.iterall())
        assert len(ds.ReferencedStudySequence) == 0  # X/Z -> Z: present, empty
        assert "RequestAttributesSequence" not in ds and "OtherPatientIDsSequence" not in ds
        inner = ds.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0]
        assert inner.CodeMeaning == "Brain" and "PersonName" in inner  # codes kept, name dummied
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        reread = pydicom.dcmread(io.BytesIO(to_bytes(ds)))
        assert reread.SOPInstanceUID == pseudonymise_uid(uids[2], SECRET)


def test_structured_report_text_and_observers_are_cleaned():
    original = pydicom.dcmread(pydicom_file("test-SR.dcm"))
    item = original.ContentSequence[0]
    item.TextValue = "Seen by Dr Quixfeld at Elsewhere General"
    result = deidentify(original, "basic", secret=SECRET).dataset
    assert_nothing_left(result, ["Quixfeld", "Elsewhere", "Riesmeier", "OFFIS e.V."])
    assert result.ContentSequence[0].TextValue == "AT"  # only words of the imaging vocabulary remain


def test_overlay_group_goes_with_its_data():
    original = pydicom.dcmread(pydicom_file("MR-SIEMENS-DICOM-WithOverlays.dcm"))
    assert any(0x6000 <= t.group <= 0x60FF for t in map(BaseTag, original.keys()))
    result = deidentify(original, secret=SECRET).dataset
    assert not any(0x6000 <= t.group <= 0x60FF for t in map(BaseTag, result.keys()))


# -- pseudonyms and grouping --------------------------------------------------------------------------
def test_uids_are_consistent_per_secret_and_keep_grouping(shared_data):
    paths = sorted((shared_data / "dicom" / "ct_head_ge").glob("*.dcm"))[:3]
    originals = [pydicom.dcmread(p) for p in paths]
    first = [Deidentifier("basic", secret=SECRET)(ds).dataset for ds in originals]
    again = [Deidentifier("basic", secret=SECRET)(ds).dataset for ds in originals]
    other = [Deidentifier("basic", secret=OTHER_SECRET)(ds).dataset for ds in originals]
    for a, b, c, o in zip(first, again, other, originals, strict=True):
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            assert a[keyword].value == b[keyword].value != c[keyword].value
            assert a[keyword].value != o[keyword].value
            assert a[keyword].value == pseudonymise_uid(o[keyword].value, SECRET)
    assert len({ds.StudyInstanceUID for ds in first}) == 1 == len({ds.SeriesInstanceUID for ds in first})
    assert len({ds.SOPInstanceUID for ds in first}) == 3
    uid = pseudonymise_uid(originals[0].SOPInstanceUID, SECRET)
    assert re.fullmatch(r"2\.25\.[1-9][0-9]*", uid) and len(uid) <= 64
    assert patient_pseudonym("X1", SECRET) != patient_pseudonym("X1", OTHER_SECRET)


def test_image_references_follow_the_referenced_image():
    original = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    source = Dataset()
    source.ReferencedSOPClassUID = original.SOPClassUID
    source.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.5"
    original.SourceImageSequence = Sequence([source])  # X/Z/U*: kept, its UIDs replaced
    result = deidentify(original, secret=SECRET).dataset
    item = result.SourceImageSequence[0]
    assert item.ReferencedSOPInstanceUID == pseudonymise_uid("1.2.826.0.1.3680043.2.1125.5", SECRET)
    assert item.ReferencedSOPClassUID == original.SOPClassUID  # a class UID identifies nobody


def test_date_shift_is_per_patient(shared_data):
    ct = pydicom.dcmread(shared_file(shared_data, "dicom/ct_head_ge/01.dcm"))
    mr = pydicom.dcmread(shared_file(shared_data, "dicom/mr_brain_epi_ge/*-00001.dcm"))
    for ds, study_date in ((ct, "20200110"), (mr, "20200301")):
        ds.PatientID, ds.StudyDate, ds.StudyTime = "PAT-1", study_date, "093000"
    other = plant_phi(pydicom.dcmread(pydicom_file("CT_small.dcm")))
    other.StudyDate = "20200110"
    deid = Deidentifier("research", secret=SECRET)
    a, b, c = deid(ct), deid(mr), deid(other)
    assert a.date_shift_days == b.date_shift_days and -365 <= a.date_shift_days <= -1
    assert c.date_shift_days != a.date_shift_days
    expected = date(2020, 1, 10) + timedelta(days=a.date_shift_days)
    assert a.dataset.StudyDate == expected.strftime("%Y%m%d") != ct.StudyDate
    gap = date.fromisoformat(_iso(b.dataset.StudyDate)) - date.fromisoformat(_iso(a.dataset.StudyDate))
    assert gap.days == 51  # the interval between the patient's two studies is kept
    assert a.dataset.StudyTime == "093000"  # whole-day shifts leave the time of day
    assert "PatientBirthDate" not in c.dataset or c.dataset.PatientBirthDate == ""
    assert a.dataset.LongitudinalTemporalInformationModified == "MODIFIED"
    basic = Deidentifier("basic", secret=SECRET)(ct)
    assert basic.date_shift_days is None and basic.dataset.StudyDate == ""


def _iso(dicom_date: str) -> str:
    return f"{dicom_date[:4]}-{dicom_date[4:6]}-{dicom_date[6:]}"


def test_shift_value_forms():
    assert shift_value("20200301", "DA", -1) == "20200229"
    assert shift_value("20200101-20200131", "DA", -1) == "20191231-20200130"
    assert shift_value("20200301120000.5-0500", "DT", -1) == "20200229120000.5-0500"
    assert shift_value("not a date", "DA", -3) == ""


# -- options and profiles -----------------------------------------------------------------------------
def test_research_keeps_patient_characteristics_and_cleans_descriptors():
    original = plant_phi(pydicom.dcmread(pydicom_file("MR_small.dcm")))
    basic = deidentify(original, "basic", secret=SECRET).dataset
    research = deidentify(original, "research", secret=SECRET).dataset
    assert (research.PatientSex, research.PatientAge, research.PatientWeight) == ("F", "067Y", 61.5)
    assert basic.PatientSex == "" and "PatientAge" not in basic and "PatientWeight" not in basic
    assert "StudyDescription" not in basic
    assert research.StudyDescription == "CT HEAD WITH CONTRAST FOR"
    assert (
        clean_text("Follow-up MR brain, Dr. Quixfeld 5558675309, 3 mm T1W") == "FOLLOW UP MR BRAIN 3 MM T1W"
    )


def test_method_attributes_list_the_options():
    original = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    basic = deidentify(original, "basic", secret=SECRET).dataset
    research = deidentify(original, "research", secret=SECRET).dataset
    assert [i.CodeValue for i in basic.DeidentificationMethodCodeSequence] == ["113100"]
    codes = [(i.CodeValue, i.CodingSchemeDesignator) for i in research.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113107", "DCM"), ("113108", "DCM"), ("113105", "DCM")]
    assert research.PatientIdentityRemoved == basic.PatientIdentityRemoved == "YES"
    assert "profile research" in research.DeidentificationMethod
    assert "Clean Descriptors Option" in research.DeidentificationMethod


def test_custom_profile_from_config(shared_data):
    profile = get_profile({"name": "equipment-qa", "retain_device_identity": True, "retain_uids": True})
    original = plant_phi(pydicom.dcmread(shared_file(shared_data, "dicom/ct_head_ge/01.dcm")))
    result = Deidentifier(profile, secret=SECRET)(original)
    ds = result.dataset
    assert result.profile == "equipment-qa"
    assert ds.StationName == "CTSCAN7" and ds.StudyInstanceUID == original.StudyInstanceUID
    assert {i.CodeValue for i in ds.DeidentificationMethodCodeSequence} == {"113100", "113109", "113110"}
    assert ds.InstitutionName == "ANONYMIZED"  # institution is not device identity


def test_bad_profiles_raise_config_errors():
    with pytest.raises(ConfigError, match="basic, research"):
        Deidentifier("everything", secret=SECRET)
    with pytest.raises(ConfigError, match="unknown de-identification option 'keep_names'.*retain_uids"):
        get_profile({"name": "x", "keep_names": True})
    with pytest.raises(ConfigError, match="max_date_shift_days"):
        get_profile({"max_date_shift_days": 0})
    with pytest.raises(ConfigError, match="2026c"):
        Deidentifier("basic", secret=SECRET, edition="2019")
    with pytest.raises(ConfigError, match="16 bytes"):
        Deidentifier("basic", secret=b"short")
    assert set(PROFILES) == {"basic", "research"}
    assert get_profile(DeidProfile(name="mine", retain_uids=True)).retain_uids


def test_safe_private_list_keeps_only_listed_attributes():
    original = plant_phi(pydicom.dcmread(pydicom_file("CT_small.dcm")))
    block = original.private_block(0x0013, "ACME SAFE", create=True)
    block.add_new(0x10, "DS", "2.5")
    block.add_new(0x11, "LO", "Quixfeld")
    profile = {
        "name": "safe",
        "safe_private_tags": [{"group": 0x0013, "creator": "ACME SAFE", "offset": 0x10}],
    }
    ds = deidentify(original, profile, secret=SECRET).dataset
    kept = ds.private_block(0x0013, "ACME SAFE")
    assert kept[0x10].value == 2.5 and 0x11 not in kept
    assert not any(t.group == 0x0011 for t in map(BaseTag, ds.keys()))
    assert "113111" in {i.CodeValue for i in ds.DeidentificationMethodCodeSequence}


# -- flags, pixels, input ------------------------------------------------------------------------------
def test_burned_in_text_flags():
    us = pydicom.dcmread(pydicom_file("US1_J2KR.dcm"))
    sc = pydicom.dcmread(pydicom_file("SC_rgb.dcm"))
    ct = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    assert BURNED_IN_TEXT_RISK in deidentify(us, secret=SECRET).flags
    assert BURNED_IN_TEXT_RISK in deidentify(sc, secret=SECRET).flags
    assert BURNED_IN_TEXT_RISK not in deidentify(ct, secret=SECRET).flags
    ct.BurnedInAnnotation = "YES"
    assert BURNED_IN_TEXT_RISK in deidentify(ct, secret=SECRET).flags
    us.BurnedInAnnotation = "NO"  # the modality's own statement is trusted
    assert BURNED_IN_TEXT_RISK not in deidentify(us, secret=SECRET).flags


@pytest.mark.parametrize("name", ["CT_small.dcm", "US1_J2KR.dcm", "SC_rgb.dcm", "MR_small_RLE.dcm"])
def test_pixels_unchanged_and_decodable(name):
    original = pydicom.dcmread(pydicom_file(name))
    before = original.pixel_array.copy()
    result = deidentify(original, "research", secret=SECRET).dataset
    assert result.PixelData == original.PixelData
    reread = pydicom.dcmread(io.BytesIO(to_bytes(result)))
    np.testing.assert_array_equal(reread.pixel_array, before)


def test_input_dataset_is_not_modified(shared_data):
    original = plant_phi(pydicom.dcmread(shared_file(shared_data, "dicom/ct_head_ge/01.dcm")))
    snapshot = copy.deepcopy(original)
    before = to_bytes(original)
    deidentify(original, "research", secret=SECRET)
    assert to_bytes(original) == before
    assert original == snapshot and original.PatientName == "Quixfeld^Marabel"


def test_linkage_is_recorded_only_when_asked():
    original = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    records: list[tuple[str, str, str]] = []
    result = Deidentifier("basic", secret=SECRET, linkage=lambda *pair: records.append(pair))(original)
    assert ("patient_id", original.PatientID, result.patient_pseudonym) in records
    assert ("uid", original.StudyInstanceUID, result.dataset.StudyInstanceUID) in records
    assert all(kind in ("patient_id", "uid") for kind, _, _ in records)


def test_site_secret_comes_from_the_key_store(monkeypatch, medsight_env):
    original = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    first = deidentify(original).dataset.StudyInstanceUID
    assert (medsight_env / "keys" / "site.key").exists()
    assert deidentify(original).dataset.StudyInstanceUID == first  # same site, same pseudonym
    monkeypatch.setenv("MEDSIGHT_SITE_SECRET", OTHER_SECRET.hex())
    assert deidentify(original).dataset.StudyInstanceUID == pseudonymise_uid(
        original.StudyInstanceUID, OTHER_SECRET
    )
