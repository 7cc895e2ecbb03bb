"""Device profiles: the same data gives the same Reading; nothing a device sends raises."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
import json
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from custom_components.prepaid_meter.engine.profiles import (
    NativeProfile,
    Profile,
    ShellyProfile,
    TasmotaProfile,
    make_profile,
)
from custom_components.prepaid_meter.engine.protocol import (
    Ack,
    Announce,
    Availability,
    MeterGate,
    Reading,
    Rejected,
    RelayReport,
)

TS = 1_764_300_000  # 2025-11-28T03:20:00Z
SHANGHAI = ZoneInfo("Asia/Shanghai")


def native_payload(kwh: str, power: float, volts: float, amps: float, relay: str | None) -> bytes:
    body: dict[str, object] = {
        "v": 1,
        "seq": 7,
        "ts": TS,
        "energy_kwh": kwh,
        "power_w": power,
        "voltage_v": volts,
        "current_a": amps,
    }
    if relay is not None:
        body["relay"] = relay
    return json.dumps(body).encode()


def test_the_three_profiles_give_equal_readings_for_equal_data() -> None:
    native = NativeProfile("sunny")
    tasmota = TasmotaProfile(tz=SHANGHAI)
    shelly = ShellyProfile()
    from_native = native.parse(
        "prepaid/sunny/dev1/telemetry", native_payload("1234.567", 850.0, 229.8, 3.9, None), 0
    )
    from_tasmota = tasmota.parse(
        "tele/dev1/SENSOR",
        b'{"Time":"2025-11-28T11:20:00","ENERGY":{"TotalStartTime":"2024-01-01T00:00:00",'
        b'"Total":1234.567,"Yesterday":3.2,"Today":1.1,"Power":850,"ApparentPower":900,'
        b'"ReactivePower":100,"Voltage":229.8,"Current":3.9}}',
        0,
    )
    from_shelly = shelly.parse(
        "dev1/status/switch:0",
        b'{"id":0,"source":"init","output":true,"apower":850.0,"voltage":229.8,"freq":50.0,'
        b'"current":3.9,"aenergy":{"total":1234567.0,"by_minute":[1.0,2.0,3.0],'
        b'"minute_ts":1764300000},"temperature":{"tC":40.1,"tF":104.2}}',
        TS + 30,
    )
    readings = [from_native, from_tasmota, from_shelly]
    for r in readings:
        assert isinstance(r, Reading), r
        assert isinstance(r.energy_kwh, Decimal)
    assert isinstance(from_shelly, Reading)
    assert from_shelly.relay == "on"
    # seq is the meter's own (native) or made up from the device clock; the relay state only
    # Shelly's status carries: everything else is the same reading.
    normal = [
        dataclasses.replace(r, seq=None, relay=None) for r in readings if isinstance(r, Reading)
    ]
    assert normal[0] == normal[1] == normal[2]
    assert normal[0] == Reading("dev1", None, TS, Decimal("1234.567"), 850.0, 229.8, 3.9)


def test_tasmota_time_with_an_offset_and_zone() -> None:
    tasmota = TasmotaProfile(tz=SHANGHAI)
    with_offset = tasmota.parse(
        "tele/p1/SENSOR", b'{"Time":"2025-11-28T11:20:00+08:00","ENERGY":{"Total":1}}', 0
    )
    utc_profile = TasmotaProfile()
    zoneless_utc = utc_profile.parse(
        "tele/p1/SENSOR", b'{"Time":"2025-11-28T03:20:00","ENERGY":{"Total":1}}', 0
    )
    assert isinstance(with_offset, Reading)
    assert isinstance(zoneless_utc, Reading)
    assert with_offset.ts == zoneless_utc.ts == TS


def test_tasmota_state_lwt_power_and_command() -> None:
    tasmota = TasmotaProfile()
    assert tasmota.parse("tele/p1/LWT", b"Online", 0) == Availability("p1", True)
    assert tasmota.parse("tele/p1/LWT", b"Offline", 0) == Availability("p1", False)
    assert tasmota.parse("stat/p1/POWER", b"OFF", 0) == RelayReport("p1", "off")
    state = b'{"Time":"2025-11-28T03:20:00","Uptime":"0T00:10:11","POWER":"ON","Wifi":{"AP":1}}'
    assert tasmota.parse("tele/p1/STATE", state, 0) == RelayReport("p1", "on")
    assert (
        tasmota.parse("tele/p1/SENSOR", b'{"Time":"2025-11-28T03:20:00","Switch1":"ON"}', 0) is None
    )
    assert tasmota.parse("tele/p1/INFO1", b"{}", 0) is None
    assert tasmota.relay_command("p1", "off", "id-1") == [("cmnd/p1/POWER", b"OFF")]
    assert tasmota.relay_command("p1", "on", "id-2") == [("cmnd/p1/POWER", b"ON")]
    assert tasmota.subscriptions() == [
        "tele/+/SENSOR",
        "tele/+/STATE",
        "tele/+/LWT",
        "stat/+/POWER",
    ]
    bad = tasmota.parse("tele/p1/LWT", b"Sleeping", 0)
    assert isinstance(bad, Rejected)
    assert tasmota.issues.counts[("p1", "invalid")] == 1


def test_tasmota_per_phase_arrays() -> None:
    tasmota = TasmotaProfile()
    reading = tasmota.parse(
        "tele/p3/SENSOR",
        b'{"Time":"2025-11-28T03:20:00","ENERGY":{"Total":[1.5,2.25,0.25],"Power":[100,200,0],'
        b'"Voltage":[230,231,229],"Current":[0.5,1.0,0]}}',
        0,
    )
    assert isinstance(reading, Reading)
    assert reading.energy_kwh == Decimal("4.00")
    assert reading.power_w == 300.0
    assert reading.voltage_v == 230.0


def test_shelly_online_rpc_ack_and_error() -> None:
    shelly = ShellyProfile(src="pm_sunny")
    assert shelly.subscriptions() == ["+/status/switch:0", "+/online", "pm_sunny/rpc"]
    assert shelly.parse("shellyplus1pm-a1/online", b"true", 0) == Availability(
        "shellyplus1pm-a1", True
    )
    assert shelly.parse("shellyplus1pm-a1/online", b"false", 0) == Availability(
        "shellyplus1pm-a1", False
    )
    [(topic, payload)] = shelly.relay_command("shellyplus1pm-a1", "off", "c-1")
    assert topic == "shellyplus1pm-a1/rpc"
    assert json.loads(payload) == {
        "id": "c-1",
        "src": "pm_sunny",
        "method": "Switch.Set",
        "params": {"id": 0, "on": False},
    }
    answer = b'{"id":"c-1","src":"shellyplus1pm-a1","dst":"pm_sunny","result":{"was_on":true}}'
    assert shelly.parse("pm_sunny/rpc", answer, 0) == Ack(
        "shellyplus1pm-a1", "c-1", True, "off", None
    )
    assert shelly.parse("pm_sunny/rpc", answer, 0) is None  # a second answer: already done
    shelly.relay_command("shellyplus1pm-a1", "on", "c-2")
    error = b'{"id":"c-2","src":"x","dst":"pm_sunny","error":{"code":-103,"message":"Invalid"}}'
    failed = shelly.parse("pm_sunny/rpc", error, 0)
    assert isinstance(failed, Ack)
    assert not failed.ok
    assert failed.error == "-103: Invalid"
    assert shelly.parse("pm_sunny/rpc", b'{"id":5,"result":{}}', 0) is None
    # a switch without metering only tells its output
    assert shelly.parse("s2/status/switch:0", b'{"id":0,"output":false}', 0) == RelayReport(
        "s2", "off"
    )


def test_devices_without_seq_are_ordered_and_deduplicated_by_their_clock() -> None:
    shelly = ShellyProfile()
    gate = MeterGate(clock=lambda: float(TS + 120))

    def status(total: float, minute_ts: int, power: float) -> bytes:
        return json.dumps(
            {"output": True, "apower": power, "aenergy": {"total": total, "minute_ts": minute_ts}}
        ).encode()

    topic = "s1/status/switch:0"
    first = shelly.parse(topic, status(1000.0, TS, 10.0), TS)
    same_again = shelly.parse(topic, status(1000.0, TS, 10.0), TS)  # a QoS 1 redelivery
    later_same_minute = shelly.parse(topic, status(1001.0, TS, 12.0), TS + 20)
    next_minute = shelly.parse(topic, status(1002.0, TS + 60, 9.0), TS + 60)
    assert isinstance(first, Reading)
    assert isinstance(same_again, Reading)
    assert isinstance(later_same_minute, Reading)
    assert isinstance(next_minute, Reading)
    assert first.seq == same_again.seq
    assert first.seq is not None
    assert later_same_minute.seq is not None
    assert next_minute.seq is not None
    assert first.seq < later_same_minute.seq < next_minute.seq
    kinds = [
        type(gate.check(r)).__name__ for r in (first, same_again, later_same_minute, next_minute)
    ]
    assert kinds == ["Accepted", "Rejected", "Accepted", "Accepted"]
    stale = shelly.parse(topic, status(1000.5, TS, 10.0), TS + 90)  # a late, older message
    assert isinstance(stale, Reading)
    assert isinstance(gate.check(stale), Rejected)


def test_native_channels_and_commands() -> None:
    native = NativeProfile("sunny", "prepaid")
    assert native.subscriptions() == [
        "prepaid/sunny/+/announce",
        "prepaid/sunny/+/availability",
        "prepaid/sunny/+/telemetry",
        "prepaid/sunny/+/ack",
    ]
    announce = native.parse("prepaid/sunny/m1/announce", b'{"v":1,"meter_id":"m1","relay":true}', 0)
    assert isinstance(announce, Announce)
    assert native.parse("prepaid/sunny/m1/announce", b"", 0) is None  # retained message cleared
    assert native.parse("prepaid/sunny/m1/cmd", b"{}", 0) is None
    unknown = native.parse(
        "prepaid/sunny/m1/telemetry",
        b'{"v":1,"seq":1,"ts":1764300000,"energy_kwh":"1","events":["zap","cover_open"]}',
        0,
    )
    assert isinstance(unknown, Reading)
    assert unknown.events == ("cover_open",)
    assert native.issues.counts[("m1", "unknown_event")] == 1
    [(topic, payload)] = native.relay_command("m1", "off", "id-9", "credit_exhausted")
    assert topic == "prepaid/sunny/m1/cmd"
    assert json.loads(payload)["state"] == "off"
    [(topic, payload)] = native.display_command("m1", "id-10", Decimal("5.5"), "CNY", True)
    assert json.loads(payload)["balance"] == "5.5"
    assert TasmotaProfile().display_command("m1", "x", Decimal(1), "CNY", False) == []
    with pytest.raises(ValueError, match="unknown device profile"):
        make_profile("zigbee", community="sunny")


# -- fuzzing: nothing a device sends may raise ------------------------------------------

ALLOWED = (Reading, Announce, Availability, Ack, RelayReport, Rejected, type(None))
PROFILES: list[Profile] = [
    NativeProfile("sunny"),
    TasmotaProfile(tz=SHANGHAI),
    ShellyProfile(src="pm"),
]
TOPICS = [
    "prepaid/sunny/000012345678/telemetry",
    "prepaid/sunny/000012345678/announce",
    "prepaid/sunny/000012345678/availability",
    "prepaid/sunny/000012345678/ack",
    "prepaid/sunny/bad id/telemetry",
    "tele/plug1/SENSOR",
    "tele/plug1/STATE",
    "tele/plug1/LWT",
    "stat/plug1/POWER",
    "shelly1/status/switch:0",
    "shelly1/online",
    "pm/rpc",
    "x",
    "",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
FIELDS = [
    "v", "seq", "ts", "energy_kwh", "power_w", "voltage_v", "current_a", "neutral_current_a",
    "pf", "relay", "events", "meter_id", "id", "ok", "error", "Time", "ENERGY", "Total",
    "POWER", "output", "aenergy", "total", "minute_ts", "apower", "result", "phases", "caps",
]  # fmt: skip
field_objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_all(topic: str, payload: bytes) -> None:
    for profile in PROFILES:
        result = profile.parse(topic, payload, float(TS))
        assert isinstance(result, ALLOWED), result


@FUZZ
@given(topic=st.sampled_from(TOPICS), payload=st.binary(max_size=300))
def test_random_bytes_never_raise(topic: str, payload: bytes) -> None:
    check_all(topic, payload)


@FUZZ
@given(topic=st.sampled_from(TOPICS), value=json_values)
def test_random_json_never_raises(topic: str, value: object) -> None:
    check_all(topic, json.dumps(value).encode())


@FUZZ
@given(topic=st.sampled_from(TOPICS), value=field_objects, nested=field_objects)
def test_random_objects_with_real_field_names_never_raise(
    topic: str, value: dict[str, object], nested: dict[str, object]
) -> None:
    value = dict(value)
    value["ENERGY"] = nested
    value["aenergy"] = nested
    check_all(topic, json.dumps(value).encode())


@FUZZ
@given(topic=st.text(max_size=40), payload=st.binary(max_size=50))
def test_random_topics_never_raise(topic: str, payload: bytes) -> None:
    check_all(topic, payload)
