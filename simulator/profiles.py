"""Wire formats: `prepaid/v1` (native) and the Tasmota and Shelly Gen2 device profiles.

Each implements `simulator.meter.Profile`, the interface a meter talks through.

Sources for the device formats (read through the project's documentation search):
- prepaid/v1: /work/shared/PROTOCOL.md.
- Tasmota, https://tasmota.github.io/docs/MQTT : topics `%prefix%/%topic%/` with the prefixes
  `cmnd` (commands in), `stat` (answers out) and `tele` (periodic telemetry out); the last will
  `tele/<topic>/LWT` is `Online`/`Offline` and retained; `cmnd/<topic>/POWER` takes
  `ON`/`OFF`/`TOGGLE`/`1`/`0` (empty asks for the state) and is answered on
  `stat/<topic>/RESULT` as `{"POWER":"OFF"}` and on `stat/<topic>/POWER` as `OFF`.
  `tele/<topic>/SENSOR` carries `{"Time": <local time, no zone>, "ENERGY": {"TotalStartTime",
  "Total" (kWh), "Yesterday", "Today", "Power" (W), "ApparentPower", "ReactivePower",
  "Factor", "Voltage", "Current"}}` and `tele/<topic>/STATE` carries `"POWER"` every
  TelePeriod (see also https://tasmota.github.io/docs/Commands/#power-monitoring).
- Shelly Gen2+, https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Mqtt : status
  updates on `<topic_prefix>/status/<component:id>` (the prefix defaults to the device id),
  `<topic_prefix>/online` is `true`/`false` (the last will); RPC requests arrive on
  `<topic_prefix>/rpc` and, per https://shelly-api-docs.shelly.cloud/gen2/General/RPCProtocol ,
  a request frame has `id`, `src`, `method`, `params`; the response frame
  `{"id", "src": <device id>, "dst": <src>, "result" | "error"}` is published on `<src>/rpc`.
  Per https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Switch the switch status
  has `id`, `source`, `output`, `apower` (W), `voltage`, `current`, `freq`, `pf`,
  `aenergy: {total (Wh), by_minute (mWh, newest first), minute_ts}` and `temperature`;
  `Switch.Set` `{"id":0,"on":false}` answers `{"was_on": true}`.
"""

from __future__ import annotations

from dataclasses import dataclass
import datetime as dt
from decimal import ROUND_DOWN, Decimal
import json
import random
from typing import Any, Final

from simulator.household import power_factor
from simulator.meter import JOULES_PER_KWH, Profile, Publish, Sample, SimMeter

PROFILES: Final = ("native", "tasmota", "shelly")

_EVENTS_CAPS: Final = ["neutral_current", "events"]
_MILLI: Final = Decimal("0.001")


def dumps(obj: Any) -> bytes:
    """Return compact JSON, writing `Decimal` values as exact JSON numbers (never via float)."""
    numbers: list[str] = []

    def swap(value: Any) -> Any:
        if isinstance(value, Decimal):
            numbers.append(str(value))
            return f"\x01{len(numbers) - 1}\x01"
        if isinstance(value, dict):
            return {key: swap(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [swap(item) for item in value]
        return value

    text = json.dumps(swap(obj), separators=(",", ":"))
    for index, number in enumerate(numbers):
        text = text.replace(f'"\\u0001{index}\\u0001"', number, 1)
    return text.encode()


def _truncate(value: Decimal) -> Decimal:
    """Return `value` with 3 decimals, cut down (a meter never rounds a register up)."""
    return value.quantize(_MILLI, rounding=ROUND_DOWN)


def _json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# -- garbage shared by every profile ----------------------------------------------------

# None of these matches [A-Za-z0-9_-]{1,64} (PROTOCOL.md); all are legal in an MQTT topic.
_BAD_IDS: Final = ("bad meter!", "x" * 80, "meter.with.dots", "电表一号", "semi;colon")


def _garbage(profile: Profile, meter: SimMeter, rng: random.Random) -> Publish:
    """Return a malformed message: bad JSON, wrong types, oversized, bad ids, odd values."""
    topic = profile.telemetry_topic(meter.device_id)
    kind = rng.randrange(7)
    if kind == 0:
        return Publish(topic, b'{"v":1,"seq":' + str(meter.seq).encode() + b',"ts":')
    if kind == 1:
        return Publish(topic, b"\xff\xfe\x00not utf-8 \x81")
    if kind == 2:
        wrong: dict[str, dict[str, Any]] = {
            "native": {"v": "one", "seq": "twelve", "ts": "yesterday", "energy_kwh": {"a": 1},
                       "power_w": "lots", "relay": 3, "events": "cover_open"},
            "tasmota": {"Time": 1234, "ENERGY": {"Total": "lots", "Power": [None], "Voltage": "x"}},
            "shelly": {"id": 0, "output": "yes", "apower": "some", "aenergy": {"total": "many"}},
        }  # fmt: skip
        return Publish(topic, dumps(wrong[profile.name]))
    if kind == 3:
        return Publish(topic, dumps({"v": 1, "seq": meter.seq, "padding": "x" * 200_000}))
    if kind == 4:
        bad = rng.choice(_BAD_IDS)
        good = {"v": 1, "seq": meter.seq, "ts": meter.last_t or 0, "energy_kwh": "1.000"}
        return Publish(profile.telemetry_topic(bad), dumps(good))
    if kind == 5:
        return Publish(topic, rng.choice((b"[1,2,3]", b"null", b"42", b'"text"', b"")))
    odd: dict[str, dict[str, Any]] = {
        "native": {"v": 1, "seq": -5, "ts": 1e20, "energy_kwh": "NaN", "power_w": "-Infinity",
                   "relay": "maybe", "events": ["kaboom", 7]},
        "tasmota": {"Time": "2026-13-45T99:00:00", "ENERGY": {"Total": -5.0, "Power": 1e308}},
        "shelly": {"id": 0, "output": True, "aenergy": {"total": -1.0, "minute_ts": -60}},
    }  # fmt: skip
    return Publish(topic, dumps(odd[profile.name]))


# -- prepaid/v1 -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Native:
    """prepaid/v1 on `<prefix>/<community>/<meter_id>/<channel>` (PROTOCOL.md)."""

    prefix: str
    community: str
    name: str = "native"

    def topic(self, device_id: str, channel: str) -> str:
        """Return `<prefix>/<community>/<device_id>/<channel>`."""
        return f"{self.prefix}/{self.community}/{device_id}/{channel}"

    def on_connect(self, meter: SimMeter) -> list[Publish]:
        """Return announce (retained) and availability `online` (retained)."""
        announce = {
            "v": 1,
            "meter_id": meter.meter_id,
            "model": f"DDZY-{meter.rated_current_a}",
            "fw": "1.4.2",
            "phases": 1,
            "rated_current_a": meter.rated_current_a,
            "relay": True,
            "caps": _EVENTS_CAPS,
        }
        return [
            Publish(self.topic(meter.device_id, "announce"), dumps(announce), 1, True),
            Publish(self.topic(meter.device_id, "availability"), b"online", 1, True),
        ]

    def will(self, meter: SimMeter) -> Publish:
        """Return availability `offline`, retained."""
        return Publish(self.topic(meter.device_id, "availability"), b"offline", 1, True)

    def telemetry_topic(self, device_id: str) -> str:
        """Return the telemetry topic."""
        return self.topic(device_id, "telemetry")

    def telemetry(self, meter: SimMeter, sample: Sample) -> list[Publish]:
        """Return one telemetry message."""
        body = {
            "v": 1,
            "seq": sample.seq,
            "ts": sample.ts,
            "energy_kwh": str(sample.energy_kwh),
            "power_w": sample.power_w,
            "voltage_v": sample.voltage_v,
            "current_a": sample.current_a,
            "neutral_current_a": sample.neutral_current_a,
            "pf": sample.pf,
            "relay": "on" if sample.relay_on else "off",
            "events": list(sample.events),
        }
        return [Publish(self.telemetry_topic(meter.device_id), dumps(body))]

    def command_topics(self, meter: SimMeter) -> list[str]:
        """Return the cmd topic."""
        return [self.topic(meter.device_id, "cmd")]

    def handle(self, meter: SimMeter, topic: str, payload: bytes, now: int) -> list[Publish]:
        """Apply `relay` or `display`; answer on `ack`. A repeated id changes nothing."""
        command = _json_object(payload)
        if command is None or not isinstance(command.get("id"), str) or not command["id"]:
            return []  # nothing to answer to
        command_id: str = command["id"]
        if command_id in meter.recent_commands:
            return meter.recent_commands[command_id]
        ack: dict[str, Any] = {"v": 1, "id": command_id}
        op = command.get("op")
        if command.get("v") != 1:
            ack |= {"ok": False, "error": "unsupported_version"}
        elif op == "relay" and command.get("state") in ("on", "off"):
            meter.set_relay(command["state"] == "on", now)
            ack |= {"ok": True, "relay": command["state"]}
        elif op == "display":
            ack |= {"ok": True, "relay": "on" if meter.relay_on else "off"}
        else:
            ack |= {"ok": False, "error": "bad_command"}
        answers = [Publish(self.topic(meter.device_id, "ack"), dumps(ack))]
        meter.remember(command_id, answers)
        return answers

    def garbage(self, meter: SimMeter, rng: random.Random) -> Publish:
        """Return a malformed message."""
        return _garbage(self, meter, rng)


# -- Tasmota ----------------------------------------------------------------------------


def _local_time(ts: int, offset_s: int) -> str:
    """Return Tasmota's `Time`: the device's local time without a zone."""
    return dt.datetime.fromtimestamp(ts + offset_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True, slots=True)
class Tasmota:
    """A Tasmota energy-monitoring plug or switch (device topic `tasmota_XXXXXX`)."""

    name: str = "tasmota"

    def on_connect(self, meter: SimMeter) -> list[Publish]:
        """Return `tele/<topic>/LWT Online` (retained) and `tele/<topic>/INFO1`."""
        info = {"Info1": {"Module": "Generic", "Version": "14.3.0(tasmota)",
                          "FallbackTopic": f"cmnd/DVES_{meter.device_id[-6:]}_fb/",
                          "GroupTopic": "cmnd/tasmotas/"}}  # fmt: skip
        return [
            Publish(f"tele/{meter.device_id}/LWT", b"Online", 1, True),
            Publish(f"tele/{meter.device_id}/INFO1", dumps(info)),
        ]

    def will(self, meter: SimMeter) -> Publish:
        """Return `tele/<topic>/LWT Offline`, retained."""
        return Publish(f"tele/{meter.device_id}/LWT", b"Offline", 1, True)

    def telemetry_topic(self, device_id: str) -> str:
        """Return `tele/<topic>/SENSOR`."""
        return f"tele/{device_id}/SENSOR"

    def _power(self, meter: SimMeter) -> str:
        return "ON" if meter.relay_on else "OFF"

    def telemetry(self, meter: SimMeter, sample: Sample) -> list[Publish]:
        """Return `tele/<topic>/STATE` and `tele/<topic>/SENSOR`, as every TelePeriod."""
        offset = meter.household.utc_offset_s
        time = _local_time(sample.ts, offset)
        apparent = round(sample.voltage_v * sample.current_a)
        power = round(sample.power_w)
        today_j = max(0, meter.register_j - meter.today_start_j)
        energy = {
            "TotalStartTime": "2024-01-01T00:00:00",
            "Total": sample.energy_kwh,
            "Yesterday": _truncate(Decimal(meter.yesterday_j) / JOULES_PER_KWH),
            "Today": _truncate(Decimal(today_j) / JOULES_PER_KWH),
            "Power": power,
            "ApparentPower": apparent,
            "ReactivePower": round(max(0.0, apparent**2 - power**2) ** 0.5),
            "Factor": sample.pf,
            "Voltage": round(sample.voltage_v),
            "Current": round(sample.current_a, 3),
        }
        state = {"Time": time, "POWER": self._power(meter)}
        return [
            Publish(f"tele/{meter.device_id}/STATE", dumps(state)),
            Publish(self.telemetry_topic(meter.device_id), dumps({"Time": time, "ENERGY": energy})),
        ]

    def command_topics(self, meter: SimMeter) -> list[str]:
        """Return `cmnd/<topic>/POWER` (and `POWER1`, which a one-relay device also takes)."""
        return [f"cmnd/{meter.device_id}/POWER", f"cmnd/{meter.device_id}/POWER1"]

    def handle(self, meter: SimMeter, topic: str, payload: bytes, now: int) -> list[Publish]:
        """Switch on `ON`/`OFF`/`1`/`0`/`TOGGLE`; answer on `stat/<topic>/RESULT` and `POWER`."""
        word = payload.decode(errors="replace").strip().upper()
        if word in ("ON", "1", "TRUE"):
            meter.set_relay(True, now)
        elif word in ("OFF", "0", "FALSE"):
            meter.set_relay(False, now)
        elif word in ("TOGGLE", "2"):
            meter.set_relay(not meter.relay_on, now)
        elif word:
            return [Publish(f"stat/{meter.device_id}/RESULT", dumps({"Command": "Error"}))]
        state = self._power(meter)
        return [
            Publish(f"stat/{meter.device_id}/RESULT", dumps({"POWER": state})),
            Publish(f"stat/{meter.device_id}/POWER", state.encode()),
        ]

    def garbage(self, meter: SimMeter, rng: random.Random) -> Publish:
        """Return a malformed message."""
        return _garbage(self, meter, rng)


# -- Shelly Gen2+ -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shelly:
    """A Shelly Plus 1PM (Gen2) with the default MQTT topic prefix, its device id."""

    name: str = "shelly"

    def on_connect(self, meter: SimMeter) -> list[Publish]:
        """Return `<id>/online true` (retained)."""
        return [Publish(f"{meter.device_id}/online", b"true", 1, True)]

    def will(self, meter: SimMeter) -> Publish:
        """Return `<id>/online false`, retained."""
        return Publish(f"{meter.device_id}/online", b"false", 1, True)

    def telemetry_topic(self, device_id: str) -> str:
        """Return `<id>/status/switch:0`."""
        return f"{device_id}/status/switch:0"

    def status(self, meter: SimMeter, sample: Sample, source: str = "init") -> dict[str, Any]:
        """Return the `switch:0` status object for a reading."""
        house = meter.household
        minute_ts = sample.ts - sample.ts % 60
        by_minute = [
            (
                Decimal(house.energy_j(minute_ts - 60 * (k + 1), minute_ts - 60 * k))
                / Decimal("3.6")
            ).quantize(_MILLI)
            if meter.relay_on
            else Decimal("0.000")
            for k in range(3)
        ]
        return {
            "id": 0,
            "source": source,
            "output": sample.relay_on,
            "apower": sample.power_w,
            "voltage": sample.voltage_v,
            "freq": 50.0,
            "current": round(sample.current_a, 3),
            "pf": sample.pf,
            "aenergy": {
                "total": _truncate(Decimal(meter.register_j) / 3_600),
                "by_minute": by_minute,
                "minute_ts": minute_ts,
            },
            "temperature": {"tC": 38.5, "tF": 101.3},
        }

    def telemetry(self, meter: SimMeter, sample: Sample) -> list[Publish]:
        """Return one status update of `switch:0`."""
        return [Publish(self.telemetry_topic(meter.device_id), dumps(self.status(meter, sample)))]

    def command_topics(self, meter: SimMeter) -> list[str]:
        """Return `<id>/rpc`."""
        return [f"{meter.device_id}/rpc"]

    def handle(self, meter: SimMeter, topic: str, payload: bytes, now: int) -> list[Publish]:
        """Answer JSON-RPC `Switch.Set`, `Switch.Toggle`, `Switch.GetStatus` on `<src>/rpc`."""
        frame = _json_object(payload)
        if frame is None or not isinstance(frame.get("src"), str) or "id" not in frame:
            return []  # a frame without src or id cannot be answered
        src: str = frame["src"]
        if not src or "+" in src or "#" in src:
            return []
        answer: dict[str, Any] = {"id": frame["id"], "src": meter.device_id, "dst": src}
        method = frame.get("method")
        params = frame.get("params") if isinstance(frame.get("params"), dict) else {}
        assert isinstance(params, dict)
        extra: list[Publish] = []
        if method in ("Switch.Set", "Switch.Toggle") and params.get("id", 0) == 0:
            on = params.get("on")
            if method == "Switch.Toggle":
                on = not meter.relay_on
            if not isinstance(on, bool):
                answer["error"] = {"code": -103, "message": "Invalid argument 'on'!"}
            else:
                answer["result"] = {"was_on": meter.set_relay(on, now)}
                extra = [self._status_now(meter, now, "MQTT")]
        elif method == "Switch.GetStatus" and params.get("id", 0) == 0:
            answer["result"] = self._status_dict(meter, now)
        else:
            answer["error"] = {"code": 404, "message": f"No handler for {method}"}
        return [Publish(f"{src}/rpc", dumps(answer)), *extra]

    def _status_dict(self, meter: SimMeter, now: int, source: str = "init") -> dict[str, Any]:
        house = meter.household
        watts = house.power_at(now) if meter.relay_on else 0
        voltage = house.voltage_at(now, watts)
        pf = power_factor(watts)
        sample = Sample(
            seq=meter.seq,
            ts=now,
            energy_kwh=meter.energy_kwh,
            power_w=float(watts),
            voltage_v=voltage,
            current_a=round(watts / (voltage * pf), 2) if watts else 0.0,
            neutral_current_a=0.0,
            pf=pf,
            relay_on=meter.relay_on,
            events=(),
        )
        return self.status(meter, sample, source)

    def _status_now(self, meter: SimMeter, now: int, source: str) -> Publish:
        return Publish(
            self.telemetry_topic(meter.device_id), dumps(self._status_dict(meter, now, source))
        )

    def garbage(self, meter: SimMeter, rng: random.Random) -> Publish:
        """Return a malformed message."""
        return _garbage(self, meter, rng)


def make_profile(name: str, prefix: str, community: str) -> Profile:
    """Return the profile called `name`."""
    if name == "native":
        return Native(prefix, community)
    if name == "tasmota":
        return Tasmota()
    if name == "shelly":
        return Shelly()
    raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
