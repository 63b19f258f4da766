"""Community reports: one small anonymous report per active UTC day, built from the database.

The sync worker asks :func:`due_days` which ended days have activity and no report yet,
:func:`build_report` for each (read-only), stores what it built with :func:`record_built`
*before* sending (so a retry resends the same bytes: a new noise draw for the same day
would spend ε again), sends the stored body at :func:`send_time`, then :func:`record_sent`.
:func:`due_days`, :func:`load_state` and :func:`build_report` only read (a worker thread
with its own read-only connection may run them: a first report walks every stored event
once, ~1 s at 300k events); :func:`record_built`, :func:`record_sent` and
:func:`prune_reports` write, so they belong on the daemon's loop, its one writer.

What a report says and how the server sums it: ``rkd.client.report``. Every string is
declared for its field in the product's vocabulary or ``__other__``; the closed
enumerations (profile, error category, tier) stay as they are, as in the upload filter.
With ``differential_privacy`` on, every flag and count is randomized (``rkd.client.dp``
says how ε is split) and the ε spent is kept per day in a ledger (:func:`budget`).

State (tables :data:`REPORT_TABLES_SQL`, per product):

- ``report_install``: the install's first active day (cohort week, install age). Set on
  the first record from the earliest stored activity, then kept: pruning cannot move it.
- ``report_days``: one row per recorded report: the exact flags, ε spent, the body as
  sent, when it is due and when it went. ``first_of_week`` / ``first_of_month`` are true
  for the first *recorded* report of an ISO week / month, so each week and month is
  flagged exactly once per install, whatever order days are built in.
- ``report_progress``: funnel stage conditions reached so far (rkd.client.dp.FUNNELS).
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections import Counter
from fractions import Fraction
from random import Random
from typing import Any, Final, Literal, get_args

import apsw
import msgspec
from rkd.client import dp
from rkd.client.clock import DAY_MS
from rkd.client.config import PrivacyConfig
from rkd.client.report import (
    LATENCY_BUCKETS_MS,
    MAX_INSTALL_AGE,
    MAX_KEYS_PER_DIMENSION,
    CommunityReport,
    Dimension,
    Privacy,
)
from rkd.client.schema import ErrorCategory, Profile, Tier
from rkd.client.upload import OTHER
from rkd.client.vocabulary import Vocabulary
from rkd.daemon.aggregates import COMMAND_TYPES
from rkd.daemon.derived import DERIVED_TYPES

EPOCH: Final = dt.date(1970, 1, 1)
MAX_REPORT_COUNT: Final = 2**31 - 1

REPORT_TABLES_SQL: Final = """
    CREATE TABLE IF NOT EXISTS report_install(
        product TEXT PRIMARY KEY, first_day INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS report_days(
        product TEXT NOT NULL, day INTEGER NOT NULL,
        first_of_week INTEGER NOT NULL, first_of_month INTEGER NOT NULL,
        epsilon REAL NOT NULL, body BLOB NOT NULL,
        built_ms INTEGER NOT NULL, send_at_ms INTEGER NOT NULL, sent_ms INTEGER,
        PRIMARY KEY(product, day)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS report_progress(
        product TEXT NOT NULL, funnel TEXT NOT NULL, stage INTEGER NOT NULL,
        PRIMARY KEY(product, funnel, stage)) WITHOUT ROWID;
"""
"""The report state's tables (days are UTC days since the epoch; ε 0 means exact)."""
REPORT_TABLES: Final = ("report_install", "report_days", "report_progress")

DIM_FIELDS: Final[dict[str, str]] = {
    "command": "command", "thinktool": "tool_name", "profile": "profile",
    "error_category": "error_category", "feature": "feature_id", "model": "tokens.model",
}  # fmt: skip
CLOSED: Final[dict[str, tuple[str, ...]]] = {
    "profile": get_args(Profile), "error_category": get_args(ErrorCategory),
}  # fmt: skip
_VERSION: Final = re.compile(r"v?([0-9]{1,4})\.([0-9]{1,4})")


class ReportState(msgspec.Struct, frozen=True, kw_only=True):
    """What the report state tables hold for one product."""

    product: str
    first_day: int | None  # None until the first report is recorded
    reported: frozenset[int]  # days with a recorded report
    progress: frozenset[tuple[str, int]]  # (funnel, stage) conditions reached

    def weeks(self) -> set[str]:
        return {iso_week(day_date(d)) for d in self.reported}

    def months(self) -> set[str]:
        return {month_of(day_date(d)) for d in self.reported}


class Built(msgspec.Struct, frozen=True, kw_only=True):
    """A report and the exact facts :func:`record_built` keeps about it."""

    report: CommunityReport
    first_day: int
    first_of_week: bool  # exact, whatever the report shows under DP
    first_of_month: bool
    reached: frozenset[tuple[str, int]]
    epsilon: float  # spent by this report; 0.0 when exact


def day_number(day: dt.date) -> int:
    return (day - EPOCH).days


def day_date(n: int) -> dt.date:
    return EPOCH + dt.timedelta(days=n)


def iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def month_of(day: dt.date) -> str:
    return f"{day.year}-{day.month:02d}"


# -- state -----------------------------------------------------------------------------------


def ensure_report_tables(conn: apsw.Connection) -> None:
    """Create the report state tables if missing (the daemon's migration runs the same SQL)."""
    with conn:
        conn.execute(REPORT_TABLES_SQL)


def load_state(conn: apsw.Connection, product: str) -> ReportState:
    first = conn.execute("SELECT first_day FROM report_install WHERE product = ?", (product,)).get
    days: list[Any] = conn.execute(
        "SELECT day FROM report_days WHERE product = ?", (product,)
    ).fetchall()
    progress: list[Any] = conn.execute(
        "SELECT funnel, stage FROM report_progress WHERE product = ?", (product,)
    ).fetchall()
    return ReportState(
        product=product,
        first_day=first if isinstance(first, int) else None,
        reported=frozenset(int(d) for (d,) in days),
        progress=frozenset((str(f), int(s)) for f, s in progress),
    )


def after_recording(state: ReportState, built: Built) -> ReportState:
    """The state :func:`record_built` leaves, without writing: so several days can be
    built in a row on a read-only connection (the sync worker's), then recorded."""
    first = built.first_day if state.first_day is None else min(state.first_day, built.first_day)
    return msgspec.structs.replace(
        state, first_day=first, reported=state.reported | {day_number(built.report.day)},
        progress=state.progress | built.reached,
    )  # fmt: skip


def build_due(conn: apsw.Connection, vocabulary: Vocabulary, since: dt.date, today: dt.date,
              privacy: PrivacyConfig) -> list[Built]:  # fmt: skip
    """The reports of every ended day in [since, today) not reported yet, in day order,
    each built on the state the ones before it leave. Only reads."""
    state = load_state(conn, vocabulary.product)
    out = []
    for day in due_days(conn, vocabulary.product, since, today):
        built = build_report(conn, state, day, vocabulary, privacy)
        if built is not None:
            out.append(built)
            state = after_recording(state, built)
    return out


def record_built(conn: apsw.Connection, built: Built, send_at_ms: int, now_ms: int) -> None:
    """Keep a built report (unsent) and what it changes in the state, in one transaction.

    A day already recorded raises ``apsw.ConstraintError``: one report per day, ever."""
    r = built.report
    body = msgspec.msgpack.encode(r)
    with conn:
        conn.execute(
            "INSERT INTO report_install(product, first_day) VALUES (?, ?) ON CONFLICT(product)"
            " DO UPDATE SET first_day = min(first_day, excluded.first_day)",
            (r.product, built.first_day),
        )
        conn.execute(
            "INSERT INTO report_days(product, day, first_of_week, first_of_month, epsilon,"
            " body, built_ms, send_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (r.product, day_number(r.day), built.first_of_week, built.first_of_month,
             built.epsilon, body, now_ms, send_at_ms),
        )  # fmt: skip
        conn.executemany(
            "INSERT OR IGNORE INTO report_progress(product, funnel, stage) VALUES (?, ?, ?)",
            [(r.product, f, s) for f, s in sorted(built.reached)],
        )


def pending(conn: apsw.Connection, now_ms: int) -> list[tuple[str, dt.date, bytes]]:
    """Recorded reports due by ``now_ms`` and not sent: (product, day, body), oldest first."""
    rows: list[Any] = conn.execute(
        "SELECT product, day, body FROM report_days WHERE sent_ms IS NULL AND send_at_ms <= ?"
        " ORDER BY send_at_ms",
        (now_ms,),
    ).fetchall()
    return [(str(p), day_date(int(d)), bytes(b)) for p, d, b in rows]


def record_sent(conn: apsw.Connection, product: str, day: dt.date, sent_ms: int) -> None:
    with conn:
        conn.execute(
            "UPDATE report_days SET sent_ms = ? WHERE product = ? AND day = ?",
            (sent_ms, product, day_number(day)),
        )


def prune_reports(conn: apsw.Connection, before: dt.date) -> int:
    """Forget sent reports (body and ledger row) from before ``before`` (the retention
    cutoff); return how many went. Never an unsent one, nor one of the ISO week or month
    that ``before`` falls in: the next reports' first_of_week / first_of_month rest on
    those."""
    keep_from = min(before - dt.timedelta(days=before.weekday()), before.replace(day=1))
    with conn:
        conn.execute(
            "DELETE FROM report_days WHERE day < ? AND sent_ms IS NOT NULL",
            (day_number(keep_from),),
        )
        n = conn.changes()
    return n


def budget(
    conn: apsw.Connection, product: str, period: Literal["day", "week", "month"]
) -> list[tuple[str, float, int]]:
    """The privacy-budget ledger: (period, ε spent, reports) per day, ISO week or month,
    oldest first. ε adds up over a period's reports (sequential composition)."""
    label = {"day": lambda d: d.isoformat(), "week": iso_week, "month": month_of}[period]
    out: dict[str, list[float]] = {}
    for day, eps in conn.execute(
        "SELECT day, epsilon FROM report_days WHERE product = ? ORDER BY day", (product,)
    ):
        acc = out.setdefault(label(day_date(int(day))), [0.0, 0])
        acc[0] += float(eps)
        acc[1] += 1
    return [(k, v[0], int(v[1])) for k, v in out.items()]


def due_days(conn: apsw.Connection, product: str, since: dt.date, today: dt.date) -> list[dt.date]:
    """Days in [since, today) with activity of ``product`` and no recorded report."""
    rows: list[Any] = conn.execute(
        f"SELECT DISTINCT e.ts_ms / {DAY_MS} FROM events e JOIN sources s ON s.id = e.source_id"
        f" WHERE e.ts_ms >= ? AND e.ts_ms < ? AND s.product = ?"
        f" AND e.event_type NOT IN {DERIVED_TYPES!r}",
        (day_number(since) * DAY_MS, day_number(today) * DAY_MS, product),
    ).fetchall()
    done = load_state(conn, product).reported
    return [day_date(int(d)) for (d,) in sorted(rows) if int(d) not in done]


def send_time(day: dt.date, rng: Random) -> int:
    """When to send ``day``'s report: a uniformly random millisecond of the following UTC
    day (unix ms). Drawn afresh for every report, it says nothing of the activity's time
    and cannot link two reports (a report whose time was missed gets a new draw in the
    next day, never an immediate catch-up burst)."""
    return (day_number(day) + 1) * DAY_MS + rng.randrange(DAY_MS)


# -- reading one day -------------------------------------------------------------------------

DAY_SQL: Final = """
    SELECT e.event_type, e.payload, e.session_id, s.version, s.tier, s.os, s.arch
    FROM events e JOIN sources s ON s.id = e.source_id
    WHERE e.ts_ms >= ? AND e.ts_ms < ? AND s.product = ? ORDER BY e.ts_ms, e.id
"""
FEATURE_TYPES: Final = ("feature_discovered", "feature_first_use", "feature_adoption")
UPGRADE_STAGES: Final = {
    "upgrade_prompt_shown": 1, "upgrade_link_clicked": 2, "trial_started": 3,
    "upgrade_completed": 4,
}  # fmt: skip


class DayFacts(msgspec.Struct, kw_only=True):
    """The exact figures of one day's events (raw values, not yet declared)."""

    sessions: int = 0
    commands: int = 0
    errors: int = 0
    counts: dict[str, Counter[str]] = {}
    latency: list[int] = []
    reached: set[tuple[str, int]] = set()
    source: tuple[str, str, str, str] = ("", "oss", "", "")  # version, tier, os, arch

    def count(self, dim: str, value: str | None) -> None:
        if value is not None:
            self.counts.setdefault(dim, Counter())[value] += 1


def read_day(conn: apsw.Connection, product: str, day: int) -> DayFacts | None:
    """The figures of ``product``'s events on UTC ``day``; None when only the daemon's own
    events (session and feature bookkeeping) or none fall on it."""
    rows: list[Any] = conn.execute(DAY_SQL, (day * DAY_MS, (day + 1) * DAY_MS, product)).fetchall()
    if all(r[0] in DERIVED_TYPES for r in rows):
        return None
    f = DayFacts(latency=[0] * (len(LATENCY_BUCKETS_MS) + 1))
    decode = msgspec.json.decode
    for event_type, payload, _, *source in rows:
        _add_event(f, event_type, decode(payload))
        if event_type not in DERIVED_TYPES:
            f.source = tuple(source)  # the day's last
    f.sessions = len({r[2] for r in rows})
    return f


def _add_event(f: DayFacts, event_type: str, p: dict[str, Any]) -> None:
    if event_type in COMMAND_TYPES:
        _add_command(f, event_type, p)
    elif event_type == "thinktool_completed":
        f.count("thinktool", p.get("tool_name"))
    elif event_type == "error_occurred":
        f.errors += 1
        f.count("error_category", p.get("error_category"))
    elif event_type in FEATURE_TYPES:
        f.count("feature", p.get("feature_id"))
    elif event_type == "session_started":
        f.reached.add(("first_run", 2))
    elif event_type in UPGRADE_STAGES:
        f.reached.add(("upgrade", UPGRADE_STAGES[event_type]))


def _add_command(f: DayFacts, event_type: str, p: dict[str, Any]) -> None:
    f.commands += 1
    profile = p.get("profile")
    f.count("command", p.get("command"))
    f.count("profile", profile)
    f.count("model", (p.get("tokens") or {}).get("model"))
    ms = int((p.get("execution") or {}).get("duration_ms", 0))
    f.latency[bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
    f.reached.add(("first_run", 3))
    if event_type == "command_executed" and (p.get("execution") or {}).get("success", True):
        f.reached.update((("first_run", 4), ("activation", 1)))
    if profile is not None and profile != "balanced":
        f.reached.add(("activation", 3))  # §7.2: thinktool discovery = a non-default profile


def furthest_stages(reached: frozenset[tuple[str, int]]) -> dict[str, int]:
    """Per funnel, the furthest stage reached in order: k when stages 1..k were all
    reached (at any time so far), 0 when not even the first."""
    out = {}
    for name in dp.FUNNELS:
        k = 0
        while (name, k + 1) in reached:
            k += 1
        out[name] = k
    return out


HISTORY_SQL: Final = f"""
    SELECT e.event_type, max(json_extract(e.payload, '$.execution.success')),
           max(json_extract(e.payload, '$.profile') IN ('quick', 'deep', 'paranoid'))
    FROM events e JOIN sources s ON s.id = e.source_id
    WHERE s.product = ? AND e.ts_ms < ?
      AND e.event_type IN {("session_started", *COMMAND_TYPES, *UPGRADE_STAGES)!r}
    GROUP BY e.event_type
"""


def history_stages(conn: apsw.Connection, product: str, before_ms: int) -> set[tuple[str, int]]:
    """Funnel stage conditions met by every stored event before ``before_ms``: how far an
    install got before its first report (one pass over the events, once per install)."""
    out: set[tuple[str, int]] = set()
    for event_type, success, other_profile in conn.execute(HISTORY_SQL, (product, before_ms)):
        if event_type == "session_started":
            out.add(("first_run", 2))
        elif event_type in UPGRADE_STAGES:
            out.add(("upgrade", UPGRADE_STAGES[event_type]))
        else:
            out.add(("first_run", 3))
            if event_type == "command_executed" and success:
                out.update((("first_run", 4), ("activation", 1)))
            if other_profile:
                out.add(("activation", 3))
    return out


# -- the builder -----------------------------------------------------------------------------


def first_day_of(conn: apsw.Connection, state: ReportState, day: int) -> int:
    """The install's first active day: kept in the state, else the earliest stored activity
    (events, or feature first uses, which outlive pruned events)."""
    if state.first_day is not None:
        return min(state.first_day, day)
    ev = conn.execute(  # walks the ts_ms index from the oldest: stops at the first match
        "SELECT e.ts_ms FROM events e JOIN sources s ON s.id = e.source_id"
        f" WHERE s.product = ? AND e.event_type NOT IN {DERIVED_TYPES!r}"
        " ORDER BY e.ts_ms LIMIT 1",
        (state.product,),
    ).get
    feat = conn.execute(
        "SELECT min(first_ms) FROM features WHERE product = ?", (state.product,)
    ).get
    known = [v // DAY_MS for v in (ev, feat) if isinstance(v, int)]
    return min([*known, day])


def build_report(
    conn: apsw.Connection,
    state: ReportState,
    day: dt.date,
    vocabulary: Vocabulary,
    privacy: PrivacyConfig,
    rng: Random | None = None,
) -> Built | None:
    """``day``'s report for ``vocabulary.product``, or None when it had no activity.

    Reads only. With ``privacy.differential_privacy`` every flag and count is randomized
    at ``privacy.dp_epsilon`` with ``rng`` (default: the OS generator).
    """
    n = day_number(day)
    facts = read_day(conn, vocabulary.product, n)
    if facts is None:
        return None
    first = first_day_of(conn, state, n)
    reached = frozenset(state.progress | facts.reached | _derived_stages(n, first))
    if state.first_day is None:  # the first report: the stages reached before it count too
        reached |= history_stages(conn, vocabulary.product, n * DAY_MS)
    exact = _exact_report(facts, vocabulary, day, first, state, reached)
    built = Built(report=exact, first_day=first, first_of_week=exact.first_of_week,
                  first_of_month=exact.first_of_month, reached=reached, epsilon=0.0)  # fmt: skip
    if not privacy.differential_privacy:
        return built
    eps = dp.exact_epsilon(privacy.dp_epsilon)
    noisy = privatize(exact, vocabulary, eps, rng or dp.system_rng())
    return msgspec.structs.replace(built, report=noisy, epsilon=float(eps))


def _derived_stages(day: int, first: int) -> set[tuple[str, int]]:
    out = {("first_run", 1)}  # an install that reports is installed
    if day > first:
        out.add(("activation", 2))  # active on a day after the first
    if day - first >= 7:
        out.add(("activation", 4))  # active a week or more after the first day
    return out


def _exact_report(
    f: DayFacts, vocabulary: Vocabulary, day: dt.date, first: int, state: ReportState,
    reached: frozenset[tuple[str, int]],
) -> CommunityReport:  # fmt: skip
    version, tier, os_, arch = f.source
    age = day_number(day) - first
    return CommunityReport(
        day=day, product=vocabulary.product,
        version=coarse_version(version, vocabulary),
        tier=tier if tier in get_args(Tier) else "oss",  # type: ignore[arg-type]
        os=os_ if vocabulary.declared("source.os", os_) else OTHER,
        arch=arch if vocabulary.declared("source.arch", arch) else OTHER,
        cohort_week=iso_week(day_date(first)),
        install_age_days=min(age, MAX_INSTALL_AGE), new_install=age == 0,
        first_of_week=iso_week(day) not in state.weeks(),
        first_of_month=month_of(day) not in state.months(),
        sessions=_clip(f.sessions), commands=_clip(f.commands), errors=_clip(f.errors),
        funnel=furthest_stages(reached),
        counts=_declared_counts(f.counts, vocabulary),
        latency_ms=[_clip(v) for v in f.latency],
    )  # fmt: skip


def _clip(v: int) -> int:
    return max(-MAX_REPORT_COUNT - 1, min(MAX_REPORT_COUNT, v))


def coarse_version(version: str, vocabulary: Vocabulary) -> str:
    """major.minor of a declared version, else ``__other__``."""
    m = _VERSION.match(version)
    if m is None or not vocabulary.declared("source.version", version):
        return OTHER
    return f"{int(m[1])}.{int(m[2])}"


def declared_key(dim: str, value: str, vocabulary: Vocabulary) -> str:
    if dim in CLOSED:
        return value if value in CLOSED[dim] else OTHER
    return value if vocabulary.declared(DIM_FIELDS[dim], value) else OTHER


def _declared_counts(
    raw: dict[str, Counter[str]], vocabulary: Vocabulary
) -> dict[Dimension, dict[str, int]]:
    """Counts by declared key; past MAX_KEYS_PER_DIMENSION keys the smallest fold into OTHER."""
    out: dict[Any, dict[str, int]] = {}
    for dim, values in raw.items():
        c: Counter[str] = Counter()
        for value, k in values.items():
            c[declared_key(dim, value, vocabulary)] += k
        if len(c) > MAX_KEYS_PER_DIMENSION:
            kept = dict(c.most_common(MAX_KEYS_PER_DIMENSION - 1))
            kept[OTHER] = kept.get(OTHER, 0) + sum(c.values()) - sum(kept.values())
            c = Counter(kept)
        if c:
            out[dim] = {k: _clip(v) for k, v in sorted(c.items())}
    return out


# -- differential privacy --------------------------------------------------------------------


def dp_keys(dim: str, vocabulary: Vocabulary) -> tuple[str, ...]:
    """The fixed keys a dimension carries under DP (all of them, whatever the data)."""
    if dim in CLOSED:
        return CLOSED[dim]
    declared = sorted(vocabulary.values.get(DIM_FIELDS[dim], ()))
    return (*declared[: MAX_KEYS_PER_DIMENSION - 1], OTHER)


def privatize(
    exact: CommunityReport, vocabulary: Vocabulary, epsilon: Fraction, rng: Random
) -> CommunityReport:
    """``exact`` with every flag and count randomized at total ``epsilon`` (dp.SPLIT)."""
    scalar_eps = dp.count_epsilon(epsilon, histogram=False)
    hist_eps = dp.count_epsilon(epsilon, histogram=True)

    def part(name: str) -> Fraction:
        return dp.part_epsilon(epsilon, name)

    def scalar(v: int) -> int:
        return _clip(dp.noisy_count(min(max(v, 0), dp.COUNT_BOUND), scalar_eps, rng))

    age = _noisy_age(exact.install_age_days, part("install_age"), rng)
    return msgspec.structs.replace(
        exact,
        first_of_week=dp.randomized_response(exact.first_of_week, part("first_of_week"), rng),
        first_of_month=dp.randomized_response(exact.first_of_month, part("first_of_month"), rng),
        install_age_days=age, new_install=age == 0,
        cohort_week=_noisy_cohort(exact, part("cohort_week"), rng),
        funnel=_noisy_funnels(exact.funnel, part("funnel"), rng),
        sessions=scalar(exact.sessions), commands=scalar(exact.commands),
        errors=scalar(exact.errors),
        counts=_noisy_counts(exact.counts, vocabulary, hist_eps, rng),
        latency_ms=_noisy_histogram(list(exact.latency_ms), hist_eps, rng),
        privacy=Privacy(epsilon=float(epsilon), count_bound=dp.COUNT_BOUND),
    )  # fmt: skip


def _noisy_age(age: int, epsilon: Fraction, rng: Random) -> int:
    """k-ary RR over AGE_DOMAIN: the retention ages, and AGE_OTHER for all the others."""
    index = dp.AGE_DOMAIN.index(age if age in dp.AGE_DOMAIN else dp.AGE_OTHER)
    return dp.AGE_DOMAIN[dp.k_randomized_response(index, len(dp.AGE_DOMAIN), epsilon, rng)]


def _noisy_counts(
    counts: dict[Dimension, dict[str, int]], vocabulary: Vocabulary, epsilon_prime: Fraction,
    rng: Random,
) -> dict[Dimension, dict[str, int]]:  # fmt: skip
    """Every DP dimension with all its keys, clipped and noised (keys outside go to OTHER)."""
    out: dict[Any, dict[str, int]] = {}
    for dim in dp.DP_DIMENSIONS:
        keys = dp_keys(dim, vocabulary)
        got: dict[str, int] = counts.get(dim, {})
        dense = [got.get(k, 0) for k in keys]
        if dim not in CLOSED:  # keys is declared values + OTHER: fold the rest in
            dense[-1] += sum(v for k, v in got.items() if k not in keys)
        out[dim] = dict(zip(keys, _noisy_histogram(dense, epsilon_prime, rng), strict=True))
    return out


def clip_histogram(values: list[int], bound: int = dp.COUNT_BOUND) -> list[int]:
    """``values`` scaled down (floored) so that their total is at most ``bound``."""
    total = sum(values)
    if total <= bound:
        return values
    return [v * bound // total for v in values]


def _noisy_histogram(values: list[int], epsilon_prime: Fraction, rng: Random) -> list[int]:
    return [_clip(dp.noisy_count(v, epsilon_prime, rng)) for v in clip_histogram(values)]


def _noisy_cohort(exact: CommunityReport, epsilon: Fraction, rng: Random) -> str:
    """The cohort week as k-ary RR over the report's week and the COHORT_WEEKS - 1 before."""
    monday = exact.day - dt.timedelta(days=exact.day.weekday())
    year, week = (int(x) for x in exact.cohort_week.split("-W"))
    cohort_monday = dt.date.fromisocalendar(year, week, 1)
    ago = min((monday - cohort_monday).days // 7, dp.COHORT_WEEKS - 1)
    noisy = dp.k_randomized_response(ago, dp.COHORT_WEEKS, epsilon, rng)
    return iso_week(monday - dt.timedelta(weeks=noisy))


def _noisy_funnels(funnel: dict[str, int], epsilon: Fraction, rng: Random) -> dict[str, int]:
    each = epsilon / len(dp.FUNNELS)
    return {
        name: dp.k_randomized_response(funnel.get(name, 0), len(stages) + 1, each, rng)
        for name, stages in dp.FUNNELS.items()
    }


__all__ = [
    "REPORT_TABLES", "REPORT_TABLES_SQL", "Built", "ReportState", "budget",
    "build_report", "due_days", "ensure_report_tables", "load_state", "pending", "privatize",
    "prune_reports", "record_built", "record_sent", "send_time",
]  # fmt: skip
