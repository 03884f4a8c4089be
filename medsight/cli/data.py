"""``medsight data ...``: find, download and import data sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medsight.cli import app, console, say

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
    if segmentation:
        _segmentation_info(info)
        return
    say(
        f"{info['name']}  ({info['modality']}, {info['spatial_dims']}D, shape {info['image_shape']}, "
        f"{info['channels']} channel(s))\nsource: {info['source']}"
    )
    table = Table("split", "images", *info["classes"])
    for split, facts in info["splits"].items():
        table.add_row(split, str(facts["size"]), *map(str, facts["label_counts"]))
    console.print(table)
    for head, facts in (info.get("heads") or {}).items():
        say(
            f"label '{head}': classes {', '.join(facts['classes'])}; counts per split {facts['label_counts']}"
        )
    if info.get("tabular"):
        say(f"tabular features ({len(info['tabular'])}): {', '.join(info['tabular'])}")
    if info.get("licence"):
        say(f"licence: {info['licence']}" + (f"; cite {info['citation']}" if info.get("citation") else ""))


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


def _segmentation_info(info: dict) -> None:
    say(
        f"{info['name']}  (segmentation, {info['modality']}, {info['spatial_dims']}D, median shape "
        f"{info['image_shape']}, {info['channels']} channel(s))\nsource: {info['source']}"
    )
    table = Table("split", "images", "foreground share")
    for split, facts in info["splits"].items():
        table.add_row(split, str(facts["size"]), f"{facts['label_counts']['foreground share']:.4f}")
    console.print(table)
    if info.get("licence"):
        say(f"licence: {info['licence']}" + (f"; cite {info['citation']}" if info.get("citation") else ""))


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
    seed: Annotated[int, typer.Option(help="seed of the patient-level split")] = 0,
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
) -> None:
    """Register your own data set; then `medsight train --dataset NAME` works. The source is never modified."""
    from medsight.data.importer import dataset_name_from, import_dataset
    from medsight.data.registry import registry_dir
    from medsight.data.segmentation_registry import import_segmentation, looks_like_segmentation

    if task not in (None, "classification", "segmentation"):
        from medsight.errors import ConfigError

        raise ConfigError(f"--task {task}: data sets are imported for classification or segmentation.")
    if task == "segmentation" or (task is None and looks_like_segmentation(path.expanduser())):
        unused = {
            "--classes": classes,
            "--size": size,
            "--skip-bad": skip_bad,
            "--labels": labels != "label",
            "--tabular": tabular,
            "--categorical": categorical,
        }
        if given := [flag for flag, value in unused.items() if value]:
            from medsight.errors import ConfigError

            raise ConfigError(
                f"{', '.join(given)}: for classification data sets only; a segmentation data set keeps "
                "its images' size (training samples patches) and takes every image/mask pair or none."
            )
        report = import_segmentation(path, name=name or dataset_name_from(path), modality=modality, seed=seed)
        say(f"imported '{report.name}' (segmentation): {report.n_images} image/mask pairs -> {report.folder}")
        data_info(report.name)
        return
    report = import_dataset(
        path,
        registry_dir(),
        name=name or dataset_name_from(path),
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


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


@data_app.command("remove")
def data_remove(name: str) -> None:
    """Forget an imported data set (its source files are left alone)."""
    from medsight.data.registry import remove_dataset

    remove_dataset(name)
    say(f"removed '{name}'")
