"""``medsight ingest``, ``scp``, ``store check``, ``flagged`` and ``export-dataset``: the clinical data platform.

The CLI acts as the local operator (whoever can run it can read MEDSIGHT_HOME's keys anyway);
its actions are audited with the client ``cli:<os user>``.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medsight.cli import app, console, say

store_app = typer.Typer(help="Check the store of de-identified studies.", no_args_is_help=True)
flagged_app = typer.Typer(
    help="Instances flagged for burned-in text or faces (kept out of training and export).",
    no_args_is_help=True,
)
app.add_typer(store_app, name="store")
app.add_typer(flagged_app, name="flagged")


def cli_client() -> str:
    """How CLI actions appear in the audit log."""
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):
        return "cli"


@app.command()
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="DICOM, NIfTI, PNG/JPEG files, folders or .zip archives")
    ],
    profile: Annotated[str, typer.Option(help="de-identification profile: basic or research")] = "basic",
    max_file_mb: Annotated[float, typer.Option(help="refuse files (and zip members) larger than this")] = 512,
    patient_id: Annotated[
        str | None,
        typer.Option(help="patient of PNG/JPEG/NIfTI files (default: a new patient per file)"),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="instances stored per transaction")] = 32,
) -> None:
    """De-identify and store images; one line per instance and a summary.

    Exit code 0 when at least one instance is stored or already there (refusals are listed);
    1 when everything was refused (or nothing was found).
    """
    from medsight.ingest import Ingestor
    from medsight.store import open_store

    with open_store() as store:
        ingestor = Ingestor(
            store,
            profile=profile,
            max_file_bytes=int(max_file_mb * 2**20),
            client=cli_client(),
            batch_size=batch_size,
            patient_id=patient_id,
        )
        report = ingestor.ingest_paths(paths, progress=True, on_outcome=lambda o: say(o.line()))
    say(report.summary())
    counts = report.counts()
    if counts["stored"] + counts["duplicate"] == 0:
        raise typer.Exit(1)


@app.command()
def scp(
    port: Annotated[int, typer.Option(help="TCP port to listen on")] = 11112,
    ae_title: Annotated[str, typer.Option(help="this receiver's AE title")] = "MEDSIGHT",
    allow: Annotated[
        list[str] | None, typer.Option(help="calling AE title allowed to send (repeat; default: any)")
    ] = None,
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "0.0.0.0",
    profile: Annotated[str, typer.Option(help="de-identification profile: basic or research")] = "basic",
) -> None:
    """Receive DICOM over the network (C-ECHO, C-STORE) into the store, de-identified; Ctrl-C stops."""
    from medsight.ingest import Ingestor
    from medsight.ingest.scp import start_scp
    from medsight.store import open_store

    with open_store() as store:
        ingestor = Ingestor(store, profile=profile, client="dicom")
        callers = ", ".join(allow) if allow else "any calling AE title"
        say(f"listening on {host}:{port} as {ae_title} (accepting {callers}); Ctrl-C stops.")
        start_scp(store, port, ae_title, allow or None, block=True, host=host, ingestor=ingestor)


@store_app.command("check")
def store_check(
    repair: Annotated[bool, typer.Option("--repair", help="remove orphan blobs and temp files")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="check blobs exist without decrypting them")] = False,
) -> None:
    """Every instance has a blob that decrypts and matches its hash; no orphan blobs. Exit 1 on problems."""
    from medsight.store import check_store, open_store

    with open_store() as store:
        report = check_store(store, repair=repair, verify=not quick)
    say(report.summary())
    if not report.ok:
        raise typer.Exit(1)


@flagged_app.command("list")
def flagged_list() -> None:
    """Instances kept out of training and export until an admin clears them."""
    from medsight.store import open_store

    with open_store() as store:
        records = store.flagged_instances()
    table = Table("SOP Instance UID", "study", "flags", "stored at")
    for r in records:
        table.add_row(r.sop_uid, r.study_uid, ", ".join(r.flags), f"{r.created_at:%Y-%m-%d %H:%M}")
    console.print(table)
    say(f"{len(records)} flagged instance(s).")


@flagged_app.command("clear")
def flagged_clear(
    sop_uid: Annotated[str, typer.Argument(help="SOP Instance UID (as stored) of the instance to clear")],
    admin: Annotated[str, typer.Option(help="the admin taking the decision (audited)")],
) -> None:
    """Clear a flagged instance after looking at it: it may then be used for training and export."""
    from medsight.store import open_store
    from medsight.store.users import get_user

    with open_store() as store:
        record = store.clear_flag(sop_uid, get_user(store, admin), client=cli_client())
    say(f"cleared {record.sop_uid} (by {record.cleared_by}).")


@app.command("export-dataset")
def export_dataset(
    out: Annotated[Path, typer.Option(help="new folder for the files and manifest.csv")],
    fmt: Annotated[str, typer.Option("--format", help="dicom, nifti or png")] = "dicom",
    modality: Annotated[str | None, typer.Option(help="only series of this modality (CT, MR, ...)")] = None,
    study_description: Annotated[
        str | None, typer.Option(help="only studies whose description contains this")
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="label name for the manifest (default: the only one in the store)")
    ] = None,
    labelled_only: Annotated[
        bool, typer.Option("--labelled-only", help="leave out instances without the label")
    ] = False,
) -> None:
    """Export de-identified, unflagged instances plus manifest.csv (path,label,patient_id) for `data import`."""
    from medsight.store import open_store
    from medsight.store.export import export_dataset as run_export

    with open_store() as store:
        report = run_export(
            store,
            out,
            fmt=fmt,
            modality=modality,
            study_description=study_description,
            label=label,
            labelled_only=labelled_only,
            client=cli_client(),
        )
    say(report.summary())
    say(f"next: medsight data import {report.manifest} --name NAME")
