"""The internal dashboards (§9.2) on the real `rkd-server run`: bearer tokens with roles,
401 and 403 apart, and every access, allowed or refused, in a 0600 audit log that holds
token ids and never a token or an address."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rkd.server.dashboards import TokensError, add_token, authenticate, load_tokens

from tests.server_harness import RunningServer, start_server

ANALYTICS = importlib.util.find_spec("rkd.server.analytics") is not None
REPORT_STATUS = 200 if ANALYTICS else 503  # 503: analytics_unavailable, before the merge


@pytest.fixture(scope="module")
def dashboards(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, dict[str, str]]]:
    """One server with a viewer and an admin token (the token strings by role)."""
    root = tmp_path_factory.mktemp("dashboards")
    (root / "data").mkdir(mode=0o700)
    tokens = {role: add_token(root / "data" / "tokens.toml", role) for role in ("viewer", "admin")}
    server = start_server(root)
    try:
        yield server, {role: token for role, (_, token) in tokens.items()}
    finally:
        server.stop()


def get(
    server: RunningServer, path: str, token: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return server.request("GET", path, headers=headers)


def audit_lines(server: RunningServer) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (server.data_dir / "audit.jsonl").read_text().splitlines()]


def test_roles_statuses_and_the_audit_log(dashboards: tuple[RunningServer, dict[str, str]]) -> None:
    """No or a wrong token: 401 with a Bearer challenge; a viewer reads the reports but not
    the audit log (403); an admin reads both; each access is one audit line, in order."""
    server, tokens = dashboards
    viewer, admin = tokens["viewer"], tokens["admin"]
    viewer_id, admin_id = viewer.split(".")[0], admin.split(".")[0]
    wrong = viewer_id + "." + "0" * 64
    before = len(audit_lines(server)) if (server.data_dir / "audit.jsonl").exists() else 0

    status, headers, body = get(server, "/reports/weekly")
    assert (401, 'Bearer realm="rkd-dashboards"', {"error": "unauthenticated"}) == (
        status, headers["www-authenticate"], json.loads(body))  # fmt: skip
    assert 401 == get(server, "/reports/weekly", wrong)[0]
    assert 401 == get(server, "/audit", "not-a-token")[0]
    assert 401 == server.request("GET", "/audit", headers={"Authorization": f"Basic {admin}"})[0]
    status, headers, _ = get(server, "/reports/weekly?format=md", viewer)
    assert REPORT_STATUS == status
    assert "no-store" == headers["cache-control"]
    status, _, body = get(server, "/audit", viewer)
    assert (403, {"error": "forbidden"}) == (status, json.loads(body))
    assert (400, b'{"error":"unknown_format"}') == get(
        server, "/reports/monthly?format=pdf", viewer
    )[::2]
    assert (400, b'{"error":"bad_end_date"}') == get(server, "/reports/monthly?end=soon", viewer)[
        ::2
    ]
    assert 404 == get(server, "/reports/daily", admin)[0]
    assert (
        REPORT_STATUS == get(server, "/reports/transparency?format=json&end=2026-12-06", admin)[0]
    )
    status, _, body = get(server, "/audit?limit=2", admin)
    assert 200 == status
    assert ["/reports/daily", "/reports/transparency"] == [
        e["path"] for e in json.loads(body)["entries"]
    ]

    expected = [
        (None, None, "/reports/weekly", 401, "unauthenticated"),
        (viewer_id, None, "/reports/weekly", 401, "unauthenticated"),
        (None, None, "/audit", 401, "unauthenticated"),
        (None, None, "/audit", 401, "unauthenticated"),
        (viewer_id, "viewer", "/reports/weekly", REPORT_STATUS, "allowed" if ANALYTICS else "refused"),
        (viewer_id, "viewer", "/audit", 403, "forbidden"),
        (viewer_id, "viewer", "/reports/monthly", 400, "refused"),
        (viewer_id, "viewer", "/reports/monthly", 400, "refused"),
        (admin_id, "admin", "/reports/daily", 404, "refused"),
        (admin_id, "admin", "/reports/transparency", REPORT_STATUS, "allowed" if ANALYTICS else "refused"),
        (admin_id, "admin", "/audit", 200, "allowed"),
    ]  # fmt: skip
    lines = audit_lines(server)[before:]
    assert expected == [
        (e["token_id"], e["role"], e["path"], e["status"], e["outcome"]) for e in lines
    ]
    assert all(["time", "token_id", "role", "path", "status", "outcome"] == list(e) for e in lines)


def test_the_audit_log_holds_no_token_and_no_address(
    dashboards: tuple[RunningServer, dict[str, str]],
) -> None:
    """The log file is 0600, and neither a token's secret nor the client's address (nor any
    address) is in it or in the server's own log."""
    server, tokens = dashboards
    get(server, "/audit", tokens["admin"])
    get(server, "/reports/quarterly", tokens["viewer"])
    path = server.data_dir / "audit.jsonl"
    assert 0o600 == path.stat().st_mode & 0o777
    text = path.read_text() + server.log_path.read_text()
    assert "127.0.0.1" not in text
    for token in tokens.values():
        assert token.split(".")[1] not in text


def test_tokens_add_prints_the_token_once_and_keeps_its_hash(tmp_path: Path) -> None:
    """`rkd-server tokens add --role admin`: a 0600 file with the id, the role and the
    SHA-256, never the token; `tokens list` shows ids and roles; the token authenticates."""
    from rkd.server.main import main

    runner = CliRunner()
    result = runner.invoke(main, ["tokens", "add", "--role", "admin", "--data-dir", str(tmp_path)])
    assert 0 == result.exit_code
    fields = dict(line.split(": ", 1) for line in result.output.splitlines())
    token_id, token = fields["token id"], fields["token"]
    assert ("admin", token_id) == (fields["role"], token.split(".")[0])
    path = tmp_path / "tokens.toml"
    assert 0o600 == path.stat().st_mode & 0o777
    assert token.split(".")[1] not in path.read_text()
    assert (
        f"{token_id} admin\n"
        == runner.invoke(main, ["tokens", "list", "--data-dir", str(tmp_path)]).stdout
    )
    tokens = load_tokens(path)
    assert (tokens[token_id], token_id) == authenticate(tokens, f"Bearer {token}")
    assert (None, token_id) == authenticate(tokens, f"Bearer {token_id}.{'f' * 64}")
    assert (None, None) == authenticate(tokens, f"Bearer t_0000000000000000.{token.split('.')[1]}")
    assert (None, None) == authenticate(tokens, None)
    bad = runner.invoke(main, ["tokens", "add", "--role", "root", "--data-dir", str(tmp_path)])
    assert 2 == bad.exit_code


def test_a_tokens_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    add_token(path, "viewer")
    path.chmod(0o644)
    with pytest.raises(
        TokensError, match=f"^{re.escape(str(path))} is readable by others: chmod 600 it$"
    ):
        load_tokens(path)
