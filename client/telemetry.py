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

import os
import sys
import time

from rkd.client.switches import ConfigError, kill_switch

# Nothing else at import: typing, datetime, uuid, functools and collections.abc together
# cost ~20 ms, and an application under a kill switch needs none of them.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; checkers read it too
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import TracebackType
    from typing import Any, Final, Literal, TypeVar

    from rkd.client.config import Settings
    from rkd.client.schema import CommandFamily

    F = TypeVar("F", bound=Callable[..., Any])

_monotonic = time.monotonic
_perf_counter = time.perf_counter

# uuid4 text, 8-4-4-4-12: where each of the 32 hex digits goes among the 36 characters.
_UUID_POSITIONS: Final = (*range(8), *range(9, 13), *range(14, 18), *range(19, 23), *range(24, 36))
_UUID_DIGITS: Final = tuple((pos, digit) for digit, pos in enumerate(_UUID_POSITIONS))
_VERSION_4: Final = bytes((b & 0x0F) | 0x40 for b in range(256))  # byte 6: 0100xxxx
_VARIANT_RFC: Final = bytes((b & 0x3F) | 0x80 for b in range(256))  # byte 8: 10xxxxxx


def uuid4_batch(n: int) -> list[str]:
    """``n`` random uuid4 values as canonical text, from one ``os.urandom`` call.

    Built with byte-slice assignments (C loops over the whole batch), ~0.2 µs per id
    where ``str(uuid.uuid4())`` costs ~3 µs and building a ``uuid.UUID`` ~1 µs.
    """
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT_RFC)
    digits = raw.hex().encode("ascii")
    text = bytearray(b"-" * (37 * n))  # 36 characters and a separator per id
    for pos, digit in _UUID_DIGITS:
        text[pos::37] = digits[digit::32]
    text[36::37] = b" " * n
    return text.decode("ascii").split()


class _Ids:
    """Event ids, as uuid4 text made 256 at a time.

    The envelope's ``event_id`` is declared ``uuid.UUID``; msgspec encodes a UUID as its
    canonical text, so handing it that text gives the very same bytes on the wire.
    """

    __slots__ = ("pool",)

    def __init__(self) -> None:
        self.pool: list[str] = []
        os.register_at_fork(after_in_child=self.pool.clear)  # a child must never reuse ids

    def next(self) -> str:
        pool = self.pool
        while True:  # another thread may empty the pool between a refill and the pop
            try:
                return pool.pop()  # list.pop is atomic: two threads never get one id
            except IndexError:
                pool += uuid4_batch(256)


def error_category(exc: BaseException) -> str:
    """Map an exception to an ErrorCategory, by an explicit attribute, type, then name.

    An exception may declare ``rk_error_category``. Names are matched so that the
    exceptions of common LLM SDKs and HTTP clients land in a useful bucket.
    """
    from typing import get_args  # an exception is leaving: typing is affordable here

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


def _source(product: str, version: str, tier: str) -> Any:
    """The envelope's ``Source`` for this product and platform, validated.

    Structs are not validated on construction, so the source is checked once, here;
    an invalid one raises ``msgspec.ValidationError``.
    """
    import platform  # loaded already with msgspec (uuid imports it)

    import msgspec
    from rkd.client.schema import Source

    source = Source(
        product=product,
        version=version,
        tier=tier,  # type: ignore[arg-type]  # a Literal, checked just below
        os=_platform_os(),
        arch=platform.machine() or "unknown",
        python_version=platform.python_version(),
    )
    msgspec.convert(msgspec.to_builtins(source), Source)
    return source


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
        import datetime as dt
        import functools

        import msgspec
        from rkd.client import schema
        from rkd.client.transport import Transport
        from rkd.client.wire import MAX_FRAME_BYTES

        try:
            source = _source(product, version, tier)
        except msgspec.ValidationError as e:
            self.disabled_reason = f"invalid source: {e}"
            return
        self._source = msgspec.Raw(msgspec.msgpack.encode(source))  # encoded once, see emit
        self._s = schema  # the schema module, looked up once (an import per call costs ~1 µs)
        self._envelopes: dict[type, Any] = dict(schema.ENVELOPES)
        self._encode = msgspec.msgpack.Encoder().encode
        self._now = functools.partial(dt.datetime.now, dt.UTC)
        self._max = MAX_FRAME_BYTES
        self._next_id = _Ids().next
        self._transport = Transport(settings.runtime_dir, settings.spool_dir)
        self._settings = settings
        self._categories = settings.categories
        self._watched = _watched_files(settings)
        self._stamp = _stamp(self._watched)
        self._next_check = _monotonic() + RECHECK_SECS
        self.enabled = True

    # -- the one generic entry point ---------------------------------------------------

    def emit(self, payload: Any) -> None:
        """Send one event (a payload Struct from :mod:`rkd.client.schema`).

        The hot path (~3 µs): every name it needs was bound once in ``_start``. The
        envelope exists only to be encoded at once, so its constant or random parts come
        ready-made: ``event_id`` as the uuid's canonical text and ``source`` as its
        MessagePack bytes (``msgspec.Raw``). msgspec encodes a ``UUID`` and a ``Source``
        as exactly those bytes, so the frame is the same (tests/test_client_perf_wire.py).
        """
        transport = self._transport
        if transport is None:
            return
        if _monotonic() >= self._next_check:
            self._recheck()
        try:
            if payload.category not in self._categories:
                return  # the user has not consented to this category (or has withdrawn)
            envelope = self._envelopes[type(payload)](
                event_id=self._next_id(),
                timestamp=self._now(),
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
        self._next_check = _monotonic() + RECHECK_SECS
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
        any_profile: Any = profile  # a Profile literal, or the daemon rejects the event
        if command is not None or profile is not None or step is not None:
            context = s.ErrorContext(command=command, profile=any_profile, step=step)
        any_category: Any = category  # an ErrorCategory literal, likewise
        self.emit(
            s.ErrorOccurred(
                error_category=any_category,
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
        src: Any = source  # a DiscoverySource literal, or the daemon rejects the event
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
        self._input += input
        self._output += output
        self._cached += cached
        if model is not None:
            self._model = model

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
        self._t0 = _perf_counter()
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
        duration_ms = int((_perf_counter() - self._t0) * 1000)
        kind: type[CommandFamily]
        category: Any = None  # an ErrorCategory literal
        if exc is None:
            kind = s.CommandExecuted
        elif isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "CancelledError":
            kind, category = s.CommandCancelled, "cancelled"
        else:
            kind, category = s.CommandFailed, error_category(exc)
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
