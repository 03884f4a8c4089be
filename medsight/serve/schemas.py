"""Request and response bodies of the JSON API: the OpenAPI schema is built from these.

DICOMweb answers are DICOM JSON (PS3.18 F.2), described by ``DicomJsonDataset``; their values are
checked by pydicom when built, not by pydantic.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from medsight.store.users import Role


class ErrorResponse(BaseModel):
    error: str = Field(description="what was wrong and what to do about it")


class HealthResponse(BaseModel):
    status: str = Field(description='"ok" when the app and its database answer')
    version: str


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    token: str = Field(description="send as 'Authorization: Bearer TOKEN'; shown only this once")
    expires_at: dt.datetime
    user: str
    role: Role


class UserOut(BaseModel):
    name: str
    role: Role
    active: bool


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    role: Role
    password: str = Field(min_length=8, max_length=1024)


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    active: bool | None = None
    password: str | None = Field(None, min_length=8, max_length=1024)


class InstanceOut(BaseModel):
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    sop_class_uid: str
    flags: list[str]
    burned_in_text_risk: bool
    excluded: bool = Field(description="kept out of training and export (flagged, not cleared)")
    cleared_by: str | None
    cleared_at: dt.datetime | None
    created_at: dt.datetime


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # built from medsight.store.audit.AuditRecord
    time: dt.datetime
    user: str | None
    action: str
    resource_type: str
    resource_id: str | None
    client: str | None
    outcome: str
    detail: dict[str, Any] | None


class DicomJsonAttribute(BaseModel):
    """One attribute in DICOM JSON: its VR and a Value list, or a BulkDataURI, or InlineBinary."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")
    vr: str
    Value: list[Any] | None = None
    BulkDataURI: str | None = None
    InlineBinary: str | None = None


class DicomJsonDataset(RootModel[dict[str, DicomJsonAttribute]]):
    """A dataset in DICOM JSON: keys are 8 hex digits (group and element), e.g. "0020000D"."""
