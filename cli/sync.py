"""`rkd sync`: what leaves this machine, when, and exactly which bytes (issue 12).

Every command but `now` reads the database read-only, so it works with the daemon
down; `now` asks the daemon. `enroll` stores the Pro key (0600) and never prints it.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import Counter
from typing import Any

import apsw
import click
from rkd.client.clock import iso_ms
from rkd.client.control import DaemonUnavailable, request
from rkd.client.wire import StatusRequest, SyncNowRequest
from rkd.daemon import outbox
from rkd.daemon.storage import reading
from rkd.daemon.synckey import SyncKeyError, read_sync_key, write_sync_key

CONTEXT = {"help_option_names": ["-h", "--help"]}


def _settings() -> Any:
    from rkd.cli.main import settings

    return settings(lenient=True)


@click.group(context_settings=CONTEXT)
def sync() -> None:
    """Cloud sync (Pro): status, the log of every upload, the exact bytes, enrollment.

    \b
    Examples:
      rkd sync status
      rkd sync log --json
      rkd sync show next
    """


def gather(s: Any) -> dict[str, Any]:
    """What `rkd sync status` shows (its --json)."""
    info: dict[str, Any] = {
        "endpoint": s.sync_endpoint,
        "requested": bool(s.enabled and s.cloud_sync),
    }
    try:
        key = read_sync_key(s.data_dir)
        info["key_id"], info["key_problem"] = (key.key_id if key else None), None
    except SyncKeyError as e:
        info["key_id"], info["key_problem"] = None, str(e)
    daemon: dict[str, Any] = {}
    try:
        st = request(s.runtime_dir, StatusRequest(), timeout_ms=3000).status
        daemon = dict(st.sync) if st is not None else {}
    except DaemonUnavailable:
        pass
    info["daemon_running"] = bool(daemon)
    community = bool(s.enabled and s.community_contribution)
    offline_mode = (
        "pro" if info["requested"] and info["key_id"] else "community" if community else "off"
    )
    info["mode"] = daemon.get("mode") or offline_mode
    info["problem"] = daemon.get("problem") if daemon else _offline_problem(info)
    info["next_attempt_in_secs"] = daemon.get("next_attempt_in_secs")
    info.update(queue_depth=0, batches={}, last_success=None, expired_unsynced=0, since=None,
                reports={"sent": 0, "waiting": 0}, privacy_budget=[])  # fmt: skip
    with reading(s.db_path) as db:
        if db is None:
            return info
        try:
            info["queue_depth"] = outbox.queue_depth(db)
            info["batches"] = outbox.counts_by_state(db)
            last = outbox.last_success_ms(db)
            info["last_success"] = iso_ms(last) if last else None
            expired = outbox.meta(db, "sync_expired_unsynced")
            info["expired_unsynced"] = expired if isinstance(expired, int) else 0
            since = outbox.meta(db, "sync_since_ms")
            info["since"] = iso_ms(since) if isinstance(since, int) else None
            info["reports"], info["privacy_budget"] = _reports(db)
        except apsw.SQLError:  # an older database without the outbox: nothing was ever sent
            pass
    return info


def _reports(db: Any) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Community reports sent and waiting, and the ε ledger by ISO week (what the
    differential privacy spent: ε adds up over a week's reports)."""
    from rkd.daemon.reports import budget

    rows = db.execute("SELECT sent_ms IS NOT NULL, count(*) FROM report_days GROUP BY 1").fetchall()
    counts = {"sent": 0, "waiting": 0}
    for sent, n in rows:
        counts["sent" if sent else "waiting"] += int(n)
    ledger = []
    for (product,) in db.execute("SELECT DISTINCT product FROM report_days ORDER BY 1"):
        for week, eps, n in budget(db, str(product), "week"):
            ledger.append(
                {"product": product, "week": week, "epsilon": round(eps, 6), "reports": n}
            )
    return counts, ledger


def _offline_problem(info: dict[str, Any]) -> str | None:
    if not info["requested"]:
        return None
    return info["key_problem"] or (
        None if info["key_id"] else "not enrolled: run `rkd sync enroll`"
    )


def render_status(i: dict[str, Any]) -> str:
    mode = {"pro": "on (Pro cloud sync)", "community": "community reports (anonymous)",
            "off": "off"}.get(i["mode"], i["mode"])  # fmt: skip
    rows = [
        ("Cloud Sync", mode + (f" - {i['problem']}" if i["problem"] else "")),
        ("Endpoint", i["endpoint"]),
        ("Key", i["key_id"] or "not enrolled"),
        ("Consent since", i["since"] or "-"),
        ("Last success", i["last_success"] or "never"),
        ("Waiting", f"{i['queue_depth']:,} events"),
        ("Next attempt", "-" if i["next_attempt_in_secs"] is None else f"in {i['next_attempt_in_secs']:g} s"),
        ("Batches", ", ".join(f"{k} {v:,}" for k, v in sorted(i["batches"].items())) or "none"),
        ("Expired unsent", f"{i['expired_unsynced']:,} (pruned by retention before upload)"),
        ("Reports", f"{i['reports']['sent']:,} sent, {i['reports']['waiting']:,} waiting"),
    ]  # fmt: skip
    if i["privacy_budget"]:
        last = i["privacy_budget"][-1]
        rows.append(("Privacy budget", f"ε {last['epsilon']:g} spent in {last['week']}"
                     f" over {last['reports']} report(s) (see --json for every week)"))  # fmt: skip
    return "\n".join(f"{k + ':':<15} {v}" for k, v in rows)


@sync.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Mode, endpoint, last success, what waits, next attempt, quarantined batches.

    \b
    Example:
      rkd sync status --json
    """
    info = gather(_settings())
    click.echo(json.dumps(info, indent=2, sort_keys=True) if as_json else render_status(info))


@sync.command("log")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100_000))
def log_(as_json: bool, limit: int) -> None:
    """Every upload attempted: time, endpoint, kind, events, bytes, body SHA-256, result.

    \b
    Example:
      rkd sync log --limit 20
    """
    s = _settings()
    rows: list[dict[str, Any]] = []
    with reading(s.db_path) as db, contextlib.suppress(apsw.SQLError):  # no outbox yet
        rows = outbox.log_rows(db, limit) if db is not None else []
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("Nothing was ever uploaded.")
    for r in rows:
        sha = (r["body_sha256"] or "")[:12]
        click.echo(f"{r['at']}  {r['kind']:<8} {r['events']:>5} ev {r['bytes']:>8,} B"
                   f"  {sha:<12}  {r['result']}")  # fmt: skip


@sync.command()
@click.argument("batch")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(batch: str, as_json: bool) -> None:
    """The exact bytes a batch sent (BATCH: its id from `rkd sync log`), or `next`:
    what the next upload would send now, decoded.

    \b
    Examples:
      rkd sync show next
      rkd sync show 3f2a9c0e5b7d4e1f8a6c2b9d0e4f7a1c --json
    """
    s = _settings()
    with reading(s.db_path) as db:
        if db is None:
            raise click.ClickException("nothing is stored yet")
        info = _next(s, db) if batch == "next" else outbox.batch_row(db, batch)
    if info is None:
        raise click.ClickException(f"no batch {batch[:40]!r} (see `rkd sync log`)")
    body = info.pop("body")
    info["bytes"] = len(body)
    info["body"] = outbox.decode_body(body) if body else None
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    head = {k: v for k, v in info.items() if k != "body"}
    click.echo("\n".join(f"{k}: {v}" for k, v in head.items()))
    click.echo(json.dumps(info["body"], indent=2, default=str))


def _next(s: Any, db: Any) -> dict[str, Any] | None:
    """A preview of the next batch (read-only: nothing is recorded)."""
    from rkd.daemon.vocabularies import Vocabularies, vocabulary_dir

    pending = outbox.next_pending(db)
    if pending is not None:
        return outbox.batch_row(db, pending[0])
    cursor = outbox.meta(db, "sync_cursor")
    since = outbox.meta(db, "sync_since_ms")
    if not isinstance(cursor, int) or not isinstance(since, int):
        raise click.ClickException("sync is off: nothing will be sent")
    learnt = [bytes(b) for (b,) in db.execute("SELECT body FROM vocabularies")]
    vocabularies = Vocabularies(vocabulary_dir(s), Counter(), learnt)
    batch = outbox.build(db, cursor, since, vocabularies.get, s.sync.max_batch_events)
    if batch is None:
        return {"batch_id": None, "events": 0, "body": b"", "note": "nothing waits"}
    return {"batch_id": "(next)", "events": batch.events, "skipped": batch.skipped,
            "body_sha256": batch.body_sha256, "body": batch.body}  # fmt: skip


@sync.command()
@click.option("--wait", default=30.0, show_default=True, type=click.FloatRange(0, 600),
              help="Seconds to wait for the round's result.")  # fmt: skip
def now(wait: float) -> None:
    """Upload now instead of at the next interval, and print what happened.

    \b
    Example:
      rkd sync now --wait 10
    """
    s = _settings()
    started = int(time.time() * 1000)
    try:
        reply = request(s.runtime_dir, SyncNowRequest(), timeout_ms=5000)
    except DaemonUnavailable as e:
        raise click.ClickException(str(e)) from None
    if not reply.ok:
        raise click.ClickException(reply.error or "sync failed")
    deadline = time.monotonic() + wait
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with reading(s.db_path) as db:
            if db is not None:
                rows = [r for r in outbox.log_rows(db, 50) if r["at"] >= iso_ms(started)]
        if rows:
            break
        time.sleep(0.2)
    if not rows:
        click.echo("Sync round started; no result yet (see `rkd sync log`).")
    for r in rows:
        click.echo(f"{r['kind']}: {r['events']:,} events, {r['bytes']:,} bytes: {r['result']}")


@sync.command()
@click.option("--key-id", required=True, help="The key id from your Pro account.")
@click.option("--secret-stdin", is_flag=True, help="Read the secret from stdin (scripts).")
def enroll(key_id: str, secret_stdin: bool) -> None:
    """Store the Pro sync key (key id and secret) for the daemon, readable only by you.

    The secret is asked for without echo (or read from stdin) and never printed. Then
    set `sync_enabled = true` in config.toml and run `rkd reload`.

    \b
    Example:
      rkd sync enroll --key-id rk_pro_1234
    """
    s = _settings()
    if secret_stdin:
        secret = sys.stdin.readline().strip()
    else:
        secret = click.prompt("Secret", hide_input=True).strip()
    try:
        path = write_sync_key(s.data_dir, key_id.strip(), secret)
    except SyncKeyError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Stored key {key_id.strip()} in {path} (mode 0600).")
    if not s.cloud_sync:
        click.echo("Sync is off: set `sync_enabled = true` under [telemetry] in"
                   f" {s.config_path}, then `rkd reload`.")  # fmt: skip
