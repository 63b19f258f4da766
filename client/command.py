"""Recording one command: :class:`CommandRecorder` and the error categories.

``with tel.command("think") as cmd:`` (or ``@tel.command("think")``) times the block and
sends one ``command_executed``, ``command_failed`` or ``command_cancelled`` event when it
ends; :func:`error_category` names what went wrong without keeping the message.
Imported on the first ``tel.command(...)``, so an application that never records a
command, or runs under a kill switch, does not load it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, get_args

import rkd.client.telemetry as _telemetry  # loaded already: it imports this module lazily
from rkd.client.checks import CHAIN_RULE, IDENT_RULE, PROFILES, member

if TYPE_CHECKING:
    from rkd.client.schema import CommandFamily
    from rkd.client.telemetry import Telemetry

F = TypeVar("F", bound=Callable[..., Any])
_perf_counter = time.perf_counter


def error_category(exc: BaseException) -> str:
    """Map an exception to an ErrorCategory, by an explicit attribute, type, then name.

    An exception may declare ``rk_error_category``. Names are matched so that the
    exceptions of common LLM SDKs and HTTP clients land in a useful bucket.
    """
    from rkd.client.schema import ErrorCategory

    declared = getattr(exc, "rk_error_category", None)
    if isinstance(declared, str) and declared in get_args(ErrorCategory):
        return declared
    name = type(exc).__name__.lower()
    for needle, category in _NAME_HINTS:
        if needle in name:
            return category
    for types, category in _TYPE_HINTS:
        if isinstance(exc, types):
            return category
    return "internal_error"


_NAME_HINTS: Final = (
    ("ratelimit", "rate_limited"),
    ("timeout", "timeout"),
    ("auth", "auth_error"),
    ("permissiondenied", "auth_error"),
    ("connection", "network_error"),
    ("apierror", "api_error"),
    ("apistatus", "api_error"),
    ("decode", "parse_error"),
    ("parse", "parse_error"),
)
_TYPE_HINTS: Final[
    tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...]
] = (
    (TimeoutError, "timeout"),
    (ConnectionError, "network_error"),
    (OSError, "io_error"),
    (UnicodeError, "parse_error"),
    ((ValueError, TypeError, LookupError), "invalid_input"),
)


class CommandRecorder:
    """Measures one command; a context manager and a decorator.

    Inside the block the caller may add what it knows: ``tokens(...)``,
    ``thinktools([...])``, ``quality(...)``, ``cache_hit = True``, ``llm_latency_ms``.
    """

    __slots__ = (
        "_cached",
        "_chain",
        "_input",
        "_model",
        "_output",
        "_quality",
        "_query_hash",
        "_t0",
        "_tel",
        "cache_hit",
        "llm_latency_ms",
        "name",
        "processing_ms",
        "profile",
        "subcommand",
    )  # fmt: skip

    def __init__(
        self, tel: Telemetry, name: str, profile: str | None, subcommand: str | None
    ) -> None:
        self._tel = tel
        self.name, self.profile, self.subcommand = name, profile, subcommand
        self._t0 = 0.0
        self.cache_hit = False
        self.llm_latency_ms: int | None = None
        self.processing_ms: int | None = None
        self._input = self._output = self._cached = 0
        self._model: str | None = None
        self._chain: tuple[str, ...] = ()
        self._quality: dict[str, float | None] | None = None
        self._query_hash: str | None = None

    def tokens(
        self, *, input: int = 0, output: int = 0, cached: int = 0, model: str | None = None
    ) -> None:
        """Add token usage (adds up over several calls; the last model wins)."""
        try:
            self._input += input
            self._output += output
            self._cached += cached
        except TypeError:  # not numbers: kept as given, for the schema to refuse; no raise
            self._input, self._output, self._cached = input, output, cached
        if model is not None:
            self._model = model

    def query(self, text: str | bytes) -> None:
        """Record a fingerprint of the query for de-duplication; the text stays here.

        Only its SHA-256 leaves this process, and the daemon re-hashes that with a
        per-install salt before storing it.
        """
        import hashlib

        if isinstance(text, str):
            self._query_hash = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
        elif isinstance(text, bytes | bytearray):
            self._query_hash = hashlib.sha256(text).hexdigest()

    def thinktools(self, chain: Sequence[str]) -> None:
        """Set the ThinkTool chain that ran, in order (at most 32 names)."""
        try:
            self._chain = tuple(chain)
        except TypeError:  # not iterable: recorded as invalid when the command ends
            not_a_name: Any = chain
            self._chain = (not_a_name,)

    def quality(
        self,
        *,
        confidence: float | None = None,
        coherence: float | None = None,
        depth: float | None = None,
    ) -> None:
        """Set computed quality scores (0 to 1)."""
        self._quality = {
            "confidence_score": confidence, "coherence_score": coherence, "depth_score": depth,
        }  # fmt: skip

    def __enter__(self) -> CommandRecorder:
        self._t0 = _perf_counter()
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if self._tel._transport is not None or _telemetry._sink is not None:
            try:
                self._record(ev)
            except Exception:
                self._tel._drop("internal_error")
        return False  # never swallow the caller's exception

    def _bad_field(self, key: tuple[Any, ...]) -> tuple[str, str] | None:
        """The first field the schema would reject, and its rule; None when all are valid.

        Called when ``key`` (the fields checked) is not a combination already seen
        valid; a valid one is remembered, so the common case costs ``_record`` one
        tuple and one set lookup.
        """
        seen = self._tel._seen
        name, sub, model, chain = self.name, self.subcommand, self._model, self._chain
        for field, valid, rule in (
            ("command", seen.ident(name), IDENT_RULE),
            ("subcommand", seen.optional(sub), IDENT_RULE),
            ("tokens.model", seen.optional(model), IDENT_RULE),
            ("thinktool_chain", seen.chain(chain), CHAIN_RULE),
        ):
            if not valid:
                return field, rule
        if self.profile is not None and not member(self.profile, PROFILES):
            return "profile", "one of " + ", ".join(sorted(PROFILES))
        seen.remember(key)
        return None

    def _record(self, exc: BaseException | None) -> None:
        s = self._tel._s
        duration_ms = int((_perf_counter() - self._t0) * 1000)
        kind: type[CommandFamily]
        category: Any = None  # an ErrorCategory literal
        if exc is None:
            kind = s.CommandExecuted
        elif isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "CancelledError":
            kind, category = s.CommandCancelled, "cancelled"
        else:
            kind, category = s.CommandFailed, error_category(exc)
        key = (self.name, self.subcommand, self.profile, self._model, self._chain)
        try:
            known = key in self._tel._seen.combos
        except TypeError:  # an unhashable value: certainly not valid
            known = False
        if not known:
            bad = self._bad_field(key)
            if bad is not None:
                self._tel._invalid(kind.event_type, *bad, "invalid_field")
                return
        profile: Any = self.profile  # a Profile literal, or the daemon rejects the event
        self._tel.emit(
            kind(
                command=self.name,
                subcommand=self.subcommand,
                profile=profile,
                thinktool_chain=self._chain,
                thinktool_count=len(self._chain),
                execution=s.Execution(
                    duration_ms=duration_ms,
                    llm_latency_ms=self.llm_latency_ms,
                    processing_ms=self.processing_ms,
                    success=exc is None,
                ),
                tokens=s.Tokens(
                    input=self._input, output=self._output, cached=self._cached, model=self._model
                ),
                quality=s.Quality(**self._quality) if self._quality else None,
                cache_hit=self.cache_hit,
                error_category=category,
                query_hash=self._query_hash,
            )
        )

    def __call__(self, fn: F) -> F:
        """Decorator form: each call of ``fn`` is timed as one command."""
        import functools
        import inspect  # costs ~7 ms: only when a decorator is actually applied
        from typing import cast

        tel, name, profile, sub = self._tel, self.name, self.profile, self.subcommand

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with CommandRecorder(tel, name, profile, sub):
                    return await fn(*args, **kwargs)

            return cast("F", async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with CommandRecorder(tel, name, profile, sub):
                return fn(*args, **kwargs)

        return cast("F", wrapper)
