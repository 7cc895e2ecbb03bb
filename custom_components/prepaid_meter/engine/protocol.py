"""The `prepaid/v1` meter protocol: topics, payload parsing and validation, commands, the gate.

Everything here follows /work/shared/PROTOCOL.md. Nothing in this module raises into its
caller's loop: every parser returns either a result object or a `Rejected`, and `MeterGate`
returns `Accepted` or `Rejected`.

Public names:

- Results of parsing: `Reading`, `Announce`, `Availability`, `Ack`, `RelayReport`, `Rejected`.
- `parse_topic(topic, prefix, community)`, `topic_for(prefix, community, meter_id, channel)`.
- `parse_telemetry`, `parse_announce`, `parse_availability`, `parse_ack`, `parse_command`,
  each `(meter_id, payload) -> result | Rejected` (payload as bytes).
- Commands: `RelayCommand`, `DisplayCommand` (`to_payload() -> bytes`), `account_payload(...)`.
- `Issues`: counts problems per `(meter_id, kind)` and logs each pair once.
- `MeterGate`: per-meter duplicate / time / register-reset checks after parsing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
import json
import logging
import math
import re
import time
from typing import Any, Final, Literal, Protocol, cast

_LOGGER = logging.getLogger(__name__)

PROTOCOL_VERSION: Final = 1
DEFAULT_PREFIX: Final = "prepaid"
MAX_PAYLOAD_BYTES: Final = 4096
MAX_FUTURE_S: Final = 600
CHANNELS: Final = frozenset(
    {"announce", "availability", "telemetry", "cmd", "ack", "account", "request"}
)
KNOWN_EVENTS: Final = frozenset(
    {"cover_open", "magnetic_tamper", "reverse_energy", "overcurrent", "arc_fault", "relay_fault"}
)

COMMUNITY_RE: Final = re.compile(r"[a-z0-9_-]{1,32}")
METER_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# An energy register as text: digits, an optional fraction, an optional exponent.
_DECIMAL_TEXT_RE: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]{1,3})?")
# The largest register value accepted (kWh); anything above is garbage, not a meter.
MAX_ENERGY_KWH: Final = Decimal("1e12")
# UNIX seconds after 2286-11-20 are taken for milliseconds or garbage.
MAX_TS: Final = 9_999_999_999
MAX_SEQ: Final = 2**63 - 1
# Command ids: a uuid is 36 characters; room for ids that embed a meter id.
MAX_ID_LEN: Final = 128

type RelayState = Literal["on", "off"]


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """One telemetry reading, the same whichever device profile it came from.

    `energy_kwh` is the cumulative import register (Decimal, exact); the instantaneous values
    are floats and optional; `seq` is the meter's sequence number (or one the profile made up
    from the device's own clock for devices that have none).
    """

    meter_id: str
    seq: int | None
    ts: int
    energy_kwh: Decimal
    power_w: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    neutral_current_a: float | None = None
    pf: float | None = None
    relay: RelayState | None = None
    events: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Announce:
    """Who a meter is (retained on `announce`)."""

    meter_id: str
    model: str | None
    fw: str | None
    phases: int | None
    rated_current_a: float | None
    relay: bool
    caps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Availability:
    """A meter came online or went offline (its last will)."""

    meter_id: str
    online: bool


@dataclass(frozen=True, slots=True)
class Ack:
    """A meter's answer to one command: `ok` with the relay state, or an `error`."""

    meter_id: str
    id: str
    ok: bool
    relay: RelayState | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RelayReport:
    """A relay state reported outside a reading (Tasmota `stat/<topic>/POWER`, `STATE`)."""

    meter_id: str
    relay: RelayState


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that was not accepted: `kind` is a short machine word, `detail` is for logs.

    kinds: oversized, not_utf8, malformed_json, not_object, bad_topic, bad_meter_id,
    meter_id_mismatch, unsupported_version, invalid, non_finite, negative_energy,
    duplicate, old, future, internal.
    """

    kind: str
    detail: str
    meter_id: str | None = None


type Parsed = Reading | Announce | Availability | Ack | RelayReport


# -- counting and logging once ----------------------------------------------------------


class Issues:
    """Counts problems per `(meter_id, kind)` and logs each pair once, at the first time seen.

    `counts` is a `Counter[(meter_id, kind)]` (meter id `"?"` when none is known), meant for
    diagnostics. Besides the `Rejected` kinds it counts three things that were accepted:
    `reset` (a register went down), `seq_restart` and `unknown_event` (dropped event names).
    Duplicates are counted but logged at debug level only (QoS 1 redelivers by design).
    One `Issues` may be shared by a profile and a gate.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        """Start with nothing counted."""
        self.counts: Counter[tuple[str, str]] = Counter()
        self._logged: set[tuple[str, str]] = set()
        self._logger = logger or _LOGGER

    def note(
        self, meter_id: str | None, kind: str, detail: str, level: int = logging.WARNING
    ) -> None:
        """Count one occurrence; log it if this `(meter, kind)` was never logged before."""
        key = (meter_id or "?", kind)
        self.counts[key] += 1
        if key in self._logged:
            return
        if len(self._logged) >= 10_000:  # a flood of distinct bad ids: stop remembering them
            return
        self._logged.add(key)
        self._logger.log(
            level,
            "Meter %s: %s (%s); further messages of this kind from this meter are counted, "
            "not logged",
            key[0],
            kind,
            detail[:200],
        )

    def reject(self, rejected: Rejected, level: int = logging.WARNING) -> Rejected:
        """Count and log a rejection once; return it unchanged."""
        self.note(rejected.meter_id, rejected.kind, rejected.detail, level)
        return rejected

    def total(self, kind: str | None = None) -> int:
        """Return the number of occurrences of `kind` (all kinds when None)."""
        return sum(n for (_, k), n in self.counts.items() if kind is None or k == kind)


# -- topics -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicParts:
    """A `<prefix>/<community>/<meter_id>/<channel>` topic, split and checked."""

    prefix: str
    community: str
    meter_id: str
    channel: str


def topic_for(prefix: str, community: str, meter_id: str, channel: str) -> str:
    """Return `<prefix>/<community>/<meter_id>/<channel>`."""
    return f"{prefix}/{community}/{meter_id}/{channel}"


def parse_topic(
    topic: str, prefix: str | None = None, community: str | None = None
) -> TopicParts | Rejected:
    """Split a `prepaid/v1` topic; `prefix` may itself contain `/`.

    When `prefix` or `community` is given the topic must match it. The community must match
    `[a-z0-9_-]{1,32}`, the meter id `[A-Za-z0-9_-]{1,64}`, the channel one of `CHANNELS`.
    """
    parts = topic.rsplit("/", 3)
    if len(parts) != 4 or not parts[0]:
        return Rejected("bad_topic", f"not <prefix>/<community>/<meter_id>/<channel>: {topic!r}")
    pfx, comm, meter_id, channel = parts
    if prefix is not None and pfx != prefix:
        return Rejected("bad_topic", f"prefix {pfx!r} is not {prefix!r}")
    if community is not None and comm != community:
        return Rejected("bad_topic", f"community {comm!r} is not {community!r}")
    if not COMMUNITY_RE.fullmatch(comm):
        return Rejected("bad_topic", f"bad community id {comm!r}")
    if not METER_ID_RE.fullmatch(meter_id):
        return Rejected("bad_meter_id", f"bad meter id {meter_id[:80]!r}")
    if channel not in CHANNELS:
        return Rejected("bad_topic", f"unknown channel {channel!r}", meter_id)
    return TopicParts(pfx, comm, meter_id, channel)


# -- JSON and field helpers -------------------------------------------------------------


class _Invalid(Exception):
    """Raised inside this module only; turned into `Rejected` before returning."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _no_constants(name: str) -> Any:
    raise _Invalid("non_finite", f"{name} is not a number")


_DECODER: Final = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constants)


def load_json(payload: bytes | bytearray | str, limit: int = MAX_PAYLOAD_BYTES) -> Any:
    """Decode a JSON payload with exact decimals; raise `_Invalid` (internal) on any problem.

    Floats are parsed as `Decimal` from their text; NaN and Infinity are refused; payloads
    larger than `limit` bytes are refused before parsing.
    """
    if len(payload) > limit:
        raise _Invalid("oversized", f"{len(payload)} bytes, more than {limit}")
    if isinstance(payload, str):
        text = payload
    else:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _Invalid("not_utf8", str(err)) from None
    try:
        return _DECODER.decode(text)
    except _Invalid:
        raise
    except (ValueError, RecursionError) as err:
        raise _Invalid("malformed_json", str(err)) from None


def _object(payload: bytes | bytearray | str) -> dict[str, Any]:
    value = load_json(payload)
    if not isinstance(value, dict):
        raise _Invalid("not_object", f"a JSON {type(value).__name__}, not an object")
    return value


def _check_version(body: dict[str, Any]) -> None:
    version = body.get("v", PROTOCOL_VERSION)
    if type(version) is not int:
        raise _Invalid("invalid", f"v is {version!r}, not an integer")
    if version != PROTOCOL_VERSION:
        raise _Invalid("unsupported_version", f"v={version}")


def _number(value: Any, name: str) -> Decimal | int:
    """Return a JSON number (never a bool); refuse anything else."""
    kind = type(value)
    if kind is Decimal:
        if not value.is_finite():
            raise _Invalid("non_finite", f"{name} is not finite")
        return cast("Decimal", value)
    if kind is int:
        return cast("int", value)
    raise _Invalid("invalid", f"{name} is {kind.__name__}, not a number")


def _opt_float(
    body: dict[str, Any], name: str, lo: float | None = None, hi: float | None = None
) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    kind = type(value)
    if kind is not Decimal and kind is not int:
        raise _Invalid("invalid", f"{name} is {kind.__name__}, not a number")
    result = float(value)
    if not math.isfinite(result):
        raise _Invalid("non_finite", f"{name} is out of range")
    if (lo is not None and result < lo) or (hi is not None and result > hi):
        raise _Invalid("invalid", f"{name}={result} is outside [{lo}, {hi}]")
    return result


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    number = _number(value, name)
    if isinstance(number, Decimal):
        if number != number.to_integral_value():
            raise _Invalid("invalid", f"{name}={number} is not a whole number")
        number = int(number)
    if not lo <= number <= hi:
        raise _Invalid("invalid", f"{name}={number} is outside [{lo}, {hi}]")
    return number


def parse_energy(value: Any, name: str = "energy_kwh") -> Decimal:
    """Return a cumulative register as an exact `Decimal` from a decimal string or a JSON number.

    Refuses NaN/Infinity, negative values, exponents beyond 3 digits and absurd magnitudes.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.lower().lstrip("+-") in ("nan", "snan", "inf", "infinity"):
            raise _Invalid("non_finite", f"{name} is {value!r}")
        if not _DECIMAL_TEXT_RE.fullmatch(text):
            raise _Invalid("invalid", f"{name} {value[:40]!r} is not a decimal number")
        try:
            energy = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid text
            raise _Invalid("invalid", f"{name} {value[:40]!r} is not a decimal number") from None
    else:
        number = _number(value, name)
        energy = number if isinstance(number, Decimal) else Decimal(number)
    if energy < 0:
        raise _Invalid("negative_energy", f"{name}={energy}")
    if energy > MAX_ENERGY_KWH:
        raise _Invalid("invalid", f"{name}={energy} is not a plausible register")
    return energy + 0  # normalises -0 to 0


def _ts(value: Any) -> int:
    if value is None:
        raise _Invalid("invalid", "ts is missing")
    number = _number(value, "ts")
    if number > MAX_TS:
        raise _Invalid("invalid", f"ts={number} is not UNIX seconds (milliseconds?)")
    ts = math.floor(number)
    if ts <= 0:
        raise _Invalid("invalid", f"ts={number} is not a time")
    return ts


def _relay_word(value: Any, name: str = "relay") -> RelayState | None:
    if value is None:
        return None
    if value == "on":
        return "on"
    if value == "off":
        return "off"
    raise _Invalid("invalid", f"{name} is {str(value)[:20]!r}, not 'on' or 'off'")


def _opt_str(body: dict[str, Any], name: str, max_len: int = 64) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise _Invalid("invalid", f"{name} is not a string of at most {max_len} characters")
    return value


type UnknownEvent = Callable[[str, str], None]


def _events(value: Any, meter_id: str, on_unknown: UnknownEvent | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Invalid("invalid", "events is not a list")
    known: list[str] = []
    for name in value:
        if not isinstance(name, str):
            raise _Invalid("invalid", "events holds a non-string")
        if name in KNOWN_EVENTS:
            if name not in known:
                known.append(name)
        elif on_unknown is not None:
            on_unknown(meter_id, name)
    return tuple(known)


def _guard[T](meter_id: str | None, parse: Callable[[], T]) -> T | Rejected:
    """Run `parse`; turn any failure into a `Rejected` (never raise)."""
    try:
        return parse()
    except _Invalid as err:
        return Rejected(err.kind, err.detail, meter_id)
    except Exception as err:  # a parser must never raise into the loop
        return Rejected("internal", f"{type(err).__name__}: {err}", meter_id)


# -- prepaid/v1 payloads ----------------------------------------------------------------


def reading_from_fields(
    meter_id: str,
    body: dict[str, Any],
    on_unknown_event: UnknownEvent | None = None,
) -> Reading:
    """Build a `Reading` from an already-decoded telemetry object (raises `_Invalid`)."""
    _check_version(body)
    seq_value = body.get("seq")
    seq = None if seq_value is None else _int(seq_value, "seq", 0, MAX_SEQ)
    if "energy_kwh" not in body:
        raise _Invalid("invalid", "energy_kwh is missing")
    return Reading(
        meter_id=meter_id,
        seq=seq,
        ts=_ts(body.get("ts")),
        energy_kwh=parse_energy(body["energy_kwh"]),
        power_w=_opt_float(body, "power_w"),
        voltage_v=_opt_float(body, "voltage_v", 0.0, 100_000.0),
        current_a=_opt_float(body, "current_a", -100_000.0, 100_000.0),
        neutral_current_a=_opt_float(body, "neutral_current_a", -100_000.0, 100_000.0),
        pf=_opt_float(body, "pf", -1.0, 1.0),
        relay=_relay_word(body.get("relay")),
        events=_events(body.get("events"), meter_id, on_unknown_event),
    )


def parse_telemetry(
    meter_id: str,
    payload: bytes | bytearray | str,
    on_unknown_event: UnknownEvent | None = None,
) -> Reading | Rejected:
    """Parse a `telemetry` payload. Unknown event names are dropped and passed to the callback."""
    return _guard(
        meter_id, lambda: reading_from_fields(meter_id, _object(payload), on_unknown_event)
    )


def _announce(meter_id: str, payload: bytes | bytearray | str) -> Announce:
    body = _object(payload)
    _check_version(body)
    claimed = body.get("meter_id", meter_id)
    if claimed != meter_id:
        raise _Invalid("meter_id_mismatch", f"payload says {str(claimed)[:70]!r}")
    phases = body.get("phases")
    rated = _opt_float(body, "rated_current_a", 0.0, 100_000.0)
    relay = body.get("relay", True)
    if not isinstance(relay, bool):
        raise _Invalid("invalid", "relay is not true or false")
    caps_value = body.get("caps", [])
    if not isinstance(caps_value, list) or not all(isinstance(c, str) for c in caps_value):
        raise _Invalid("invalid", "caps is not a list of strings")
    return Announce(
        meter_id=meter_id,
        model=_opt_str(body, "model"),
        fw=_opt_str(body, "fw"),
        phases=None if phases is None else _int(phases, "phases", 1, 3),
        rated_current_a=rated,
        relay=relay,
        caps=tuple(caps_value),
    )


def parse_announce(meter_id: str, payload: bytes | bytearray | str) -> Announce | Rejected:
    """Parse an `announce` payload; the `meter_id` inside, when present, must match the topic."""
    return _guard(meter_id, lambda: _announce(meter_id, payload))


def parse_availability(meter_id: str, payload: bytes | bytearray | str) -> Availability | Rejected:
    """Parse `online` / `offline` (surrounding whitespace is ignored)."""

    def parse() -> Availability:
        if len(payload) > 64:
            raise _Invalid("invalid", "availability payload too long")
        raw = payload if isinstance(payload, str) else bytes(payload).decode("utf-8", "replace")
        word = raw.strip()
        if word == "online":
            return Availability(meter_id, True)
        if word == "offline":
            return Availability(meter_id, False)
        raise _Invalid("invalid", f"availability {word[:20]!r} is not online or offline")

    return _guard(meter_id, parse)


def _ack(meter_id: str, payload: bytes | bytearray | str) -> Ack:
    body = _object(payload)
    _check_version(body)
    command_id = body.get("id")
    if not isinstance(command_id, str) or not 0 < len(command_id) <= MAX_ID_LEN:
        raise _Invalid("invalid", f"ack id is not a string of 1-{MAX_ID_LEN} characters")
    ok = body.get("ok")
    if not isinstance(ok, bool):
        raise _Invalid("invalid", "ack ok is not true or false")
    error = _opt_str(body, "error", 128)
    return Ack(meter_id, command_id, ok, _relay_word(body.get("relay")), error)


def parse_ack(meter_id: str, payload: bytes | bytearray | str) -> Ack | Rejected:
    """Parse an `ack` payload."""
    return _guard(meter_id, lambda: _ack(meter_id, payload))


# -- commands ---------------------------------------------------------------------------


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def decimal_text(value: Decimal) -> str:
    """Return a Decimal as plain text without an exponent (`1E+2` -> `100`)."""
    return format(value, "f")


@dataclass(frozen=True, slots=True)
class RelayCommand:
    """`{"v":1,"id":...,"op":"relay","state":"on"|"off","reason":...}` on the `cmd` channel."""

    id: str
    state: RelayState
    reason: str = ""

    def to_payload(self) -> bytes:
        """Return the JSON payload."""
        return _dumps(
            {
                "v": PROTOCOL_VERSION,
                "id": self.id,
                "op": "relay",
                "state": self.state,
                "reason": self.reason,
            }
        )


@dataclass(frozen=True, slots=True)
class DisplayCommand:
    """`{"v":1,"id":...,"op":"display","balance":"12.34","currency":"CNY","low":true}`."""

    id: str
    balance: Decimal
    currency: str
    low: bool

    def to_payload(self) -> bytes:
        """Return the JSON payload; the balance is a decimal string."""
        return _dumps(
            {
                "v": PROTOCOL_VERSION,
                "id": self.id,
                "op": "display",
                "balance": decimal_text(self.balance),
                "currency": self.currency,
                "low": self.low,
            }
        )


def _command(payload: bytes | bytearray | str) -> RelayCommand | DisplayCommand:
    body = _object(payload)
    _check_version(body)
    command_id = body.get("id")
    if not isinstance(command_id, str) or not 0 < len(command_id) <= MAX_ID_LEN:
        raise _Invalid("invalid", f"command id is not a string of 1-{MAX_ID_LEN} characters")
    op = body.get("op")
    if op == "relay":
        state = _relay_word(body.get("state"), "state")
        if state is None:
            raise _Invalid("invalid", "relay command without state")
        return RelayCommand(command_id, state, _opt_str(body, "reason", 128) or "")
    if op == "display":
        currency = _opt_str(body, "currency", 8) or ""
        low = body.get("low", False)
        if not isinstance(low, bool):
            raise _Invalid("invalid", "low is not true or false")
        balance_value = body.get("balance")
        if isinstance(balance_value, str) and balance_value.strip().startswith("-"):
            balance = -parse_energy(balance_value.strip()[1:], "balance")
        else:
            balance = parse_energy(balance_value, "balance")
        return DisplayCommand(command_id, balance, currency, low)
    raise _Invalid("invalid", f"unknown op {str(op)[:20]!r}")


def parse_command(payload: bytes | bytearray | str) -> RelayCommand | DisplayCommand | Rejected:
    """Parse a `cmd` payload (what a meter or the simulator receives)."""
    return _guard(None, lambda: _command(payload))


def account_payload(
    *,
    balance: Decimal,
    currency: str,
    low: bool,
    relay: RelayState | None,
    cycle: str | None,
    cycle_kwh: Decimal,
    tier: int | None,
    price: Decimal | None,
    updated: int,
    reason: str | None = None,
    days_left: Decimal | None = None,
    today: tuple[Decimal, Decimal] | None = None,
    month: tuple[Decimal, Decimal] | None = None,
    request: Mapping[str, Any] | None = None,
) -> bytes:
    """Return the retained `account` payload for a household (PROTOCOL.md, `account`).

    The optional members (docs/HOUSEHOLD.md) are left out when unknown: `reason` of the
    supply state, `days_left`, today's and this month's kWh and cost, and `request`, the
    answer to the household's last request.
    """
    body: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "balance": decimal_text(balance),
        "currency": currency,
        "low": low,
        "relay": relay,
        "cycle": cycle,
        "cycle_kwh": decimal_text(cycle_kwh),
        "tier": tier,
        "price": None if price is None else decimal_text(price),
        "updated": updated,
    }
    if reason is not None:
        body["reason"] = reason
    if days_left is not None:
        body["days_left"] = decimal_text(days_left)
    for name, use in (("today", today), ("month", month)):
        if use is not None:
            body[f"{name}_kwh"] = decimal_text(use[0].quantize(Decimal("0.001")))
            body[f"{name}_cost"] = decimal_text(use[1].quantize(Decimal("0.01")))
    if request is not None:
        body["request"] = dict(request)
    return _dumps(body)


# -- the gate ---------------------------------------------------------------------------


class CursorLike(Protocol):
    """A persisted cursor (engine.ledger.Cursor has these attributes)."""

    @property
    def meter_id(self) -> str: ...
    @property
    def seq(self) -> int | None: ...
    @property
    def ts(self) -> int: ...
    @property
    def energy_kwh(self) -> Decimal: ...


@dataclass(frozen=True, slots=True)
class GateCursor:
    """The last reading the gate accepted for a meter."""

    seq: int | None
    ts: int
    energy_kwh: Decimal


@dataclass(frozen=True, slots=True)
class Accepted:
    """A reading that passed the gate.

    `reset` is True when the register went down (a reset or a replaced meter): the reading is
    a new baseline and must not be billed. `previous` is the cursor before this reading (None
    for the first reading of a meter). `seq_restart` is True when the meter's sequence went
    back while its clock went forward (a meter that lost its counter): accepted, logged once.
    """

    reading: CursorLike
    reset: bool = False
    previous: GateCursor | None = None
    seq_restart: bool = False


@dataclass(slots=True)
class MeterGate:
    """Per-meter checks after parsing; never raises.

    - a `seq` that repeats or goes back is a `duplicate` (ignored, counted, logged at debug);
      the one exception is a `seq` that goes back while `ts` goes forward, which can only be a
      meter that restarted its counter: accepted with `seq_restart=True`;
    - without `seq`, the same `ts` and `energy_kwh` again is a `duplicate`;
    - an energy register that is not a finite, non-negative number is `bad_energy`;
    - `ts` more than `max_future_s` ahead of `clock()` is rejected as `future_ts`;
    - `ts` older than the last accepted reading is rejected as `old_ts`;
    - a register lower than the last one is accepted with `reset=True` (a new baseline).

    This is the one gate: the community passes every reading through it (its kinds are the
    ones diagnostics count per meter). Seed it at start-up from persisted cursors with
    `seed` / `seed_cursors`.
    """

    clock: Callable[[], float] = time.time
    max_future_s: int = MAX_FUTURE_S
    issues: Issues = field(default_factory=Issues)
    _cursors: dict[str, GateCursor] = field(default_factory=dict, init=False, repr=False)

    @property
    def rejections(self) -> Counter[tuple[str, str]]:
        """Return the `Counter[(meter_id, kind)]` of everything counted (shared `issues`)."""
        return self.issues.counts

    def seed(self, meter_id: str, seq: int | None, ts: int, energy_kwh: Decimal) -> None:
        """Set a meter's last accepted reading (from the ledger's cursor)."""
        self._cursors[meter_id] = GateCursor(seq, ts, energy_kwh)

    def seed_cursors(self, cursors: Iterable[CursorLike]) -> None:
        """Seed many meters at once."""
        for cursor in cursors:
            self.seed(cursor.meter_id, cursor.seq, cursor.ts, cursor.energy_kwh)

    def cursor(self, meter_id: str) -> GateCursor | None:
        """Return the last accepted reading of a meter, or None."""
        return self._cursors.get(meter_id)

    def forget(self, meter_id: str) -> None:
        """Drop a meter's cursor (a removed meter)."""
        self._cursors.pop(meter_id, None)

    def check(self, reading: CursorLike) -> Accepted | Rejected:
        """Accept (and remember) or reject one reading."""
        try:
            return self._check(reading)
        except Exception as err:  # never raise into the loop
            return self.issues.reject(
                Rejected("internal", f"{type(err).__name__}: {err}", reading.meter_id)
            )

    def _check(self, reading: CursorLike) -> Accepted | Rejected:
        meter_id = reading.meter_id
        now = self.clock()
        energy = reading.energy_kwh
        if not isinstance(energy, Decimal) or not energy.is_finite() or energy < 0:
            return self.issues.reject(Rejected("bad_energy", str(energy), meter_id))
        if reading.ts > now + self.max_future_s:
            return self.issues.reject(
                Rejected(
                    "future_ts",
                    f"ts {reading.ts} is {reading.ts - now:.0f} s ahead of the clock",
                    meter_id,
                )
            )
        last = self._cursors.get(meter_id)
        seq_restart = False
        if last is not None:
            if reading.seq is not None and last.seq is not None and reading.seq <= last.seq:
                if reading.ts <= last.ts:
                    return self.issues.reject(
                        Rejected("duplicate", f"seq {reading.seq} <= {last.seq}", meter_id),
                        logging.DEBUG,
                    )
                seq_restart = True
            elif (
                reading.seq is None
                and reading.ts == last.ts
                and reading.energy_kwh == last.energy_kwh
            ):
                return self.issues.reject(
                    Rejected("duplicate", f"same ts {reading.ts} and register", meter_id),
                    logging.DEBUG,
                )
            if reading.ts < last.ts:
                return self.issues.reject(
                    Rejected(
                        "old_ts",
                        f"ts {reading.ts} is older than the last reading {last.ts}",
                        meter_id,
                    )
                )
        reset = last is not None and reading.energy_kwh < last.energy_kwh
        if reset:
            assert last is not None
            self.issues.note(
                meter_id,
                "reset",
                f"register went down from {last.energy_kwh} to {reading.energy_kwh}",
            )
        if seq_restart:
            assert last is not None
            self.issues.note(
                meter_id, "seq_restart", f"seq went back from {last.seq} to {reading.seq}"
            )
        self._cursors[meter_id] = GateCursor(reading.seq, reading.ts, reading.energy_kwh)
        return Accepted(reading, reset, last, seq_restart)
