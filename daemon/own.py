"""Events the daemon writes in its own name (crash, sessions) or derives for an
application (feature adoption): the envelope, dated and sourced."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from typing import Any

from rkd.client.clock import utc_now
from rkd.client.schema import ENVELOPES, Envelope, Source


@functools.cache
def rkd_source() -> Source:
    """The source of what the daemon reports itself (product "rkd")."""
    import platform
    import sys
    from importlib.metadata import PackageNotFoundError, version

    try:
        rkd_version = version("rkd")
    except PackageNotFoundError:
        rkd_version = "0.0.0"
    return Source(
        product="rkd", version=rkd_version, os={"darwin": "macos"}.get(sys.platform, sys.platform),
        arch=platform.machine() or "unknown", python_version=platform.python_version(),
    )  # fmt: skip


def own_event(payload: Any, source: Source | None = None, ts_ms: int | None = None) -> Envelope:
    """An event the daemon writes itself: from ``source`` (default: rkd), at ``ts_ms``."""
    when = utc_now() if ts_ms is None else dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    envelope_type: Any = ENVELOPES[type(payload)]  # generated classes: payload is theirs
    return envelope_type(  # type: ignore[no-any-return]
        event_id=uuid.uuid4(), timestamp=when, source=source or rkd_source(), payload=payload
    )
