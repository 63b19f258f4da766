"""A seeded synthetic population with known truth, driven through the real daemon and
into a real embedded warehouse, for the analytics (issue 14's done-when).

Each install has its own SQLite database written by the daemon's Storage; the daemon's
report builder (rkd.daemon.reports) builds one report per active day, exact or at ε per
report (DP installs); each report goes through the server's own report filter and row
code into embedded ClickHouse. Pro sessions are uploaded as raw events through the
upload filter and the server's event rows. The plan of the simulation is the truth.

The test uses a small population (see tests/test_analytics.py); the full one runs with
``python -m tests.analytics_population --installs 5000 --weeks 16`` and prints every
estimate beside its truth.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from rkd.client import schema as s
from rkd.client.clock import DAY_MS
from rkd.client.cloud import decode_batch
from rkd.client.config import PrivacyConfig
from rkd.client.upload import upload_filter
from rkd.client.vocabulary import reasonkit_vocabulary
from rkd.daemon import reports as rp
from rkd.daemon.storage import Record, SessionRow, Storage
from rkd.server.privacy import filter_report
from rkd.server.rows import event_block, event_values, report_row
from rkd.server.warehouse import Warehouse, connect

from tests.samples import SOURCE, envelope

START = dt.date(2026, 6, 1)  # a Monday
VOCAB = reasonkit_vocabulary()
PRODUCT = VOCAB.product
TOOLS = ("gigathink", "laserlogic", "bedrock", "proofguard", "brutalhonesty")
PROFILES = ("balanced", "balanced", "quick", "deep", "paranoid", None)
ERRORS = ("api_error", "timeout", "network_error", "rate_limited")


@dataclass
class Install:
    first: int  # day offset of its first active day (negative: before the window)
    days: set[int]
    dp: bool
    upgrade_day: int | None  # day it sees the upgrade prompt (None: never)
    upgrade_stage: int  # how far it goes in the upgrade funnel that day (1..4)


@dataclass
class Truth:
    """What the simulation did, in the analytics' terms (day offsets from START)."""

    days: int
    installs: list[Install]
    product: str = PRODUCT
    durations: list[int] = field(default_factory=list)  # command latencies of exact installs, ms
    funnel_month: dict[tuple[int, str], Counter[int]] = field(default_factory=dict)
    reports: int = 0
    dp_reports: int = 0

    def date(self, d: int) -> dt.date:
        return START + dt.timedelta(days=d)

    def dau(self, d: int) -> int:
        return sum(d in i.days for i in self.installs)

    def active_in(self, lo: int, hi: int) -> int:
        """Installs active on a day in [lo, hi)."""
        return sum(any(lo <= d < hi for d in i.days) for i in self.installs)

    def retention(self, k: int) -> tuple[int, int]:
        """(retained, new) as the analytics define Dk over the whole window."""
        new = [i for i in self.installs if 0 <= i.first <= self.days - 1 - k]
        return sum(i.first + k in i.days for i in new), len(new)

    def cohort(self, c: int, j: int) -> int:
        """Installs first seen in week c (of the window) active in week c + j."""
        lo = 7 * (c + j)
        return sum(
            any(lo <= d < lo + 7 for d in i.days)
            for i in self.installs
            if c * 7 <= i.first < c * 7 + 7
        )

    def latency_quantile(self, p: float) -> int:
        xs = sorted(self.durations)
        return xs[max(math.ceil(p * len(xs)) - 1, 0)]


def plan(installs: int, weeks: int, dp_share: float, rng: random.Random) -> list[Install]:
    days = 7 * weeks
    out = []
    for _ in range(installs):
        first = rng.randrange(-40, -33) if rng.random() < 0.2 else rng.randrange(0, days - 3)
        stay = rng.choice((0.1, 0.3, 0.6))
        churn = first + rng.choice((3, 14, 30, 400))
        active = {first} | {
            d for d in range(max(first + 1, 0), days) if d < churn and rng.random() < stay
        }
        active = {d for d in active if d < days}
        upgrade = rng.choice(sorted(active)) if rng.random() < 0.3 and active else None
        stage = rng.choices((1, 2, 3, 4), weights=(6, 2, 1, 1))[0]
        out.append(Install(first, active, rng.random() < dp_share, upgrade, stage))
    return out


UPGRADES: tuple[s.Payload, ...] = (
    s.UpgradePromptShown(prompt_id="pro_upgrade_v1"), s.UpgradeLinkClicked(prompt_id="pro_upgrade_v1"),
    s.TrialStarted(), s.UpgradeCompleted(from_tier="oss", to_tier="pro"),
)  # fmt: skip


def day_payloads(inst: Install, day: int, rng: random.Random, truth: Truth) -> list[s.Payload]:
    """One active day's events: a session, 1-4 commands, some ThinkTools and errors."""
    out: list[s.Payload] = [s.SessionStarted()]
    for _ in range(rng.randrange(1, 5)):
        ms = int(rng.lognormvariate(math.log(1200), 1.0))
        if not inst.dp:  # DP latency histograms drown in noise: the truth of the exact ones
            truth.durations.append(ms)
        ok = rng.random() < 0.9
        kind = s.CommandExecuted if ok else s.CommandFailed
        out.append(kind(command=rng.choice(("think", "compare")), profile=rng.choice(PROFILES),
                        execution=s.Execution(duration_ms=ms, success=ok)))  # fmt: skip
        if rng.random() < 0.5:
            out.append(s.ThinkToolCompleted(tool_name=rng.choice(TOOLS)))
        if not ok:
            out.append(s.ErrorOccurred(error_category=rng.choice(ERRORS)))
    if day == inst.upgrade_day:
        out.extend(UPGRADES[: inst.upgrade_stage])
    return out


def records(inst: Install, rng: random.Random, truth: Truth) -> list[Record]:
    out = []
    for day in sorted(inst.days):
        sess = SessionRow(rowid=None, uuid=f"s{day}", started_ms=0, last_ms=0, events=0)
        base = (rp.day_number(START) + day) * DAY_MS + rng.randrange(DAY_MS // 2)
        payloads = (
            day_payloads(inst, day, rng, truth)
            if day >= 0
            else [s.CommandExecuted(command="think")]
        )
        out.extend(Record(envelope(p), sess, i, base + i * 1000) for i, p in enumerate(payloads))
    return out


def reports_of(folder: Path, n: int, inst: Install, days: int, epsilon: float,
               rng: random.Random, truth: Truth, product: str) -> list[dict[str, Any]]:  # fmt: skip
    """One install's life through the daemon: events stored, reports built and recorded
    by the sync worker's loop; the warehouse rows the server would store for them."""
    st = Storage(folder / f"install-{n}.db")
    rp.ensure_report_tables(st.db)
    st.write(records(inst, rng, truth), {}, 0)
    privacy = PrivacyConfig(differential_privacy=inst.dp, dp_epsilon=epsilon)
    received = dt.datetime.combine(START, dt.time(), dt.UTC)
    rows = []
    start = START + dt.timedelta(days=min(inst.first, 0))
    for day in rp.due_days(st.db, PRODUCT, start, START + dt.timedelta(days=days)):
        built = rp.build_report(st.db, rp.load_state(st.db, PRODUCT), day, VOCAB, privacy, rng)
        assert built is not None
        rp.record_built(st.db, built, rp.send_time(day, rng), 0)
        if day < START:
            continue  # before the window: reported then, not in this warehouse
        offset = (day - START).days
        if built.first_of_month:
            stages = rp.furthest_stages(built.reached)
            month = (day.year, day.month)
            for name, k in stages.items():
                truth.funnel_month.setdefault((month[0] * 100 + month[1], name), Counter())[k] += 1
        truth.reports += 1
        truth.dp_reports += inst.dp
        report = filter_report(built.report, VOCAB, Counter())
        row = report_row(report, received + dt.timedelta(days=offset + 1))
        rows.append({**row, "product": product})  # one warehouse, several populations
    st.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{st.path}{suffix}").unlink(missing_ok=True)
    return rows


def populate(wh: Warehouse, installs: int, weeks: int, *, dp_share: float = 0.3,
             epsilon: float = 1.0, seed: int = 2026, product: str = PRODUCT) -> Truth:  # fmt: skip
    """Simulate, build every report with the daemon's code, and store them in ``wh``
    under ``product`` (the reports are ReasonKit's; the name keeps populations apart)."""
    rng = random.Random(seed)
    truth = Truth(7 * weeks, plan(installs, weeks, dp_share, rng), product=product)
    with tempfile.TemporaryDirectory() as tmp:
        batch: list[dict[str, Any]] = []
        for n, inst in enumerate(truth.installs):
            batch.extend(reports_of(Path(tmp), n, inst, truth.days, epsilon, rng, truth, product))
            if len(batch) > 20_000:
                wh.insert_json("reports", batch)
                batch = []
        wh.insert_json("reports", batch)
    return truth


# -- Pro raw events ---------------------------------------------------------------------------


@dataclass
class ProTruth:
    durations_ms: list[int] = field(default_factory=list)  # session spans
    queries: list[int] = field(default_factory=list)
    latencies: list[int] = field(default_factory=list)
    ok: int = 0
    commands: int = 0
    methods: Counter[str] = field(default_factory=Counter)


def pro_sessions(
    day: dt.date, sessions: int, rng: random.Random
) -> tuple[list[s.Envelope], ProTruth]:
    """``sessions`` Pro sessions on ``day`` with known spans, commands and latencies."""
    truth, out = ProTruth(), []
    src = msgspec.structs.replace(SOURCE, tier="pro")
    for _ in range(sessions):
        sid, t0 = uuid.uuid4(), dt.datetime.combine(day, dt.time(9), dt.UTC)
        start = t0 + dt.timedelta(seconds=rng.randrange(3600))
        n = rng.randrange(1, 6)
        gaps = sorted(rng.randrange(1, 1200_000) for _ in range(n - 1))
        stamps = [start] + [start + dt.timedelta(milliseconds=g) for g in gaps]
        for i, ts in enumerate(stamps):
            ms = rng.randrange(100, 20_000)
            ok = rng.random() < 0.8
            kind = s.CommandExecuted if ok else s.CommandFailed
            payload = kind(command="think", execution=s.Execution(duration_ms=ms, success=ok))
            session = s.Session(id=sid, sequence=i, started_at=start)
            out.append(envelope(payload, timestamp=ts, source=src, session=session))
            truth.latencies.append(ms)
            truth.ok += ok
            truth.commands += 1
        truth.durations_ms.append(int((stamps[-1] - stamps[0]).total_seconds() * 1000))
        truth.queries.append(n)
        method = rng.choice(("cargo", "curl", "npm"))
        truth.methods[method] += 1
        out.append(envelope(s.InstallCompleted(method=method, version="1.0.0"), timestamp=start,
                            source=src))  # fmt: skip
    return out, truth


def upload(wh: Warehouse, envelopes: list[s.Envelope]) -> None:
    """Store envelopes as the ingester does: upload filter, batch decode, event rows."""
    batch_id = uuid.uuid4().hex
    events = [upload_filter(e, VOCAB) for e in envelopes]
    batch = decode_batch(msgspec.msgpack.encode({"batch_id": batch_id, "events": events}))
    values = [event_values(e) for e in batch.events]
    wh.insert_arrow("events", [event_block(values, batch_id, dt.datetime.now(dt.UTC))])


# -- the full run -----------------------------------------------------------------------------


def warehouse_at(folder: Path, name: str = "ch") -> Iterator[Warehouse]:
    wh = Warehouse(connect(f"chdb://{folder / name}"))
    wh.migrate()
    try:
        yield wh
    finally:
        wh.close()


def main() -> None:
    from tests.test_analytics import compare  # the same checks as the test

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--installs", type=int, default=5000)
    ap.add_argument("--weeks", type=int, default=16)
    ap.add_argument("--dp-share", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="Keep the warehouse in DIR/warehouse (as `rkd-server run --data-dir"
                    " DIR` would), e.g. for scripts/check_reports --data-dir DIR.")  # fmt: skip
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, name = (args.data_dir, "warehouse") if args.data_dir else (Path(tmp), "ch")
        for wh in warehouse_at(folder, name):
            t0 = time.monotonic()
            truth = populate(wh, args.installs, args.weeks, dp_share=args.dp_share, seed=args.seed)
            print(
                f"{truth.reports} reports ({truth.dp_reports} under DP) in {time.monotonic() - t0:.0f} s"
            )
            for line in compare(wh, truth):
                print(line)


if __name__ == "__main__":
    main()
