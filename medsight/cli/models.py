"""``medsight models register|list`` and ``medsight predict``: models in service, and batch inference.

``medsight predict`` runs ``Predictor.predict_file``, the same code path as ``POST /api/predict``,
but keeps nothing in the store: its output is the CSV (and the heatmaps when asked for).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medsight.cli import app, console, say
from medsight.cli.platform import cli_client
from medsight.errors import MedsightError

models_app = typer.Typer(help="Register trained runs as versioned, servable models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
CSV_FIELDS = ("file", "status", "label", "probabilities", "classes", "threshold", "model", "error")
BEAT_FIELDS = (
    "file",
    "status",
    "beat",
    "time_s",
    "p_pvc",
    "label",
    "reference",
    "beats_from",
    "model",
    "error",
)
ECG_SUFFIXES = (".hea", ".dat", ".atr", ".npz")
MASK_FIELDS = (
    "file",
    "status",
    "foreground_share",
    "threshold",
    "mask",
    "overlay",
    "probs",
    "seg",
    "model",
    "error",
)


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


def _inputs(paths: list[Path]) -> list[Path]:
    """Files as given, and folders' files (recursively, hidden ones skipped), in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts)
            )
        else:
            found.append(path)
    return found


def _row(path: Path, predictor, model, explain: str, explain_dir: Path | None, index: int) -> dict[str, str]:  # noqa: ANN001
    from medsight.errors import MedsightError
    from medsight.predict.errors import UploadTooLargeError

    row = dict.fromkeys(CSV_FIELDS, "") | {"file": str(path), "model": f"{model.name}:{model.version}"}
    try:
        if path.stat().st_size > predictor.limits.max_bytes:  # never read a file the limit refuses anyway
            raise UploadTooLargeError(
                f"{path.name}: larger than the limit of {predictor.limits.max_bytes} bytes."
            )
        prediction = predictor.predict_file(path.read_bytes(), path.name, model, explain)
    except (MedsightError, OSError) as err:
        return row | {"status": "refused", "error": str(err)}
    except Exception as err:  # noqa: BLE001 - a bug on one file must not cost the others their answers
        return row | {"status": "refused", "error": f"unexpected error ({type(err).__name__}: {err})"}
    if explain_dir is not None:
        stem = f"{index:05d}-{path.stem}"
        (explain_dir / f"{stem}.overlay.png").write_bytes(prediction.overlay_png)
        (explain_dir / f"{stem}.heatmap.png").write_bytes(prediction.heatmap_png)
    return row | {
        "status": "ok",
        "label": prediction.label,
        "probabilities": json.dumps([round(p, 6) for p in prediction.probabilities]),
        "classes": json.dumps(prediction.classes),
        "threshold": "" if prediction.threshold is None else f"{prediction.threshold:.6g}",
    }


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
    inputs: Annotated[list[Path], typer.Argument(help="DICOM, PNG, JPEG or NIfTI files, or folders of them")],
    out: Annotated[Path, typer.Option(help="the CSV to write: one row per input")] = Path("results.csv"),
    explain_dir: Annotated[
        Path | None,
        typer.Option(
            help="write each input's overlay and heatmap PNGs here; for a segmentation run, its mask, "
            "overlay and probability PNGs and, for a DICOM input, a DICOM SEG (default: OUT's name + _masks)"
        ),
    ] = None,
    explain: Annotated[str, typer.Option(help="gradcam or occlusion")] = "gradcam",
    max_mb: Annotated[float, typer.Option(help="refuse files larger than this")] = 64,
) -> None:
    """Predict on many files; a refused file gets a row with the reason and never stops the others.

    A segmentation run (a run folder) writes a mask per input instead of a label: the CSV lists each
    mask's files and the share of the image it covers. An ECG beat model takes records (WFDB NAME.hea
    with its .dat, or .npz) and writes a row per beat; beats come from the record's annotations when
    it has them (shown beside the prediction), else from wfdb's XQRS detector.

    Exit code 0 when at least one file got a prediction, 1 when every file was refused.
    """
    from medsight.predict import Limits, Predictor
    from medsight.progress import progress_bar

    files = _inputs(inputs)
    if _is_segmentation_run(Path(model)):
        masks_dir = explain_dir or out.with_name(f"{out.stem}_masks")
        _finish(out, MASK_FIELDS, _segment_all(Path(model), files, masks_dir, int(max_mb * 2**20)))
        return
    loaded = _load(model)
    if "ecg" in loaded.trained.info:  # a beat classifier: every beat of each ECG record
        if loaded.is_ensemble:
            raise MedsightError("ensembles of ECG beat models cannot predict on records yet; use one run.")
        _finish(out, BEAT_FIELDS, _classify_records(loaded, files, explain_dir))
        return
    predictor = Predictor(Limits(max_bytes=int(max_mb * 2**20)))
    if explain_dir is not None:
        explain_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        _row(path, predictor, loaded, explain, explain_dir, i)
        for i, path in enumerate(progress_bar(files, "predicting"))
    ]
    _finish(out, CSV_FIELDS, rows)


def _finish(out: Path, fields: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    """Write the CSV at once, name each refused file, and exit 1 when nothing got an answer."""
    from medsight.train.run_folder import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out, buffer.getvalue())  # a reader never sees half a CSV
    ok = sum(row["status"] == "ok" for row in rows)
    for row in rows:
        if row["status"] != "ok":
            say(f"refused  {row['file']}: {row['error'].removeprefix(Path(row['file']).name + ': ')}")
    say(f"{len(rows)} file(s): {ok} predicted, {len(rows) - ok} refused; results in {out}")
    if rows and not ok or not rows:
        raise typer.Exit(1)


def _is_segmentation_run(path: Path) -> bool:
    import yaml

    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False  # not a run folder (a registered model's name), or not one we can read: classify
    return (config.get("config") or config).get("task") == "segmentation"


def _segment_all(run: Path, files: list[Path], out_dir: Path, max_bytes: int) -> list[dict[str, str]]:
    from medsight.predict.segmentation import segment_file
    from medsight.progress import progress_bar
    from medsight.train.segmentation_inference import load_segmenter

    segmenter = load_segmenter(run)
    rows = []
    for i, path in enumerate(progress_bar(files, "segmenting")):
        row = dict.fromkeys(MASK_FIELDS, "") | {"file": str(path), "model": f"{run.resolve().name}:run"}
        try:
            if path.stat().st_size > max_bytes:
                raise MedsightError(f"{path.name}: larger than the limit of {max_bytes} bytes.")
            written = segment_file(segmenter, path, out_dir, stem=f"{i:05d}-{path.name.split('.')[0]}")
        except (MedsightError, OSError) as err:
            rows.append(row | {"status": "refused", "error": str(err)})
            continue
        except Exception as err:  # noqa: BLE001 - a bug on one file must not cost the others their masks
            rows.append(
                row | {"status": "refused", "error": f"unexpected error ({type(err).__name__}: {err})"}
            )
            continue
        files_written = {k: str(v) for k, v in written.items() if isinstance(v, Path)}
        rows.append(
            row
            | files_written
            | {
                "status": "ok",
                "foreground_share": f"{written['foreground_share']:.6g}",
                "threshold": f"{written['threshold']:.6g}",
            }
        )
    return rows


def _classify_records(loaded, files: list[Path], plots: Path | None) -> list[dict[str, str]]:  # noqa: ANN001
    from medsight.predict.ecg import classify_record, plot_record
    from medsight.progress import progress_bar

    records = sorted(
        {f.with_suffix("") if f.suffix != ".npz" else f for f in files if f.suffix in ECG_SUFFIXES}
    )
    others = [f for f in files if f.suffix not in ECG_SUFFIXES]
    model = {"model": f"{loaded.name}:{loaded.version}"}
    rows = [
        dict.fromkeys(BEAT_FIELDS, "")
        | model
        | {
            "file": str(f),
            "status": "refused",
            "error": f"{f.name}: "
            "not an ECG record; give WFDB records (NAME.hea with NAME.dat) or .npz files.",
        }
        for f in others
    ]
    for record in progress_bar(records, "classifying beats"):
        base = dict.fromkeys(BEAT_FIELDS, "") | model | {"file": str(record)}
        try:
            prediction = classify_record(loaded.trained, record, log=say)
        except (MedsightError, OSError) as err:
            rows.append(base | {"status": "refused", "error": str(err)})
            continue
        rows += [
            base | {"status": "ok"} | {k: v for k, v in r.items() if k != "record"} for r in prediction.rows()
        ]
        called = int(prediction.is_pvc.sum())
        say(f"{record.name}: {len(prediction.beats)} beats ({prediction.beats_from}), {called} called PVC")
        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            plot_record(
                prediction, loaded.trained.info["ecg"]["settings"], plots / f"{record.name}_strip.png"
            )
    return rows
