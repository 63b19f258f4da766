"""What the server counts (spec §9.3): Prometheus metrics and the anomaly log line.

No label ever holds anything from a request beyond a fixed reason or category word:
no address, no key id, no value.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PCounter


class Metrics:
    """One registry per app (tests run several in one process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = PCounter("rkd_server_requests", "Requests answered, by endpoint and status.",
                                 ["endpoint", "status"], registry=r)  # fmt: skip
        self.rejections = PCounter("rkd_server_rejections", "Requests refused, by reason.",
                                   ["reason"], registry=r)  # fmt: skip
        self.filtered = PCounter("rkd_server_filter", "Privacy filter actions: undeclared values, "
                                 "scanner findings (pii.<category>), dropped events (dropped.<why>).",
                                 ["what"], registry=r)  # fmt: skip
        self.events = PCounter("rkd_server_events", "Events of accepted batches, by outcome.",
                               ["outcome"], registry=r)  # fmt: skip
        self.rate_limited = PCounter("rkd_server_rate_limited", "429s, by bucket kind: key, "
                                     "reports (all senders), report_bucket (coarse).",
                                     ["source"], registry=r)  # fmt: skip
        self.reports = PCounter("rkd_server_reports", "Community reports stored.", registry=r)
        self.erasures = PCounter("rkd_server_erasure_requests", "Erasure requests served.",
                                 registry=r)  # fmt: skip
        self.commit_seconds = Histogram("rkd_server_commit_seconds", "One group commit.",
                                        registry=r, buckets=COMMIT_BUCKETS)  # fmt: skip
        self.commit_batches = Histogram("rkd_server_commit_batches", "Batches per group commit.",
                                        registry=r, buckets=(1, 2, 4, 8, 16, 32, 64))  # fmt: skip
        self.write_retries = PCounter("rkd_server_write_retries", "Group commits whose insert "
                                      "failed and was sent again with its token, by outcome: "
                                      "written, failed, abandoned.", ["outcome"], registry=r)  # fmt: skip
        self.window: Counter[str] = Counter()  # since the last anomaly line

    def reject(self, reason: str) -> None:
        self.rejections.labels(reason).inc()
        self.window[f"rejected.{reason}"] += 1

    def filter_counts(self, counts: Counter[str]) -> None:
        for what, n in counts.items():
            self.filtered.labels(what).inc(n)
            self.window[what] += n

    def take_window(self) -> Counter[str]:
        window, self.window = self.window, Counter()
        return window


COMMIT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
