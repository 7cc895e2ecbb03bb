"""Cross-check: what the simulator sends, the integration's own parsers understand (or reject)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from simulator import SimConfig, build_meters
from tests.simulator.test_household import NOV

protocol: Any = pytest.importorskip("custom_components.prepaid_meter.engine.protocol")
profiles: Any = pytest.importorskip("custom_components.prepaid_meter.engine.profiles")


@pytest.mark.parametrize("name", ["native", "tasmota", "shelly"])
def test_engine_parsers_read_every_simulated_message(name: str) -> None:
    """Per profile: announce, readings (every scenario), relay and display commands round-trip
    through engine.profiles and the MeterGate; garbage is rejected, never read; the reset
    scenario is the only reset; no energy is registered while the relay is off."""
    config = SimConfig(
        community="demo",
        meters=8,
        profile=name,
        seed=12,
        start=NOV,
        reset_after=5,
        garbage_rate=0.5,
        scenarios=(("theft", 1), ("overload", 1), ("reset", 1), ("garbage", 1), ("vacant", 1)),
    )
    theirs = profiles.make_profile(
        name, community="demo", prefix="prepaid", tz=dt.timezone(dt.timedelta(hours=8))
    )
    gate = protocol.MeterGate(clock=lambda: 2e9)
    resets: dict[str, int] = {}
    rejected_garbage: set[str] = set()

    def parse(topic: str, payload: bytes, now: int) -> Any:
        return theirs.parse(topic, payload, float(now))

    for meter in build_meters(config):
        device = meter.device_id
        for message in [*meter.announce(), meter.will()]:
            result = parse(message.topic, message.payload, NOV)
            assert not isinstance(result, protocol.Rejected), (message, result)
        # Take readings and sort what the engine makes of them.
        for k in range(30):
            ts = NOV + 600 * k
            sent = meter.take_reading(ts)
            expected_good = {"native": 1, "tasmota": 2, "shelly": 1}[name]
            for index, message in enumerate(sent):
                result = parse(message.topic, message.payload, ts)
                if index >= expected_good:
                    assert not isinstance(result, protocol.Reading), (
                        message.topic,
                        message.payload[:80],
                        result,
                    )
                    rejected_garbage.add(result.kind if result is not None else "ignored")
                    continue
                assert not isinstance(result, protocol.Rejected), (message, result)
                if isinstance(result, protocol.RelayReport):
                    assert result.relay == ("on" if meter.relay_on else "off")
                    continue
                assert isinstance(result, protocol.Reading)
                assert result.meter_id == device
                if name == "shelly":  # aenergy.total is in Wh with 3 decimals
                    assert result.energy_kwh == Decimal(meter.register_j * 1_000 // 3_600) / 10**6
                else:
                    assert result.energy_kwh == meter.energy_kwh
                assert result.ts == (ts - ts % 60 if name == "shelly" else ts)
                if name == "native":
                    assert (result.seq, result.relay) == (meter.seq, "on")
                    assert result.neutral_current_a is not None
                accepted = gate.check(result)
                assert isinstance(accepted, protocol.Accepted), accepted
                resets[device] = resets.get(device, 0) + accepted.reset
        # Relay off through the engine's own command, then nothing is registered.
        now = NOV + 30 * 600
        results = []
        for topic, payload in theirs.relay_command(device, "off", "cut-7", "credit_exhausted"):
            for answer in meter.handle(topic, payload, now):
                results.append(parse(answer.topic, answer.payload, now))
        assert not meter.relay_on
        if name == "tasmota":
            assert protocol.RelayReport(device, "off") in results
        else:
            acks = [r for r in results if isinstance(r, protocol.Ack)]
            assert acks == [protocol.Ack(device, "cut-7", True, "off", None)]
        frozen = None
        for k in range(1, 6):
            for message in meter.take_reading(now + 600 * k):
                result = parse(message.topic, message.payload, now + 600 * k)
                if isinstance(result, protocol.Reading):
                    frozen = frozen or result.energy_kwh
                    assert result.energy_kwh == frozen
                    assert result.relay == (None if name == "tasmota" else "off")  # STATE has it
        assert frozen is not None
        shown = theirs.display_command(device, "show-1", Decimal("3.20"), "CNY", True)
        answers = [
            parse(a.topic, a.payload, now) for t, p in shown for a in meter.handle(t, p, now)
        ]
        if name == "native":
            assert answers == [protocol.Ack(device, "show-1", True, "off", None)]
        else:
            assert shown == [] and answers == []
    scenario_of = {m.device_id: m.scenario for m in build_meters(config)}
    assert {d for d, n in resets.items() if n} == {
        d for d, s in scenario_of.items() if s == "reset"
    }
    assert all(n <= 1 for n in resets.values())
    assert rejected_garbage  # the garbage meter's junk was seen and rejected
