"""`rkd export`: every format end to end, the consent record, files, and user mistakes."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import stat
import sys
import typing
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import msgspec
import pytest
from click.testing import CliRunner
from rkd.cli import export as ex
from rkd.cli import export_csv, export_read
from rkd.cli.main import cli
from rkd.client import schema as s
from rkd.client.clock import now_ms
from rkd.client.consent import ConsentRecord, consent_dict, record_decision
from rkd.daemon.derived import SESSION_TYPES
from rkd.daemon.storage import Record, SessionRow, Storage, iter_envelopes

from tests.conftest import DERIVED_TYPES, KILL_VARS, Daemon, Sandbox, wait_for
from tests.samples import ALL_TYPES, envelope, frame, sample_payload

RawPush = Callable[[list[bytes]], None]

COMMAND = s.CommandExecuted(
    command="think", profile="balanced", thinktool_chain=("gigathink", "laserlogic"),
    thinktool_count=2, execution=s.Execution(duration_ms=2500, llm_latency_ms=2100),
    tokens=s.Tokens(input=1500, output=800, cached=200, model="claude-3-5-sonnet-20241022"),
    quality=s.Quality(confidence_score=0.82, coherence_score=0.88), cache_hit=False,
)  # fmt: skip
ERROR = s.ErrorOccurred(error_category="api_error", error_code="rate_limit_exceeded",
                        recoverable=True, retry_count=2)  # fmt: skip
THINK = s.ThinkToolCompleted(tool_name="gigathink", step_count=4, duration_ms=650,
                             confidence_score=0.82, tokens_used=900)  # fmt: skip
MIX = [COMMAND, ERROR, THINK, *(sample_payload(t) for t in ALL_TYPES)]
ENVELOPE_HEADER = [
    "event_id", "event_type", "schema_version", "timestamp", "source.product",
    "source.version", "source.tier", "source.os", "source.arch", "source.python_version",
    "session.id", "session.sequence", "session.started_at",
]  # fmt: skip


def store(sandbox: Sandbox, payloads: list[s.Payload]) -> list[str]:
    """Write ``payloads`` to the sandbox's database as the daemon does; return their ids."""
    storage = Storage(sandbox.settings.db_path)
    sess = SessionRow(rowid=None, uuid=str(uuid.uuid4()), started_ms=now_ms() - 5000,
                      last_ms=now_ms(), events=0)  # fmt: skip
    envs = [envelope(p) for p in payloads]
    storage.write([Record(e, sess, i + 1, now_ms() + i) for i, e in enumerate(envs)], {}, now_ms())
    storage.close()
    return [str(e.event_id) for e in envs]


def stored(sandbox: Sandbox) -> list[dict[str, Any]]:
    """What the database holds, through storage's own reference reader."""
    return list(iter_envelopes(sandbox.settings.db_path))


def schema_header() -> list[str]:
    """The CSV header derived here independently of cli/export_csv.py, from the Structs' fields."""

    def bare(t: Any) -> Any:
        while typing.get_origin(t) is typing.Annotated:
            t = typing.get_args(t)[0]
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if typing.get_origin(t) in (typing.Union, __import__("types").UnionType) and len(args) == 1:
            return bare(args[0])
        return t

    def leaves(cls: Any, prefix: str) -> list[str]:
        out = []
        for f in msgspec.structs.fields(cls):
            t = bare(f.type)
            if isinstance(t, type) and issubclass(t, msgspec.Struct):
                out += leaves(t, f"{prefix}{f.encode_name}.")
            else:
                out.append(prefix + f.encode_name)
        return out

    payload = [c for p in ALL_TYPES for c in leaves(p, "payload.")]
    return ENVELOPE_HEADER + list(dict.fromkeys(payload))


def flat_row(env: dict[str, Any], header: list[str]) -> list[str]:
    """The CSV row expected for one envelope (reference flattening, for comparison)."""

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list | dict):
            return json.dumps(v, separators=(",", ":"))
        return str(v)

    flat = {"event_id": env["event_id"], "event_type": env["event_type"],
            "schema_version": env["schema_version"], "timestamp": env["timestamp"]}  # fmt: skip
    flat.update({f"source.{k}": v for k, v in env["source"].items()})
    flat.update({f"session.{k}": v for k, v in env["session"].items()})
    for k, v in env["payload"].items():
        if isinstance(v, dict):
            flat.update({f"payload.{k}.{k2}": v2 for k2, v2 in v.items()})
        else:
            flat[f"payload.{k}"] = v
    return [cell(flat.get(col)) for col in header]


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


# -- each format, end to end ----------------------------------------------------------------


def test_json_export_equals_what_the_daemon_stored(
    sandbox: Sandbox, daemon: Daemon, raw_push: RawPush
) -> None:
    """Default format, daemon up then down: the JSON object holds every stored event exactly."""
    sent = [p for p in MIX if p.event_type not in SESSION_TYPES]  # only the daemon writes those
    ids = [uuid.uuid4() for _ in sent]
    raw_push([frame(p, event_id=i) for p, i in zip(sent, ids, strict=True)])
    wait_for(lambda: daemon.counter("accepted") == len(sent), what="all accepted")
    daemon.flush()
    proc = sandbox.rkd("export")
    assert (0, "") == (proc.returncode, proc.stderr)
    doc = json.loads(proc.stdout)
    assert ["exported_at", "database", "event_count", "consent", "events"] == list(doc)
    assert (str(sandbox.settings.db_path), len(doc["events"]), None) == (
        doc["database"], doc["event_count"], doc["consent"])  # fmt: skip
    assert stored(sandbox) == doc["events"]
    own = [e for e in doc["events"] if e["event_id"] in {str(i) for i in ids}]
    assert [str(i) for i in ids] == [e["event_id"] for e in own]
    assert [p.event_type for p in sent] == [e["event_type"] for e in own]
    assert json.loads(msgspec.json.encode(COMMAND)) == own[0]["payload"]
    assert own[1]["payload"]["context"] is None
    others = [e for e in doc["events"] if e not in own]  # what the daemon derived
    assert others and {e["event_type"] for e in others} <= set(DERIVED_TYPES)
    assert 1 == len({e["session"]["id"] for e in doc["events"]})
    daemon.stop()
    down = json.loads(sandbox.rkd("export").stdout)
    assert doc["events"] == down["events"]


def test_ndjson_export_is_a_head_line_then_one_event_per_line(sandbox: Sandbox) -> None:
    """NDJSON: the head object first (no event_type), then exactly one envelope per line."""
    ids = store(sandbox, MIX)
    out = sandbox.root / "my-data.ndjson"
    proc = sandbox.rkd("export", "--output", str(out))  # the format from the extension
    assert 0 == proc.returncode, proc.stderr
    assert f"Exported {len(MIX)} events to {out} (ndjson).\n" == proc.stderr
    lines = out.read_text().splitlines()
    assert 1 + len(MIX) == len(lines)
    head = json.loads(lines[0])
    assert ["exported_at", "database", "event_count", "consent"] == list(head)
    assert len(MIX) == head["event_count"]
    events = [json.loads(line) for line in lines[1:]]
    assert stored(sandbox) == events
    assert ids == [e["event_id"] for e in events]
    assert 0o600 == stat.S_IMODE(out.stat().st_mode)


def test_csv_export_rows_match_the_stored_events(sandbox: Sandbox) -> None:
    """CSV: the schema's header, then one row per event with nested fields as dotted columns."""
    store(sandbox, MIX)
    out = sandbox.root / "my-data.csv"
    proc = sandbox.rkd("export", "-o", str(out), "--format", "csv")
    assert 0 == proc.returncode, proc.stderr
    assert (
        f"Exported {len(MIX)} events to {out} (csv).\n"
        f"The consent record is in {out}.consent.json.\n"
    ) == proc.stderr
    assert out.read_bytes().endswith(b"\r\n")
    rows = read_csv(out.read_text())
    header = schema_header()
    assert header == rows[0]
    assert [flat_row(e, header) for e in stored(sandbox)] == rows[1:]
    cmd = dict(zip(header, rows[1], strict=True))
    expected = {
        "payload.command": "think",
        "payload.profile": "balanced",
        "payload.thinktool_chain": '["gigathink","laserlogic"]',
        "payload.execution.duration_ms": "2500",
        "payload.execution.processing_ms": "",
        "payload.execution.success": "true",
        "payload.tokens.model": "claude-3-5-sonnet-20241022",
        "payload.quality.confidence_score": "0.82",
        "payload.quality.depth_score": "",
        "payload.cache_hit": "false",
        "payload.tool_name": "",
    }
    assert expected == {k: cmd[k] for k in expected}
    err = dict(zip(header, rows[2], strict=True))
    assert ["api_error", "true", ""] == [
        err[f"payload.{k}"] for k in ("error_category", "recoverable", "context.command")
    ]
    sidecar = Path(f"{out}.consent.json")
    assert 0o600 == stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(sidecar.stat().st_mode)
    head = json.loads(sidecar.read_text())
    assert (None, len(MIX)) == (head["consent"], head["event_count"])


def test_csv_header_is_the_same_whatever_the_data(sandbox: Sandbox) -> None:
    """Two CSV exports of different data (and of none) share one header, the schema's."""
    empty = sandbox.rkd("export", "--format", "csv")
    store(sandbox, [s.HelpViewed(topic="think")])
    one = sandbox.rkd("export", "--format", "csv")
    store(sandbox, [COMMAND, ERROR])
    three = sandbox.rkd("export", "--format", "csv")
    headers = [read_csv(p.stdout)[0] for p in (empty, one, three)]
    assert [schema_header()] * 3 == headers
    assert [1, 2, 4] == [len(read_csv(p.stdout)) for p in (empty, one, three)]
    assert list(export_csv.csv_header()) == schema_header()
    line = "The consent record is not part of CSV: get it with --format json.\n"
    assert [line] * 3 == [p.stderr for p in (empty, one, three)]


def test_export_in_process_with_clirunner(sandbox: Sandbox) -> None:
    """Through click's CliRunner: `-` is stdout, each format parses, nothing else is written."""
    store(sandbox, MIX)
    env: dict[str, str | None] = {**sandbox.env, **dict.fromkeys(KILL_VARS)}
    env["RK_TELEMETRY_ENABLED"] = "true"
    runner = CliRunner()
    as_json = runner.invoke(cli, ["export", "-o", "-"], env=env)
    assert 0 == as_json.exit_code, as_json.output
    assert stored(sandbox) == json.loads(as_json.stdout)["events"]
    as_nd = runner.invoke(cli, ["export", "-f", "ndjson"], env=env)
    assert 1 + len(MIX) == len(as_nd.stdout.splitlines())
    as_csv = runner.invoke(cli, ["export", "-f", "csv"], env=env)
    assert 1 + len(MIX) == len(read_csv(as_csv.stdout))
    assert not (Path.cwd() / "-").exists()


def test_chunks_join_into_valid_output(sandbox: Sandbox) -> None:
    """More events than one chunk: JSON still parses and every format has every event."""
    n = export_read.CHUNK_ROWS * 2 + 7
    store(sandbox, [THINK, COMMAND] * (n // 2) + [ERROR])
    doc = json.loads(sandbox.rkd("export").stdout)
    assert (n, n) == (doc["event_count"], len(doc["events"]))
    assert n + 1 == len(sandbox.rkd("export", "-f", "ndjson").stdout.splitlines())
    assert n + 1 == len(read_csv(sandbox.rkd("export", "-f", "csv").stdout))


def test_csv_from_worker_processes_equals_csv_from_one(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large CSV export rendered by worker processes is byte for byte the serial one."""
    store(sandbox, [THINK, COMMAND, ERROR] * 70)
    monkeypatch.setattr(export_read, "CHUNK_ROWS", 40)  # several chunks, several in flight
    env = dict(sandbox.env)
    serial = CliRunner().invoke(cli, ["export", "-f", "csv"], env=env)
    monkeypatch.setattr(export_csv, "POOL_MIN_EVENTS", 1)
    parallel = CliRunner().invoke(cli, ["export", "-f", "csv"], env=env)
    assert (0, 0) == (serial.exit_code, parallel.exit_code), parallel.output
    assert 211 == len(read_csv(parallel.stdout))
    assert serial.stdout == parallel.stdout


# -- no data, the consent record --------------------------------------------------------------


def test_no_database_exports_nothing_and_creates_nothing(sandbox: Sandbox) -> None:
    """No database yet: each format exports zero events; no file or folder is created."""
    for fmt, expected_lines in (("json", 1), ("ndjson", 1), ("csv", 1)):
        proc = sandbox.rkd("export", "--format", fmt)
        assert 0 == proc.returncode, proc.stderr
        assert expected_lines == len(proc.stdout.splitlines())
    doc = json.loads(sandbox.rkd("export").stdout)
    assert (0, []) == (doc["event_count"], doc["events"])
    assert not (sandbox.root / "data").exists()


def test_empty_database_exports_nothing(sandbox: Sandbox) -> None:
    """A database with no events: an empty export, valid in each format."""
    Storage(sandbox.settings.db_path).close()
    doc = json.loads(sandbox.rkd("export").stdout)
    assert (0, []) == (doc["event_count"], doc["events"])
    nd = sandbox.rkd("export", "-f", "ndjson").stdout
    assert 0 == json.loads(nd)["event_count"]
    assert [schema_header()] == read_csv(sandbox.rkd("export", "-f", "csv").stdout)


def test_consent_record_is_part_of_every_export(sandbox: Sandbox) -> None:
    """The consent record (current decision and history) is in JSON, NDJSON and CSV's sidecar."""
    store(sandbox, [THINK])
    data_dir = sandbox.settings.data_dir
    record_decision(data_dir, ConsentRecord(choice="granted", at="2026-11-01T09:00:00.000Z",
                                            categories=("command_usage", "performance")))  # fmt: skip
    at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    record_decision(
        data_dir, ConsentRecord(choice="granted", at=at, categories=tuple(s.CATEGORIES))
    )
    expected = json.loads(json.dumps(consent_dict(data_dir)))  # tuples as JSON arrays
    assert (at, 1) == (expected["current"]["at"], len(expected["history"]))
    assert expected == json.loads(sandbox.rkd("export").stdout)["consent"]
    assert (
        expected
        == json.loads(sandbox.rkd("export", "-f", "ndjson").stdout.splitlines()[0])["consent"]
    )
    out = sandbox.root / "d.csv"
    assert 0 == sandbox.rkd("export", "-o", str(out)).returncode
    assert expected == json.loads(Path(f"{out}.consent.json").read_text())["consent"]


# -- files ---------------------------------------------------------------------------------


def test_existing_file_is_replaced_and_made_private(sandbox: Sandbox) -> None:
    """An existing world-readable file is truncated, rewritten and left 0600."""
    store(sandbox, [THINK])
    out = sandbox.root / "old.json"
    out.write_text("x" * 100_000)
    out.chmod(0o644)
    proc = sandbox.rkd("export", "-o", str(out))
    assert 0 == proc.returncode, proc.stderr
    assert 0o600 == stat.S_IMODE(out.stat().st_mode)
    assert 1 == json.loads(out.read_text())["event_count"]


def test_a_failed_export_removes_its_partial_file(sandbox: Sandbox) -> None:
    """A stored payload CSV cannot read: one line, exit 1, and no half-written file left."""
    store(sandbox, [THINK] * 10)
    db = apsw.Connection(str(sandbox.settings.db_path))
    db.execute("UPDATE events SET payload = 'not json' WHERE id = 5")
    db.close()
    out = sandbox.root / "broken.csv"
    proc = sandbox.rkd("export", "-o", str(out))
    assert 1 == proc.returncode
    assert (
        "Error: the database holds an event whose payload is not a JSON object; removed the"
        f" incomplete {out}, {out}.consent.json\n"
    ) == proc.stderr
    assert not out.exists() and not Path(f"{out}.consent.json").exists()


def test_progress_bar_only_for_big_exports_to_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar shows on a terminal stderr for big exports, never over data on that terminal."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", Tty())
    with ex.progress(50_000, to_stdout=True) as tick:  # data on the same terminal
        tick(50_000)
    with ex.progress(ex.PROGRESS_MIN_EVENTS - 1, to_stdout=False) as tick:  # small
        tick(ex.PROGRESS_MIN_EVENTS - 1)
    assert "" == err.getvalue()
    with ex.progress(50_000, to_stdout=False) as tick:
        tick(50_000)
    assert "Exporting" in err.getvalue() and "100%" in err.getvalue()


# -- user mistakes ---------------------------------------------------------------------------


def test_help_has_an_example() -> None:
    """`rkd export --help` documents the formats and shows an example."""
    result = CliRunner().invoke(cli, ["export", "--help"])
    assert 0 == result.exit_code
    assert "Example:" in result.output and "FILE.consent.json" in result.output


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--format", "xml"], 2,
     "Error: Invalid value for '--format' / '-f': 'xml' is not one of 'json', 'ndjson', 'csv'."),
    (["--output", "{root}/missing/x.json"], 1, "Error: {root}/missing: no such directory"),
    (["--output", "{root}"], 1, "Error: {root}: is a directory; give a file name"),
    (["--output", "{db}"], 1, "Error: {db}: that is rkd's own data; choose another file"),
])  # fmt: skip
def test_mistakes_are_one_clear_line(
    sandbox: Sandbox, args: list[str], code: int, message: str
) -> None:
    """Bad format, missing folder, a folder, the database itself: a clear line, no traceback."""
    store(sandbox, [THINK])
    where = {"root": str(sandbox.root), "db": str(sandbox.settings.db_path)}
    proc = sandbox.rkd("export", *(a.format(**where) for a in args))
    assert code == proc.returncode
    assert message.format(**where) == proc.stderr.splitlines()[-1]
    assert "Traceback" not in proc.stderr and "" == proc.stdout
    assert 1 == len(stored(sandbox))
    if code == 1:
        assert 1 == len(proc.stderr.splitlines())
