"""Segmentation data sets: images with a mask per image, and optionally a region of interest.

A ``SegmentationDataset`` keeps every image at its own size (segmentation trains on patches, so
images need not share a shape): images are channel-first arrays ``(C, H, W)`` or ``(C, D, H, W)``,
masks are ``(H, W)`` / ``(D, H, W)`` uint8 with 0 for background and 1 for the structure, and a
region-of-interest mask (e.g. DRIVE's field of view) says which pixels count at all.

Two sources: the DRIVE folder layout (``training/images``, ``training/1st_manual``,
``training/mask``; ``test/...`` likewise) and a CSV manifest ``image,mask[,roi][,patient_id][,split]``.
Every pair is checked when read; a bad one raises ``BadInputError`` naming the file and the fix.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsight.data.dataset import dataset_summary
from medsight.data.manifest import SPLIT_ALIASES
from medsight.data.splits import check_no_patient_leak
from medsight.errors import BadInputError
from medsight.io import MedicalImage, read_image

SPLITS = ("train", "val", "test")
DRIVE_VAL_IMAGES = 4  # of DRIVE's 20 training images, held out (seeded) to choose the checkpoint
VAL_SHARE, TEST_SHARE = 0.15, 0.2  # a manifest without a split column: shares of patients


@dataclass
class SegmentationSplit:
    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    rois: list[np.ndarray | None] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    # each image's pixel size in mm, in array order (None: the format does not know it, e.g. PNG)
    spacings: list[tuple[float, ...] | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def add(self, case: Case) -> None:
        self.images.append(case.image)
        self.masks.append(case.mask)
        self.rois.append(case.roi)
        self.patient_ids.append(case.patient_id)
        self.names.append(case.name)
        self.spacings.append(case.spacing)

    def median_spacing(self) -> list[float] | None:
        """The median pixel size per array axis (mm) when every image gives one: the grid the model
        learnt on, to which a new volume is resampled before it is segmented (``series_segmentation``)."""
        if not self.spacings or any(s is None for s in self.spacings):
            return None
        return [float(v) for v in np.median(np.array(self.spacings, dtype=np.float64), axis=0)]

    def foreground_share(self) -> float:
        """Share of the (in-ROI) pixels that are foreground, over the whole split."""
        inside = [m if r is None else m[r > 0] for m, r in zip(self.masks, self.rois, strict=True)]
        total = sum(x.size for x in inside)
        return float(sum(int(x.sum()) for x in inside) / max(1, total))


@dataclass
class SegmentationDataset:
    name: str
    spatial_dims: int
    modality: str
    channels: int
    splits: dict[str, SegmentationSplit]
    source: str
    classes: list[str] = field(default_factory=lambda: ["background", "foreground"])
    licence: str | None = None
    citation: str | None = None
    kind = "segmentation"

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The median spatial shape of the training images (images may differ in size)."""
        shapes = np.array([image.shape[1:] for image in self.splits["train"].images])
        return tuple(int(s) for s in np.median(shapes, axis=0))

    def info(self) -> dict[str, Any]:
        """A printable summary, in the shape ``ImageDataset.info`` has (reports read either)."""
        summary = dataset_summary(
            self, lambda split: {"foreground share": round(split.foreground_share(), 4)}
        )
        return {"name": summary.pop("name"), "task": "segmentation", **summary}


@dataclass
class Case:
    image: np.ndarray
    mask: np.ndarray
    roi: np.ndarray | None
    patient_id: str
    name: str
    split: str | None = None
    spacing: tuple[float, ...] | None = None  # mm per pixel, array order


# --------------------------------------------------------------------------- reading and checking


def read_segmentation_image(path: Path) -> MedicalImage:
    """PNG/JPEG/DICOM/NIfTI as ``medsight.io`` reads them, or GIF/TIFF as DRIVE ships (no spacing)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[:4] in (b"GIF8", b"II*\x00", b"MM\x00*"):
        from PIL import Image

        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB" if img.mode in ("RGB", "RGBA", "P") else "L"))
        except Exception as err:  # Pillow's own error: name the file
            raise BadInputError(f"{path}: cannot decode this image ({type(err).__name__}: {err}).") from err
        return MedicalImage(np.moveaxis(array, -1, 0) if array.ndim == 3 else array[None])
    return read_image(path)


def read_any_image(path: Path) -> np.ndarray:
    """The channel-first array of ``read_segmentation_image``."""
    return read_segmentation_image(path).array


def pixel_spacing(image: MedicalImage) -> tuple[float, ...] | None:
    """The image's spacing when it gives one positive size per spatial axis, else None.

    A multi-frame DICOM volume carries only its in-plane PixelSpacing: its distances along the
    frames are unknown, so it counts as having no spacing rather than a wrong one.
    """
    spacing = image.spacing
    if spacing is None or len(spacing) != image.spatial_dims or min(spacing) <= 0:
        return None
    return tuple(float(s) for s in spacing)


def _one_channel(array: np.ndarray) -> np.ndarray:
    """Grey masks as they are; a colour mask's colours packed into one number each (exact for 16 bits)."""
    if all(np.array_equal(array[0], array[c]) for c in range(1, array.shape[0])):
        return array[0]
    packed = np.zeros(array.shape[1:], dtype=np.float64)
    for channel in array:
        packed = packed * 65536 + channel
    return packed


def binary_mask(array: np.ndarray, path: Path, what: str = "mask") -> np.ndarray:
    """One binary channel from a read mask: of its (at most) two values or colours, the darker is background.

    Zero and one other value is the usual form; a palette GIF such as DRIVE's second observer's
    (near-black and near-white entries) or a red-on-black mask reads the same way.
    """
    plane = _one_channel(array)
    values = np.unique(plane)
    if values.size > 2:
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5 else "")
        raise BadInputError(
            f"{path}: the {what} is not binary: it holds {values.size} values ({shown}). medsight segments "
            "one structure: save the mask with 0 for background and one value (e.g. 1 or 255) for the "
            "structure, without anti-aliasing (threshold it, and save as PNG or NIfTI, not JPEG)."
        )
    background = values[0] if values.size == 2 else 0
    return (plane != background).astype(np.uint8)


def check_pair(image: np.ndarray, mask: np.ndarray, roi: np.ndarray | None, paths: dict[str, Path]) -> None:
    """Refuse a mask or ROI whose size differs from its image, and empty masks or ROIs."""
    spatial = image.shape[1:]
    for what, array in (("mask", mask), ("roi", roi)):
        if array is None:
            continue
        if array.shape != spatial:
            raise BadInputError(
                f"{paths[what]}: the {what} is {_shape(array.shape)} but its image "
                f"{paths['image'].name} is {_shape(spatial)}; a {what} must match its image pixel for "
                "pixel. Export it at the image's size (do not resize masks with interpolation)."
            )
        if not array.any():
            raise BadInputError(
                f"{paths[what]}: the {what} is empty (no foreground pixel). Check that it belongs to "
                f"{paths['image'].name} and was exported with the structure marked; leave out images "
                "with nothing to segment."
            )
    if roi is not None and not mask[roi > 0].any():
        raise BadInputError(
            f"{paths['mask']}: no foreground pixel lies inside the region of interest {paths['roi'].name}; "
            "check that the two belong to the same image."
        )


def _shape(shape: tuple[int, ...]) -> str:
    return " × ".join(str(s) for s in shape)


def read_case(image_path: Path, mask_path: Path, roi_path: Path | None, patient_id: str, name: str) -> Case:
    for path in (image_path, mask_path, roi_path):
        if path is not None and not path.exists():  # a file, or a DICOM series folder or zip
            raise BadInputError(f"{path}: no such file or series folder.")
    image = read_segmentation_image(image_path)
    mask = binary_mask(read_any_image(mask_path), mask_path)
    roi = binary_mask(read_any_image(roi_path), roi_path, "roi") if roi_path else None
    check_pair(image.array, mask, roi, {"image": image_path, "mask": mask_path, "roi": roi_path})
    return Case(image.array, mask, roi, patient_id, name, spacing=pixel_spacing(image))


# --------------------------------------------------------------------------- splits


def carve(patients: list[str], share: float, seed: int, at_least: int = 1) -> set[str]:
    """A seeded choice of about ``share`` of the distinct patients (whole patients only)."""
    distinct = sorted(set(patients))
    count = min(len(distinct) - 1, max(at_least, round(share * len(distinct))))
    chosen = np.random.default_rng(seed).permutation(len(distinct))[:count]
    return {distinct[k] for k in chosen}


def assign_splits(cases: list[Case], seed: int, source: Path) -> None:
    """Fill in missing splits: patient-level, seeded; validation is carved from training if absent."""
    given = [c.split for c in cases]
    if any(given) and not all(given):
        row = next(k for k, s in enumerate(given) if not s)
        raise BadInputError(
            f"{source}: row {row + 2} has no split while others have one; give every row a split or none."
        )
    patients = [c.patient_id for c in cases]
    if not any(given):
        if len(set(patients)) < 3:
            raise BadInputError(
                f"{source}: fewer than 3 patients; cannot make patient-level train/val/test splits. "
                "Add images, or give a split column."
            )
        test = carve(patients, TEST_SHARE, seed)
        rest = [p for p in patients if p not in test]
        val = carve(rest, VAL_SHARE / (1 - TEST_SHARE), seed + 1)
        for case in cases:
            case.split = "test" if case.patient_id in test else "val" if case.patient_id in val else "train"
        return
    check_no_patient_leak(np.array(given), np.array(patients), [k + 2 for k in range(len(cases))])
    if "val" not in given:
        train = [c.patient_id for c in cases if c.split == "train"]
        val = carve(train, VAL_SHARE, seed) if len(set(train)) > 1 else set()
        for case in cases:
            if case.split == "train" and case.patient_id in val:
                case.split = "val"


def build_dataset(
    cases: list[Case], name: str, source: Path, modality: str, **extra: Any
) -> SegmentationDataset:
    """Group checked cases into splits; every split must hold at least one image, all of one kind."""
    dims = {c.image.ndim - 1 for c in cases}
    channels = {c.image.shape[0] for c in cases}
    if len(dims) > 1 or len(channels) > 1:
        raise BadInputError(
            f"{source}: the images differ in kind ({sorted(dims)} spatial dimensions, {sorted(channels)} "
            "channels); a data set holds only 2D images or only 3D volumes, all grey or all colour."
        )
    splits = {split: SegmentationSplit() for split in SPLITS}
    for case in cases:
        splits[case.split or "train"].add(case)
    empty = [s for s in SPLITS if not splits[s]]
    if empty:
        raise BadInputError(
            f"{source}: no images in the {', '.join(empty)} split(s); medsight needs training, validation "
            "and test images (give more images, or fix the split column)."
        )
    return SegmentationDataset(name, dims.pop(), modality, channels.pop(), splits, str(source), **extra)


# --------------------------------------------------------------------------- DRIVE layout


def is_drive_layout(folder: Path) -> bool:
    return (
        folder.is_dir()
        and (folder / "training" / "images").is_dir()
        and (folder / "training" / "1st_manual").is_dir()
    )


def _by_number(folder: Path) -> dict[str, Path]:
    """DRIVE names files by a leading number (``21_training.tif``, ``21_manual1.gif``)."""
    found = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return {p.name.split("_")[0]: p for p in found} if folder.is_dir() else {}


def _drive_part(root: Path, part: str) -> list[Case]:
    images = _by_number(root / part / "images")
    manual = _by_number(root / part / "1st_manual")
    fov = _by_number(root / part / "mask") if (root / part / "mask").is_dir() else {}
    cases = []
    for number, image_path in images.items():
        if number not in manual:
            raise BadInputError(
                f"{image_path}: no manual segmentation {root / part / '1st_manual'}/{number}_manual1.gif; "
                "every DRIVE image needs its 1st_manual mask."
            )
        cases.append(
            read_case(image_path, manual[number], fov.get(number), f"drive-{number}", image_path.stem)
        )
    return cases


def read_drive(root: Path, name: str = "drive", seed: int = 0, **extra: Any) -> SegmentationDataset:
    """DRIVE (Staal et al., IEEE TMI 2004): ``training`` split into train and a seeded validation set."""
    training, test = _drive_part(root, "training"), _drive_part(root, "test")
    if not training or not test:
        raise BadInputError(f"{root}: the DRIVE layout needs images in both training/images and test/images.")
    share = DRIVE_VAL_IMAGES / 20
    val = carve([c.patient_id for c in training], share, seed)
    for case in training:
        case.split = "val" if case.patient_id in val else "train"
    for case in test:
        case.split = "test"
    return build_dataset(training + test, name, root, "fundus", **extra)


# --------------------------------------------------------------------------- CSV manifest

MANIFEST_COLUMNS = ("image", "mask", "roi", "patient_id", "split")


def is_segmentation_manifest(path: Path) -> bool:
    if not path.is_file() or path.suffix.lower() != ".csv":
        return False
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    return "mask" in [c.strip() for c in header]


def _manifest_rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in ("image", "mask") if c not in columns]
            if missing:
                raise BadInputError(
                    f"{path}: the header has no {' or '.join(repr(c) for c in missing)} column (found: "
                    f"{', '.join(columns) or 'none'}). A segmentation manifest's header is "
                    "image,mask[,roi][,patient_id][,split]."
                )
            rows = [{(k or "").strip(): (v or "").strip() for k, v in raw.items()} for raw in reader]
    except UnicodeDecodeError as err:
        raise BadInputError(f"{path}: not a UTF-8 text CSV file.") from err
    if not rows:
        raise BadInputError(f"{path}: the manifest has a header but no rows.")
    return rows


def _manifest_case(path: Path, number: int, row: dict[str, str]) -> Case:
    for needed in ("image", "mask"):
        if not row.get(needed):
            raise BadInputError(
                f"{path}, row {number}: the '{needed}' is empty; every row needs an image and a mask."
            )

    def resolve(value: str) -> Path:
        candidate = Path(value).expanduser()
        return (candidate if candidate.is_absolute() else path.parent / candidate).resolve()

    image_path = resolve(row["image"])
    roi_path = resolve(row["roi"]) if row.get("roi") else None
    patient = row.get("patient_id") or f"row{number}"
    try:
        case = read_case(image_path, resolve(row["mask"]), roi_path, patient, image_path.name.split(".")[0])
    except BadInputError as err:
        raise BadInputError(f"{path}, row {number}: {err}") from err
    split = row.get("split") or None
    if split is not None:
        if split.lower() not in SPLIT_ALIASES:
            raise BadInputError(f"{path}, row {number}: split '{split}' is not one of train, val, test.")
        case.split = SPLIT_ALIASES[split.lower()]
    return case


def read_manifest(
    path: Path, name: str, seed: int = 0, modality: str = "unknown", progress=None
) -> SegmentationDataset:
    """A CSV manifest ``image,mask[,roi][,patient_id][,split]``; paths may be relative to the CSV."""
    rows = _manifest_rows(path)
    numbered = list(enumerate(rows, start=2))
    cases = [
        _manifest_case(path, number, row) for number, row in (progress(numbered) if progress else numbered)
    ]
    seen: dict[str, int] = {}
    for number, case in zip((n for n, _ in numbered), cases, strict=True):
        seen[case.name] = seen.get(case.name, 0) + 1
        if seen[case.name] > 1:  # same file name in two folders: the row number tells them apart
            case.name = f"{case.name}-row{number}"
    assign_splits(cases, seed, path)
    return build_dataset(cases, name, path, modality)
