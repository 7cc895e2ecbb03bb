"""One meter without a broker: payloads, register, relay, commands, scenarios, determinism."""

from __future__ import annotations

import ast
from decimal import Decimal
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from simulator import Household, Native, Shelly, SimConfig, SimMeter, Tasmota, build_meters
from simulator.household import DAY
from simulator.meter import kwh
from tests.simulator import wire
from tests.simulator.test_household import NOV

NATIVE = Native("prepaid", "t")


def make(kind: str = "ordinary", profile: Any = NATIVE, seed: int = 11, **kw: Any) -> SimMeter:
    device = {"tasmota": "tasmota_ABC123", "shelly": "shellyplus1pm-a8032a123456"}.get(profile.name)
    return SimMeter.create(
        0,
        "000012345678",
        profile,
        Household.create(seed, kind),
        scenario=kind,
        device_id=device,
        **kw,
    )


def readings(
    meter: SimMeter, count: int, step: int = 600, start: int = NOV
) -> list[dict[str, Any]]:
    out = []
    for k in range(count):
        message = meter.take_reading(start + k * step)[0]  # then maybe garbage
        out.append(wire.native_telemetry(message.payload))
    return out


def command(meter: SimMeter, body: dict[str, Any], now: int) -> list[dict[str, Any]]:
    answers = meter.handle("prepaid/t/000012345678/cmd", json.dumps(body).encode(), now)
    assert all(
        a.topic == "prepaid/t/000012345678/ack" and a.qos == 1 and not a.retain for a in answers
    )
    return [json.loads(a.payload) for a in answers]


def test_native_payloads_are_well_formed() -> None:
    """announce and availability are retained QoS 1; telemetry is QoS 1, typed per PROTOCOL.md."""
    meter = make()
    announce, online = meter.announce()
    assert (announce.topic, announce.qos, announce.retain) == (
        "prepaid/t/000012345678/announce",
        1,
        True,
    )
    wire.native_announce(announce.payload, "000012345678")
    assert (online.topic, online.payload, online.qos, online.retain) == (
        "prepaid/t/000012345678/availability", b"online", 1, True)  # fmt: skip
    assert meter.will() == ("prepaid/t/000012345678/availability", b"offline", 1, True)
    (telemetry,) = meter.take_reading(NOV)
    assert (telemetry.topic, telemetry.qos, telemetry.retain) == (
        "prepaid/t/000012345678/telemetry",
        1,
        False,
    )
    body = wire.native_telemetry(telemetry.payload)
    assert body["ts"] == NOV and body["relay"] == "on"
    assert Decimal(body["energy_kwh"]) == meter.energy_kwh


@pytest.mark.parametrize(
    "kind", ["ordinary", "elderly-inactive", "vacant", "overload", "theft", "offline", "garbage"]
)
def test_register_and_seq_only_go_up(kind: str) -> None:
    """Every scenario but reset: energy never decreases, seq strictly increases, ts as given."""
    rows = readings(make(kind), 300, step=300)
    energies = [Decimal(r["energy_kwh"]) for r in rows]
    assert energies == sorted(energies) and energies[-1] > energies[0]
    seqs = [r["seq"] for r in rows]
    assert all(b == a + 1 for a, b in itertools.pairwise(seqs))


def test_register_follows_the_household_exactly() -> None:
    """The register adds exactly the household's energy (kWh, 3 decimals, truncated)."""
    meter = make()
    rows = readings(meter, 50, step=1_234)
    used = meter.household.energy_j(NOV, NOV + 49 * 1_234)
    first = Decimal(rows[0]["energy_kwh"])
    start_j = meter.register_j - used
    assert first == kwh(start_j)
    assert Decimal(rows[-1]["energy_kwh"]) == kwh(start_j + used)


def test_reset_goes_back_to_zero_once() -> None:
    """The reset scenario drops the register to ~0 once; seq keeps increasing."""
    rows = readings(make("reset", reset_after=12), 40)
    energies = [Decimal(r["energy_kwh"]) for r in rows]
    drops = [i for i in range(1, len(energies)) if energies[i] < energies[i - 1]]
    assert drops == [11]
    assert energies[11] < Decimal("0.1") < energies[10]
    assert energies[11:] == sorted(energies[11:])
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(set(seqs))
    # --reset-after applies to reset meters only.
    others = [Decimal(r["energy_kwh"]) for r in readings(make("ordinary", reset_after=3), 10)]
    assert others == sorted(others)


def test_relay_off_adds_no_energy_and_acks() -> None:
    """relay off: ack ok, power and current 0, register frozen; relay on: it grows again."""
    meter = make()
    readings(meter, 3)
    (ack,) = command(meter, {"v": 1, "id": "c1", "op": "relay", "state": "off"}, NOV + 1_500)
    assert ack == {"v": 1, "id": "c1", "ok": True, "relay": "off"}
    off = readings(meter, 10, start=NOV + 1_800)
    assert {r["energy_kwh"] for r in off} == {off[0]["energy_kwh"]}
    assert all(r["relay"] == "off" and r["power_w"] == r["current_a"] == 0.0 for r in off)
    assert all(r["voltage_v"] > 0 for r in off)
    (ack,) = command(meter, {"v": 1, "id": "c2", "op": "relay", "state": "on"}, NOV + 9_000)
    assert ack["ok"] and ack["relay"] == "on"
    on = readings(meter, 5, start=NOV + 9_600)
    assert Decimal(on[-1]["energy_kwh"]) > Decimal(off[-1]["energy_kwh"])
    assert meter.relay_on


def test_commands_are_idempotent_and_display_is_acked() -> None:
    """A repeated id changes nothing and is answered the same; display is acked; bad input safe."""
    meter = make()
    command(meter, {"v": 1, "id": "a", "op": "relay", "state": "off"}, NOV)
    command(meter, {"v": 1, "id": "b", "op": "relay", "state": "on"}, NOV + 10)
    (again,) = command(meter, {"v": 1, "id": "a", "op": "relay", "state": "off"}, NOV + 20)
    assert again == {"v": 1, "id": "a", "ok": True, "relay": "off"}
    assert meter.relay_on  # the repeat did not switch it back off
    (shown,) = command(
        meter,
        {"v": 1, "id": "d", "op": "display", "balance": "12.34", "currency": "CNY", "low": True},
        NOV,
    )
    assert shown == {"v": 1, "id": "d", "ok": True, "relay": "on"}
    (bad,) = command(meter, {"v": 1, "id": "e", "op": "relay", "state": "sideways"}, NOV)
    assert bad["ok"] is False and bad["error"]
    assert meter.handle("prepaid/t/000012345678/cmd", b"{not json", NOV) == []
    assert (
        meter.handle("prepaid/t/000012345678/cmd", b'{"v":1,"op":"relay","state":"off"}', NOV) == []
    )
    assert meter.relay_on


def test_overload_reports_overcurrent() -> None:
    """Readings a minute apart for a day: current past the rating, with an overcurrent event."""
    meter = make("overload")
    rows = readings(meter, 24 * 60, step=60)
    over = [r for r in rows if r["current_a"] > meter.rated_current_a]
    assert over and all("overcurrent" in r["events"] for r in over)
    flagged = [r for r in rows if "overcurrent" in r["events"]]
    assert len(flagged) >= len(over)
    assert not any("overcurrent" in r["events"] for r in readings(make(), 24 * 60, step=60))


def test_theft_neutral_disagrees_and_tamper_events() -> None:
    """A bypass: neutral current well above live current; cover and magnet tamper events."""
    meter = make("theft")
    rows = readings(meter, 2 * 24 * 6, step=600)
    loaded = [r for r in rows if r["current_a"] > 0.3]
    assert loaded and all(r["neutral_current_a"] > 1.5 * r["current_a"] for r in loaded)
    events = {e for r in rows for e in r["events"]}
    assert events & {"cover_open", "magnetic_tamper"}
    honest = readings(make(), 50)
    assert all(r["neutral_current_a"] == r["current_a"] for r in honest)


def test_garbage_is_malformed_and_varied() -> None:
    """The garbage scenario adds malformed messages: bad JSON, wrong types, oversized, bad ids."""
    meter = make("garbage", garbage_rate=1.0)
    bad_topics, bad_payloads, sizes = set(), 0, []
    for k in range(60):
        messages = meter.take_reading(NOV + 600 * k)
        assert len(messages) == 2
        good, junk = messages
        wire.native_telemetry(good.payload)
        sizes.append(len(junk.payload))
        if junk.topic != good.topic:
            bad_topics.add(junk.topic.split("/")[2])
            continue
        try:
            wire.native_telemetry(junk.payload)
        except (AssertionError, ValueError, KeyError, TypeError):
            bad_payloads += 1
        else:
            pytest.fail(f"garbage payload passed the checks: {junk.payload[:200]!r}")
    assert bad_payloads >= 30 and len(bad_topics) >= 2
    assert any(not wire._METER_ID.fullmatch(t) for t in bad_topics)
    assert max(sizes) > 100_000


def test_tasmota_payloads_and_power_command() -> None:
    """tele/SENSOR and STATE as Tasmota sends them; cmnd/POWER OFF is answered on stat/."""
    meter = make(profile=Tasmota())
    lwt, info = meter.announce()
    assert (lwt.topic, lwt.payload, lwt.retain) == ("tele/tasmota_ABC123/LWT", b"Online", True)
    assert json.loads(info.payload)["Info1"]["Module"]
    assert meter.will() == ("tele/tasmota_ABC123/LWT", b"Offline", 1, True)
    state, sensor = meter.take_reading(NOV + 3_600)
    assert state.topic == "tele/tasmota_ABC123/STATE" and json.loads(state.payload)["POWER"] == "ON"
    assert sensor.topic == "tele/tasmota_ABC123/SENSOR"
    body = wire.tasmota_sensor(sensor.payload)
    assert body["Time"] == "2026-11-27T01:00:00"  # local (UTC+8) time, no zone
    assert body["ENERGY"]["Total"] == meter.energy_kwh
    assert meter.command_topics() == ["cmnd/tasmota_ABC123/POWER", "cmnd/tasmota_ABC123/POWER1"]
    result, power = meter.handle("cmnd/tasmota_ABC123/POWER", b"OFF", NOV + 3_700)
    assert (result.topic, json.loads(result.payload)) == (
        "stat/tasmota_ABC123/RESULT",
        {"POWER": "OFF"},
    )
    assert (power.topic, power.payload) == ("stat/tasmota_ABC123/POWER", b"OFF")
    frozen = meter.energy_kwh
    _, sensor = meter.take_reading(NOV + 9_000)
    energy = wire.tasmota_sensor(sensor.payload)["ENERGY"]
    assert energy["Total"] == frozen and energy["Power"] == 0 and energy["Current"] == 0
    _, power = meter.handle("cmnd/tasmota_ABC123/POWER", b"", NOV + 9_100)
    assert power.payload == b"OFF"  # an empty payload asks for the state
    _, power = meter.handle("cmnd/tasmota_ABC123/POWER1", b"ON", NOV + 9_200)
    assert power.payload == b"ON" and meter.relay_on


def test_shelly_payloads_and_switch_set() -> None:
    """status/switch:0 as Shelly Gen2 sends it; Switch.Set over RPC is answered on <src>/rpc."""
    meter = make(profile=Shelly())
    (online,) = meter.announce()
    assert (online.topic, online.payload, online.retain) == (
        "shellyplus1pm-a8032a123456/online",
        b"true",
        True,
    )
    assert meter.will().payload == b"false"
    (status,) = meter.take_reading(NOV + 125)
    assert status.topic == "shellyplus1pm-a8032a123456/status/switch:0"
    body = wire.shelly_status(status.payload)
    assert body["output"] is True and body["aenergy"]["minute_ts"] == NOV + 120
    assert body["aenergy"]["total"] == meter.energy_kwh * 1_000  # Wh
    request = {
        "id": 7,
        "src": "prepaid/t",
        "method": "Switch.Set",
        "params": {"id": 0, "on": False},
    }
    reply, update = meter.handle(
        "shellyplus1pm-a8032a123456/rpc", json.dumps(request).encode(), NOV + 200
    )
    assert reply.topic == "prepaid/t/rpc"
    assert json.loads(reply.payload) == {
        "id": 7,
        "src": "shellyplus1pm-a8032a123456",
        "dst": "prepaid/t",
        "result": {"was_on": True},
    }
    switched = wire.shelly_status(update.payload)
    assert switched["output"] is False and switched["source"] == "MQTT"
    assert switched["aenergy"]["total"] > body["aenergy"]["total"]
    (status,) = meter.take_reading(NOV + 5_000)
    after = wire.shelly_status(status.payload)
    assert after["aenergy"]["total"] == switched["aenergy"]["total"]
    assert after["apower"] == 0 and after["output"] is False
    (unknown,) = meter.handle(
        "shellyplus1pm-a8032a123456/rpc", b'{"id":8,"src":"x","method":"Nope.Go"}', NOV
    )
    assert json.loads(unknown.payload)["error"]["code"] == 404
    assert (
        meter.handle("shellyplus1pm-a8032a123456/rpc", b'{"id":9,"method":"Switch.Set"}', NOV) == []
    )


def test_shelly_energy_frozen_while_off() -> None:
    """No Wh are added to aenergy.total while the output is off."""
    meter = make(profile=Shelly())
    meter.take_reading(NOV)
    request = {"id": 1, "src": "me", "method": "Switch.Set", "params": {"id": 0, "on": False}}
    meter.handle("shellyplus1pm-a8032a123456/rpc", json.dumps(request).encode(), NOV + 60)
    totals = {
        wire.shelly_status(meter.take_reading(NOV + 600 * k)[0].payload)["aenergy"]["total"]
        for k in range(1, 8)
    }
    assert len(totals) == 1


def test_offline_schedule_counts_readings() -> None:
    """offline_after readings online, offline_for readings offline, repeated."""
    meter = make("offline", offline_after=3, offline_for=2)
    pattern = []
    for k in range(10):
        pattern.append(meter.offline_now())
        meter.take_reading(NOV + 60 * k)
    assert pattern == [False, False, False, True, True] * 2
    assert not make().offline_now()


def test_same_seed_same_community() -> None:
    """The seed fixes meter ids, households, scenarios, profiles and every payload."""
    config = SimConfig(meters=30, seed=5, profile="mix", scenarios=(("theft", 3), ("overload", 2)))
    first, second = build_meters(config), build_meters(config)
    assert [m.meter_id for m in first] == [m.meter_id for m in second]
    assert len({m.meter_id for m in first}) == 30
    assert all(len(m.meter_id) == 12 and m.meter_id.startswith("0000") for m in first)
    assert sorted(m.scenario for m in first).count("theft") == 3
    assert {m.profile.name for m in first} == {"native", "tasmota", "shelly"}
    for a, b in zip(first, second, strict=True):
        for k in range(5):
            assert a.take_reading(NOV + 600 * k) == b.take_reading(NOV + 600 * k)
    other = build_meters(SimConfig(meters=30, seed=6, profile="mix"))
    assert [m.meter_id for m in other] != [m.meter_id for m in first]


def test_kwh_truncates() -> None:
    """A register is never rounded up."""
    assert kwh(3_599_999) == Decimal("0.999")
    assert kwh(3_600_000 * 1234 + 3_600 * 567) == Decimal("1234.567")
    assert str(kwh(0)) == "0.000"


def test_meters_keep_metering_over_days() -> None:
    """Long gaps between readings (a backlog, or a fast --speed) still add exactly."""
    meter = make()
    meter.take_reading(NOV)
    before = meter.register_j
    meter.take_reading(NOV + 3 * DAY)
    assert meter.register_j - before == meter.household.energy_j(NOV, NOV + 3 * DAY)


def _simulator_imports() -> dict[str, set[str]]:
    """Return, per module of the simulator package, the package modules it imports (any line)."""
    package = Path(__file__).parents[2] / "simulator"
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        name = "simulator" if path.stem == "__init__" else f"simulator.{path.stem}"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t == "simulator" or t.startswith("simulator.")}
    return graph


def test_simulator_modules_import_each_other_in_one_direction() -> None:
    """The meter defines the `Profile` it talks through; the wire formats import the meter.

    No module of the package imports another that imports it back, even only for type checking.
    """
    graph = _simulator_imports()
    assert "simulator.profiles" not in graph["simulator.meter"]
    assert "simulator.meter" in graph["simulator.profiles"]

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for target in graph.get(start, set()) - seen:
            if target == goal or reaches(target, goal, seen | {target}):
                return True
        return False

    assert [name for name in sorted(graph) if reaches(name, name, set())] == []
