"""``medsight models register|list`` and ``medsight predict``: models in service, and batch inference.

``medsight predict`` runs ``Predictor.predict_file``, the same code path as ``POST /api/predict``,
but keeps nothing in the store: its output is the CSV (and the heatmaps when asked for).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medsight.cli import app, console, say
from medsight.cli.platform import cli_client

models_app = typer.Typer(help="Register trained runs as versioned, servable models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("register")
def register(
    run: Annotated[Path, typer.Argument(help="a complete run folder made by `medsight train`")],
    name: Annotated[str, typer.Option(help="the model's name, e.g. pneumonia")],
    version: Annotated[
        str | None, typer.Option(help="default: one more than the newest numeric version")
    ] = None,
    intended_use: Annotated[
        str | None, typer.Option(help="what the model is for (shown on its card)")
    ] = None,
    limitation: Annotated[
        list[str] | None, typer.Option(help="a known limitation (repeat for several; default: from the run)")
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="make it the model predictions use by default")
    ] = False,
) -> None:
    """Record a complete run in the registry with its model card (metrics, data set, threshold, use)."""
    from medsight.predict.registration import register_run
    from medsight.store import open_store

    with open_store() as store:
        carded = register_run(
            store,
            run,
            name,
            version,
            intended_use=intended_use,
            limitations=limitation,
            default=default,
            user=cli_client(),
        )
    test_auc = ((carded.model.metrics.get("test") or {}).get("auc") or {}).get("value")
    auc = f", test AUC {test_auc:.3f}" if isinstance(test_auc, float) else ""
    say(f"registered {carded.key}{' (default)' if default else ''}{auc}")


@models_app.command("list")
def list_models() -> None:
    """Registered models, oldest first; the default one is marked."""
    from medsight.store import open_store
    from medsight.store.model_cards import default_model, list_carded

    with open_store() as store:
        carded = list_carded(store)
        default = default_model(store).key if carded else None
    if not carded:
        say("no models registered yet: `medsight models register RUN --name NAME`.")
        return
    table = Table("name", "version", "default", "data set", "test AUC (95% CI)", "registered")
    for m in carded:
        auc = (m.model.metrics.get("test") or {}).get("auc") or {}
        ci = auc.get("ci95")
        shown = (
            f"{auc['value']:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "") if "value" in auc else "n/a"
        )
        dataset = (m.card.get("dataset") or {}).get("name") or ""
        registered = m.model.created_at.strftime("%Y-%m-%d %H:%M")
        table.add_row(
            m.model.name, m.model.version, "yes" if m.key == default else "", dataset, shown, registered
        )
    console.print(table)


def _load(model: str):  # noqa: ANN202 - a LoadedModel
    """A run folder, or a registered model (NAME or NAME:VERSION)."""
    from medsight.predict import load_model

    if Path(model).is_dir():
        return load_model(Path(model), Path(model).resolve().name, "run")
    from medsight.store import open_store
    from medsight.store.model_cards import resolve_model

    with open_store() as store:
        found = resolve_model(store, model)
    return load_model(Path(found.model.run_path), found.model.name, found.model.version)


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="a registered model (NAME or NAME:VERSION) or a run folder")],
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="DICOM, PNG, JPEG or NIfTI files, or folders of them (for a 3D model, each DICOM series "
            "in a folder is one volume)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="the CSV to write: one row per input")] = Path("results.csv"),
    explain_dir: Annotated[
        Path | None,
        typer.Option(
            help="write each input's overlay and heatmap PNGs here; for a segmentation run, its mask, "
            "overlay and probability PNGs and, for a DICOM input or series, a DICOM SEG "
            "(default: OUT's name + _masks)"
        ),
    ] = None,
    explain: Annotated[str, typer.Option(help="gradcam or occlusion")] = "gradcam",
    max_mb: Annotated[float, typer.Option(help="refuse files larger than this")] = 64,
) -> None:
    """Predict on many files or DICOM series; a refused input gets a row with the reason, never stopping the others.

    A segmentation run (a run folder) writes a mask per input instead of a label: the CSV lists each
    mask's files and the share of the image it covers. An ECG beat model takes records (WFDB NAME.hea
    with its .dat, one .zip of a record's files, or .npz) and writes a row per beat; beats come from the
    record's annotations when it has them (shown beside the prediction), else from wfdb's XQRS detector.
    A .zip is read as the API reads one (in memory, parts told apart by content); a bad zip is refused.

    A 3D model (classifier or segmentation) reads each DICOM series in a folder as one volume, as
    `POST /api/predict` reads a stored series (sorted, rescaled, tilt and uneven spacing corrected;
    missing slices or mixed orientations refused): a row per series, and for a segmentation model one
    multi-frame DICOM SEG over the folder's slices. The folder's other files get a row each.

    Exit code 0 when at least one input got a prediction, 1 when every input was refused.
    """
    from medsight.predict import Limits, Predictor, batch

    limits, loaded = Limits(max_bytes=int(max_mb * 2**20)), _load(model)
    if loaded.task == "segmentation":  # a run folder or a registered segmentation model
        masks_dir = explain_dir or out.with_name(f"{out.stem}_masks")
        _finish(out, batch.MASK_FIELDS, batch.segment_inputs(loaded, inputs, masks_dir, limits))
        return
    if loaded.task == "ecg":  # a beat classifier: every beat of each ECG record
        files = batch.input_files(inputs)
        _finish(out, batch.BEAT_FIELDS, batch.classify_records(loaded, files, explain_dir, say, limits))
        return
    rows = batch.classify_inputs(inputs, Predictor(limits), loaded, explain, explain_dir)
    _finish(out, batch.IMAGE_FIELDS, rows)


def _finish(out: Path, fields: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    """Write the CSV at once, name each refused file, and exit 1 when nothing got an answer."""
    from medsight.train.run_folder import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out, buffer.getvalue())  # a reader never sees half a CSV
    answered: dict[tuple[str, str], bool] = {}  # per file or series (an ECG record has a row per beat)
    for row in rows:
        key = (row["file"], row.get("series", ""))
        answered[key] = answered.get(key, False) or row["status"] == "ok"
        if row["status"] != "ok":
            say(f"refused  {row['file']}: {row['error'].removeprefix(Path(row['file']).name + ': ')}")
    ok = sum(answered.values())
    say(f"{len(answered)} input(s): {ok} predicted, {len(answered) - ok} refused; results in {out}")
    if not ok:
        raise typer.Exit(1)
