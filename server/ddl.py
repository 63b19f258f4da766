"""The warehouse DDL (``schema.sql``): its migrations, and its cluster variant.

One text serves both deployments. Embedded (chdb) and a single ClickHouse server run it
as written; ``cluster_variant`` rewrites it for a cluster: ``ON CLUSTER``, Replicated
engines, and a Distributed table in front of each table the ingester writes.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Final, NamedTuple

_HEADER: Final = re.compile(r"^-- migration (\d+): (.*)$", re.M)
_ENGINE: Final = re.compile(r"ENGINE = (\w*)MergeTree\b(?:\(([^)]*)\))?")
_CREATE: Final = re.compile(
    r"^(CREATE (?:TABLE|MATERIALIZED VIEW) IF NOT EXISTS \S+|ALTER TABLE \S+)", re.M
)
WRITTEN: Final = ("events", "reports", "batches")  # what the ingester writes or checks


class Migration(NamedTuple):
    version: int
    why: str
    statements: tuple[str, ...]


def schema_text() -> str:
    return files("rkd.server").joinpath("schema.sql").read_text("utf-8")


def _statements(text: str) -> tuple[str, ...]:
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("--")]
    return tuple(s.strip() for s in "\n".join(lines).split(";") if s.strip())


def migrations(text: str | None = None) -> list[Migration]:
    """The numbered sections of the DDL, in order."""
    text = schema_text() if text is None else text
    heads = list(_HEADER.finditer(text))
    out = []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        out.append(Migration(int(head[1]), head[2], _statements(text[head.end() : end])))
    return out


def statements(db: str) -> list[str]:
    """Every statement of the DDL, for database ``db``, in order."""
    return [s.replace("{db}", db) for m in migrations() for s in m.statements]


def cluster_variant(db: str, cluster: str) -> list[str]:
    """The same DDL for a cluster: replicated tables, and ``<table>_all`` Distributed
    tables for the ones the ingester writes (point the ingester's database at them)."""
    if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", cluster):
        raise ValueError("a cluster name is letters, digits and _")
    out = [f"CREATE DATABASE IF NOT EXISTS {db} ON CLUSTER {cluster}"]
    for s in statements(db):
        s = _CREATE.sub(rf"\1 ON CLUSTER {cluster}", s, count=1)
        out.append(_ENGINE.sub(_replicated, s))
    for table in WRITTEN:
        out.append(
            f"CREATE TABLE IF NOT EXISTS {db}.{table}_all ON CLUSTER {cluster} AS {db}.{table}"
            f"\nENGINE = Distributed({cluster}, {db}, {table}, rand())"
        )
    return out


def _replicated(m: re.Match[str]) -> str:
    args = ["'/clickhouse/tables/{shard}/{database}/{table}'", "'{replica}'"]
    if m[2]:
        args.append(m[2])
    return f"ENGINE = Replicated{m[1]}MergeTree({', '.join(args)})"
