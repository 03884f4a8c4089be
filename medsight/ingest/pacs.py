"""Talking to a PACS: pull studies in (C-FIND + C-GET or C-MOVE, or DICOMweb) and push stored ones out.

Pull: a C-FIND at STUDY level lists the studies matching one key (Study Instance UID, Patient ID
or Accession Number); each is then fetched by

- ``get``: C-GET on the same association; medsight takes the Storage SCP role for the usual storage
  SOP classes (SCP/SCU role selection), so no port of ours needs to be reachable from the PACS;
- ``move``: C-MOVE to medsight's own C-STORE receiver (AE ``calling_aet``). The PACS must know that
  AE's address; when nothing answers a C-ECHO on ``move_port``, a temporary receiver is started there
  for the pull; a ``medsight scp`` already running there receives instead (and its outcomes are
  not seen here: only the PACS's sub-operation counts are);
- ``dicomweb``: QIDO-RS search and WADO-RS retrieval from the PACS's DICOMweb root (``dicomweb-client``).

Whatever the method, every instance goes through the same ``Ingestor`` as a file would: the same
checks, the same de-identification profile, the same batched, crash-safe store. Reports name studies
by their de-identified UIDs only; the originals a PACS answers with are never printed or logged.

Push: C-STORE of stored (de-identified) instances; instances flagged for burned-in text or faces and
not cleared by an admin are left out. One ``export`` audit event per study records it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from medsight.errors import BadInputError, MedsightError
from medsight.ingest.ingestor import Ingestor, IngestOutcome
from medsight.ingest.scp import STATUS_SUCCESS, GroupWriter, decodable_transfer_syntaxes, start_scp
from medsight.store import audit

if TYPE_CHECKING:
    from medsight.store.records import InstanceRecord
    from medsight.store.store import Store
    from medsight.store.users import User

METHODS = ("get", "move", "dicomweb")
MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255
PENDING_LIMIT = 256  # C-GET instances received but not yet stored: bounds memory on big studies
NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class PacsError(MedsightError):
    """The PACS could not be reached, refused us, or answered a request with a failure."""


@dataclass(frozen=True)
class PacsNode:
    """A DICOM peer: where it listens, its AE title (``called_aet``) and ours (``calling_aet``)."""

    host: str
    port: int
    called_aet: str
    calling_aet: str = "MEDSIGHT"


@dataclass(frozen=True)
class StudyQuery:
    """Exactly one key names the studies to pull."""

    study_uid: str | None = None
    patient_id: str | None = None
    accession: str | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.study_uid, self.patient_id, self.accession) if v]
        if len(given) != 1:
            raise BadInputError(
                "name the studies with exactly one of --study-uid, --patient-id, --accession."
            )

    def identifier(self) -> Dataset:
        """A STUDY-level C-FIND identifier: the key given, and the attributes we want back."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = self.study_uid or ""
        ds.PatientID = self.patient_id or ""
        ds.AccessionNumber = self.accession or ""
        ds.NumberOfStudyRelatedInstances = ""
        return ds

    def qido_filters(self) -> dict[str, str]:
        pairs = {"StudyInstanceUID": self.study_uid, "PatientID": self.patient_id}
        pairs["AccessionNumber"] = self.accession
        return {key: value for key, value in pairs.items() if value}


@dataclass
class StudyPull:
    """What became of one study the PACS listed (``number`` in the listing; no original identifier)."""

    number: int
    offered: int | None  # instances the PACS said the study holds, when it said
    outcomes: list[IngestOutcome] = field(default_factory=list)
    failed: int = 0  # sub-operations the PACS reported as failed (never reached us)

    def counts(self) -> dict[str, int]:
        counts = {"stored": 0, "duplicate": 0, "refused": 0}
        for outcome in self.outcomes:
            counts[outcome.status] += 1
        return counts

    def line(self, total: int) -> str:
        c = self.counts()
        stored_as = sorted({o.study_instance_uid for o in self.outcomes if o.study_instance_uid})
        offered = "?" if self.offered is None else str(self.offered)
        text = (
            f"study {self.number}/{total}: {offered} instance(s) offered, {c['stored']} stored, "
            f"{c['duplicate']} duplicate, {c['refused']} refused"
        )
        if self.failed:
            text += f", {self.failed} not sent by the PACS"
        return text + (f"; stored as {', '.join(stored_as)}" if stored_as else "")


@dataclass
class PullReport:
    method: str
    studies: list[StudyPull] = field(default_factory=list)

    def outcomes(self) -> list[IngestOutcome]:
        return [o for study in self.studies for o in study.outcomes]

    def counts(self) -> dict[str, int]:
        counts = {"studies": len(self.studies), "stored": 0, "duplicate": 0, "refused": 0, "failed": 0}
        for study in self.studies:
            for key, value in study.counts().items():
                counts[key] += value
            counts["failed"] += study.failed
        return counts

    def summary(self) -> str:
        c = self.counts()
        return (
            f"pulled {c['studies']} study(ies) by {self.method}: {c['stored']} instance(s) stored, "
            f"{c['duplicate']} duplicate, {c['refused']} refused, {c['failed']} not sent by the PACS."
        )


# -- associations ---------------------------------------------------------------------------------


@contextmanager
def _association(ae: AE, node: PacsNode, **kwargs: Any) -> Iterator[Any]:
    assoc = ae.associate(node.host, node.port, ae_title=node.called_aet, **kwargs)
    if not assoc.is_established:
        # A PACS that refuses a caller may send A-ASSOCIATE-RJ or just drop the connection; from the
        # client side a dropped connection looks the same as a closed port.
        why = "rejected the association" if assoc.is_rejected else "did not answer (or closed the connection)"
        raise PacsError(
            f"the PACS {node.called_aet} at {node.host}:{node.port} {why} (calling AE {node.calling_aet}); "
            "check the address, the AE titles, and that the PACS knows medsight's AE."
        )
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _check_status(status: Dataset | None, what: str, node: PacsNode) -> int:
    if status is None or "Status" not in status:
        raise PacsError(f"the PACS {node.called_aet} did not answer the {what} in time (association lost).")
    code = int(status.Status)
    if code not in (0x0000, 0xFF00, 0xFF01, 0xB000):  # success, pending, warning (some sub-ops failed)
        raise PacsError(f"the PACS {node.called_aet} answered the {what} with status 0x{code:04X}.")
    return code


def find_studies(node: PacsNode, query: StudyQuery) -> list[Dataset]:
    """C-FIND (Study Root, STUDY level): the PACS's identifiers of the matching studies."""
    ae = AE(ae_title=node.calling_aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    found = []
    with _association(ae, node) as assoc:
        for status, identifier in assoc.send_c_find(
            query.identifier(), StudyRootQueryRetrieveInformationModelFind
        ):
            if _check_status(status, "C-FIND", node) in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
    return found


def echo(node: PacsNode, timeout: float = 5) -> bool:
    """True when a C-ECHO to ``node`` succeeds."""
    ae = AE(ae_title=node.calling_aet)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(node.host, node.port, ae_title=node.called_aet)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return status is not None and int(status.get("Status", -1)) == STATUS_SUCCESS
    finally:
        assoc.release()


def _offered(identifier: Dataset) -> int | None:
    try:
        return int(identifier.get("NumberOfStudyRelatedInstances", "") or "")
    except ValueError:
        return None


def _retrieve_identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


def _failed_suboperations(status: Dataset | None) -> int:
    return int(getattr(status, "NumberOfFailedSuboperations", 0) or 0) if status is not None else 0


# -- pull -------------------------------------------------------------------------------------


class _Collector:
    """Hands received datasets to a GroupWriter without waiting; outcomes are gathered at the end."""

    def __init__(self, ingestor: Ingestor, client: str) -> None:
        self.writer = GroupWriter(ingestor)
        self.client = client
        self.futures: list[Future[IngestOutcome]] = []
        self.count = 0

    def receive(self, dataset: Dataset) -> None:
        self.count += 1
        # Bounded: a study bigger than memory waits for the store instead of piling up.
        if len(self.futures) >= PENDING_LIMIT:
            self.futures[-PENDING_LIMIT].result()
        self.futures.append(self.writer.submit(f"instance {self.count}", dataset, self.client))

    def outcomes(self) -> list[IngestOutcome]:
        try:
            return [future.result(timeout=600) for future in self.futures]
        finally:
            self.writer.stop()


def _get_ae(node: PacsNode) -> tuple[AE, list[Any]]:
    """An AE asking for C-GET and C-FIND plus the storage classes, with the SCP role for those."""
    ae = AE(ae_title=node.calling_aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    syntaxes = decodable_transfer_syntaxes()
    roles = []
    for context in StoragePresentationContexts[: MAX_CONTEXTS - 1]:
        ae.add_requested_context(context.abstract_syntax, syntaxes)
        roles.append(build_role(context.abstract_syntax, scp_role=True))
    return ae, roles


def _pull_get(node: PacsNode, study_uid: str, study: StudyPull, ingestor: Ingestor, client: str) -> None:
    collector = _Collector(ingestor, client)

    def on_store(event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        collector.receive(dataset)
        return STATUS_SUCCESS  # received; our own outcome (stored/refused) is reported, not the PACS's

    ae, roles = _get_ae(node)
    last: Dataset | None = None
    try:
        with _association(ae, node, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
            for status, _ in assoc.send_c_get(
                _retrieve_identifier(study_uid), StudyRootQueryRetrieveInformationModelGet
            ):
                _check_status(status, "C-GET", node)
                last = status
    finally:
        study.outcomes = collector.outcomes()
    study.failed = _failed_suboperations(last)


class _Recorder:
    """Wraps an ingestor's ``ingest_datasets`` so that a receiver's outcomes are also seen here."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.outcomes: list[IngestOutcome] = []
        self._lock = threading.Lock()
        self._ingestor = ingestor
        original = self._original = ingestor.ingest_datasets

        def recording(*args: Any, **kwargs: Any) -> Any:
            report = original(*args, **kwargs)
            with self._lock:
                self.outcomes.extend(report.outcomes)
            return report

        ingestor.ingest_datasets = recording  # type: ignore[method-assign]

    def close(self) -> None:
        self._ingestor.ingest_datasets = self._original  # type: ignore[method-assign]

    def take(self) -> list[IngestOutcome]:
        with self._lock:
            taken, self.outcomes = self.outcomes, []
        return taken


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextmanager
def _move_destination(
    store: Store, node: PacsNode, port: int, ingestor: Ingestor
) -> Iterator[_Recorder | None]:
    """medsight's receiver for C-MOVE: the one already running on ``port``, or a temporary one."""
    ours = PacsNode("127.0.0.1", port, node.calling_aet, node.calling_aet)
    if not _port_free(port):
        if echo(ours):
            yield None  # a running `medsight scp` receives and stores; we only see the PACS's counts
            return
        raise PacsError(f"port {port} is taken by something that is not a DICOM receiver {ours.called_aet}.")
    recorder = _Recorder(ingestor)
    # The receiver listens on every interface: the PACS may be another machine; only it may call.
    server = start_scp(
        store, port, node.calling_aet, [node.called_aet], block=False, host="0.0.0.0", ingestor=ingestor
    )
    assert server is not None
    try:
        yield recorder
    finally:
        server.shutdown()
        recorder.close()


def _pull_move(node: PacsNode, study_uid: str, study: StudyPull, recorder: _Recorder | None) -> None:
    ae = AE(ae_title=node.calling_aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    last: Dataset | None = None
    with _association(ae, node) as assoc:
        for status, _ in assoc.send_c_move(
            _retrieve_identifier(study_uid), node.calling_aet, StudyRootQueryRetrieveInformationModelMove
        ):
            _check_status(status, "C-MOVE", node)
            last = status
    study.failed = _failed_suboperations(last)
    if recorder is not None:
        study.outcomes = recorder.take()  # C-MOVE ends after the last sub-operation was answered


def _pull_dicomweb(url: str, study_uid: str, study: StudyPull, ingestor: Ingestor, client: str) -> None:
    from dicomweb_client.api import DICOMwebClient

    collector = _Collector(ingestor, client)
    try:
        for dataset in DICOMwebClient(url=url).iter_study(study_uid):
            if "TransferSyntaxUID" not in getattr(dataset, "file_meta", {}):
                raise PacsError("the DICOMweb server sent an instance without its transfer syntax.")
            collector.receive(dataset)
    except PacsError:
        raise
    except Exception as err:  # requests' and the client's errors: one message, no traceback, no PHI
        raise PacsError(
            f"the DICOMweb server at {url} could not send study {study.number} ({type(err).__name__})."
        ) from None
    finally:
        study.outcomes = collector.outcomes()


def _dicomweb_studies(url: str, query: StudyQuery) -> list[Dataset]:
    from dicomweb_client.api import DICOMwebClient

    try:
        found = DICOMwebClient(url=url).search_for_studies(search_filters=query.qido_filters())
    except Exception as err:  # requests' and the client's errors: one message for the user
        raise PacsError(
            f"the DICOMweb server at {url} could not be searched ({type(err).__name__})."
        ) from None
    return [Dataset.from_json(item) for item in found]


def pull(
    store: Store,
    node: PacsNode,
    query: StudyQuery,
    method: str = "get",
    *,
    move_port: int = 11112,
    dicomweb_url: str | None = None,
    ingestor: Ingestor | None = None,
    on_study: Callable[[StudyPull, int], None] | None = None,
) -> PullReport:
    """Find the studies matching ``query`` on the PACS and ingest each through ``ingestor``."""
    if method not in METHODS:
        raise BadInputError(f"unknown pull method {method!r}: use one of {', '.join(METHODS)}.")
    if method == "dicomweb" and not dicomweb_url:
        raise BadInputError("--method dicomweb needs --url, the PACS's DICOMweb root (e.g. .../dicom-web).")
    client = f"pacs:{node.called_aet}@{node.host}" if method != "dicomweb" else f"dicomweb:{dicomweb_url}"
    ingestor = ingestor or Ingestor(store, client=client[:64])
    listed = (
        _dicomweb_studies(str(dicomweb_url), query) if method == "dicomweb" else find_studies(node, query)
    )
    report = PullReport(method)
    with _move_destination(store, node, move_port, ingestor) if method == "move" else _nothing() as recorder:
        for number, identifier in enumerate(listed, start=1):
            study = StudyPull(number, _offered(identifier))
            study_uid = str(identifier.get("StudyInstanceUID", ""))
            if method == "get":
                _pull_get(node, study_uid, study, ingestor, client)
            elif method == "move":
                _pull_move(node, study_uid, study, recorder)
            else:
                _pull_dicomweb(str(dicomweb_url), study_uid, study, ingestor, client)
            report.studies.append(study)
            if on_study is not None:
                on_study(study, len(listed))
    audit.record(store, "import", "pacs", None, ingestor.user, client[:64], detail=report.counts())
    return report


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


# -- push -------------------------------------------------------------------------------------


@dataclass
class PushReport:
    sent: int = 0
    failed: int = 0
    skipped_flagged: int = 0
    studies: int = 0

    def summary(self) -> str:
        return (
            f"pushed {self.sent} instance(s) of {self.studies} study(ies); {self.failed} refused by the PACS; "
            f"{self.skipped_flagged} flagged instance(s) not sent (clear them first: medsight flagged clear)."
        )


def _push_ae(node: PacsNode, records: list[InstanceRecord]) -> AE:
    """Contexts for the (SOP class, transfer syntax) pairs to send; native files may also go re-encoded."""
    ae = AE(ae_title=node.calling_aet)
    pairs = dict.fromkeys((r.sop_class_uid, r.transfer_syntax or ExplicitVRLittleEndian) for r in records)
    if len(pairs) > MAX_CONTEXTS:
        raise BadInputError(
            f"the study needs {len(pairs)} presentation contexts (at most 128); push by series."
        )
    for sop_class, syntax in pairs:
        syntaxes = [syntax] + ([s for s in NATIVE if s != syntax] if syntax in NATIVE else [])
        ae.add_requested_context(sop_class, syntaxes)
    return ae


def _send(assoc: Any, data: bytes, node: PacsNode) -> bool:
    import io

    status = assoc.send_c_store(dcmread(io.BytesIO(data)))
    if status is None or "Status" not in status:
        raise PacsError(f"the PACS {node.called_aet} stopped answering during C-STORE.")
    return int(status.Status) == STATUS_SUCCESS or (int(status.Status) >> 12) == 0xB  # B000..BFFF: warning


def _push_study(store: Store, node: PacsNode, study_uid: str, report: PushReport) -> dict[str, int]:
    records = [r for s in store.find_series(study_uid) for r in store.find_instances(s.series_uid)]
    sendable = [r for r in records if not r.excluded]
    counts = {"sent": 0, "failed": 0, "skipped_flagged": len(records) - len(sendable)}
    if sendable:
        with _association(_push_ae(node, sendable), node) as assoc:
            for record in sendable:
                ok = _send(assoc, store.blobs.get(record.sha), node)  # get() verifies the blob's hash
                counts["sent" if ok else "failed"] += 1
    report.sent += counts["sent"]
    report.failed += counts["failed"]
    report.skipped_flagged += counts["skipped_flagged"]
    report.studies += 1
    return counts


def push(
    store: Store,
    node: PacsNode,
    study_uid: str | None = None,
    *,
    user: User | str | None = None,
    client: str | None = None,
) -> PushReport:
    """C-STORE the stored instances of ``study_uid`` (de-identified UID; default: every study) to ``node``."""
    studies = store.find_studies(study_uid=study_uid) if study_uid else store.find_studies()
    if study_uid and not studies:
        raise BadInputError(f"no study {study_uid} in the store (give the de-identified Study Instance UID).")
    report = PushReport()
    destination = f"{node.called_aet}@{node.host}:{node.port}"
    for study in studies:
        try:
            counts = _push_study(store, node, study.study_uid, report)
        except PacsError:
            audit.record(store, "export", "study", study.study_uid, user, client, outcome="failed")
            raise
        audit.record(
            store, "export", "study", study.study_uid, user, client, detail={"to": destination, **counts}
        )
    return report
