"""The internal dashboards (§9.2): the reports served behind role-based bearer tokens,
and every access, allowed or refused, appended to an audit log.

Tokens: ``<data-dir>/tokens.toml``, mode 0600, one line per token under ``[tokens]``:
``t_3f9a... = { role = "viewer", sha256 = "<hex>" }``. Only the token's SHA-256 is kept,
so the file does not hold a usable token; ``rkd-server tokens add --role viewer`` prints
the token once. A token is ``<token id>.<64 hex>``; it is checked in constant time.
Removing a line revokes a token (the server reads the file at start).

Roles: a viewer reads the reports (``GET /reports/{kind}``); an admin also reads the
audit log (``GET /audit``). No token or a wrong one: 401. A token whose role may not: 403.

The audit log: ``<data-dir>/audit.jsonl``, mode 0600, one JSON object a line: time, token
id (never the token), role, path, status, outcome. Never an address: the server reads
none. If the line cannot be written, the access is refused (503): no unlogged reads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import importlib
import os
import secrets
import tomllib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, get_args

import msgspec
from rkd.server.render import FORMATS, MEDIA_TYPES, render
from rkd.server.report_doc import ReportKind
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ROLES: Final = {"viewer": frozenset({"reports"}), "admin": frozenset({"reports", "audit"})}
KINDS: Final = get_args(ReportKind)
ANALYTICS: Final = "rkd.server.analytics"  # build_report(warehouse, kind, end) -> ReportDoc
TOKEN_ID_BYTES: Final = 8
MAX_AUDIT_LINES: Final = 1000
ROUTES: Final = frozenset([*(f"/reports/{k}" for k in KINDS), "/audit"])
_DUMMY: Final = hashlib.sha256(b"no such token").hexdigest()
_HEADERS: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer"}  # fmt: skip


class TokensError(ValueError):
    """A tokens file that cannot be used; the message never holds a token."""


@dataclass(frozen=True)
class Token:
    token_id: str
    role: str
    sha256: str  # of the token's secret part, hex


def load_tokens(path: Path) -> dict[str, Token]:
    """Token id -> Token. A missing file is no tokens (every dashboard request: 401)."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    if path.stat().st_mode & 0o077:
        raise TokensError(f"{path} is readable by others: chmod 600 it")
    try:
        table = tomllib.loads(text).get("tokens", {})
    except tomllib.TOMLDecodeError:
        raise TokensError(f"{path} is not valid TOML") from None
    tokens = {}
    for token_id, entry in table.items():
        if not (isinstance(entry, dict) and entry.get("role") in ROLES):
            raise TokensError(f"{path}: {token_id} needs a role, one of {', '.join(ROLES)}")
        digest = entry.get("sha256")
        if not (isinstance(digest, str) and len(digest) == 64):
            raise TokensError(f"{path}: the sha256 of {token_id} is not 64 hex digits")
        tokens[token_id] = Token(token_id, entry["role"], digest.lower())
    return tokens


def add_token(path: Path, role: str) -> tuple[str, str]:
    """A new token for ``role`` appended to the file (created 0600): its id and the token."""
    if role not in ROLES:
        raise TokensError(f"role is one of {', '.join(ROLES)}")
    token_id, secret = f"t_{secrets.token_hex(TOKEN_ID_BYTES)}", secrets.token_hex(32)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        if f.tell() == 0:
            f.write("# rkd-server dashboard tokens: id = { role, sha256 of the token }. Keep 0600.\n"
                    "[tokens]\n")  # fmt: skip
        f.write(f'{token_id} = {{ role = "{role}", sha256 = "{digest}" }}\n')
    return token_id, f"{token_id}.{secret}"


def authenticate(tokens: dict[str, Token], header: str | None) -> tuple[Token | None, str | None]:
    """(the token, if the Authorization header holds a valid one; the id it claims, if
    that id exists). The digests are compared in constant time, a dummy one for an
    unknown id, so the time taken says nothing about which part was wrong."""
    scheme, _, value = (header or "").partition(" ")
    token_id, _, secret = value.strip().partition(".")
    known = tokens.get(token_id) if scheme.lower() == "bearer" else None
    digest = hashlib.sha256(secret.encode()).hexdigest()
    ok = hmac.compare_digest(digest, known.sha256 if known else _DUMMY)
    return (known if ok and known else None), (known.token_id if known else None)


class AuditLog:
    """Append-only JSON lines, 0600. Each write opens, appends and closes: a rotated or
    removed file is recreated, and a line is on disk before the answer goes out."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, **record: Any) -> None:
        line = msgspec.json.encode({"time": _now(), **record}) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def tail(self, n: int) -> list[Any]:
        try:
            with self.path.open("rb") as f:
                return [msgspec.json.decode(line) for line in deque(f, maxlen=n)]
        except FileNotFoundError:
            return []


WarehouseCall = Callable[..., Awaitable[Any]]


class Dashboards:
    """The routes ``GET /reports/{kind}`` and ``GET /audit``, their tokens and audit log.

    ``call(fn, *args)`` runs ``fn(warehouse, *args)`` on the warehouse's thread (the
    group commit's): a report's queries take turns with the writes, never at once.
    """

    def __init__(self, data_dir: Path, call: WarehouseCall) -> None:
        self.tokens = load_tokens(data_dir / "tokens.toml")
        self.audit = AuditLog(data_dir / "audit.jsonl")
        self.call = call

    def routes(self) -> list[Route]:
        return [Route("/reports/{kind}", self.report, methods=["GET"]),
                Route("/audit", self.audit_log, methods=["GET"])]  # fmt: skip

    async def report(self, request: Request) -> Response:
        return await self._guarded(request, "reports", self._report)

    async def audit_log(self, request: Request) -> Response:
        return await self._guarded(request, "audit", self._audit)

    async def _guarded(self, request: Request, right: str,
                       answer: Callable[[Request], Awaitable[Response]]) -> Response:  # fmt: skip
        """Authenticate, authorize, answer; and log the outcome before it goes out."""
        token, claimed = authenticate(self.tokens, request.headers.get("authorization"))
        if token is None:
            response = _problem(401, "unauthenticated")
            response.headers["WWW-Authenticate"] = 'Bearer realm="rkd-dashboards"'
        elif right not in ROLES[token.role]:
            response = _problem(403, "forbidden")
        else:
            response = await answer(request)
        outcome = {401: "unauthenticated", 403: "forbidden"}.get(response.status_code)
        try:
            self.audit.write(token_id=claimed, role=token.role if token else None,
                             path=request.url.path[:200], status=response.status_code,
                             outcome=outcome or ("allowed" if response.status_code < 400 else "refused"))  # fmt: skip
        except OSError:
            return _problem(503, "audit_unavailable")
        return response

    async def _report(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        fmt = request.query_params.get("format", "html")
        if kind not in KINDS:
            return _problem(404, "unknown_report")
        if fmt not in FORMATS:
            return _problem(400, "unknown_format")
        try:
            end = dt.date.fromisoformat(request.query_params.get("end") or _yesterday())
        except ValueError:
            return _problem(400, "bad_end_date")
        build_report = load_build_report()
        if build_report is None:
            return _problem(503, "analytics_unavailable")
        doc = await self.call(build_report, kind, end)
        headers = dict(_HEADERS)
        if fmt == "html":
            from rkd.server.render.html import CSP

            headers["Content-Security-Policy"] = CSP
        return Response(render(doc, fmt), 200, headers=headers, media_type=MEDIA_TYPES[fmt])

    async def _audit(self, request: Request) -> Response:
        try:
            limit = max(1, min(int(request.query_params.get("limit", 100)), MAX_AUDIT_LINES))
        except ValueError:
            return _problem(400, "bad_limit")
        body = msgspec.json.encode({"entries": self.audit.tail(limit)})
        return Response(body, 200, headers=_HEADERS, media_type="application/json")


def load_build_report() -> Callable[..., Any] | None:
    """``rkd.server.analytics.build_report``, or None when that module is not installed
    (an error inside it still raises: it is a bug, not an absence)."""
    try:
        build: Callable[..., Any] = importlib.import_module(ANALYTICS).build_report
    except ModuleNotFoundError as e:
        if e.name != ANALYTICS:
            raise
        return None
    return build


def _problem(status: int, error: str) -> Response:
    body = msgspec.json.encode({"error": error})
    return Response(body, status, headers=_HEADERS, media_type="application/json")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _yesterday() -> str:
    """The last full day, UTC: the default end of a report."""
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
