"""`Telemetry`: what an application holds to record events.

    tel = Telemetry(product="reasonkit-core", version="1.0.0")
    with tel.command("think", profile="balanced") as cmd:
        cmd.tokens(input=1500, output=800, model="claude-3-5-sonnet-20241022")
        ...

When telemetry is off (a kill switch, the config, no consent, a config error) the object
is a null object: every method returns at once, no file beyond the config is read, no
socket is opened and zmq is never imported. Nothing here ever raises into the caller
except the caller's own exception leaving a ``with tel.command(...)`` block.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast, get_args

from rkd.client.switches import ConfigError, kill_switch

if TYPE_CHECKING:
    from rkd.client.config import Settings
    from rkd.client.schema import CommandFamily

F = TypeVar("F", bound=Callable[..., Any])

_UTC: Final = dt.UTC
_UNKNOWN: Final = uuid.SafeUUID.unknown
_new = object.__new__
_set = object.__setattr__


class _Ids:
    """uuid4 values from one ``os.urandom`` call per 256 ids (uuid.uuid4 costs ~2-4 µs)."""

    __slots__ = ("pool", "pos")

    def __init__(self) -> None:
        self.pool, self.pos = b"", 0
        os.register_at_fork(after_in_child=self._forget)  # a child must never reuse ids

    def _forget(self) -> None:
        self.pool, self.pos = b"", 0

    def next(self) -> uuid.UUID:
        if self.pos >= len(self.pool):
            self.pool, self.pos = os.urandom(4096), 0
        n = int.from_bytes(self.pool[self.pos : self.pos + 16], "big")
        self.pos += 16
        n = (n & ~(0xF000 << 64) | (4 << 76)) & ~(0xC000 << 48) | (0x8000 << 48)
        u = _new(uuid.UUID)
        _set(u, "int", n)
        _set(u, "is_safe", _UNKNOWN)
        return u


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


def _platform_os() -> str:
    return {"darwin": "macos", "win32": "windows"}.get(
        sys.platform, sys.platform.rstrip("0123456789")
    )


RECHECK_SECS: Final = 5.0  # how soon a running application notices `rkd disable`


def _watched_files(settings: Settings) -> tuple[str, ...]:
    from rkd.client.consent import CONSENT_FILE

    return (str(settings.config_path), str(settings.data_dir / CONSENT_FILE))


def _stamp(paths: tuple[str, ...]) -> tuple[int, ...]:
    out = []
    for p in paths:
        try:
            out.append(os.stat(p).st_mtime_ns)
        except OSError:
            out.append(0)
    return tuple(out)


class Telemetry:
    """Records typed events for one product; cheap, thread-safe, never raises.

    ``enabled`` tells whether events are sent; ``disabled_reason`` says why not.
    """

    def __init__(
        self,
        product: str,
        version: str,
        *,
        tier: str = "oss",
        settings: Settings | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.enabled = False
        self.disabled_reason: str | None = None
        self._transport: Any = None
        environ = os.environ if env is None else env
        switch = kill_switch(environ)  # reads only the environment
        if switch is not None:  # wins over everything, even explicit settings
            self.disabled_reason = f"disabled by {switch} in the environment"
            return
        from rkd.client.config import load_settings  # only past the kill switch

        try:
            settings = settings or load_settings(environ)
        except ConfigError as e:
            self.disabled_reason = str(e)
            return
        if not settings.enabled:
            self.disabled_reason = f"disabled ({settings.decided_by})"
            return
        self._start(product, version, tier, settings)

    def _start(self, product: str, version: str, tier: str, settings: Settings) -> None:
        import platform

        import msgspec
        from rkd.client import schema
        from rkd.client.schema import ENVELOPES, Source
        from rkd.client.transport import Transport
        from rkd.client.wire import MAX_FRAME_BYTES

        source = Source(
            product=product,
            version=version,
            tier=cast(Any, tier),
            os=_platform_os(),
            arch=platform.machine() or "unknown",
            python_version=platform.python_version(),
        )
        try:  # Structs are not validated on construction; check the source once, here
            msgspec.convert(msgspec.to_builtins(source), Source)
        except msgspec.ValidationError as e:
            self.disabled_reason = f"invalid source: {e}"
            return
        self._source = source
        self._s = schema  # the schema module, looked up once (an import per call costs ~1 µs)
        self._envelopes: dict[type, Any] = dict(ENVELOPES)
        self._encode = msgspec.msgpack.Encoder().encode
        self._max = MAX_FRAME_BYTES
        self._ids = _Ids()
        self._transport = Transport(settings.runtime_dir, settings.spool_dir)
        self._settings = settings
        self._categories = settings.categories
        self._watched = _watched_files(settings)
        self._stamp = _stamp(self._watched)
        self._next_check = time.monotonic() + RECHECK_SECS
        self.enabled = True

    # -- the one generic entry point ---------------------------------------------------

    def emit(self, payload: Any) -> None:
        """Send one event (a payload Struct from :mod:`rkd.client.schema`)."""
        transport = self._transport
        if transport is None:
            return
        if time.monotonic() >= self._next_check:
            self._recheck()
        try:
            if payload.category not in self._categories:
                return  # the user has not consented to this category (or has withdrawn)
            envelope = self._envelopes[type(payload)](
                event_id=self._ids.next(),
                timestamp=dt.datetime.now(_UTC),
                source=self._source,
                payload=payload,
            )
            frame = self._encode(envelope)
        except Exception:  # not a payload, or a value msgpack cannot hold
            transport.drop("encode_error")
            return
        if len(frame) > self._max:
            transport.drop("oversized")
            return
        transport.send(frame)

    def _recheck(self) -> None:
        """Notice `rkd disable`/`enable` within RECHECK_SECS: two stats, no file read.

        Only when the config or consent file changed are settings read again; the
        kill switches are looked up in this process's environment.
        """
        self._next_check = time.monotonic() + RECHECK_SECS
        stamp = _stamp(self._watched)
        if stamp == self._stamp and kill_switch(os.environ) is None:
            return
        self._stamp = stamp
        from rkd.client.config import load_settings

        try:
            settings = load_settings()
        except ConfigError:
            settings = None
        if settings is None or not settings.enabled or kill_switch(os.environ):
            self._categories = frozenset()
        else:
            self._categories = settings.categories

    def flush(self, timeout_secs: float = 0.2) -> None:
        """Push what this process still holds to the daemon (or the spool)."""
        if self._transport is not None:
            self._transport.flush(timeout_secs)

    def close(self) -> None:
        """Flush within 200 ms and release the socket. Also runs at interpreter exit."""
        if self._transport is not None:
            self._transport.close()

    @property
    def drops(self) -> dict[str, int]:
        """Events this process could not deliver, by reason."""
        return dict(self._transport.drops) if self._transport is not None else {}

    # -- typed methods, one per event family ------------------------------------------

    def command(
        self, name: str, *, profile: str | None = None, subcommand: str | None = None
    ) -> CommandRecorder:
        """Time a command: ``with tel.command("think") as cmd:`` or ``@tel.command("think")``.

        Records command_executed on success, command_failed with the error category when
        the block raises (the exception propagates unchanged), command_cancelled on
        KeyboardInterrupt or task cancellation.
        """
        return CommandRecorder(self, name, profile, subcommand)

    def thinktool(
        self,
        tool_name: str,
        *,
        step_count: int = 0,
        duration_ms: int = 0,
        tokens_used: int = 0,
        completed: bool = True,
        confidence_score: float | None = None,
        coherence_score: float | None = None,
        depth_score: float | None = None,
    ) -> None:
        """Record a finished ThinkTool run (thinktool_completed)."""
        if self._transport is None:
            return
        self.emit(
            self._s.ThinkToolCompleted(
                tool_name=tool_name,
                step_count=step_count,
                duration_ms=duration_ms,
                tokens_used=tokens_used,
                completed=completed,
                confidence_score=confidence_score,
                coherence_score=coherence_score,
                depth_score=depth_score,
            )
        )

    def error(
        self,
        category: str,
        *,
        code: str | None = None,
        recoverable: bool = False,
        retry_count: int = 0,
        command: str | None = None,
        profile: str | None = None,
        step: int | None = None,
    ) -> None:
        """Record an error by category and code (error_occurred). Never pass a message."""
        if self._transport is None:
            return
        s = self._s
        context = None
        if command is not None or profile is not None or step is not None:
            context = s.ErrorContext(command=command, profile=cast(Any, profile), step=step)
        self.emit(
            s.ErrorOccurred(
                error_category=cast(Any, category),
                error_code=code,
                recoverable=recoverable,
                retry_count=retry_count,
                context=context,
            )
        )

    def feature(
        self,
        feature_id: str,
        stage: Literal["discovered", "first_use", "milestone", "disabled"] = "first_use",
        *,
        source: str | None = None,
        count: int | None = None,
    ) -> None:
        """Record feature discovery, first use, a usage milestone or its disabling."""
        if self._transport is None:
            return
        s = self._s
        src = cast(Any, source)
        if stage == "discovered":
            self.emit(s.FeatureDiscovered(feature_id=feature_id, discovery_source=src))
        elif stage == "first_use":
            self.emit(s.FeatureFirstUse(feature_id=feature_id, discovery_source=src))
        else:
            self.emit(
                s.FeatureAdoption(
                    feature_id=feature_id,
                    feature_event=stage,
                    milestone_count=count,
                    discovery_source=src,
                )
            )

    def lifecycle(self, payload: Any) -> None:
        """Record an install/update/uninstall event, e.g. ``InstallCompleted(...)``."""
        self._emit_family(payload, "lifecycle")

    def upgrade(self, payload: Any) -> None:
        """Record an upgrade or trial event, e.g. ``UpgradePromptShown(prompt_id=...)``."""
        self._emit_family(payload, "upgrade")

    def _emit_family(self, payload: Any, family: str) -> None:
        if self._transport is None:
            return
        if getattr(payload, "family", None) != family:
            self._transport.drop("wrong_family")
            return
        self.emit(payload)


class CommandRecorder:
    """Measures one command; a context manager and a decorator.

    Inside the block the caller may add what it knows: ``tokens(...)``,
    ``thinktools([...])``, ``quality(...)``, ``cache_hit = True``, ``llm_latency_ms``.
    """

    __slots__ = (
        "_chain",
        "_quality",
        "_query_hash",
        "_t0",
        "_tel",
        "_tokens",
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
        self._tokens: dict[str, Any] = {}
        self._chain: tuple[str, ...] = ()
        self._quality: dict[str, float | None] | None = None
        self._query_hash: str | None = None

    def tokens(
        self, *, input: int = 0, output: int = 0, cached: int = 0, model: str | None = None
    ) -> None:
        """Add token usage (adds up over several calls; the last model wins)."""
        t = self._tokens
        t["input"] = t.get("input", 0) + input
        t["output"] = t.get("output", 0) + output
        t["cached"] = t.get("cached", 0) + cached
        if model is not None:
            t["model"] = model

    def query(self, text: str) -> None:
        """Record a fingerprint of the query for de-duplication; the text stays here.

        Only its SHA-256 leaves this process, and the daemon re-hashes that with a
        per-install salt before storing it.
        """
        import hashlib

        self._query_hash = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()

    def thinktools(self, chain: Sequence[str]) -> None:
        """Set the ThinkTool chain that ran, in order."""
        self._chain = tuple(chain)

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
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if self._tel._transport is not None:
            try:
                self._record(ev)
            except Exception:
                self._tel._transport.drop("internal_error")
        return False  # never swallow the caller's exception

    def _record(self, exc: BaseException | None) -> None:
        s = self._tel._s
        duration_ms = int((time.perf_counter() - self._t0) * 1000)
        kind: type[CommandFamily]
        if exc is None:
            kind, category = s.CommandExecuted, None
        elif isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "CancelledError":
            kind, category = s.CommandCancelled, "cancelled"
        else:
            kind, category = s.CommandFailed, error_category(exc)
        self._tel.emit(
            kind(
                command=self.name,
                subcommand=self.subcommand,
                profile=cast(Any, self.profile),
                thinktool_chain=self._chain,
                thinktool_count=len(self._chain),
                execution=s.Execution(
                    duration_ms=duration_ms,
                    llm_latency_ms=self.llm_latency_ms,
                    processing_ms=self.processing_ms,
                    success=exc is None,
                ),
                tokens=s.Tokens(**self._tokens),
                quality=s.Quality(**self._quality) if self._quality else None,
                cache_hit=self.cache_hit,
                error_category=cast(Any, category),
                query_hash=self._query_hash,
            )
        )

    def __call__(self, fn: F) -> F:
        """Decorator form: each call of ``fn`` is timed as one command."""
        import inspect  # costs ~7 ms: only when a decorator is actually applied

        tel, name, profile, sub = self._tel, self.name, self.profile, self.subcommand

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with CommandRecorder(tel, name, profile, sub):
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with CommandRecorder(tel, name, profile, sub):
                return fn(*args, **kwargs)

        return cast(F, wrapper)
