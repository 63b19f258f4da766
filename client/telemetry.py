"""`Telemetry`: what an application holds to record events.

    tel = Telemetry(product="reasonkit-core", version="1.0.0")
    with tel.command("think", profile="balanced") as cmd:
        cmd.tokens(input=1500, output=800, model="claude-3-5-sonnet-20241022")
        ...

When telemetry is off (a kill switch, the config, no consent, a config error) the object
is a null object: every method returns at once, no file beyond the config is read, no
socket is opened and zmq is never imported. Nothing here ever raises into the caller
except the caller's own exception leaving a ``with tel.command(...)`` block, and a
programmer error in the constant constructor arguments (``product``, ``version``,
``tier``), raised whether telemetry is on or not.

The typed helpers check the identifiers they are given (:mod:`rkd.client.checks`); an
event the daemon would reject is dropped here instead, counted in ``tel.drops`` and,
in debug mode (``debug=True`` or ``RK_TELEMETRY_DEBUG=1``), logged once per event type
and field on the ``rkd.client`` logger, naming the field, never the value.

One module global, ``_sink``: set only by :func:`rkd.client.testing.capture_events`
(which restores it), it diverts every instance's events to the test; emit checks it once.
"""

from __future__ import annotations

import os
import sys
import time

from rkd.client.checks import (
    DISCOVERY_SOURCES,
    ERROR_CATEGORIES,
    FEATURE_STAGES,
    IDENT_RULE,
    PROFILES,
    SCHEMA_RULE,
    Seen,
    check_constants,
    member,
    schema_violation,
)
from rkd.client.switches import _TRUE, ConfigError, kill_switch

# Nothing else at import: typing, datetime, uuid, functools and collections.abc together
# cost ~20 ms, and an application under a kill switch needs none of them.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; checkers read it too
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from importlib.resources.abc import Traversable
    from typing import Any, Final, Literal

    from rkd.client.command import CommandRecorder
    from rkd.client.config import Settings

_monotonic = time.monotonic
# rkd.client.testing.capture_events() only: receives (instance, payload) instead of the
# daemon. The one global here; capture_events restores the previous value on exit.
_sink: Callable[[Telemetry, Any], None] | None = None
_Recorder: type[CommandRecorder] | None = None  # rkd.client.command, loaded on first use


def _load_recorder() -> type[CommandRecorder]:
    """Import the command recorder once (an import statement per call costs ~1 µs)."""
    global _Recorder
    from rkd.client.command import CommandRecorder

    _Recorder = CommandRecorder
    return CommandRecorder


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

    return (settings.paths.config, os.path.join(settings.paths.data, CONSENT_FILE))


def _stamp(paths: tuple[str, ...]) -> tuple[int, ...]:
    out = []
    for p in paths:
        try:
            out.append(os.stat(p).st_mtime_ns)
        except OSError:
            out.append(0)
    return tuple(out)


def _one_of(values: frozenset[str]) -> str:
    return "one of " + ", ".join(sorted(values))


def _log_warning(message: str) -> None:
    """One line on the ``rkd.client`` logger (the host application decides where it goes).

    logging, not warnings: ``warnings.warn`` raises under ``-W error``, and a host's
    filters and handlers are its own business; either way nothing may reach the caller.
    """
    try:
        import logging

        logging.getLogger("rkd.client").warning(message)
    except Exception:
        pass


class Telemetry:
    """Records typed events for one product; cheap, thread-safe, never raises.

    ``enabled`` tells whether events are sent (it follows `rkd disable`/`enable`);
    ``disabled_reason`` says why not. Raises ``ValueError`` (``TypeError`` for a non-str)
    at construction for a ``product``, ``version`` or ``tier`` no event can carry.
    """

    # The schema module. Set per instance by _start; set here by capture_events, so that
    # an instance built disabled can still build the payloads a test captures.
    _s: Any = None

    def __init__(
        self,
        product: str,
        version: str,
        *,
        tier: str = "oss",
        settings: Settings | None = None,
        env: Mapping[str, str] | None = None,
        debug: bool = False,
        vocabulary: bytes | os.PathLike[str] | Traversable | None = None,
    ) -> None:
        check_constants(product, version, tier)  # programmer errors raise, everywhere
        self._enabled = False
        self.disabled_reason: str | None = None
        self._transport: Any = None
        # The instance's own switches, read again by every recheck (os.environ stays live).
        self._env = os.environ if env is None else env
        self._debug = debug or self._env.get("RK_TELEMETRY_DEBUG", "").strip().lower() in _TRUE
        self._seen = Seen()  # identifiers found valid
        self._warned: set[tuple[str, str]] = set()  # (event type, field) logged in debug mode
        self._null_drops: dict[str, int] = {}  # drops of an instance built disabled (captures)
        switch = kill_switch(self._env)  # reads only the environment
        if switch is not None:  # wins over everything, even explicit settings
            self.disabled_reason = f"disabled by {switch} in the environment"
            return
        from rkd.client.config import load_settings  # only past the kill switch

        try:
            settings = settings or load_settings(self._env)
        except ConfigError as e:
            self.disabled_reason = str(e)
            return
        except Exception as e:  # e.g. no home folder to resolve paths against: stay off
            self.disabled_reason = f"cannot resolve the settings: {type(e).__name__}"
            return
        if not settings.enabled:
            self.disabled_reason = f"disabled ({settings.decided_by})"
            return
        try:
            self._start(product, version, tier, settings, vocabulary)
        except Exception as e:  # a bug here must not reach the application
            self._transport = None
            self.disabled_reason = f"cannot start: {type(e).__name__}"

    def _start(self, product: str, version: str, tier: str, settings: Settings,
               vocabulary: bytes | os.PathLike[str] | Traversable | None) -> None:  # fmt: skip
        import datetime as dt
        import functools

        import msgspec
        from rkd.client import schema
        from rkd.client.ids import IdPool
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
        self._next_id = IdPool().next
        hello = None
        if vocabulary is not None:
            from rkd.client.vocabulary import VocabularyError, vocabulary_frame

            try:
                hello = vocabulary_frame(vocabulary, product)
            except VocabularyError as e:
                self.disabled_reason = f"invalid vocabulary: {e}"
                return
        self._transport = Transport(settings.paths.runtime, settings.paths.spool, hello)
        self._settings = settings
        self._categories = settings.categories
        self._watched = _watched_files(settings)
        self._stamp = _stamp(self._watched)
        self._switch: str | None = None  # the kill switch the last recheck saw
        self._next_check = _monotonic() + RECHECK_SECS
        self._enabled = True
        if self._debug:  # an instance attribute: the class's emit stays as cheap as it is
            self.emit = self._emit_checked  # type: ignore[method-assign]

    @property
    def enabled(self) -> bool:
        """Whether events are sent now: False after `rkd disable` (noticed within
        RECHECK_SECS), True again after `rkd enable` if this instance was built enabled."""
        if self._transport is not None and _monotonic() >= self._next_check:
            self._recheck()
        return self._enabled

    # -- the one generic entry point ---------------------------------------------------

    def emit(self, payload: Any) -> None:
        """Send one event (a payload Struct from :mod:`rkd.client.schema`).

        The hot path (~3 µs): every name it needs was bound once in ``_start``. The
        envelope exists only to be encoded at once, so its constant or random parts come
        ready-made: ``event_id`` as the uuid's canonical text and ``source`` as its
        MessagePack bytes (``msgspec.Raw``). msgspec encodes a ``UUID`` and a ``Source``
        as exactly those bytes, so the frame is the same (tests/test_client_perf_wire.py).
        """
        if _sink is not None:  # capture_events() is active: the test gets it, not the daemon
            _sink(self, payload)
            return
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
        transport.send(frame, payload.family == "error")  # errors are not held (spec §4.2)

    def _emit_checked(self, payload: Any) -> None:
        """``emit`` in debug mode: the payload is first checked as the daemon's decoder
        would (several µs more), so numbers and the payloads an application builds for
        emit/lifecycle/upgrade get the same feedback as the typed helpers' identifiers."""
        if _sink is None and getattr(payload, "category", None) in self._categories:
            try:
                field = schema_violation(payload) if type(payload) in self._envelopes else None
            except Exception:  # does not encode: emit counts it as encode_error
                field = None
            if field is not None:
                self._invalid(payload.event_type, field, SCHEMA_RULE, "invalid_field")
                return
        Telemetry.emit(self, payload)

    def _recheck(self) -> None:
        """Notice `rkd disable`/`enable` within RECHECK_SECS: two stats, no file read.

        Only when the config or consent file changed, or a kill switch appeared or went,
        is the decision made again, from this instance's own env (or os.environ) and the
        files its own settings name: an instance built with ``env=`` or ``settings=``
        keeps to them. Any error turns it off until the next change. ``enabled`` and
        ``disabled_reason`` follow the decision.
        """
        self._next_check = _monotonic() + RECHECK_SECS
        stamp = _stamp(self._watched)
        switch = kill_switch(self._env)
        if stamp == self._stamp and switch is None and self._switch is None:
            return
        self._stamp, self._switch = stamp, switch
        from rkd.client.config import categories_now

        try:
            self._categories = categories_now(self._settings, self._env)
            reason = None
        except Exception as e:  # a config error, a hostile file: collect nothing, never raise
            self._categories = frozenset()
            reason = str(e) if isinstance(e, ConfigError) else f"cannot decide: {type(e).__name__}"
        if switch is not None:
            reason = f"disabled by {switch} in the environment"
        elif not self._categories and reason is None:
            reason = "disabled since it started (rkd disable, or a change to the config)"
        self._enabled, self.disabled_reason = reason is None, reason

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
        """Events this instance could not deliver, or dropped as invalid, by reason."""
        if self._transport is not None:
            return dict(self._transport.drops)
        return dict(self._null_drops)

    def _drop(self, reason: str) -> None:
        if self._transport is not None:
            self._transport.drop(reason)
        else:  # built disabled, yet used under capture_events()
            self._null_drops[reason] = self._null_drops.get(reason, 0) + 1

    def _invalid(self, event_type: str, field: str, rule: str, reason: str) -> None:
        """Drop an event the daemon would reject; in debug mode, say so once per field.

        The message names the event type and the field, never the value: an invalid
        identifier is often exactly the text that must not leave the program.
        """
        self._drop(reason)
        if self._debug and (event_type, field) not in self._warned:
            self._warned.add((event_type, field))
            _log_warning(
                f"rkd.client dropped an event: {event_type}: `{field}` must be {rule}; "
                f"counted in tel.drops[{reason!r}] (logged once per event type and field)"
            )

    # -- typed methods, one per event family ------------------------------------------
    # Each checks the identifiers and closed-set values it is given: one that fails is
    # an event the daemon would reject, so it is dropped here, counted and (debug) logged.

    def command(
        self, name: str, *, profile: str | None = None, subcommand: str | None = None
    ) -> CommandRecorder:
        """Time a command: ``with tel.command("think") as cmd:`` or ``@tel.command("think")``.

        Records command_executed on success, command_failed with the error category when
        the block raises (the exception propagates unchanged), command_cancelled on
        KeyboardInterrupt or task cancellation.
        """
        return (_Recorder or _load_recorder())(self, name, profile, subcommand)

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
        if self._transport is None and _sink is None:
            return
        try:
            known = tool_name in self._seen.ok  # the common case: no method call
        except TypeError:
            known = False
        if not known and not self._seen.ident(tool_name):
            self._invalid("thinktool_completed", "tool_name", IDENT_RULE, "invalid_field")
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
        if self._transport is None and _sink is None:
            return
        bad = _bad_error_field(self._seen, category, code, command, profile)
        if bad is not None:
            self._invalid("error_occurred", *bad, "invalid_field")
            return
        s = self._s
        context = None
        any_profile: Any = profile  # a Profile literal: checked above
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
        if self._transport is None and _sink is None:
            return
        if not member(stage, FEATURE_STAGES):  # selects the event type: not a field value
            self._invalid("tel.feature()", "stage", _one_of(FEATURE_STAGES), "invalid_argument")
            return
        event_type = _FEATURE_EVENTS.get(stage, "feature_adoption")
        if not self._seen.ident(feature_id):
            self._invalid(event_type, "feature_id", IDENT_RULE, "invalid_field")
            return
        if source is not None and not member(source, DISCOVERY_SOURCES):
            self._invalid(event_type, "discovery_source", _one_of(DISCOVERY_SOURCES),
                          "invalid_field")  # fmt: skip
            return
        s = self._s
        src: Any = source  # a DiscoverySource literal: checked above
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
        if self._transport is None and _sink is None:
            return
        if getattr(payload, "family", None) != family:
            self._drop("wrong_family")
            return
        self.emit(payload)


_FEATURE_EVENTS: Final = {"discovered": "feature_discovered", "first_use": "feature_first_use"}
_PROFILE_RULE: Final = _one_of(PROFILES)


def _bad_error_field(
    seen: Seen, category: object, code: object, command: object, profile: object
) -> tuple[str, str] | None:
    """The first field of an error_occurred event the schema rejects, and its rule."""
    if not member(category, ERROR_CATEGORIES):
        return "error_category", _one_of(ERROR_CATEGORIES)
    if not seen.optional(code):
        return "error_code", IDENT_RULE
    if not seen.optional(command):
        return "context.command", IDENT_RULE
    if profile is not None and not member(profile, PROFILES):
        return "context.profile", _PROFILE_RULE
    return None
