"""QIDO-RS (PS3.18 10.6): matching query parameters against the store's index, answers in DICOM JSON.

Matching, as PS3.4 C.2.2.2 describes it for the attributes medsight indexes: UIDs by value or list
(``a,b`` or ``a\\b``), ``*`` and ``?`` wildcards in text, date ranges (``20200101-20201231``, open
ended either side), ModalitiesInStudy against any modality of the study. Descriptions match without
regard to case (many archives do; it is what a person typing a search expects). A query attribute
medsight does not index is refused with 400 naming the ones it does, rather than silently ignored:
ignoring a filter would hand out more studies than asked for. Study-level values (PatientID is the
pseudonym, the only patient identity kept) come from the de-identified index, never from PHI.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from pydicom.datadict import dictionary_has_tag, keyword_for_tag, tag_for_keyword

from medsight.errors import BadInputError
from medsight.serve.dicomweb.dicom_json import instance_json, series_json, study_json
from medsight.serve.dicomweb.visibility import sees_flagged
from medsight.store import InstanceRecord, SeriesRecord, Store, StudyRecord, User

STUDY_KEYS = frozenset(
    {"PatientID", "StudyInstanceUID", "StudyDate", "ModalitiesInStudy", "StudyDescription"}
)
SERIES_KEYS = frozenset({"SeriesInstanceUID", "Modality", "SeriesDescription", "BodyPartExamined"})
INSTANCE_KEYS = frozenset({"SOPInstanceUID", "SOPClassUID"})
LEVEL_KEYS = {
    "study": STUDY_KEYS,
    "series": STUDY_KEYS | SERIES_KEYS,
    "instance": STUDY_KEYS | SERIES_KEYS | INSTANCE_KEYS,
}
_CASELESS = frozenset({"StudyDescription", "SeriesDescription"})
_CONTROL = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
_DATE_RANGE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")


@dataclass
class Query:
    filters: dict[str, list[str]] = field(default_factory=dict)  # keyword -> alternatives (any may match)
    limit: int | None = None
    offset: int = 0

    def subset(self, keys: frozenset[str]) -> dict[str, list[str]]:
        return {key: values for key, values in self.filters.items() if key in keys}


def _keyword(name: str) -> str:
    """``PatientID`` or its tag ``00100020`` as a keyword (QIDO accepts both)."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return keyword_for_tag(int(name, 16)) or name
    return name


def _count(name: str, value: str) -> int:
    if not value.isdigit():
        raise BadInputError(f"QIDO-RS parameter {name} must be a non-negative integer, got {value!r}.")
    return int(value)


def _check_includefield(value: str) -> None:
    for name in value.split(","):
        name = name.strip()
        known = dictionary_has_tag(int(name, 16)) if re.fullmatch(r"[0-9A-Fa-f]{8}", name) else None
        if name != "all" and not known and tag_for_keyword(name) is None:
            raise BadInputError(f"includefield {name!r} is neither 'all', a DICOM keyword nor a tag.")


def parse_query(params: Iterable[tuple[str, str]], level: str) -> Query:
    """A Query from the URL's parameters; BadInputError for an attribute this level cannot match."""
    query, allowed = Query(), LEVEL_KEYS[level]
    for name, value in params:
        if name in _CONTROL:
            if name in ("limit", "offset"):
                setattr(query, name, _count(name, value))
            elif name == "includefield":
                _check_includefield(value)  # every indexed attribute is always returned (PS3.18 allows more)
            continue
        keyword = _keyword(name)
        if keyword not in allowed:
            raise BadInputError(
                f"cannot search {level}s by {name!r}; medsight matches on: {', '.join(sorted(allowed))}, "
                f"plus {', '.join(sorted(_CONTROL))}."
            )
        alternatives = re.split(r"[,\\]", value) if keyword.endswith("UID") else [value]
        query.filters.setdefault(keyword, []).extend(a.strip() for a in alternatives if a.strip())
    return query


def _date_matches(pattern: str, value: str) -> bool:
    found = _DATE_RANGE.match(pattern)
    if not found or not any(found.groups()):
        raise BadInputError(f"StudyDate {pattern!r} is not YYYYMMDD or a range YYYYMMDD-YYYYMMDD.")
    start, dash, end = found.groups()
    if not dash:
        return value == start
    return bool(value) and (start or "") <= value <= (end or "99999999")


def _one_matches(keyword: str, pattern: str, value: str) -> bool:
    if keyword == "StudyDate":
        return _date_matches(pattern, value)
    if keyword == "ModalitiesInStudy":
        return any(_one_matches("Modality", pattern, modality) for modality in value.split("\\"))
    if keyword in _CASELESS:
        pattern, value = pattern.lower(), value.lower()
    return fnmatchcase(value, pattern) if ("*" in pattern or "?" in pattern) else value == pattern


def matches(filters: Mapping[str, list[str]], values: Mapping[str, str]) -> bool:
    """Every filtered attribute matches one of its alternatives (an empty filter matches anything)."""
    return all(
        any(_one_matches(key, pattern, values.get(key, "")) for pattern in patterns)
        for key, patterns in filters.items()
    )


def _da(date: dt.date | None) -> str:
    return date.strftime("%Y%m%d") if date else ""


def _study_values(study: StudyRecord) -> dict[str, str]:
    return {
        "PatientID": study.patient_pseudonym,
        "StudyInstanceUID": study.study_uid,
        "StudyDate": _da(study.study_date),
        "ModalitiesInStudy": study.modalities,
        "StudyDescription": study.description,
    }


def _series_values(series: SeriesRecord) -> dict[str, str]:
    return {
        "SeriesInstanceUID": series.series_uid,
        "Modality": series.modality,
        "SeriesDescription": series.description,
        "BodyPartExamined": series.body_part,
    }


def _instance_values(record: InstanceRecord) -> dict[str, str]:
    return {"SOPInstanceUID": record.sop_uid, "SOPClassUID": record.sop_class_uid}


def _page(items: list[Any], query: Query) -> list[Any]:
    end = None if query.limit is None else query.offset + query.limit
    return items[query.offset : end]


def _studies(store: Store, query: Query) -> list[StudyRecord]:
    uids = query.filters.get("StudyInstanceUID", [])
    # One exact UID is pushed down to the database; everything else is matched here, exactly as above.
    found = store.find_studies(study_uid=uids[0] if len(uids) == 1 else None)
    return [study for study in found if matches(query.subset(STUDY_KEYS), _study_values(study))]


def _series(
    store: Store, user: User, query: Query
) -> list[tuple[StudyRecord, SeriesRecord, list[InstanceRecord]]]:
    """Matching series with the instances the user may see (series with none are left out)."""
    found = []
    for study in _studies(store, query):
        for series in store.find_series(study.study_uid):
            if matches(query.subset(SERIES_KEYS), _series_values(series)):
                records = store.find_instances(series.series_uid, include_excluded=sees_flagged(user))
                if records:
                    found.append((study, series, records))
    return found


def search_studies(store: Store, user: User, query: Query, base_url: str) -> list[dict[str, Any]]:
    if sees_flagged(user):  # the index's counts are right: nothing is hidden from this user
        return [
            study_json(s, s.series_count, s.instance_count, base_url)
            for s in _page(_studies(store, query), query)
        ]
    counts: dict[str, list[int]] = {}
    order: dict[str, StudyRecord] = {}
    for study, _, records in _series(store, user, query):
        order[study.study_uid] = study
        counts.setdefault(study.study_uid, [0, 0])
        counts[study.study_uid][0] += 1
        counts[study.study_uid][1] += len(records)
    studies = _page(list(order.values()), query)
    return [study_json(s, *counts[s.study_uid], base_url) for s in studies]


def search_series(store: Store, user: User, query: Query, base_url: str) -> list[dict[str, Any]]:
    found = _page(_series(store, user, query), query)
    return [series_json(series, len(records), base_url, study) for study, series, records in found]


def search_instances(store: Store, user: User, query: Query, base_url: str) -> list[dict[str, Any]]:
    wanted = query.subset(INSTANCE_KEYS)
    found = [
        record
        for _, _, records in _series(store, user, query)
        for record in records
        if matches(wanted, _instance_values(record))
    ]
    return [instance_json(record, base_url) for record in _page(found, query)]
