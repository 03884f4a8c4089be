"""Which stored instances a caller may see, and the one place the flagged-instance policy lives.

Policy: an instance flagged for burned-in text risk (and not yet cleared by an admin) is shown by
QIDO-RS and WADO-RS to admins and clinicians - the image belongs to a patient's care, and a
clinician must be able to look at it - and hidden from everyone else. Researchers are the readers
of de-identified data for research, so to them DICOMweb retrieval *is* export, and issue 3 says
flagged instances are "excluded from training and export until an admin clears it".
"""

from __future__ import annotations

from medsight.store import InstanceRecord, NotFoundError, PermissionDeniedError, Store, User
from medsight.store.users import Role

FLAGGED_VISIBLE_ROLES = frozenset({Role.ADMIN, Role.CLINICIAN})


def sees_flagged(user: User) -> bool:
    return user.role in FLAGGED_VISIBLE_ROLES


def visible(record: InstanceRecord, user: User) -> bool:
    return not record.excluded or sees_flagged(user)


def series_instances(store: Store, study_uid: str, series_uid: str, user: User) -> list[InstanceRecord]:
    """The series' instances the user may see; NotFoundError when there are none (or not in this study)."""
    records = [
        record
        for record in store.find_instances(series_uid, include_excluded=sees_flagged(user))
        if record.study_uid == study_uid
    ]
    if not records:
        raise NotFoundError(f"no series {series_uid} in study {study_uid} in the store.")
    return records


def study_instances(store: Store, study_uid: str, user: User) -> list[InstanceRecord]:
    """All the study's instances the user may see, series by series; NotFoundError when there are none."""
    records = [
        record
        for series in store.find_series(study_uid)
        for record in store.find_instances(series.series_uid, include_excluded=sees_flagged(user))
    ]
    if not records:
        raise NotFoundError(f"no study {study_uid} in the store.")
    return records


def one_instance(store: Store, study_uid: str, series_uid: str, sop_uid: str, user: User) -> InstanceRecord:
    record = store.get_instance(sop_uid)
    if (record.study_uid, record.series_uid) != (study_uid, series_uid):
        raise NotFoundError(f"no instance {sop_uid} in series {series_uid} of study {study_uid}.")
    if not visible(record, user):
        raise PermissionDeniedError(
            f"instance {sop_uid} is flagged for possible burned-in text and is withheld from role "
            f"{user.role.value} until an admin clears it."
        )
    return record
