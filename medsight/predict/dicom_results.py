"""A prediction as DICOM (highdicom), so any viewer or PACS shows it beside the image it is about.

- a Comprehensive SR: the finding (the predicted class), its probability, the operating threshold,
  the algorithm (model name and version, TID 4019) and a reference to the source image;
- the overlay (image + heatmap) as an RGB Secondary Capture in a new series of the same study;
- a segmentation model's mask as a binary DICOM SEG over the image, in a new series of its study.

Both are made from the stored, de-identified source: patient and study attributes are copied from
it by highdicom, so they carry pseudonyms and shifted dates only. The class labels are model
vocabulary rather than SNOMED concepts, so they are coded in a private scheme (99MEDSIGHT).
"""

from __future__ import annotations

import io
import warnings

import highdicom as hd
import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    CodedConcept,
    ComprehensiveSR,
    ContainerContentItem,
    ContentSequence,
    ImageContentItem,
    NumContentItem,
    RelationshipTypeValues,
)
from PIL import Image
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from medsight import __version__
from medsight.predict.predictor import Prediction
from medsight.predict.segmentation import dicom_seg
from medsight.predict.served_segmentation import SegmentationPrediction

SCHEME = "99MEDSIGHT"  # private coding scheme for model classes (PS3.16 8.2: 99 prefix = local)
MANUFACTURER = "medsight"
REPORT_TITLE = CodedConcept("18748-4", "LN", "Diagnostic imaging report")
SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9001, 9002  # high numbers: after the modality's own series


# Type 2 attributes highdicom copies from the source; de-identification may have removed them.
_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
)


def _header(source: Dataset) -> Dataset:
    """The source's attributes without its pixels, each attribute highdicom copies present (maybe empty)."""
    header = Dataset()
    for element in source:
        if element.keyword not in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            header.add(element)
    for keyword in _COPIED:
        if keyword not in header:
            setattr(header, keyword, "")
    header.file_meta = getattr(source, "file_meta", Dataset())
    return header


def _class_code(prediction: Prediction) -> CodedConcept:
    return CodedConcept(f"class-{prediction.class_index}", SCHEME, prediction.label[:64])


def _finding(prediction: Prediction, source: Dataset) -> CodeContentItem:
    finding = CodeContentItem(
        codes.DCM.Finding, _class_code(prediction), relationship_type=RelationshipTypeValues.CONTAINS
    )
    probability = prediction.probabilities[prediction.class_index]
    details = [
        NumContentItem(
            codes.DCM.Probability,
            float(probability),
            codes.UCUM.NoUnits,
            relationship_type=RelationshipTypeValues.HAS_PROPERTIES,
        )
    ]
    if prediction.threshold is not None:
        details.append(
            NumContentItem(
                codes.DCM.ThresholdValue,
                float(prediction.threshold),
                codes.UCUM.NoUnits,
                relationship_type=RelationshipTypeValues.HAS_PROPERTIES,
            )
        )
    details.append(
        ImageContentItem(
            codes.DCM.SourceOfMeasurement,
            source.SOPClassUID,
            source.SOPInstanceUID,
            relationship_type=RelationshipTypeValues.INFERRED_FROM,
        )
    )
    finding.ContentSequence = ContentSequence(details)
    return finding


def structured_report(prediction: Prediction, source: Dataset) -> ComprehensiveSR:
    """The finding, probability, threshold and model, referencing ``source``, in ``source``'s study."""
    algorithm = AlgorithmIdentification(
        name=prediction.model["name"][:64],
        version=prediction.model["version"][:64],
        manufacturer=MANUFACTURER,
    )
    root = ContainerContentItem(REPORT_TITLE)
    root.ContentSequence = ContentSequence([*algorithm, _finding(prediction, source)])
    report = ComprehensiveSR(
        evidence=[source],
        content=root,
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    report.SeriesDescription = f"medsight prediction ({prediction.model['name']})"[:64]
    report.SoftwareVersions = __version__
    return report


def overlay_capture(prediction: Prediction, source: Dataset) -> hd.sc.SCImage:
    """The overlay PNG as an RGB Secondary Capture in ``source``'s study, pointing back at ``source``."""
    with Image.open(io.BytesIO(prediction.overlay_png)) as picture:
        pixels = np.ascontiguousarray(np.asarray(picture.convert("RGB")))
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=hd.UID(),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"),  # highdicom insists on one; emptied below (a picture does not tell)
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    capture.PatientOrientation = ""
    capture.BurnedInAnnotation = "NO"  # drawn by us from a de-identified image: colour, no text
    capture.SeriesDescription = f"medsight heatmap ({prediction.explain_method})"[:64]
    capture.DerivationDescription = (
        f"{prediction.explain_method} map of {prediction.model['name']} {prediction.model['version']} "
        f"over the source image"
    )[:1024]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    capture.SourceImageSequence = [reference]
    return capture


def result_objects(prediction: Prediction, source: Dataset) -> list[Dataset]:
    """[SR, SC] for one prediction on ``source`` (a stored, de-identified DICOM image)."""
    header = _header(source)
    with warnings.catch_warnings():  # a pseudonymised name has one component, which highdicom doubts
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        return [structured_report(prediction, header), overlay_capture(prediction, header)]


def segmentation_object(prediction: SegmentationPrediction, sources: list[Dataset]) -> Dataset:
    """The mask as a binary DICOM SEG over ``sources`` (stored, de-identified: one image, or a series'
    slices in the order of the mask's first axis), in their study; a series' SEG has a frame per slice
    with structure on it (highdicom leaves the empty ones out)."""
    with warnings.catch_warnings():  # as above: a pseudonym has one name component
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = dicom_seg([_header(s) for s in sources], prediction.mask, prediction.info)
    seg.SeriesDescription = f"medsight segmentation ({prediction.model['name']})"[:64]
    return seg


def to_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
