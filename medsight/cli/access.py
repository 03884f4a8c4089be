"""``medsight user ...``, ``token ...`` and ``audit``: who may do what, and who did what."""

from __future__ import annotations

import datetime as dt
import re
import sys
from typing import Annotated

import typer
from rich.table import Table

from medsight.cli import app, console, say
from medsight.errors import BadInputError

user_app = typer.Typer(
    help="Users and their roles (admin, clinician, researcher, viewer).", no_args_is_help=True
)
token_app = typer.Typer(help="API tokens: shown once, stored hashed, revocable.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")

_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> dt.datetime:
    """'30m', '2h', '7d', '1w' ago, or an ISO date/time (local time unless it says otherwise)."""
    match = _RELATIVE.match(text.strip().lower())
    if match:
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        return dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInputError(
            f"--since {text!r} is neither a time ago (30m, 2h, 7d, 1w) nor an ISO date (2025-01-31[T08:00])."
        ) from None


def _read_password() -> str:
    """The first line of stdin: a password never goes on the command line (shell history, ps)."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\r\n")


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Option(help="admin, clinician, researcher or viewer")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
) -> None:
    """Create a user; the password comes from stdin (e.g. `printf %s "$PW" | medsight user add ...`)."""
    from medsight.cli.platform import cli_client
    from medsight.store import add_user, open_store

    if not password_stdin:
        raise BadInputError(
            "give --password-stdin and pipe the password in; passwords never go in arguments."
        )
    password = _read_password()
    with open_store() as store:
        user = add_user(store, name, role, password, by=cli_client())
    say(f"added user {user.name} ({user.role.value}).")


@user_app.command("list")
def user_list() -> None:
    """Users, their roles and whether they are active."""
    from medsight.store import open_store
    from medsight.store.users import list_users

    with open_store() as store:
        users = list_users(store)
    table = Table("name", "role", "active")
    for user in users:
        table.add_row(user.name, user.role.value, "yes" if user.active else "no")
    console.print(table)


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Argument(help="the user the token acts as")],
    name: Annotated[str | None, typer.Option(help="what the token is for, to recognise it later")] = None,
    days: Annotated[float, typer.Option(help="days until it expires (0: never)")] = 30,
) -> None:
    """Create an API token; it is printed once, alone on the last line (use: Authorization: Bearer TOKEN)."""
    from medsight.cli.platform import cli_client
    from medsight.store import create_token, open_store

    with open_store() as store:
        token = create_token(
            store, user, name, days if days > 0 else None, by=cli_client(), client=cli_client()
        )
    expiry = f"expires in {days:g} day(s)" if days > 0 else "never expires"
    say(f"token for {user} ({expiry}); it is shown only now, store it safely:")
    say(token)


@token_app.command("list")
def token_list(user: Annotated[str | None, typer.Argument(help="only this user's tokens")] = None) -> None:
    """Tokens (never the secrets themselves) with their status."""
    from medsight.store import list_tokens, open_store

    with open_store() as store:
        tokens = list_tokens(store, user)
    table = Table("id", "user", "name", "status", "created", "expires", "last used")
    for t in tokens:
        table.add_row(
            str(t.id),
            t.user,
            t.name,
            t.status,
            f"{t.created_at:%Y-%m-%d %H:%M}",
            f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never",
            f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "-",
        )
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="the id from `medsight token list`")]) -> None:
    """Revoke a token at once; requests with it are refused from now on."""
    from medsight.cli.platform import cli_client
    from medsight.store import open_store, revoke_token

    with open_store() as store:
        revoke_token(store, token_id, by=cli_client(), client=cli_client())
    say(f"revoked token {token_id}.")


@app.command("audit")
def audit_log(
    user: Annotated[str | None, typer.Option(help="only this user's events")] = None,
    since: Annotated[
        str | None, typer.Option(help="only events since: 30m, 2h, 7d, or an ISO date/time")
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(help="only this action: read, write, export, login, login_failed, ingest, ..."),
    ] = None,
    limit: Annotated[int, typer.Option(help="at most this many events, newest first")] = 200,
) -> None:
    """The audit log: who did what to which resource, when, from where, with what outcome."""
    from medsight.store import open_store
    from medsight.store.audit import query

    with open_store() as store:
        events = query(
            store, user=user, since=parse_since(since) if since else None, action=action, limit=limit
        )
    table = Table("time (UTC)", "user", "action", "resource", "client", "outcome", "detail")
    for e in events:
        detail = ", ".join(f"{k}={v}" for k, v in (e.detail or {}).items())
        resource = e.resource_type + (f" {e.resource_id}" if e.resource_id else "")
        table.add_row(
            f"{e.time:%Y-%m-%d %H:%M:%S}",
            e.user or "-",
            e.action,
            resource,
            e.client or "-",
            e.outcome,
            detail,
        )
    console.print(table)
    say(f"{len(events)} event(s).")
