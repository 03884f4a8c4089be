"""Refusals of an input to predict on, each with the HTTP status the API answers it with.

They are BadInputErrors (the CLI prints the message and goes on to the next file); ``http_status``
lets the serving layer pick 413/415/422 without this package knowing anything of HTTP.
"""

from __future__ import annotations

from medsight.errors import BadInputError


class PredictInputError(BadInputError):
    http_status = 400


class EmptyUploadError(PredictInputError):
    """A 0-byte upload."""


class UploadTooLargeError(PredictInputError):
    """More bytes than the limit: refused before anything is decoded."""

    http_status = 413


class TooManyPixelsError(PredictInputError):
    """An image whose header declares more pixels than the limit: refused before its pixels are decoded."""

    http_status = 413


class UnsupportedFormatError(PredictInputError):
    """Not DICOM, PNG, JPEG or NIfTI, judged by the content."""

    http_status = 415


class IncompatibleImageError(PredictInputError):
    """A readable image the model cannot take (channels, dimensions) and that cannot be converted."""

    http_status = 422
