"""structlog set-up for the daemon: JSON lines when stderr is not a terminal.

Log lines carry event *types*, counts and reasons, never payload contents.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog once, in ``main()``; ``json=None`` picks by ``isatty``."""
    if json is None:
        json = not sys.stderr.isatty()
    # Tracebacks (the guard's internal errors) as structured data in JSON; the console
    # renderer formats them itself.
    tail: list[structlog.typing.Processor] = (
        [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
        if json
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
