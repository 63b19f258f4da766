"""structlog set-up for the daemon: JSON lines when stderr is not a terminal.

Log lines carry event *types*, counts and reasons, never payload contents.
"""

from __future__ import annotations

import logging
import sys

import structlog
import structlog.tracebacks

_DICT_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def _without_exception_values(
    logger: object, name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Keep an exception's type and frames, not its message: a message may quote a value
    (``KeyError('...')``), and a value may be a payload."""
    for stack in event.get("exception") or ():
        if isinstance(stack, dict) and "exc_value" in stack:
            stack["exc_value"] = ""
    return event


def configure(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog once, in ``main()``; ``json=None`` picks by ``isatty``."""
    if json is None:
        json = not sys.stderr.isatty()
    # Tracebacks (the guard's internal errors) as structured data in JSON; the console
    # renderer formats them itself. Never with the frames' local variables (structlog
    # shows them by default): they hold frames, spool file contents and payloads, and a
    # log outlives `rkd delete`.
    tail: list[structlog.typing.Processor] = (
        [_DICT_TRACEBACKS, _without_exception_values, structlog.processors.JSONRenderer()]
        if json
        else [structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback)]
    )  # fmt: skip
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
