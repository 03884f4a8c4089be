"""Media types: Accept negotiation, and multipart/related bodies in (STOW-RS) and out (WADO-RS).

The multipart parser is small on purpose: STOW-RS bodies are machine-made (RFC 2387 with one known
part type), so it needs the boundary, part headers and part bodies - no form fields, no charsets.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from medsight.errors import BadInputError
from medsight.serve.errors import HttpError

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
MULTIPART = "multipart/related"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

_LIST_ITEM = re.compile(r'(?:[^,"]|"(?:\\.|[^"\\])*")+')
_PARAM = re.compile(r'(?:[^;"]|"(?:\\.|[^"\\])*")+')


@dataclass(frozen=True)
class MediaType:
    type: str  # "multipart/related", lower case
    params: dict[str, str] = field(default_factory=dict)  # names lower case, values unquoted
    q: float = 1.0

    def matches(self, media_type: str) -> bool:
        """Whether this (possibly wildcard) range covers the concrete ``media_type``."""
        if self.type in ("*/*", media_type):
            return True
        return self.type.endswith("/*") and media_type.startswith(self.type[:-1])


def parse_media_type(text: str) -> MediaType:
    pieces = [piece.strip() for piece in _PARAM.findall(text)]
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    try:
        q = float(params.pop("q", "1"))
    except ValueError:
        q = 1.0
    return MediaType(pieces[0].lower() if pieces else "", params, q)


def parse_accept(header: str | None) -> list[MediaType]:
    """The acceptable media ranges, best first; no header means anything (``*/*``)."""
    if not header or not header.strip():
        return [MediaType("*/*")]
    ranges = [parse_media_type(item) for item in _LIST_ITEM.findall(header) if item.strip()]
    return sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q)


def _not_acceptable(accept: str | None, offered: str) -> HttpError:
    return HttpError(
        406, f"cannot answer with any type in Accept: {accept!r}; this resource offers {offered}."
    )


def negotiate_json(accept: str | None) -> str:
    """``application/dicom+json`` (or plain JSON when only that is asked for); 406 otherwise."""
    for media in parse_accept(accept):
        if media.matches(DICOM_JSON):
            return DICOM_JSON
        if media.type == "application/json":
            return "application/json"
    raise _not_acceptable(accept, DICOM_JSON)


def negotiate_multipart(accept: str | None, part_type: str, transfer_syntaxes: set[str]) -> None:
    """Check the client takes multipart/related parts of ``part_type`` in the stored transfer syntaxes.

    Files are sent as stored (no transcoding): a client naming another transfer syntax gets 406, as
    PS3.18 8.7.3.5 allows. No transfer-syntax parameter is taken as "as stored" (a strict reading
    would ask for Explicit VR Little Endian; for uncompressed files, how medsight stores them, that
    is the same).
    """
    for media in parse_accept(accept):
        if media.type in ("*/*", "multipart/*"):
            return
        if media.type != MULTIPART or media.params.get("type", part_type).lower() != part_type:
            continue
        wanted = media.params.get("transfer-syntax")
        if wanted is None or wanted == "*" or transfer_syntaxes <= {wanted}:
            return
    offered = f'{MULTIPART}; type="{part_type}"; transfer-syntax=' + ",".join(sorted(transfer_syntaxes))
    raise _not_acceptable(accept, offered)


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]  # names lower case
    content: bytes

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return parse_media_type(value).type if value else None


def boundary_of(content_type: str) -> str:
    media = parse_media_type(content_type)
    if media.type != MULTIPART:
        raise HttpError(415, f"expected a {MULTIPART} body, got {media.type or 'no Content-Type'!r}.")
    boundary = media.params.get("boundary", "")
    if not 1 <= len(boundary) <= 70:  # RFC 2046 5.1.1
        raise BadInputError("the multipart/related Content-Type has no valid boundary parameter.")
    return boundary


def _part(raw: bytes) -> Part:
    if raw.startswith(b"\r\n"):  # no headers: the part's type is the body's ``type`` parameter
        head, content = b"", raw[2:]
    else:
        head, sep, content = raw.partition(b"\r\n\r\n")
        if not sep:
            raise BadInputError(
                "a multipart part has no empty line after its headers; the body is malformed."
            )
    headers = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return Part(headers, content)


def parse_multipart(body: bytes, boundary: str) -> list[Part]:
    """The parts of a multipart body (RFC 2046 5.1); preamble and epilogue are ignored."""
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 2 : start] != b"\r\n"):
        raise BadInputError("the multipart body does not contain its boundary; is the Content-Type right?")
    delimiter = b"\r\n" + delimiter
    position, parts = start + len(delimiter) - 2, []
    while True:
        if body.startswith(b"--", position):
            return parts  # close delimiter
        line_end = body.find(b"\r\n", position)  # transport padding after the boundary
        if line_end < 0:
            break
        following = body.find(delimiter, line_end)
        if following < 0:
            break
        parts.append(_part(body[line_end + 2 : following]))
        position = following + len(delimiter)
    raise BadInputError("the multipart body ends without its closing boundary: was the upload cut short?")


def new_boundary() -> str:
    return "medsight-" + secrets.token_hex(16)


def multipart_content_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    syntax = f"; transfer-syntax={transfer_syntax}" if transfer_syntax else ""
    return f'{MULTIPART}; type="{part_type}"; boundary={boundary}{syntax}'


def multipart_stream(parts: Iterable[bytes], part_type: str, boundary: str) -> Iterator[bytes]:
    """Yield a multipart/related body part by part, so a study is never held in memory whole."""
    for content in parts:
        yield f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + content + b"\r\n"
    yield f"--{boundary}--\r\n".encode()
