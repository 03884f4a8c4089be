"""Errors a user can cause.

Every one carries a message that says what was wrong and what to do about it. The CLI prints
that message without a traceback and exits non-zero; the HTTP API answers 4xx with it.
Anything that is *not* a MedsightError is a bug in medsight and keeps its traceback.
"""


class MedsightError(Exception):
    """Base class of every error a user can cause and fix."""

    exit_code = 2


class DataNotFoundError(MedsightError):
    """A data set, file or run folder is not where it was looked for."""


class BadInputError(MedsightError):
    """An input file, row or value cannot be used as given."""


class ConfigError(MedsightError):
    """A configuration key or value is not valid."""


class DownloadError(MedsightError):
    """A file could not be downloaded or failed its checksum."""


def validation_error(err: Exception, valid: list[str], noun: str) -> ConfigError:
    """One message from a pydantic ValidationError naming each bad key and, for unknown ones, the valid keys.

    ``noun`` says what a key is ("config key", "de-identification option").
    """
    lines = []
    for problem in err.errors():  # type: ignore[attr-defined]
        key = ".".join(str(p) for p in problem["loc"]) or noun
        if problem["type"] == "extra_forbidden":
            lines.append(f"unknown {noun} '{key}'. Valid: {', '.join(valid)}.")
        else:
            lines.append(f"{noun} '{key}': {problem['msg']}.")
    return ConfigError("\n".join(lines))
