"""``rkd-server``: run the ingestion server, manage its keys, migrate or print the DDL."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import structlog
from rkd.server.config import ConfigError, ServerSettings
from rkd.server.dashboards import ROLES, TokensError, add_token, load_build_report, load_tokens
from rkd.server.keys import KeysError, add_key, load_keys

DEFAULT_DATA_DIR = Path("/var/lib/rkd-server")


def _configure_logging() -> None:
    """JSON lines on stderr. uvicorn's own loggers are kept to warnings: its info lines
    name addresses (the bind address; the access log, which is off, a client's)."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR, show_default=True,
    envvar="RKD_SERVER_DATA_DIR", help="Warehouse (embedded), keys file.",
)  # fmt: skip


@click.group()
def main() -> None:
    """The maintainers' ingestion server and warehouse for rkd telemetry."""


@main.command()
@data_dir_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8443, show_default=True, type=int)
@click.option("--tls-cert", type=click.Path(exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(exists=True, path_type=Path))
@click.option("--behind-proxy", is_flag=True, help="Plain HTTP behind a TLS 1.3 proxy.")
@click.option("--dsn", default="", envvar="RKD_SERVER_DSN",
              help="Warehouse: chdb:///path (default: <data-dir>/warehouse) or http(s)://...")  # fmt: skip
@click.option("--database", default="rkd", show_default=True)
@click.option("--distributed", is_flag=True,
              help="A cluster: write through the <table>_all tables of `schema --cluster`.")  # fmt: skip
@click.option("--key-rate", default=5.0, show_default=True, help="Pro batches/s per key.")
@click.option("--key-burst", default=20.0, show_default=True)
@click.option("--report-rate", default=200.0, show_default=True, help="Reports/s, all senders.")
@click.option("--report-bucket-rate", default=20.0, show_default=True,
              help="Reports/s per coarse bucket (product, version, os, arch).")  # fmt: skip
@click.option("--report-bucket-burst", default=100.0, show_default=True)
@click.option("--body-timeout", default=30.0, show_default=True,
              help="Seconds for a request body to arrive (408 after).")  # fmt: skip
@click.option("--max-concurrency", default=256, show_default=True,
              help="Requests at once (503 beyond): bounds memory, ~9 MB per request.")  # fmt: skip
@click.option("--commit-window-ms", default=20.0, show_default=True)
@click.option("--workers", default=2, show_default=True,
              help="Processes that decode and filter batches (0: in the event loop).")  # fmt: skip
@click.option("--vocabulary", "vocabularies", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="A product's vocabulary file (ReasonKit's is built in).")  # fmt: skip
def run(data_dir: Path, host: str, port: int, tls_cert: Path | None, tls_key: Path | None,
        behind_proxy: bool, dsn: str, database: str, distributed: bool, key_rate: float, key_burst: float,
        report_rate: float, report_bucket_rate: float, report_bucket_burst: float,
        body_timeout: float, max_concurrency: int, commit_window_ms: float, workers: int,
        vocabularies: tuple[Path, ...]) -> None:  # fmt: skip
    """Serve the ingestion API until SIGINT/SIGTERM."""
    import uvicorn
    from rkd.server.app import build_app
    from rkd.server.tls import server_context

    settings = ServerSettings(
        data_dir=data_dir, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key,
        behind_proxy=behind_proxy, dsn=dsn, database=database, distributed=distributed,
        key_rate_per_sec=key_rate, bucket_rate_per_sec=report_bucket_rate,
        bucket_burst=report_bucket_burst,
        key_burst=key_burst, report_rate_per_sec=report_rate,
        commit_window_secs=commit_window_ms / 1000, vocabulary_files=vocabularies,
        workers=workers, body_timeout_secs=body_timeout, max_concurrency=max_concurrency,
    )  # fmt: skip
    try:
        settings.check()
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # clickhouse-connect's chdb backend passes each insert through a temporary file:
        # keep those rows inside the data folder, not in the machine's shared /tmp.
        (data_dir / "tmp").mkdir(exist_ok=True, mode=0o700)
        tempfile.tempdir = str(data_dir / "tmp")
        app = build_app(settings)
    except (ConfigError, KeysError, TokensError, OSError) as e:
        raise click.ClickException(str(e)) from None
    _configure_logging()
    extra: dict[str, Any] = {}
    if tls_cert is not None and tls_key is not None:
        cert, key = tls_cert, tls_key
        extra["ssl_context_factory"] = lambda config, default: server_context(cert, key)
        extra["ssl_certfile"] = str(cert)  # uvicorn's is_ssl switch; the context is ours
    config = uvicorn.Config(
        app, host=host, port=port, lifespan="on", access_log=False, proxy_headers=False,
        server_header=False, date_header=False, log_config=None,
        limit_concurrency=max_concurrency, **extra,
    )  # fmt: skip
    structlog.get_logger("rkd.server").info("listening", port=port, tls=settings.tls)
    uvicorn.Server(config).run()


@main.group()
def keys() -> None:
    """Pro keys: the key ids the server accepts."""


@keys.command("add")
@data_dir_option
def keys_add(data_dir: Path) -> None:
    """Create a key; its secret is printed once (give it to the customer)."""
    key_id, secret = add_key(data_dir / "keys.toml")
    click.echo(f"key id: {key_id}\nsecret: {secret}")


@keys.command("list")
@data_dir_option
def keys_list(data_dir: Path) -> None:
    """The key ids (never the secrets)."""
    try:
        for key_id in sorted(load_keys(data_dir / "keys.toml")):
            click.echo(key_id)
    except KeysError as e:
        raise click.ClickException(str(e)) from None


@main.group()
def tokens() -> None:
    """Dashboard tokens: who may read the reports (viewer) and the audit log (admin)."""


@tokens.command("add")
@data_dir_option
@click.option("--role", type=click.Choice(list(ROLES)), required=True)
def tokens_add(data_dir: Path, role: str) -> None:
    """Create a token; it is printed once (the file keeps only its SHA-256)."""
    token_id, token = add_token(data_dir / "tokens.toml", role)
    click.echo(f"token id: {token_id}\nrole: {role}\ntoken: {token}")


@tokens.command("list")
@data_dir_option
def tokens_list(data_dir: Path) -> None:
    """The token ids and their roles (never the tokens)."""
    try:
        for token in sorted(
            load_tokens(data_dir / "tokens.toml").values(), key=lambda t: t.token_id
        ):
            click.echo(f"{token.token_id} {token.role}")
    except TokensError as e:
        raise click.ClickException(str(e)) from None


@contextlib.contextmanager
def _warehouse(data_dir: Path, dsn: str, database: str) -> Iterator[Any]:
    from rkd.server.warehouse import Warehouse, connect

    settings = ServerSettings(data_dir=data_dir, dsn=dsn, database=database)
    warehouse = Warehouse(connect(settings.warehouse_dsn), database)
    try:
        yield warehouse
    finally:
        warehouse.close()


@main.command()
@click.argument("kind", type=click.Choice(["weekly", "monthly", "quarterly", "transparency"]))
@click.option("--format", "fmt", type=click.Choice(["html", "md", "json"]), default="html",
              show_default=True)  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report here (default: standard output).")  # fmt: skip
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The period's last day (default: yesterday, UTC).")  # fmt: skip
@data_dir_option
@click.option("--dsn", default="", envvar="RKD_SERVER_DSN")
@click.option("--database", default="rkd", show_default=True)
def report(kind: str, fmt: str, out: Path | None, end: dt.datetime | None, data_dir: Path,
           dsn: str, database: str) -> None:  # fmt: skip
    """Build a report from the warehouse: weekly, monthly, quarterly or transparency."""
    build_report = load_build_report()
    if build_report is None:
        raise click.ClickException(
            "reports need rkd.server.analytics, which this installation does not have"
        )
    from rkd.server.render import render

    last = end.date() if end else dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    with _warehouse(data_dir, dsn, database) as warehouse:
        text = render(build_report(warehouse, kind, last), fmt)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, "utf-8")


@main.command()
@data_dir_option
@click.option("--dsn", default="", envvar="RKD_SERVER_DSN")
@click.option("--database", default="rkd", show_default=True)
def migrate(data_dir: Path, dsn: str, database: str) -> None:
    """Apply the warehouse migrations not applied yet (the server does it at start too)."""
    from rkd.server.warehouse import Warehouse, connect

    settings = ServerSettings(data_dir=data_dir, dsn=dsn, database=database)
    warehouse = Warehouse(connect(settings.warehouse_dsn), database)
    try:
        click.echo(json.dumps({"applied": warehouse.migrate(), "version": warehouse.version()}))
    finally:
        warehouse.close()


@main.command()
@click.option("--cluster", default=None, help="Print the Replicated/Distributed variant.")
@click.option("--database", default="rkd", show_default=True)
def schema(cluster: str | None, database: str) -> None:
    """Print the warehouse DDL (for a cluster: ON CLUSTER, replicated, distributed)."""
    from rkd.server import ddl

    try:
        stmts = (
            ddl.statements(database) if cluster is None else ddl.cluster_variant(database, cluster)
        )
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(";\n\n".join(stmts) + ";")


@main.command()
def openapi() -> None:
    """Print the OpenAPI document (generated from the wire schema)."""
    from rkd.server.openapi import openapi_document

    click.echo(json.dumps(openapi_document(), indent=2))
