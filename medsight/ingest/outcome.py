"""What became of each instance an ingest was given: stored, duplicate or refused (and why)."""

from __future__ import annotations

from dataclasses import dataclass, field

STATUSES = ("stored", "duplicate", "refused")


@dataclass
class IngestOutcome:
    name: str
    status: str  # "stored" | "duplicate" | "refused"
    reason: str | None = None
    sop_instance_uid: str | None = None  # de-identified UIDs: safe to show and log
    study_instance_uid: str | None = None
    flags: list[str] = field(default_factory=list)
    retryable: bool = False  # refused for a fault of ours (store, disk), not of the input

    def line(self) -> str:
        """One line for a person: status, name, and the reason or flags."""
        extra = f": {self.reason}" if self.reason else ""
        if self.flags and self.status != "refused":
            extra += f" (flagged: {', '.join(self.flags)})"
        return f"{self.status:<9} {self.name}{extra}"


@dataclass
class IngestReport:
    outcomes: list[IngestOutcome] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        counts["flagged"] = sum(1 for o in self.outcomes if o.flags and o.status != "refused")
        return counts

    def summary(self) -> str:
        c = self.counts()
        return (
            f"{len(self.outcomes)} instance(s): {c['stored']} stored, {c['duplicate']} duplicate, "
            f"{c['refused']} refused; {c['flagged']} flagged for burned-in text or faces "
            "(kept out of training and export until an admin clears them)."
        )
