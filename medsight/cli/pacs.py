"""``medsight pull`` and ``medsight push``: studies from and to a PACS (logic in ``medsight.ingest.pacs``)."""

from __future__ import annotations

from typing import Annotated

import typer

from medsight.cli import app, say
from medsight.cli.platform import cli_client

Host = Annotated[str, typer.Option(help="the PACS's host name or address")]
Port = Annotated[int, typer.Option(help="the PACS's DICOM port")]
CalledAet = Annotated[str, typer.Option("--aec", help="the PACS's AE title")]
CallingAet = Annotated[str, typer.Option("--aet", help="medsight's AE title (as the PACS knows it)")]


@app.command()
def pull(
    host: Host,
    port: Port,
    aec: CalledAet,
    aet: CallingAet = "MEDSIGHT",
    study_uid: Annotated[str | None, typer.Option(help="pull the study with this Study Instance UID")] = None,
    patient_id: Annotated[str | None, typer.Option(help="pull every study of this Patient ID")] = None,
    accession: Annotated[str | None, typer.Option(help="pull the studies with this Accession Number")] = None,
    method: Annotated[
        str, typer.Option(help="get (C-GET), move (C-MOVE to our receiver) or dicomweb")
    ] = "get",
    url: Annotated[
        str | None, typer.Option(help="DICOMweb root for --method dicomweb, e.g. http://pacs:8042/dicom-web")
    ] = None,
    move_port: Annotated[
        int, typer.Option(help="port of medsight's receiver for C-MOVE (started for the pull if none runs)")
    ] = 11112,
    profile: Annotated[str, typer.Option(help="de-identification profile: basic or research")] = "basic",
) -> None:
    """Find studies on a PACS (C-FIND) and ingest them, de-identified (C-GET, C-MOVE or DICOMweb)."""
    from medsight.ingest import Ingestor
    from medsight.ingest.pacs import PacsNode, StudyQuery
    from medsight.ingest.pacs import pull as run_pull
    from medsight.store import open_store

    query = StudyQuery(study_uid, patient_id, accession)
    node = PacsNode(host, port, aec, aet)
    with open_store() as store:
        ingestor = Ingestor(store, profile=profile, client=cli_client())
        report = run_pull(
            store,
            node,
            query,
            method,
            move_port=move_port,
            dicomweb_url=url,
            ingestor=ingestor,
            on_study=lambda study, total: say(study.line(total)),
        )
    say(report.summary())
    counts = report.counts()
    if counts["studies"] == 0:
        say("no study matched on the PACS.")
        raise typer.Exit(1)
    if counts["refused"] or counts["failed"]:
        raise typer.Exit(1)


@app.command()
def push(
    host: Host,
    port: Port,
    aec: CalledAet,
    aet: CallingAet = "MEDSIGHT",
    study_uid: Annotated[
        str | None, typer.Option(help="the study to send, by its de-identified UID (default: every study)")
    ] = None,
) -> None:
    """Send stored, de-identified instances to a PACS (C-STORE); flagged ones stay unless cleared."""
    from medsight.ingest.pacs import PacsNode
    from medsight.ingest.pacs import push as run_push
    from medsight.store import open_store

    with open_store() as store:
        report = run_push(store, PacsNode(host, port, aec, aet), study_uid, client=cli_client())
    say(report.summary())
    if report.failed:
        raise typer.Exit(1)
