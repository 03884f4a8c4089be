"""``medsight data ...``: find, download and import data sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medsight.cli import app, console, say
from medsight.errors import ConfigError

data_app = typer.Typer(help="Find, download and import data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("list")
def data_list() -> None:
    """List known data sets and whether their files are here."""
    from medsight.data.registry import list_datasets

    table = Table("name", "kind", "here", "where / what")
    for entry in list_datasets():
        where = str(entry.location) if entry.location else entry.description
        table.add_row(entry.name, entry.kind, "yes" if entry.available else "no", where)
    console.print(table)


@data_app.command("info")
def data_info(name: str, as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Sizes, classes, label counts per split and image shape of data set NAME."""
    from medsight.data.registry import load_dataset
    from medsight.data.segmentation_registry import is_segmentation_dataset, load_segmentation_dataset

    segmentation = is_segmentation_dataset(name)
    info = (load_segmentation_dataset if segmentation else load_dataset)(name).info()
    if as_json:
        say(json.dumps(info, indent=2))
        return
    _print_summary(info)


@data_app.command("pull")
def data_pull(
    name: str,
    url: Annotated[
        str | None, typer.Option(help="download from this URL instead of the official one")
    ] = None,
) -> None:
    """Download the official MedMNIST file NAME (MD5-checked, resumable) into MEDSIGHT_HOME."""
    from medsight.data.pull import pull

    say(f"{name}: {pull(name, url=url)}")


def _print_summary(info: dict) -> None:
    """Every data set's summary in one layout: what it is, a row per split, then the extras and licence."""
    segmentation = info.get("task") == "segmentation"
    kind, shape = ("segmentation, ", "median shape") if segmentation else ("", "shape")
    say(
        f"{info['name']}  ({kind}{info['modality']}, {info['spatial_dims']}D, {shape} {info['image_shape']}, "
        f"{info['channels']} channel(s))\nsource: {info['source']}"
    )
    columns = ["foreground share"] if segmentation else info["classes"]
    table = Table("split", "images", *columns)
    for split, facts in info["splits"].items():
        table.add_row(split, str(facts["size"]), *_count_cells(facts["label_counts"]))
    console.print(table)
    for head, facts in (info.get("heads") or {}).items():
        say(
            f"label '{head}': classes {', '.join(facts['classes'])}; counts per split {facts['label_counts']}"
        )
    if info.get("tabular"):
        say(f"tabular features ({len(info['tabular'])}): {', '.join(info['tabular'])}")
    if info.get("licence"):
        say(f"licence: {info['licence']}" + (f"; cite {info['citation']}" if info.get("citation") else ""))


def _count_cells(counts: list[int] | dict[str, float]) -> list[str]:
    """A split's label counts as table cells: class counts, or a segmentation set's shares (4 places)."""
    if isinstance(counts, dict):
        return [f"{share:.4f}" for share in counts.values()]
    return [str(count) for count in counts]


@data_app.command("import")
def data_import(
    path: Annotated[
        Path,
        typer.Argument(
            help="an .npz in MedMNIST layout, a folder with one sub-folder per "
            "class, or a CSV manifest path,label[,patient_id][,split]"
        ),
    ],
    name: Annotated[str | None, typer.Option(help="name to register (default: from the path)")] = None,
    classes: Annotated[str | None, typer.Option(help="comma-separated class names, in label order")] = None,
    size: Annotated[
        int | None, typer.Option(help="resize images to this side (default: from the data)")
    ] = None,
    modality: Annotated[
        str | None,
        typer.Option(help="xray, ct, mr, ultrasound, pathology, ... (default: from DICOM headers)"),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the patient-level split (default 0)")] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="import the readable images, list the rest")
    ] = False,
    task: Annotated[
        str | None,
        typer.Option(
            help="classification or segmentation (default: segmentation for a DRIVE-style folder or a "
            "CSV with a 'mask' column: image,mask[,roi][,patient_id][,split])"
        ),
    ] = None,
    labels: Annotated[
        str,
        typer.Option(help="CSV: comma-separated label column(s); several train one head per label"),
    ] = "label",
    tabular: Annotated[
        str | None,
        typer.Option(
            help="CSV: comma-separated tabular columns beside the image (e.g. age,sex,lab): "
            "standardised on the training split, missing values imputed and flagged"
        ),
    ] = None,
    categorical: Annotated[
        str | None, typer.Option(help="which of the --tabular columns are categories (one-hot), e.g. sex")
    ] = None,
    train_records: Annotated[
        str | None, typer.Option(help="ECG folder: comma-separated records for training (e.g. DS1's)")
    ] = None,
    val_records: Annotated[
        str | None, typer.Option(help="ECG folder: records for validation (threshold, model selection)")
    ] = None,
    test_records: Annotated[
        str | None, typer.Option(help="ECG folder: records for the one final test (e.g. DS2's)")
    ] = None,
    neighbour_beats: Annotated[
        int,
        typer.Option(
            help="ECG folder: add neighbour channels (the previous and next beat, and the beat minus the "
            "median of this many beats each side); 0: none. See BENCHMARKS.md before turning it on"
        ),
    ] = 0,
) -> None:
    """Register your own data set; then `medsight train --dataset NAME` works. The source is never modified.

    A folder of ECG records (WFDB or MIT-BIH npz) becomes a PVC-vs-other beat data set split by record:
    give the records of each split, or none for a split drawn by PVC burden (--seed).
    """
    from medsight.data.ecg_registry import looks_like_ecg_folder
    from medsight.data.importer import dataset_name_from, import_dataset
    from medsight.data.registry import registry_dir
    from medsight.data.segmentation_registry import import_segmentation, looks_like_segmentation

    if task not in (None, "classification", "segmentation"):
        raise ConfigError(f"--task {task}: data sets are imported for classification or segmentation.")
    name = name or dataset_name_from(path)
    image_flags = {
        "--classes": classes,
        "--size": size,
        "--skip-bad": skip_bad,
        "--labels": labels != "label",
        "--tabular": tabular,
        "--categorical": categorical,
    }
    records = {"train": _names(train_records), "val": _names(val_records), "test": _names(test_records)}
    record_flags = {f"--{split}-records": names for split, names in records.items()}
    given_split = any(records.values())
    seed_given, seed = seed is not None, seed or 0
    if task is None and looks_like_ecg_folder(path.expanduser()):
        _refuse(image_flags | {"--modality": modality}, "a folder of ECG records is cut into beats as it is")
        _refuse(
            {"--seed": seed_given and given_split}, "the split is given record by record; nothing is drawn"
        )
        _import_ecg_folder(path, name, records if given_split else None, seed, neighbour_beats)
        return
    _refuse(
        record_flags | {"--neighbour-beats": neighbour_beats},
        "they are for a folder of ECG records (WFDB or npz)",
    )
    if task == "segmentation" or (task is None and looks_like_segmentation(path.expanduser())):
        _refuse(
            image_flags,
            "for classification data sets only; a segmentation data set keeps its images' size (training "
            "samples patches) and takes every image/mask pair or none",
        )
        report = import_segmentation(path, name=name, modality=modality, seed=seed)
        say(f"imported '{report.name}' (segmentation): {report.n_images} image/mask pairs -> {report.folder}")
        data_info(report.name)
        return
    report = import_dataset(
        path,
        registry_dir(),
        name=name,
        classes=classes.split(",") if classes else None,
        size=size,
        modality=modality,
        seed=seed,
        skip_bad=skip_bad,
        labels=_names(labels),
        tabular=_names(tabular),
        categorical=_names(categorical),
    )
    for problem in report.skipped:
        say(f"skipped {problem}")
    for note in report.notes:
        say(f"note: {note}")
    say(f"imported '{report.name}': {report.n_images} images -> {report.folder}")
    data_info(report.name)


def _refuse(flags: dict, why: str) -> None:
    """Flags that mean nothing for this kind of source are refused rather than silently ignored."""
    if given := [flag for flag, value in flags.items() if value]:
        raise ConfigError(f"{', '.join(given)}: {why}.")


def _import_ecg_folder(
    path: Path, name: str, records: dict[str, list[str]] | None, seed: int, neighbour_beats: int
) -> None:
    from medsight.data.ecg_registry import import_ecg
    from medsight.data.registry import registry_dir

    report = import_ecg(
        path, registry_dir(), name=name, records=records, seed=seed, neighbour_beats=neighbour_beats
    )
    for note in report.notes:
        say(f"note: {note}")
    say(f"imported '{report.name}' (ECG beats, PVC vs other): {report.n_images} beats -> {report.folder}")
    data_info(report.name)


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


@data_app.command("remove")
def data_remove(name: str) -> None:
    """Forget an imported data set (its source files are left alone)."""
    from medsight.data.registry import remove_dataset

    remove_dataset(name)
    say(f"removed '{name}'")
