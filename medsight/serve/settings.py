"""Settings of the HTTP app: typed, printable, with defaults that are safe on a laptop."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ServeSettings(BaseModel):
    """What ``create_app`` needs beyond the store."""

    deid_profile: str = Field("basic", description="de-identification profile applied to STOW-RS uploads")
    max_request_bytes: int = Field(
        2 * 2**30, gt=0, description="largest STOW-RS request body accepted (HTTP 413 above)"
    )
    max_instance_bytes: int = Field(512 * 2**20, gt=0, description="largest single DICOM file accepted")
    login_token_days: float = Field(
        0.5, gt=0, description="lifetime of a token issued by POST /api/auth/login (days)"
    )
    public_url: str | None = Field(
        None,
        description="base URL clients reach the app at (behind a proxy); used in RetrieveURL values. "
        "Default: the URL of each request.",
    )
