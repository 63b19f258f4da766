"""`rkd metrics`: the spec's "Personal Usage Metrics" (§5.1), from the daily aggregates.

Only the aggregate rows are read (rkd.daemon.aggregates), never the raw events, so the
report takes milliseconds over millions of events and still covers days whose raw events
were pruned. Days are UTC calendar days: ``--days N`` is today and the N-1 days before.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Final

import apsw
import click
import msgspec
from rkd.client.clock import DAY_MS, now_ms
from rkd.client.config import Settings
from rkd.daemon.storage import StorageError, open_read_only

# -- prices ---------------------------------------------------------------------------------

Prices = dict[str, tuple[float, float]]  # model id prefix -> USD per million (input, output)

# List prices per million tokens (no batch or prompt-caching discounts) at the time of
# writing; config.toml's [telemetry.prices] overrides or adds entries.
DEFAULT_PRICES: Final[Prices] = {
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-3-5-sonnet": (3.0, 15.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "claude-3-opus": (15.0, 75.0),
    "claude-3-sonnet": (3.0, 15.0),
    "claude-3-haiku": (0.25, 1.25),
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5-nano": (0.05, 0.4),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-2024-05-13": (5.0, 15.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4": (30.0, 60.0),
    "gpt-3.5-turbo": (0.5, 1.5),
    "o1": (15.0, 60.0),
    "o1-mini": (1.1, 4.4),
    "o3": (2.0, 8.0),
    "o3-mini": (1.1, 4.4),
    "o4-mini": (1.1, 4.4),
}


def price_table(settings: Settings) -> Prices:
    """The shipped prices overlaid with the user's ``[telemetry.prices]``."""
    return {**DEFAULT_PRICES, **{k: (v.input, v.output) for k, v in settings.prices.items()}}


def price_for(model: str, prices: Prices) -> tuple[float, float] | None:
    """The price of the longest key equal to ``model`` or followed in it by - @ or :."""
    best = None
    for key in prices:
        if (model == key or (model.startswith(key) and model[len(key)] in "-@:")) and (
            best is None or len(key) > len(best)
        ):
            best = key
    return None if best is None else prices[best]


# -- reading the aggregates -----------------------------------------------------------------


class Sums(msgspec.Struct, kw_only=True):
    """The aggregate rows of a range of days, summed."""

    daily: dict[tuple[str, str], int] = {}  # (dim, key) -> n
    latency: list[tuple[int, int]] = []  # (ms, n), ascending
    sessions: int = 0


def _read(db: apsw.Connection, first_day: int) -> Sums:
    """Sum every aggregate row from ``first_day`` on, in one read transaction."""
    with db:  # one snapshot: a daemon writing meanwhile cannot split the figures
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'agg_daily'").get is None:
            version = db.execute("PRAGMA user_version").get
            if version:
                raise StorageError(
                    f"database schema {version} predates metrics; start the daemon once "
                    "(rkd run) to upgrade it"
                )
            return Sums()  # created but not yet initialised by a daemon
        daily = db.execute(
            "SELECT dim, key, sum(n) FROM agg_daily WHERE day >= ? GROUP BY dim, key",
            (first_day,),
        ).fetchall()
        latency = db.execute(
            "SELECT ms, sum(n) FROM agg_latency WHERE day >= ? GROUP BY ms ORDER BY ms",
            (first_day,),
        ).fetchall()
        sessions = db.execute(
            "SELECT count(DISTINCT session_id) FROM agg_sessions WHERE day >= ?", (first_day,)
        ).get
    return Sums(
        daily={(str(d), str(k)): int(n) for d, k, n in daily},  # type: ignore[arg-type]
        latency=[(int(ms), int(n)) for ms, n in latency],  # type: ignore[arg-type]
        sessions=int(sessions or 0),
    )


def read_sums(db_path: Path, first_day: int) -> Sums:
    """The summed aggregates, read-only; zeros when there is no database (nothing created)."""
    db = open_read_only(db_path)
    if db is None:
        return Sums()
    try:
        db.set_busy_timeout(2000)
        return _read(db, first_day)
    except StorageError as e:
        raise StorageError(f"{db_path}: {e}") from None
    except apsw.Error as e:
        raise StorageError(f"{db_path}: cannot read the database: {e}") from None
    finally:
        db.close()


# -- the report (the --json object) -------------------------------------------------------

EPOCH: Final = dt.date(1970, 1, 1)


def percentile(latency: list[tuple[int, int]], q: int) -> int | None:
    """Nearest rank: the smallest value with at least ceil(q% of N) values at or below it."""
    total = sum(n for _, n in latency)
    if not total:
        return None
    rank, seen = -(-q * total // 100), 0
    for ms, n in latency:
        seen += n
        if seen >= rank:
            return ms
    return latency[-1][0]  # pragma: no cover


def ratio(part: int, whole: int) -> float | None:
    """``part / whole`` rounded to 6 places; None when ``whole`` is 0."""
    return round(part / whole, 6) if whole else None


def by_key(sums: Sums, dim: str) -> dict[str, int]:
    """One dimension's counts, largest first (ties by name)."""
    items = [(k, n) for (d, k), n in sums.daily.items() if d == dim]
    return dict(sorted(items, key=lambda kn: (-kn[1], kn[0])))


def shares(counts: dict[str, int], whole: int) -> dict[str, dict[str, Any]]:
    return {k: {"count": n, "share": ratio(n, whole)} for k, n in counts.items()}


def tokens(sums: Sums, prices: Prices) -> dict[str, Any]:
    """Token totals and estimated cost, by model; unknown models are counted as unpriced."""
    ins, outs = by_key(sums, "tokens_input"), by_key(sums, "tokens_output")
    cached = by_key(sums, "tokens_cached")
    models = sorted(ins.keys() | outs.keys() | cached.keys(),
                    key=lambda m: (-(ins.get(m, 0) + outs.get(m, 0)), m))  # fmt: skip
    by_model, cost, unpriced = {}, 0.0, []
    for m in models:
        i, o, price = ins.get(m, 0), outs.get(m, 0), price_for(m, prices)
        c = None if price is None else (i * price[0] + o * price[1]) / 1e6
        by_model[m] = {"input": i, "output": o, "cached": cached.get(m, 0),
                       "cost_usd": None if c is None else round(c, 6)}  # fmt: skip
        cost += c or 0.0
        if c is None:
            unpriced.append(m)
    return {"input": sum(ins.values()), "output": sum(outs.values()),
            "cached": sum(cached.values()), "est_cost_usd": round(cost, 6),
            "unpriced_models": unpriced, "by_model": by_model}  # fmt: skip


def report(sums: Sums, days: int, today: int, prices: Prices, db_path: Path) -> dict[str, Any]:
    """Everything `rkd metrics` shows, as a JSON-ready dict (the `--json` output)."""
    events, stat = by_key(sums, "event"), by_key(sums, "stat")
    outcomes = {k: events.get(f"command_{k}", 0) for k in ("executed", "failed", "cancelled")}
    queries = sum(outcomes.values())
    errors = by_key(sums, "error")
    duration = stat.get("duration_ms", 0)

    def day(d: int) -> str:
        return (EPOCH + dt.timedelta(days=d)).isoformat()

    return {
        "period": {
            "days": days,
            "first_day": day(today - days + 1),
            "last_day": day(today),
            "time_zone": "UTC",
        },
        "database": str(db_path),
        "sessions": sums.sessions,
        "queries": queries,
        "duration_ms": duration,
        "outcomes": outcomes,
        "commands": shares(by_key(sums, "command"), queries),
        "profiles": shares(by_key(sums, "profile"), queries),
        "thinktools": by_key(sums, "thinktool"),
        "performance": {
            "latency_ms": {
                "avg": round(duration / queries, 1) if queries else None,
                **{f"p{q}": percentile(sums.latency, q) for q in (50, 95, 99)},
            },
            "success_rate": ratio(stat.get("success", 0), queries),
            "cache_hit_rate": ratio(stat.get("cache_hit", 0), queries),
        },
        "errors": {
            "total": sum(errors.values()),
            "by_category": shares(errors, queries),
            "failed_commands": shares(by_key(sums, "failed"), queries),
        },
        "tokens": tokens(sums, prices),
        "events": events,
    }


def gather(settings: Settings, days: int, prices: Prices) -> dict[str, Any]:
    """The report for the ``days`` UTC days ending today."""
    today = now_ms() // DAY_MS
    sums = read_sums(settings.db_path, today - days + 1)
    return report(sums, days, today, prices, settings.db_path)


# -- human numbers ----------------------------------------------------------------------------


def fmt_count(n: int) -> str:
    """1234 -> '1,234'."""
    return f"{n:,}"


def fmt_compact(n: int) -> str:
    """Three significant digits at most: 950, '12.3K', '600K', '1.2M', '2.5B'."""
    if n < 1000:
        return str(n)
    for unit, size in (("K", 1e3), ("M", 1e6), ("B", 1e9), ("T", 1e12)):
        x = n / size
        if x < 99.95:
            return f"{x:.1f}{unit}"
        if x < 999.5 or unit == "T":
            return f"{x:.0f}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def fmt_duration(ms: int) -> str:
    """Milliseconds, two units at most: '850ms', '42s', '12m 5s', '4h 23m', '2d 3h'."""
    if ms < 1000:
        return f"{ms}ms"
    s = ms // 1000
    d, h, m = s // 86_400, s // 3600 % 24, s // 60 % 60
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m}m"
    return f"{m}m {s % 60}s" if m else f"{s}s"


def fmt_percent(x: float | None) -> str:
    """0.982 -> '98.2%'; None (nothing to divide by) -> 'n/a'."""
    return "n/a" if x is None else f"{x * 100:.1f}%"


def fmt_ms(x: float | None) -> str:
    """1234.4 -> '1,234ms'; None -> 'n/a'."""
    return "n/a" if x is None else f"{round(x):,}ms"


def fmt_cost(usd: float) -> str:
    """4.5 -> '$4.50'; below a cent '<$0.01'; from a million on compact: '$1.2M'."""
    if usd >= 1e6:
        return "$" + fmt_compact(int(usd))
    return "<$0.01" if 0 < usd < 0.005 else f"${usd:,.2f}"


# -- rendering ----------------------------------------------------------------------------------

WIDTH: Final = 80
LABEL: Final = 15  # label width under a heading: values start in column 17, as in the spec
BAR: Final = 30  # columns of a 100 % bar
MAX_NAME: Final = 24
MAX_MODEL: Final = 40  # the by-model lines have room for longer names
MAX_ROWS: Final = 10  # more than this: the first 9 and "other"
EIGHTHS: Final = ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")


def bar(share: float, width: int) -> str:
    """A horizontal bar of ``share`` (0..1) of ``width`` columns, in eighths of a column."""
    eighths = round(max(0.0, min(1.0, share)) * max(0, width) * 8)
    if share > 0 and eighths == 0:
        eighths = 1  # something, however little, shows
    return "█" * (eighths // 8) + EIGHTHS[eighths % 8]


def _name(name: str, limit: int = MAX_NAME) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _top(counts: dict[str, int]) -> list[tuple[str, int]]:
    items = list(counts.items())
    if len(items) <= MAX_ROWS:
        return items
    return [*items[: MAX_ROWS - 1], ("other", sum(n for _, n in items[MAX_ROWS - 1 :]))]


def bar_rows(counts: dict[str, int], whole: int, unit: str = "") -> list[str]:
    """'  name:   count (share)  bar' lines, at most WIDTH columns; '  none' when empty."""
    rows = _top(counts)
    if not rows:
        return ["  none"]
    label = max(LABEL, *(len(_name(k)) + 2 for k, _ in rows))
    digits = max(len(fmt_count(n)) for _, n in rows)
    lines = []
    for k, n in rows:
        head = f"  {_name(k) + ':':<{label}}{fmt_count(n):>{digits}}{unit}"
        head += f" {'(' + fmt_percent(ratio(n, whole)) + ')':<8} " if not unit else "  "
        width = min(BAR, WIDTH - len(head))
        lines.append(head + bar(n / whole if whole else 0.0, width))
    return lines


def _pairs(rows: list[tuple[str, str]], indent: str = "  ") -> list[str]:
    """'Label:   value' lines with the values in one column, as the spec lays them out."""
    return [f"{indent}{k + ':':<{LABEL + 2 - len(indent)}}{v}" for k, v in rows]


def _tokens(t: dict[str, Any]) -> list[str]:
    cost = fmt_cost(t["est_cost_usd"])
    if t["unpriced_models"]:
        n = len(t["unpriced_models"])
        cost += f" (excludes {n} unpriced model{'s' if n > 1 else ''})"
    lines = _pairs([("Input", fmt_compact(t["input"])), ("Output", fmt_compact(t["output"]))]
                   + ([("Cached", fmt_compact(t["cached"]))] if t["cached"] else [])
                   + [("Est. Cost", cost)])  # fmt: skip
    models = list(t["by_model"].items())[:MAX_ROWS]
    width = max((len(k) for k, _ in models), default=0)
    for k, v in models:
        price = "unpriced" if v["cost_usd"] is None else fmt_cost(v["cost_usd"])
        lines.append(f"    {_name(k, MAX_MODEL):<{min(width, MAX_MODEL)}}  {fmt_compact(v['input']):>5} in"
                     f"  {fmt_compact(v['output']):>5} out  {price}")  # fmt: skip
    if t["unpriced_models"]:
        lines.append("  Unpriced models: add them under [telemetry.prices] in config.toml")
    return lines


def render(r: dict[str, Any]) -> str:
    """The human report, in the spec's §5.1 layout with small bars (<= 80 columns)."""
    days, q, perf = r["period"]["days"], r["queries"], r["performance"]
    title = f"Personal Usage Metrics (Last {days} Day{'s' if days != 1 else ''})"
    lat = perf["latency_ms"]
    calls = sum(r["thinktools"].values())
    counts = {k: v["count"] for k, v in r["errors"]["by_category"].items()}
    failed = {k: v["count"] for k, v in r["errors"]["failed_commands"].items()}
    lines = [title, "=" * len(title), ""]
    lines += _pairs([
        ("Period", f"{r['period']['first_day']} to {r['period']['last_day']} (UTC)"),
        ("Sessions", fmt_count(r["sessions"])), ("Total Queries", fmt_count(q)),
        ("Total Duration", fmt_duration(r["duration_ms"])),
    ], indent="")  # fmt: skip
    lines += ["", "Command Usage:", *bar_rows({k: v["count"] for k, v in r["commands"].items()}, q)]
    lines += ["", "Profile Usage:", *bar_rows({k: v["count"] for k, v in r["profiles"].items()}, q)]
    lines += ["", "ThinkTool Usage:", *bar_rows(r["thinktools"], calls, unit=" calls")]
    lines += ["", "Performance:", *_pairs([
        ("Avg Latency", fmt_ms(lat["avg"])), ("p50 Latency", fmt_ms(lat["p50"])),
        ("p95 Latency", fmt_ms(lat["p95"])), ("p99 Latency", fmt_ms(lat["p99"])),
        ("Success Rate", fmt_percent(perf["success_rate"])),
        ("Cache Hit", fmt_percent(perf["cache_hit_rate"])),
    ])]  # fmt: skip
    lines += ["", "Errors by Category (share of queries):", *bar_rows(counts, q)]
    lines += ["", "Failed Commands by Category:", *bar_rows(failed, q)]
    lines += ["", "Tokens Used:", *_tokens(r["tokens"])]
    if not r["events"]:
        lines += ["", "No events stored for this period yet."]
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------------


@click.command()
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 3650),
              help="How many UTC days to cover, today included.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (stable keys).")
def metrics(days: int, as_json: bool) -> None:
    """Show your personal usage metrics: commands, latency, errors, tokens and cost.

    The spec's "Personal Usage Metrics": sessions, queries and their duration; command,
    profile and ThinkTool usage; average and p50/p95/p99 latency, success and cache-hit
    rates; errors by category; tokens in and out with an estimated cost.

    Days are UTC calendar days: --days 30 is today and the 29 days before. Reads only
    the daily aggregates, read-only, so it works with the daemon down and still covers
    days whose raw events were pruned. Events the daemon holds but has not written yet
    are not included: run `rkd flush` first to include them. Costs use list prices
    per million tokens; set your own under [telemetry.prices] in config.toml.

    \b
    Example:
      rkd metrics --days 7
      rkd metrics --json | jq .performance
    """
    from rkd.cli.main import settings  # here, not at import: main imports this module

    s = settings(lenient=True)
    try:
        r = gather(s, days, price_table(s))
    except StorageError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(r, indent=2) if as_json else render(r))
