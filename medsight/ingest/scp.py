"""A DICOM C-ECHO + C-STORE receiver (pynetdicom) that feeds the same ingest path as the CLI.

Success (0x0000) is answered only after the instance is durably stored (or found to be a
duplicate). A C-STORE SCU waits for that answer before sending the next instance, so one
association cannot be batched; instead a single writer thread takes whatever the open
associations have delivered meanwhile (up to the batch size) and stores it in one batch, so
many senders at once share fsyncs and commits ("group commit") while a lone sender gets each
instance stored as soon as it arrives.

Statuses: 0x0000 stored or duplicate; 0xC000 "cannot understand" for an instance refused on
its content (no pixel data, undecodable, incomplete header); 0xA700 "out of resources" when
the store failed (the sender may retry). Calling AE titles outside ``allowed_callers`` are
rejected at association. Only transfer syntaxes whose pixel data the installed plugins decode
are accepted, so a sender can fall back to another one it offers.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from medsight.ingest.ingestor import Ingestor, IngestOutcome

if TYPE_CHECKING:
    from pynetdicom.transport import ThreadedAssociationServer

    from medsight.store.store import Store

log = logging.getLogger(__name__)
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
NATIVE_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]


def decodable_transfer_syntaxes() -> list[str]:
    """The native syntaxes first, then every compressed one an installed plugin decodes."""
    found = list(NATIVE_SYNTAXES)
    for syntax in AllTransferSyntaxes:
        if syntax in found or not syntax.is_compressed:
            continue
        try:
            if get_decoder(syntax).is_available:
                found.append(syntax)
        except NotImplementedError:
            continue
    return found


class GroupWriter:
    """One thread that ingests what the associations deliver, in batches of what has arrived."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self._queue: queue.Queue[tuple[str, Dataset, str, Future[IngestOutcome]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="scp-writer", daemon=True)
        self._thread.start()

    def submit(self, name: str, dataset: Dataset, client: str) -> Future[IngestOutcome]:
        future: Future[IngestOutcome] = Future()
        self._queue.put((name, dataset, client, future))
        return future

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.ingestor.batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            self._ingest(batch)

    def _ingest(self, batch: list[tuple[str, Dataset, str, Future[IngestOutcome]]]) -> None:
        # One call per client keeps the audit trail's client address right.
        for client in dict.fromkeys(item[2] for item in batch):
            group = [item for item in batch if item[2] == client]
            try:
                report = self.ingestor.ingest_datasets([(n, ds) for n, ds, _, _ in group], client=client)
                for (*_, future), outcome in zip(group, report.outcomes, strict=True):
                    future.set_result(outcome)
            except Exception as err:  # noqa: BLE001 - every waiting association must get an answer
                log.warning("C-STORE batch failed: %s", type(err).__name__)
                for *_, future in group:
                    if not future.done():
                        future.set_exception(err)


def _status(outcome: IngestOutcome) -> Dataset:
    status = Dataset()
    if outcome.status in ("stored", "duplicate"):
        status.Status = STATUS_SUCCESS
    else:
        status.Status = STATUS_OUT_OF_RESOURCES if outcome.retryable else STATUS_CANNOT_UNDERSTAND
        status.ErrorComment = (outcome.reason or "refused")[:64]
    return status


def _handle_store(event: Any, writer: GroupWriter) -> Dataset | int:
    calling = event.assoc.requestor.ae_title.strip()
    client = f"dicom:{calling}@{event.assoc.requestor.address}"
    name = f"C-STORE from {calling} (message {event.request.MessageID})"
    try:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
    except Exception:  # noqa: BLE001 - an undecodable stream is the sender's problem, not a crash
        return STATUS_CANNOT_UNDERSTAND
    try:
        outcome = writer.submit(name, dataset, client).result(timeout=300)
    except Exception:  # noqa: BLE001 - not stored: tell the sender so it can retry
        return STATUS_OUT_OF_RESOURCES
    if outcome.status == "refused":
        log.info("%s refused: %s", name, outcome.reason)
    return _status(outcome)


def start_scp(
    store: Store,
    port: int = 11112,
    ae_title: str = "MEDSIGHT",
    allowed_callers: list[str] | None = None,
    block: bool = True,
    *,
    host: str = "127.0.0.1",
    profile: str = "basic",
    ingestor: Ingestor | None = None,
) -> ThreadedAssociationServer | None:
    """Serve C-ECHO and C-STORE on ``host:port``; returns the server (``block=False``) or None when stopped.

    Call ``server.shutdown()`` to stop a non-blocking server (its writer thread stops with it).
    """
    ingestor = ingestor or Ingestor(store, profile=profile, client="dicom")
    writer = GroupWriter(ingestor)
    ae = AE(ae_title=ae_title)
    if allowed_callers:
        ae.require_calling_aet = [title.strip() for title in allowed_callers]
    syntaxes = decodable_transfer_syntaxes()
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, syntaxes)
    handlers = [(evt.EVT_C_STORE, _handle_store, [writer])]
    if block:
        try:
            ae.start_server((host, port), block=True, evt_handlers=handlers)
        finally:  # stopped (Ctrl-C): let the writer finish what it holds
            writer.stop()
        return None
    try:
        server = ae.start_server((host, port), block=False, evt_handlers=handlers)
    except BaseException:
        writer.stop()
        raise
    original_shutdown = server.shutdown

    def shutdown() -> None:
        original_shutdown()
        writer.stop()

    server.shutdown = shutdown  # type: ignore[method-assign]
    return server
