"""``medsight data pull``: download an official MedMNIST file, resumable, with an MD5 check.

The file lands in ``$MEDSIGHT_HOME/downloads`` (MEDSIGHT_DATA is read-only). A partial download
is kept as ``NAME.npz.part`` and continued with an HTTP Range request; only a file whose MD5
matches the official one is renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from medsight.data.catalogue import MEDMNIST
from medsight.errors import DataNotFoundError, DownloadError
from medsight.paths import downloads_dir

CHUNK = 1 << 20


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def pull(name: str, *, url: str | None = None, timeout: float = 30.0, quiet: bool = False) -> Path:
    """Download data set ``name`` (or from ``url``) and return the verified file's path."""
    if name not in MEDMNIST:
        raise DataNotFoundError(
            f"'{name}' is not a MedMNIST data set medsight can download. Known: {', '.join(MEDMNIST)}."
        )
    entry = MEDMNIST[name]
    target = downloads_dir() / f"{name}.npz"
    if target.exists() and md5_of(target) == entry.md5:
        return target
    partial = target.with_suffix(".npz.part")
    source = url or os.environ.get("MEDSIGHT_MEDMNIST_URL", "").format(name=name) or entry.url
    _download(source, partial, timeout, quiet, f"pulling {name}")
    found = md5_of(partial)
    if found != entry.md5:
        partial.unlink()
        raise DownloadError(
            f"{name}: the downloaded file's MD5 is {found}, not the official {entry.md5}; it was deleted. "
            "The server may have sent an error page or a different file version; try again later."
        )
    partial.replace(target)
    return target


def _download(url: str, partial: Path, timeout: float, quiet: bool, description: str) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part file is already complete
            return
        raise DownloadError(f"cannot download {url}: HTTP {err.code} {err.reason}.") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot download {url}: {reason}. Are you offline?") from err
    with response:
        resumed = response.status == 206
        mode = "ab" if resumed else "wb"
        length = int(response.headers.get("Content-Length") or 0)
        total = (have if resumed else 0) + length or None
        from medsight.progress import new_progress

        with open(partial, mode) as out, new_progress() as progress:
            task = progress.add_task(
                description,
                total=total,
                completed=have if resumed else 0,
                status="(resumed)" if resumed else "",
            )
            if quiet:
                progress.stop()
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    progress.advance(task, len(block))
            except OSError as err:
                raise DownloadError(
                    f"the download of {url} broke off ({err}); run the same command again to resume it."
                ) from err
