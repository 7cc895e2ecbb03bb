"""Device profiles: each turns one kind of device's MQTT messages into the same model.

Every profile offers the `Profile` interface:

- `subscriptions() -> list[str]`: the topic filters to subscribe to (QoS 1);
- `parse(topic, payload, now) -> Reading | Announce | Availability | Ack | RelayReport |
  Rejected | None`: None means "not a message this profile handles"; never raises; rejections
  and unknown event names are counted in `profile.issues` (logged once per meter and kind);
- `relay_command(meter_id, state, command_id, reason) -> list[(topic, payload)]`;
- `display_command(...)`: the same for the balance display (only `prepaid/v1` has one);
- `acks`: whether the device answers a command with its id (else a report of the new relay
  state confirms it).

Devices without a sequence number get one made up from their own clock, `ts * 1000 + n`, where
`n` counts the distinct messages seen within the same second, so the gate still drops
repeated and older messages and orders the rest by the device's time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
import json
import logging
import math
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo

from .protocol import (
    DEFAULT_PREFIX,
    METER_ID_RE,
    Ack,
    Announce,
    Availability,
    DisplayCommand,
    Issues,
    Parsed,
    Reading,
    Rejected,
    RelayCommand,
    RelayReport,
    RelayState,
    _guard,
    _Invalid,
    _object,
    parse_ack,
    parse_announce,
    parse_availability,
    parse_energy,
    parse_telemetry,
    parse_topic,
    topic_for,
)

_LOGGER = logging.getLogger(__name__)
_UTC: Final = ZoneInfo("UTC")
_WH_PER_KWH: Final = Decimal(1000)

type Outgoing = list[tuple[str, bytes]]
type ParseResult = Parsed | Rejected | None


class Profile(Protocol):
    """What the integration needs from a device profile (see the module docstring)."""

    name: str
    acks: bool
    #: Whether the family has an announce message; without one, a device's first "online"
    #: availability message introduces it (Community's `birth_announces`).
    announces: bool
    issues: Issues

    def subscriptions(self) -> list[str]:
        """Return the topic filters to subscribe to."""
        ...

    def parse(self, topic: str, payload: bytes, now: float) -> ParseResult:
        """Turn one message into the common model; None if it is not this profile's."""
        ...

    def relay_command(
        self, meter_id: str, state: RelayState, command_id: str, reason: str = ""
    ) -> Outgoing:
        """Return the messages that set a meter's relay."""
        ...

    def display_command(
        self, meter_id: str, command_id: str, balance: Decimal, currency: str, low: bool
    ) -> Outgoing:
        """Return the messages that update a meter's balance display (may be none)."""
        ...


class _SeqMaker:
    """Makes a monotonically increasing `seq` from a device's timestamp: `ts * 1000 + n`.

    The same payload seen again at the same `ts` gets the same `seq` (a duplicate for the
    gate); a different payload at the same `ts` gets the next `n` (at most 999).
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int, bytes]] = {}

    def seq(self, meter_id: str, ts: int, payload: bytes) -> int:
        last = self._last.get(meter_id)
        n = 0
        if last is not None and last[0] == ts:
            n = last[1] if last[2] == payload else min(last[1] + 1, 999)
        self._last[meter_id] = (ts, n, payload)
        return ts * 1000 + n


def _unknown_event_counter(issues: Issues) -> Any:
    def note(meter_id: str, name: str) -> None:
        issues.note(meter_id, "unknown_event", f"ignored unknown event {name[:40]!r}", logging.INFO)

    return note


def _finish(issues: Issues, result: ParseResult) -> ParseResult:
    if isinstance(result, Rejected):
        issues.reject(result)
    return result


# -- prepaid/v1 -------------------------------------------------------------------------


class NativeProfile:
    """`prepaid/v1` (PROTOCOL.md): `<prefix>/<community>/<meter_id>/<channel>`.

    `NativeProfile(community, prefix="prepaid", issues=None)`; share `issues` with the
    `MeterGate` to have one counter of everything rejected.
    """

    name = "native"
    acks = True
    announces = True

    def __init__(
        self, community: str, prefix: str = DEFAULT_PREFIX, issues: Issues | None = None
    ) -> None:
        """Handle the meters of one community under `prefix`."""
        self.community = community
        self.prefix = prefix
        self.issues = issues if issues is not None else Issues()
        self._on_unknown = _unknown_event_counter(self.issues)

    def subscriptions(self) -> list[str]:
        """Return the four meter -> platform channels of the community."""
        base = f"{self.prefix}/{self.community}/+"
        return [f"{base}/announce", f"{base}/availability", f"{base}/telemetry", f"{base}/ack"]

    def topic(self, meter_id: str, channel: str) -> str:
        """Return a topic of this community."""
        return topic_for(self.prefix, self.community, meter_id, channel)

    def parse(self, topic: str, payload: bytes, now: float) -> ParseResult:
        """Parse any message under `<prefix>/<community>/`; `now` is unused (meters have seq)."""
        return _finish(self.issues, _guard(None, lambda: self._parse(topic, payload)))

    def _parse(self, topic: str, payload: bytes) -> ParseResult:
        parts = parse_topic(topic, self.prefix, self.community)
        if isinstance(parts, Rejected):
            return parts
        meter_id = parts.meter_id
        channel = parts.channel
        if channel == "telemetry":
            return parse_telemetry(meter_id, payload, self._on_unknown)
        if channel == "availability":
            return parse_availability(meter_id, payload)
        if channel == "announce":
            if not payload:  # a cleared retained announce: the meter was removed
                return None
            return parse_announce(meter_id, payload)
        if channel == "ack":
            return parse_ack(meter_id, payload)
        return None  # cmd and account are ours

    def relay_command(
        self, meter_id: str, state: RelayState, command_id: str, reason: str = ""
    ) -> Outgoing:
        """Return the `cmd` message `{"op":"relay",...}`."""
        return [(self.topic(meter_id, "cmd"), RelayCommand(command_id, state, reason).to_payload())]

    def display_command(
        self, meter_id: str, command_id: str, balance: Decimal, currency: str, low: bool
    ) -> Outgoing:
        """Return the `cmd` message `{"op":"display",...}`."""
        payload = DisplayCommand(command_id, balance, currency, low).to_payload()
        return [(self.topic(meter_id, "cmd"), payload)]


# -- Tasmota ----------------------------------------------------------------------------
#
# Formats from Tasmota's own documentation:
# - https://tasmota.github.io/docs/MQTT/ : with the default FullTopic `%prefix%/%topic%/`,
#   commands go to `cmnd/<topic>/<Command>`, answers come on `stat/<topic>/RESULT` and
#   `stat/<topic>/POWER` (`ON`/`OFF`), periodic telemetry on `tele/<topic>/STATE` (with
#   `"POWER":"ON"`) and `tele/<topic>/SENSOR`; the retained last will is `tele/<topic>/LWT`
#   with `Online` / `Offline`.
# - https://tasmota.github.io/docs/Commands/#power : `Power` takes `ON`/`OFF` (`0`/`1`).
# - https://tasmota.github.io/docs/Power-Monitoring/ and
#   https://tasmota.github.io/docs/Commands/#power-monitoring : `SENSOR` carries
#   `{"Time": "2024-02-24T22:20:38", "ENERGY": {"TotalStartTime", "Total" (kWh), "Yesterday",
#   "Today", "Power" (W), "ApparentPower", "ReactivePower", "Factor", "Voltage", "Current"}}`.
#   `Time` is the device's local time without a zone unless `SetOption52 1` adds the offset;
#   the profile reads a zone-less time in the `tz` it is given.


def _first_or_sum(value: Any, name: str, *, add: bool) -> Any:
    """Tasmota sends per-phase arrays on multi-channel devices: sum or take the first."""
    if isinstance(value, list):
        if not value:
            return None
        if not add:
            return value[0]
        total = Decimal(0)
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | Decimal):
                raise _Invalid("invalid", f"{name} holds a non-number")
            total += item
        return total
    return value


def _float_field(
    value: Any, name: str, lo: float | None = None, hi: float | None = None
) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _Invalid("invalid", f"{name} is not a number")
    result = float(value)
    if not math.isfinite(result):
        raise _Invalid("non_finite", f"{name} is out of range")
    if (lo is not None and result < lo) or (hi is not None and result > hi):
        raise _Invalid("invalid", f"{name}={result} is outside [{lo}, {hi}]")
    return result


def _power_word(value: Any) -> RelayState | None:
    if not isinstance(value, str):
        return None
    word = value.strip().upper()
    if word in ("ON", "1"):
        return "on"
    if word in ("OFF", "0"):
        return "off"
    return None


class TasmotaProfile:
    """Tasmota energy monitors and switches (see the format notes above this class).

    `TasmotaProfile(topics=None, tz=UTC, issues=None)`: `topics` limits the profile to those
    device topics (else every `tele/+/...`); `tz` is the zone of the devices' `Time`.
    The meter id is the device topic.
    """

    name = "tasmota"
    acks = False
    announces = False

    def __init__(
        self, topics: Iterable[str] | None = None, tz: tzinfo = _UTC, issues: Issues | None = None
    ) -> None:
        """Handle the given device topics (or all), reading zone-less times in `tz`."""
        self.topics = None if topics is None else sorted(set(topics))
        self.tz = tz
        self.issues = issues if issues is not None else Issues()
        self._seq = _SeqMaker()

    def subscriptions(self) -> list[str]:
        """Return SENSOR, STATE, LWT and stat POWER for the devices (or `+`)."""
        devices = self.topics if self.topics is not None else ["+"]
        subs: list[str] = []
        for device in devices:
            subs += [
                f"tele/{device}/SENSOR",
                f"tele/{device}/STATE",
                f"tele/{device}/LWT",
                f"stat/{device}/POWER",
            ]
        return subs

    def parse(self, topic: str, payload: bytes, now: float) -> ParseResult:
        """Parse SENSOR (a reading), STATE / stat POWER (relay state) and LWT (availability)."""
        return _finish(self.issues, _guard(None, lambda: self._parse(topic, payload)))

    def _parse(self, topic: str, payload: bytes) -> ParseResult:
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] not in ("tele", "stat"):
            return None
        kind, device, leaf = parts
        if (kind, leaf) not in {
            ("tele", "SENSOR"),
            ("tele", "STATE"),
            ("tele", "LWT"),
            ("stat", "POWER"),
        }:
            return None
        if self.topics is not None and device not in self.topics:
            return None
        if not METER_ID_RE.fullmatch(device):
            return Rejected("bad_meter_id", f"bad device topic {device[:80]!r}")
        if leaf == "LWT":
            return self._lwt(device, payload)
        if leaf == "POWER":
            state = _power_word(bytes(payload[:16]).decode("utf-8", "replace"))
            if state is None:
                return Rejected("invalid", "POWER is not ON or OFF", device)
            return RelayReport(device, state)
        return _guard(device, lambda: self._json(device, leaf, payload))

    def _lwt(self, device: str, payload: bytes) -> Availability | Rejected:
        word = bytes(payload[:64]).decode("utf-8", "replace").strip()
        if word == "Online":
            return Availability(device, True)
        if word == "Offline":
            return Availability(device, False)
        return Rejected("invalid", f"LWT {word[:20]!r} is not Online or Offline", device)

    def _time(self, body: dict[str, Any]) -> int:
        value = body.get("Time")
        if not isinstance(value, str):
            raise _Invalid("invalid", "Time is missing")
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _Invalid("invalid", f"Time {value[:30]!r} is not an ISO time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.tz)
        ts = math.floor(moment.timestamp())
        if ts <= 0:
            raise _Invalid("invalid", f"Time {value[:30]!r} is before 1970")
        return ts

    def _json(self, device: str, leaf: str, payload: bytes) -> ParseResult:
        body = _object(payload)
        if leaf == "STATE":
            state = _power_word(body.get("POWER", body.get("POWER1")))
            return None if state is None else RelayReport(device, state)
        energy = body.get("ENERGY")
        if energy is None:
            return None  # a switch without power monitoring
        if not isinstance(energy, dict):
            raise _Invalid("invalid", "ENERGY is not an object")
        total = _first_or_sum(energy.get("Total"), "Total", add=True)
        if total is None:
            raise _Invalid("invalid", "ENERGY.Total is missing")
        ts = self._time(body)
        return Reading(
            meter_id=device,
            seq=self._seq.seq(device, ts, bytes(payload)),
            ts=ts,
            energy_kwh=parse_energy(total, "ENERGY.Total"),
            power_w=_float_field(_first_or_sum(energy.get("Power"), "Power", add=True), "Power"),
            voltage_v=_float_field(
                _first_or_sum(energy.get("Voltage"), "Voltage", add=False), "Voltage", 0, 100_000
            ),
            current_a=_float_field(
                _first_or_sum(energy.get("Current"), "Current", add=False), "Current"
            ),
            pf=_float_field(
                _first_or_sum(energy.get("Factor"), "Factor", add=False), "Factor", -1, 1
            ),
        )

    def relay_command(
        self, meter_id: str, state: RelayState, command_id: str, reason: str = ""
    ) -> Outgoing:
        """Return `cmnd/<topic>/POWER` `ON` / `OFF` (Tasmota has no command ids)."""
        return [(f"cmnd/{meter_id}/POWER", b"ON" if state == "on" else b"OFF")]

    def display_command(
        self, meter_id: str, command_id: str, balance: Decimal, currency: str, low: bool
    ) -> Outgoing:
        """Tasmota has no balance display: nothing to send."""
        return []


# -- Shelly Gen2+ -----------------------------------------------------------------------
#
# Formats from Shelly's Gen2 API documentation:
# - https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Mqtt : with `status_ntf`
#   on, the whole status of a component is published on `<topic_prefix>/status/<component:id>`
#   (the prefix defaults to the device id); `<topic_prefix>/online` is `true` / `false` (the
#   last will); RPC requests are accepted on `<topic_prefix>/rpc`.
# - https://shelly-api-docs.shelly.cloud/gen2/General/RPCProtocol : a request frame has `id`
#   (number or string), `src`, `method`, `params`; the response frame `{"id", "src": <device>,
#   "dst": <our src>, "result" | "error": {"code", "message"}}` comes on `<src>/rpc`.
# - https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Switch : the status has
#   `id`, `source`, `output` (bool), `apower` (W), `voltage` (V), `current` (A), `pf`,
#   `aenergy: {"total" (Wh), "by_minute" (mWh), "minute_ts" (UNIX s)}`; `Switch.Set` takes
#   `{"id": 0, "on": false}` and answers `{"was_on": true}`.


@dataclass(frozen=True, slots=True)
class _PendingRpc:
    device: str
    state: RelayState


class ShellyProfile:
    """Shelly Gen2+ switches with power metering (`switch:<n>`), over MQTT RPC.

    `ShellyProfile(device_ids=None, src="prepaid_meter", switch_id=0, issues=None)`: the meter
    id is the device's topic prefix (by default its device id); `src` is where responses come.
    """

    name = "shelly"
    acks = True
    announces = False
    _MAX_PENDING: Final = 4096

    def __init__(
        self,
        device_ids: Iterable[str] | None = None,
        src: str = "prepaid_meter",
        switch_id: int = 0,
        issues: Issues | None = None,
    ) -> None:
        """Handle the given devices (or all), answering RPC on `<src>/rpc`."""
        self.device_ids = None if device_ids is None else sorted(set(device_ids))
        self.src = src
        self.switch_id = switch_id
        self.issues = issues if issues is not None else Issues()
        self._component = f"switch:{switch_id}"
        self._seq = _SeqMaker()
        self._pending: OrderedDict[str, _PendingRpc] = OrderedDict()

    def subscriptions(self) -> list[str]:
        """Return the switch status, the online flag and our RPC response topic."""
        devices = self.device_ids if self.device_ids is not None else ["+"]
        subs: list[str] = []
        for device in devices:
            subs += [f"{device}/status/{self._component}", f"{device}/online"]
        return [*subs, f"{self.src}/rpc"]

    def parse(self, topic: str, payload: bytes, now: float) -> ParseResult:
        """Parse a switch status (a reading), `online`, or an RPC response (an ack)."""
        return _finish(self.issues, _guard(None, lambda: self._parse(topic, payload, now)))

    def _device(self, device: str) -> str | Rejected | None:
        if self.device_ids is not None and device not in self.device_ids:
            return None
        if not METER_ID_RE.fullmatch(device):
            return Rejected("bad_meter_id", f"bad device id {device[:80]!r}")
        return device

    def _parse(self, topic: str, payload: bytes, now: float) -> ParseResult:
        if topic == f"{self.src}/rpc":
            return _guard(None, lambda: self._response(payload))
        head, sep, leaf = topic.rpartition("/")
        if not sep:
            return None
        if leaf == "online":
            device = self._device(head)
            if not isinstance(device, str):
                return device
            word = bytes(payload[:16]).decode("utf-8", "replace").strip()
            if word in ("true", "false"):
                return Availability(device, word == "true")
            return Rejected("invalid", f"online {word[:20]!r} is not true or false", device)
        if leaf == self._component and head.endswith("/status"):
            device = self._device(head[: -len("/status")])
            if not isinstance(device, str):
                return device
            return _guard(device, lambda: self._status(device, payload, now))
        return None

    def _status(self, device: str, payload: bytes, now: float) -> Reading | RelayReport | None:
        body = _object(payload)
        output = body.get("output")
        if output is not None and not isinstance(output, bool):
            raise _Invalid("invalid", "output is not true or false")
        relay: RelayState | None = None if output is None else ("on" if output else "off")
        aenergy = body.get("aenergy")
        if aenergy is None:
            return None if relay is None else RelayReport(device, relay)
        if not isinstance(aenergy, dict):
            raise _Invalid("invalid", "aenergy is not an object")
        if "total" not in aenergy:
            raise _Invalid("invalid", "aenergy.total is missing")
        energy_kwh = parse_energy(aenergy["total"], "aenergy.total") / _WH_PER_KWH
        minute_ts = aenergy.get("minute_ts")
        if minute_ts is None:
            ts = math.floor(now)
        else:
            ts_value = _float_field(minute_ts, "minute_ts", 1, 9_999_999_999)
            assert ts_value is not None
            ts = math.floor(ts_value)
        return Reading(
            meter_id=device,
            seq=self._seq.seq(device, ts, bytes(payload)),
            ts=ts,
            energy_kwh=energy_kwh,
            power_w=_float_field(body.get("apower"), "apower"),
            voltage_v=_float_field(body.get("voltage"), "voltage", 0, 100_000),
            current_a=_float_field(body.get("current"), "current"),
            pf=_float_field(body.get("pf"), "pf", -1, 1),
            relay=relay,
        )

    def _response(self, payload: bytes) -> Ack | Rejected | None:
        body = _object(payload)
        rpc_id = body.get("id")
        if not isinstance(rpc_id, str):
            return None  # not one of ours (ours are strings)
        pending = self._pending.pop(rpc_id, None)
        if pending is None:
            return None  # an answer to somebody else, or a second answer
        error = body.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            text = f"{code}: {message}" if message is not None else str(error)[:100]
            return Ack(pending.device, rpc_id, False, None, text[:128])
        return Ack(pending.device, rpc_id, True, pending.state, None)

    def relay_command(
        self, meter_id: str, state: RelayState, command_id: str, reason: str = ""
    ) -> Outgoing:
        """Return a `Switch.Set` JSON-RPC request on `<device>/rpc`; the id is `command_id`."""
        self._pending[command_id] = _PendingRpc(meter_id, state)
        self._pending.move_to_end(command_id)
        while len(self._pending) > self._MAX_PENDING:
            self._pending.popitem(last=False)
        frame = {
            "id": command_id,
            "src": self.src,
            "method": "Switch.Set",
            "params": {"id": self.switch_id, "on": state == "on"},
        }
        return [(f"{meter_id}/rpc", json.dumps(frame, separators=(",", ":")).encode())]

    def display_command(
        self, meter_id: str, command_id: str, balance: Decimal, currency: str, low: bool
    ) -> Outgoing:
        """Shelly switches have no balance display: nothing to send."""
        return []


PROFILE_NAMES: Final = ("native", "tasmota", "shelly")


def make_profile(
    name: str,
    *,
    community: str,
    prefix: str = DEFAULT_PREFIX,
    tz: tzinfo = _UTC,
    issues: Issues | None = None,
) -> Profile:
    """Return the profile called `name` (one of `PROFILE_NAMES`)."""
    if name == "native":
        return NativeProfile(community, prefix, issues)
    if name == "tasmota":
        return TasmotaProfile(None, tz, issues)
    if name == "shelly":
        return ShellyProfile(None, f"prepaid_meter_{community}", 0, issues)
    raise ValueError(f"unknown device profile {name!r}; expected one of {', '.join(PROFILE_NAMES)}")


__all__ = [
    "PROFILE_NAMES",
    "Ack",
    "Announce",
    "Availability",
    "NativeProfile",
    "Outgoing",
    "ParseResult",
    "Profile",
    "Reading",
    "Rejected",
    "RelayReport",
    "ShellyProfile",
    "TasmotaProfile",
    "make_profile",
]
