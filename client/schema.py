"""The event schema: every event rkd can store, as frozen msgspec Structs.

(``gc=False`` throughout: these values hold only scalars, strings, tuples and other such
Structs, so they cannot form reference cycles, and the garbage collector need not track
the thousands of them a busy daemon holds.)

Applications build *payloads* (``CommandExecuted(command="think", ...)``); the client
wraps each in the spec's envelope (§3.1) and the daemon stamps the session. On the wire
and in exports an event looks exactly like the spec's envelope::

    {"event_type": "command_executed", "schema_version": "1.0.0", "event_id": "...",
     "timestamp": "...", "source": {...}, "session": {...}, "payload": {...}}

The envelope classes are generated from the payload classes (one per event type, tagged
by ``event_type``) and gathered in one tagged union, :data:`Event`. ``rkd explain`` and
the JSON Schema are generated from these types, so the documentation cannot drift.

Evolution follows msgspec's rules: a new field gets a default, a type never changes, a
removed field is only ever ignored. Free text has no place here: every string is an
identifier with a pattern (no spaces, slashes, quotes or ``@``), so a prompt, a path or
an e-mail address does not even decode. Each string also declares a maximum length,
which the daemon's privacy firewall enforces by cutting (after scanning the whole value).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, ClassVar, Final, Literal, Union

import msgspec
from msgspec import Meta, Struct

SCHEMA_VERSION: Final = "1.0.0"

# -- constrained scalar types -------------------------------------------------------------

# Patterns end in \Z, never $: msgspec matches with re.search, where $ also matches just
# before a final newline, so "think\n" would pass for an identifier.
# Every string type also admits "__other__", what the upload filter (client/upload.py)
# puts in place of an undeclared value, so the server decodes uploads with this schema.

Ident = Annotated[
    str,
    Meta(
        min_length=1,
        pattern=r"^(?:[A-Za-z0-9][A-Za-z0-9_.:+\-]*|__other__)\Z",
        extra={"max_length": 64},  # longer values are cut (and counted) by the firewall
        extra_json_schema={"maxLength": 64},
        description="An identifier: letters, digits and _ . : + - (no spaces, no slashes).",
    ),
]
Version = Annotated[
    str,
    Meta(
        min_length=1,
        extra={"max_length": 48},
        extra_json_schema={"maxLength": 48},
        pattern=r"^(?:v?[0-9]+(\.[0-9]+){0,3}([-+][A-Za-z0-9.\-+]*)?|__other__)\Z",
        description="A version number such as 1.0.0 or 0.12.3-beta.1.",
    ),
]
SchemaVersion = Annotated[
    str,
    Meta(pattern=r"^1\.[0-9]+\.[0-9]+\Z", description="Schema version; major 1 is accepted."),
]
Sha256Hex = Annotated[
    str,
    Meta(
        pattern=r"^(?:[0-9a-f]{64}|__other__)\Z",
        extra={"salted": True},
        description="A SHA-256, hex.",
    ),
]
Millis = Annotated[int, Meta(ge=0, le=2**53, description="A duration in milliseconds.")]
Count = Annotated[int, Meta(ge=0, le=2**32 - 1)]
SmallCount = Annotated[int, Meta(ge=0, le=255)]
Score = Annotated[float, Meta(ge=0.0, le=1.0, description="A computed score from 0 to 1.")]
Timestamp = Annotated[dt.datetime, Meta(tz=True, description="RFC 3339, UTC.")]

# -- closed enumerations: unknown values do not decode ------------------------------------

InstallMethod = Literal["cargo", "curl", "npm", "homebrew", "pip", "pipx", "uv", "manual"]
InstallErrorCategory = Literal[
    "network_error",
    "permission_denied",
    "disk_space",
    "dependency_missing",
    "architecture_mismatch",
    "unknown",
]
ErrorCategory = Literal[
    "api_error",
    "rate_limited",
    "timeout",
    "network_error",
    "auth_error",
    "invalid_input",
    "config_error",
    "io_error",
    "parse_error",
    "cancelled",
    "internal_error",
    "unknown",
]
DiscoverySource = Literal["help", "documentation", "error", "upgrade", "organic"]
FeatureEventType = Literal["discovered", "first_use", "milestone", "disabled"]
Profile = Literal["quick", "balanced", "deep", "paranoid"]
Tier = Literal["oss", "pro", "trial", "enterprise"]

# Consent categories of spec §1.3: every event type belongs to exactly one.
Category = Literal[
    "command_usage", "performance", "thinktool_usage", "error_types", "session_metadata"
]
CATEGORIES: Final[dict[str, str]] = {
    "command_usage": "Which commands and features are used (not their content).",
    "performance": "Latency and step timings, to find what is slow.",
    "thinktool_usage": "Which ThinkTools and profiles are used, and how they score.",
    "error_types": "Error categories and codes (never messages), to fix bugs.",
    "session_metadata": "Session length, install and update events, usage patterns.",
}

# -- the envelope's parts ------------------------------------------------------------------


class Source(Struct, frozen=True, kw_only=True, gc=False):
    """What sent the event: product, version and platform, nothing that identifies anyone."""

    product: Annotated[Ident, Meta(description="Product name, e.g. reasonkit-core.")]
    version: Annotated[Version, Meta(description="Product version.")]
    tier: Annotated[Tier, Meta(description="Product tier.")] = "oss"
    os: Annotated[Ident, Meta(description="Operating system family: linux, macos, windows.")]
    arch: Annotated[Ident, Meta(description="CPU architecture, e.g. x86_64.")]
    python_version: Annotated[Version, Meta(description="Python version of the sender.")]


class Session(Struct, frozen=True, kw_only=True, gc=False):
    """Anonymous session stamped by the daemon: rotates after 30 minutes idle and daily."""

    id: Annotated[uuid.UUID, Meta(description="Random session id, never reused.")]
    sequence: Annotated[Count, Meta(description="Position of the event in its session.")]
    started_at: Annotated[Timestamp, Meta(description="When the session started.")]


# -- payloads ------------------------------------------------------------------------------


class Payload(Struct, frozen=True, kw_only=True, gc=False):
    """Base of every payload. ``event_type`` and ``category`` are declared per subclass."""

    event_type: ClassVar[str]
    category: ClassVar[str]
    family: ClassVar[str]


class LifecycleFamily(Payload, frozen=True, kw_only=True):
    family = "lifecycle"
    category = "session_metadata"


class InstallStarted(LifecycleFamily, frozen=True, kw_only=True):
    """An installation started."""

    event_type = "install_started"
    method: Annotated[InstallMethod, Meta(description="How rkd is being installed.")]
    version: Annotated[Version, Meta(description="Version being installed.")]
    os: Annotated[Ident, Meta(description="Target operating system family.")]
    arch: Annotated[Ident, Meta(description="Target CPU architecture.")]


class InstallCompleted(LifecycleFamily, frozen=True, kw_only=True):
    """An installation finished successfully."""

    event_type = "install_completed"
    method: Annotated[InstallMethod, Meta(description="How it was installed.")]
    version: Annotated[Version, Meta(description="Version installed.")]
    duration_ms: Annotated[Millis, Meta(description="How long installing took.")] = 0
    binary_size_bytes: Annotated[Count, Meta(description="Size of what was installed.")] = 0


class InstallFailed(LifecycleFamily, frozen=True, kw_only=True):
    """An installation failed. No error message: it may contain paths."""

    event_type = "install_failed"
    method: Annotated[InstallMethod, Meta(description="How the install was attempted.")]
    error_category: Annotated[InstallErrorCategory, Meta(description="Why it failed.")]


class UpdateAvailable(LifecycleFamily, frozen=True, kw_only=True):
    """The user was told that a newer version exists."""

    event_type = "update_available"
    current_version: Annotated[Version, Meta(description="Version running now.")]
    available_version: Annotated[Version, Meta(description="Newest version offered.")]
    days_since_release: Annotated[Count, Meta(description="Age of the new version.")] = 0


class UpdateCompleted(LifecycleFamily, frozen=True, kw_only=True):
    """An update finished."""

    event_type = "update_completed"
    from_version: Annotated[Version, Meta(description="Version before the update.")]
    to_version: Annotated[Version, Meta(description="Version after the update.")]
    method: Annotated[InstallMethod | None, Meta(description="How it was updated.")] = None
    duration_ms: Annotated[Millis, Meta(description="How long the update took.")] = 0


class Uninstall(LifecycleFamily, frozen=True, kw_only=True):
    """The product was uninstalled."""

    event_type = "uninstall"
    version: Annotated[Version, Meta(description="Version removed.")]
    days_since_install: Annotated[Count, Meta(description="Days it was installed.")] = 0
    total_sessions: Annotated[Count, Meta(description="Sessions over its lifetime.")] = 0


class SessionFamily(Payload, frozen=True, kw_only=True):
    family = "session"
    category = "session_metadata"


class SessionStarted(SessionFamily, frozen=True, kw_only=True):
    """A new anonymous session began. Written by the daemon only (sequence 1 of the session)."""

    event_type = "session_started"
    reason: Annotated[
        Literal["first", "idle", "daily", "restart"],
        Meta(description="Why a new session began."),
    ] = "first"


class SessionEnded(SessionFamily, frozen=True, kw_only=True):
    """A session ended after 30 minutes idle or at a day old. Written by the daemon only."""

    event_type = "session_ended"
    duration_ms: Annotated[Millis, Meta(description="Session length.")] = 0
    event_count: Annotated[Count, Meta(description="Events in the session.")] = 0
    reason: Annotated[
        Literal["idle", "daily", "shutdown"], Meta(description="Why the session ended.")
    ] = "idle"


class SessionResumed(SessionFamily, frozen=True, kw_only=True):
    """A session continued after a pause shorter than the idle limit."""

    event_type = "session_resumed"
    idle_ms: Annotated[Millis, Meta(description="Length of the pause.")] = 0


class Execution(Struct, frozen=True, kw_only=True, gc=False):
    """How a command ran: timings and outcome."""

    duration_ms: Annotated[Millis, Meta(description="Total wall time of the command.")] = 0
    llm_latency_ms: Annotated[
        Millis | None, Meta(description="Time spent waiting on the model.")
    ] = None
    processing_ms: Annotated[Millis | None, Meta(description="Local processing time.")] = None
    success: Annotated[bool, Meta(description="Whether the command succeeded.")] = True


class Tokens(Struct, frozen=True, kw_only=True, gc=False):
    """Token usage, for metering and cost estimates."""

    input: Annotated[Count, Meta(description="Input tokens.")] = 0
    output: Annotated[Count, Meta(description="Output tokens.")] = 0
    cached: Annotated[Count, Meta(description="Tokens served from the provider's cache.")] = 0
    model: Annotated[
        Ident | None, Meta(description="Model id, e.g. claude-3-5-sonnet-20241022.")
    ] = None


class Quality(Struct, frozen=True, kw_only=True, gc=False):
    """Quality scores computed by ReasonKit (from structure, not content)."""

    confidence_score: Score | None = None
    coherence_score: Score | None = None
    depth_score: Score | None = None


class CommandFamily(Payload, frozen=True, kw_only=True):
    family = "command"
    category = "command_usage"
    command: Annotated[Ident, Meta(description="Command name, e.g. think or compare.")]
    subcommand: Annotated[Ident | None, Meta(description="Subcommand, if any.")] = None
    profile: Annotated[Profile | None, Meta(description="Reasoning profile used.")] = None
    thinktool_chain: Annotated[
        tuple[Ident, ...], Meta(max_length=32, description="ThinkTools run, in order.")
    ] = ()
    thinktool_count: Annotated[SmallCount, Meta(description="Number of ThinkTools run.")] = 0
    execution: Annotated[Execution, Meta(description="Timings and outcome.")] = Execution()
    tokens: Annotated[Tokens, Meta(description="Token usage.")] = Tokens()
    quality: Annotated[Quality | None, Meta(description="Computed quality scores.")] = None
    cache_hit: Annotated[bool, Meta(description="Whether the result came from cache.")] = False
    error_category: Annotated[
        ErrorCategory | None, Meta(description="Error category when it failed (no message).")
    ] = None
    query_hash: Annotated[
        Sha256Hex | None,
        Meta(
            description=(
                "For de-duplication only: the SHA-256 of the query, computed inside the "
                "application (the text never leaves it) and re-hashed by the daemon with a "
                "per-install salt, so it cannot be looked up in a dictionary of prompts."
            )
        ),
    ] = None


class CommandExecuted(CommandFamily, frozen=True, kw_only=True):
    """A command ran to completion (successfully or not)."""

    event_type = "command_executed"


class CommandFailed(CommandFamily, frozen=True, kw_only=True):
    """A command failed with an error."""

    event_type = "command_failed"


class CommandCancelled(CommandFamily, frozen=True, kw_only=True):
    """A command was cancelled (Ctrl-C or a deadline)."""

    event_type = "command_cancelled"


class ThinkToolFamily(Payload, frozen=True, kw_only=True):
    family = "thinktool"
    category = "thinktool_usage"


class ThinkToolStarted(ThinkToolFamily, frozen=True, kw_only=True):
    """A ThinkTool started."""

    event_type = "thinktool_started"
    tool_name: Annotated[Ident, Meta(description="ThinkTool name, e.g. gigathink.")]
    profile: Annotated[Profile | None, Meta(description="Profile it runs under.")] = None


class ThinkToolCompleted(ThinkToolFamily, frozen=True, kw_only=True):
    """A ThinkTool finished, with its step count, time, scores and tokens."""

    event_type = "thinktool_completed"
    tool_name: Annotated[Ident, Meta(description="ThinkTool name, e.g. gigathink.")]
    step_count: Annotated[SmallCount, Meta(description="Steps executed.")] = 0
    duration_ms: Annotated[Millis, Meta(description="Execution time.")] = 0
    coherence_score: Score | None = None
    depth_score: Score | None = None
    confidence_score: Score | None = None
    tokens_used: Annotated[Count, Meta(description="Tokens consumed.")] = 0
    completed: Annotated[bool, Meta(description="False when cancelled part-way.")] = True


class ThinkToolStepExecuted(ThinkToolFamily, frozen=True, kw_only=True):
    """One step of a ThinkTool ran: timing per step, to find slow steps."""

    event_type = "thinktool_step_executed"
    category = "performance"
    tool_name: Annotated[Ident, Meta(description="ThinkTool name.")]
    step: Annotated[SmallCount, Meta(description="Step number, from 1.")] = 1
    duration_ms: Annotated[Millis, Meta(description="Step time.")] = 0
    tokens_used: Annotated[Count, Meta(description="Tokens consumed by the step.")] = 0


class ProfileUsed(ThinkToolFamily, frozen=True, kw_only=True):
    """A reasoning profile was selected."""

    event_type = "profile_used"
    profile: Annotated[Profile, Meta(description="The profile.")]


class ErrorContext(Struct, frozen=True, kw_only=True, gc=False):
    """Where an error happened: command, profile and step (never a message)."""

    command: Annotated[Ident | None, Meta(description="Command that failed.")] = None
    profile: Annotated[Profile | None, Meta(description="Profile it ran under.")] = None
    step: Annotated[SmallCount | None, Meta(description="Step number that failed.")] = None


class ErrorFamily(Payload, frozen=True, kw_only=True):
    family = "error"
    category = "error_types"


class ErrorOccurred(ErrorFamily, frozen=True, kw_only=True):
    """An error happened. Error messages are never included: they may hold private data."""

    event_type = "error_occurred"
    error_category: Annotated[ErrorCategory, Meta(description="Error category.")]
    error_code: Annotated[
        Ident | None, Meta(description="Error code, e.g. rate_limit_exceeded.")
    ] = None
    recoverable: Annotated[bool, Meta(description="Whether it can be retried.")] = False
    retry_count: Annotated[SmallCount, Meta(description="Retries so far.")] = 0
    context: Annotated[ErrorContext | None, Meta(description="Where it happened.")] = None


class ErrorRecovered(ErrorFamily, frozen=True, kw_only=True):
    """An earlier error was recovered from (a retry succeeded)."""

    event_type = "error_recovered"
    error_category: Annotated[ErrorCategory, Meta(description="Error category recovered from.")]
    error_code: Annotated[Ident | None, Meta(description="Error code.")] = None
    retry_count: Annotated[SmallCount, Meta(description="Retries it took.")] = 0
    context: Annotated[ErrorContext | None, Meta(description="Where it happened.")] = None


class CrashDetected(ErrorFamily, frozen=True, kw_only=True):
    """A previous run ended uncleanly."""

    event_type = "crash_detected"
    component: Annotated[Literal["daemon", "application"], Meta(description="What crashed.")] = (
        "application"
    )
    signal: Annotated[Ident | None, Meta(description="Signal name, e.g. SIGKILL.")] = None
    uptime_secs: Annotated[Count | None, Meta(description="How long it had run.")] = None


class FeatureFamily(Payload, frozen=True, kw_only=True):
    family = "feature"
    category = "command_usage"
    feature_id: Annotated[Ident, Meta(description="Feature identifier.")]


class FeatureDiscovered(FeatureFamily, frozen=True, kw_only=True):
    """A feature's help or documentation was seen."""

    event_type = "feature_discovered"
    discovery_source: Annotated[DiscoverySource | None, Meta(description="How.")] = None


class FeatureFirstUse(FeatureFamily, frozen=True, kw_only=True):
    """A feature was used for the first time. The daemon writes it for commands, profiles
    and ThinkTools (command.think, profile.deep, thinktool.gigathink);
    applications may send it for features the daemon cannot see."""

    event_type = "feature_first_use"
    discovery_source: Annotated[DiscoverySource | None, Meta(description="How.")] = None


class FeatureAdoption(FeatureFamily, frozen=True, kw_only=True):
    """A feature reached an adoption stage. The daemon writes the milestones at 5, 10, 25,
    50 and 100 uses of commands, profiles and ThinkTools; applications may send others."""

    event_type = "feature_adoption"
    feature_event: Annotated[FeatureEventType, Meta(description="Adoption stage.")]
    milestone_count: Annotated[Count | None, Meta(description="Uses at a milestone.")] = None
    discovery_source: Annotated[DiscoverySource | None, Meta(description="How.")] = None


class HelpViewed(Payload, frozen=True, kw_only=True):
    """`--help` or a help topic was shown."""

    event_type = "help_viewed"
    family = "feature"
    category = "command_usage"
    topic: Annotated[Ident, Meta(description="Command or topic whose help was shown.")]


class UpgradeFamily(Payload, frozen=True, kw_only=True):
    family = "upgrade"
    category = "command_usage"


class UpgradePromptShown(UpgradeFamily, frozen=True, kw_only=True):
    """An upgrade prompt was shown."""

    event_type = "upgrade_prompt_shown"
    prompt_id: Annotated[Ident, Meta(description="Which prompt.")]
    trigger: Annotated[Ident | None, Meta(description="What triggered it.")] = None


class UpgradeLinkClicked(UpgradeFamily, frozen=True, kw_only=True):
    """An upgrade link was followed."""

    event_type = "upgrade_link_clicked"
    prompt_id: Annotated[Ident, Meta(description="Which prompt.")]


class UpgradeCompleted(UpgradeFamily, frozen=True, kw_only=True):
    """The user upgraded to another tier."""

    event_type = "upgrade_completed"
    from_tier: Annotated[Tier, Meta(description="Tier before.")]
    to_tier: Annotated[Tier, Meta(description="Tier after.")]


class TrialStarted(UpgradeFamily, frozen=True, kw_only=True):
    """A trial began."""

    event_type = "trial_started"
    tier: Annotated[Tier, Meta(description="Tier on trial.")] = "pro"
    trial_days: Annotated[Count, Meta(description="Trial length.")] = 0


class TrialEnded(UpgradeFamily, frozen=True, kw_only=True):
    """A trial ended."""

    event_type = "trial_ended"
    tier: Annotated[Tier, Meta(description="Tier on trial.")] = "pro"
    converted: Annotated[bool, Meta(description="Whether the user upgraded.")] = False
    trial_days: Annotated[Count, Meta(description="Trial length.")] = 0


PAYLOAD_TYPES: Final[tuple[type[Payload], ...]] = (
    InstallStarted, InstallCompleted, InstallFailed, UpdateAvailable, UpdateCompleted,
    Uninstall,
    SessionStarted, SessionEnded, SessionResumed,
    CommandExecuted, CommandFailed, CommandCancelled,
    ThinkToolStarted, ThinkToolCompleted, ThinkToolStepExecuted, ProfileUsed,
    ErrorOccurred, ErrorRecovered, CrashDetected,
    FeatureDiscovered, FeatureFirstUse, FeatureAdoption, HelpViewed,
    UpgradePromptShown, UpgradeLinkClicked, UpgradeCompleted, TrialStarted, TrialEnded,
)  # fmt: skip

# -- the envelope: one tagged union, generated from the payloads ---------------------------


class Envelope(Struct, frozen=True, kw_only=True, gc=False, tag_field="event_type"):
    """The spec's envelope (§3.1). Subclasses add ``payload`` and the ``event_type`` tag."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    event_id: Annotated[uuid.UUID, Meta(description="Random id of this event (uuid4).")]
    timestamp: Annotated[Timestamp, Meta(description="When the event happened.")]
    source: Source
    session: Session | None = None


def _envelope_for(payload_type: type[Payload]) -> type[Envelope]:
    cls = msgspec.defstruct(
        f"{payload_type.__name__}Envelope",
        [("payload", payload_type)],
        bases=(Envelope,),
        tag=payload_type.event_type,
        module=__name__,
        frozen=True,
        kw_only=True,
    )
    assert issubclass(cls, Envelope)
    return cls


ENVELOPES: Final[dict[type[Payload], type[Envelope]]] = {p: _envelope_for(p) for p in PAYLOAD_TYPES}
BY_EVENT_TYPE: Final[dict[str, type[Payload]]] = {p.event_type: p for p in PAYLOAD_TYPES}

Event = Union[tuple(ENVELOPES.values())]  # type: ignore[valid-type]  # noqa: UP007
"""The tagged union of every envelope type; decode with ``msgspec.msgpack.Decoder(Event)``."""
