"""``medsight serve``: the HTTP API, DICOMweb and (later) the web UI, with uvicorn."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from medsight.cli import app, err_console
from medsight.errors import BadInputError

APP_FACTORY = "medsight.serve.app:create_app"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@app.command("serve")
def serve(
    host: Annotated[
        str, typer.Option(help="address to listen on; 0.0.0.0 for every interface")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="worker processes (each opens the store itself)")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    torch_threads: Annotated[
        int, typer.Option(help="threads one request's model passes use (concurrent requests share the cores)")
    ] = 1,  # medsight.serve.threads says why
) -> None:
    """Serve the API and DICOMweb (/dicomweb) on HOST:PORT until interrupted."""
    import uvicorn

    from medsight.serve.threads import use_threads

    if workers < 1 or torch_threads < 1 or not 0 < port < 65536:
        raise BadInputError("--workers and --torch-threads must be at least 1, --port between 1 and 65535.")
    use_threads(torch_threads)
    if not _is_loopback(host):
        # Tokens and images would cross the network in clear text: say so rather than hide it.
        err_console.print(
            f"warning: serving on {host} without TLS; put a TLS-terminating proxy in front of medsight.",
            highlight=False,
            markup=False,
        )
    if workers > 1:  # each worker process imports and calls the factory: the import-string form
        uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers, log_level=log_level)
        return
    from medsight.serve.app import create_app

    uvicorn.run(create_app(), host=host, port=port, log_level=log_level)
