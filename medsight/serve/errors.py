"""Errors to HTTP answers: every refusal is a 4xx with a JSON body ``{"error": message}``.

A user's mistake raises a MedsightError in the packages; its class decides the status code here, so
route handlers never build error responses themselves. Anything else is a bug: 500, logged with its
traceback by uvicorn, and no internal detail in the answer.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from medsight.errors import BadInputError, ConfigError, DataNotFoundError, MedsightError
from medsight.store.errors import AuthenticationError, DuplicateError, PermissionDeniedError


class HttpError(MedsightError):
    """A refusal that only makes sense in HTTP (406 Not Acceptable, 413 Too Large, 415 ...)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


# Most specific first: DuplicateError is a BadInputError, NotFoundError a DataNotFoundError.
_STATUS: tuple[tuple[type[MedsightError], int], ...] = (
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (DataNotFoundError, 404),
    (DuplicateError, 409),
    (BadInputError, 400),
    (ConfigError, 400),
)


def status_for(error: MedsightError) -> int:
    if isinstance(error, HttpError):
        return error.status_code
    return next((status for cls, status in _STATUS if isinstance(error, cls)), 400)


def error_response(status_code: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


async def _medsight_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, MedsightError)
    return error_response(status_for(error), str(error))


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    response = error_response(error.status_code, str(error.detail))
    response.headers.update(error.headers or {})
    return response


def _location(loc: tuple[object, ...] | list[object]) -> str:
    return ".".join(str(part) for part in loc if part not in ("body", "query", "path"))


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = "; ".join(f"{_location(e.get('loc', ()))}: {e.get('msg', '')}" for e in error.errors())
    return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MedsightError, _medsight_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
