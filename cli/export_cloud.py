"""`rkd export --cloud` (GDPR Art. 15, 20 in the cloud): what the sync server holds for
the sessions this install uploaded, fetched with a signed request, written in the same
formats as the local export (json, ndjson, csv) to the same kinds of target."""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Any

import click
from rkd.client.clock import utc_now
from rkd.daemon.cloud_rights import CloudError, fetch, uploaded_sessions
from rkd.daemon.storage import reading

COLUMNS = ("event_id", "event_type", "ts", "product", "version", "payload")


def export_cloud(settings: Any, output: str, fmt: str) -> None:
    with reading(settings.db_path) as db:
        sessions = uploaded_sessions(db) if db is not None else []
    events: list[dict[str, Any]] = []
    if sessions:
        try:
            events = fetch(settings, sessions)
        except CloudError as e:
            raise click.ClickException(f"cannot export from the cloud: {e}") from None
    head = {"exported_at": utc_now().isoformat().replace("+00:00", "Z"),
            "source": "cloud", "endpoint": settings.sync_endpoint,
            "sessions": len(sessions), "event_count": len(events)}  # fmt: skip
    text = _render(fmt, head, [{k: _plain(e.get(k)) for k in COLUMNS} for e in events])
    if output == "-":
        sys.stdout.write(text)
    else:
        from pathlib import Path

        from rkd.client.files import write_atomic

        write_atomic(Path(output), text.encode(), 0o600)
    click.echo(f"Exported {len(events):,} events held in the cloud for {len(sessions):,}"
               f" uploaded sessions{'' if output == '-' else ' to ' + output}.", err=True)  # fmt: skip


def _plain(value: Any) -> Any:
    """Stored payloads come back as JSON text: decoded, so the export nests them."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return (
        value
        if isinstance(value, str | int | float | bool | dict | list) or value is None
        else str(value)
    )


def _render(fmt: str, head: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    if fmt == "json":
        return json.dumps({**head, "events": rows}, indent=2) + "\n"
    if fmt == "ndjson":
        return "".join(json.dumps(x) + "\n" for x in [head, *rows])
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([json.dumps(r[k]) if isinstance(r[k], dict | list) else r[k] for k in COLUMNS])
    return out.getvalue()
