"""A simulated community on a real mosquitto broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import contextlib
from decimal import Decimal
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from simulator import Broker, Community, SimConfig, SimulatorError
from tests.broker import Mosquitto, free_port
from tests.simulator import wire
from tests.simulator.test_household import NOV

pytestmark = pytest.mark.mqtt


def config_for(broker: Mosquitto, community: str, **kw: Any) -> SimConfig:
    base: dict[str, Any] = {"meters": 3, "interval": 0.2, "speed": 600.0, "start": NOV, "seed": 1}
    return SimConfig(broker=Broker(broker.host, broker.port), community=community, **(base | kw))


@contextlib.asynccontextmanager
async def running(config: SimConfig, *, forget: bool = True) -> AsyncIterator[Community]:
    community = Community(config)
    task = asyncio.create_task(community.run())
    try:
        yield community
    finally:
        await community.stop()
        await asyncio.wait_for(task, 20)
        if forget:  # the session broker is shared with other tests
            await wire.forget_retained(config.broker.host, config.broker.port, config)


def telemetry(rec: wire.Recorder, topic: str) -> list[dict[str, Any]]:
    return [wire.native_telemetry(p) for p in rec.on(topic)]


async def test_native_meters_publish_per_protocol(mosquitto: Mosquitto) -> None:
    """announce/availability retained, telemetry QoS 1 and well-formed, seq and energy climb, ts
    follows simulated time (interval x speed apart), offline said on stop."""
    config = config_for(mosquitto, "e2e", meters=4, pool_size=3)
    async with wire.record(mosquitto.host, mosquitto.port, "prepaid/e2e/#") as rec:
        async with running(config, forget=False) as community:
            topics = [f"prepaid/e2e/{m.meter_id}/telemetry" for m in community.meters]
            await rec.wait_for(lambda: all(len(rec.on(t)) >= 6 for t in topics))
            assert len(community.links) == 2  # 4 meters, 3 per shared connection
            snapshot = community.snapshot()
            assert snapshot.online == 4 and snapshot.relays_off == 0
            elapsed = community.clock.now() - NOV
            assert elapsed > 6 * 0.2 * 600 * 0.9
        ids = [m.meter_id for m in community.meters]
        await rec.wait_for(
            lambda: all(rec.on(f"prepaid/e2e/{i}/availability")[-1:] == [b"offline"] for i in ids)
        )
    for meter_id in ids:
        base = f"prepaid/e2e/{meter_id}"
        assert rec.on(f"{base}/availability")[0] == b"online"
        wire.native_announce(rec.on(f"{base}/announce")[0], meter_id)
        rows = telemetry(rec, f"{base}/telemetry")
        assert all(b["seq"] == a["seq"] + 1 for a, b in itertools.pairwise(rows))
        assert all(
            Decimal(a["energy_kwh"]) <= Decimal(b["energy_kwh"])
            for a, b in itertools.pairwise(rows)
        )
        # --speed: readings 0.2 real seconds apart are 0.2 x 600 = 120 simulated seconds apart.
        assert all(119 <= b["ts"] - a["ts"] <= 121 for a, b in itertools.pairwise(rows))
        assert NOV <= rows[0]["ts"] <= NOV + 120
    # A late subscriber gets the retained announce and the last availability.
    async with wire.record(mosquitto.host, mosquitto.port, f"prepaid/e2e/{ids[0]}/+") as late:
        await late.wait_for(lambda: len(late.messages) >= 2)
    retained = {topic.rsplit("/", 1)[1]: (payload, flag) for topic, payload, flag in late.messages}
    assert retained["availability"] == (b"offline", True)
    assert retained["announce"][1] is True
    await wire.forget_retained(mosquitto.host, mosquitto.port, config)


async def test_relay_command_acked_and_no_energy_while_off(mosquitto: Mosquitto) -> None:
    """cmd relay off: ack ok relay off; then readings say relay off, no power, a frozen register."""
    config = config_for(mosquitto, "relay", meters=2)
    async with (
        wire.record(mosquitto.host, mosquitto.port, "prepaid/relay/#") as rec,
        running(config) as community,
    ):
        meter = community.meters[0]
        base = f"prepaid/relay/{meter.meter_id}"
        await rec.wait_for(lambda: len(rec.on(f"{base}/telemetry")) >= 2)
        await rec.publish(
            f"{base}/cmd", json.dumps({"v": 1, "id": "cut-1", "op": "relay", "state": "off"})
        )
        await rec.wait_for(lambda: len(rec.on(f"{base}/ack")) == 1)
        assert json.loads(rec.on(f"{base}/ack")[0]) == {
            "v": 1,
            "id": "cut-1",
            "ok": True,
            "relay": "off",
        }
        seen = len(rec.on(f"{base}/telemetry"))
        await rec.wait_for(lambda: len(rec.on(f"{base}/telemetry")) >= seen + 5)
        off = [r for r in telemetry(rec, f"{base}/telemetry")[seen:] if r["relay"] == "off"]
        assert len(off) >= 4
        assert {r["energy_kwh"] for r in off} == {off[0]["energy_kwh"]}
        assert all(r["power_w"] == 0.0 and r["current_a"] == 0.0 for r in off)
        assert community.snapshot().relays_off == 1
        display = {
            "v": 1,
            "id": "show-1",
            "op": "display",
            "balance": "-1.50",
            "currency": "CNY",
            "low": True,
        }
        await rec.publish(f"{base}/cmd", json.dumps(display))
        await rec.publish(
            f"{base}/cmd", json.dumps({"v": 1, "id": "back-1", "op": "relay", "state": "on"})
        )
        await rec.wait_for(lambda: len(rec.on(f"{base}/ack")) == 3)
        acks = {a["id"]: a for a in map(json.loads, rec.on(f"{base}/ack"))}
        assert acks["show-1"] == {"v": 1, "id": "show-1", "ok": True, "relay": "off"}
        assert acks["back-1"]["relay"] == "on"
        seen = len(rec.on(f"{base}/telemetry"))
        await rec.wait_for(lambda: len(rec.on(f"{base}/telemetry")) >= seen + 6)
        last = telemetry(rec, f"{base}/telemetry")[-1]
        assert last["relay"] == "on" and Decimal(last["energy_kwh"]) > Decimal(
            off[-1]["energy_kwh"]
        )


async def test_offline_meter_will_fires_and_backlog_comes_oldest_first(
    mosquitto: Mosquitto,
) -> None:
    """The broker publishes the meter's will; back online it sends its backlog, oldest first."""
    config = config_for(
        mosquitto, "off", meters=2, scenarios=(("offline", 1),), offline_after=3, offline_for=4
    )
    async with (
        wire.record(mosquitto.host, mosquitto.port, "prepaid/off/#") as rec,
        running(config) as community,
    ):
        (meter,) = [m for m in community.meters if m.scenario == "offline"]
        base = f"prepaid/off/{meter.meter_id}"
        assert community.link_of(meter).dedicated
        await rec.wait_for(
            lambda: rec.on(f"{base}/availability")[:3] == [b"online", b"offline", b"online"]
        )
        await rec.wait_for(lambda: len(rec.on(f"{base}/telemetry")) >= 9)
        # The simulator itself only says offline on stop(): this one came from the broker (will).
        order = [(t.rsplit("/", 1)[1], p) for t, p, _ in rec.messages if t.startswith(base)]
        gone = order.index(("availability", b"offline"))
        back = order.index(("availability", b"online"), gone)
        before = [json.loads(p) for c, p in order[:gone] if c == "telemetry"]
        after = [json.loads(p) for c, p in order[back:] if c == "telemetry"]
        assert len(before) == 3 and [c for c, _ in order[gone:back] if c == "telemetry"] == []
        rows = before + after
        assert all(b["seq"] == a["seq"] + 1 for a, b in itertools.pairwise(rows))
        assert all(b["ts"] > a["ts"] for a, b in itertools.pairwise(rows))
        assert all(
            Decimal(a["energy_kwh"]) <= Decimal(b["energy_kwh"])
            for a, b in itertools.pairwise(rows)
        )
        # The backlog (4 readings taken while offline) came first after coming back.
        assert len(after) >= 5


async def test_same_seed_same_telemetry_over_mqtt(mosquitto: Mosquitto) -> None:
    """Two runs with one seed publish identical readings; another seed gives other meters."""

    async def first_readings(seed: int) -> dict[str, list[bytes]]:
        config = config_for(mosquitto, "det", meters=3, seed=seed, scenarios=(("theft", 1),))
        topic = "prepaid/det/+/telemetry"
        async with wire.record(mosquitto.host, mosquitto.port, topic) as rec, running(config):
            await rec.wait_for(
                lambda: len(rec.messages) >= 12 and len({t for t, _, _ in rec.messages}) == 3
            )
        topics = {t for t, _, _ in rec.messages}
        return {t: rec.on(t)[:4] for t in topics}

    one, two = await first_readings(8), await first_readings(8)
    assert one == two
    assert all(len(v) == 4 for v in one.values())
    assert set(await first_readings(9)) != set(one)


async def test_tasmota_and_shelly_over_mqtt(mosquitto: Mosquitto) -> None:
    """Tasmota: LWT, SENSOR, cmnd/POWER -> stat/POWER. Shelly: online, status, Switch.Set RPC."""
    tasmota = config_for(mosquitto, "tas", meters=1, profile="tasmota", seed=2)
    shelly = config_for(mosquitto, "shl", meters=1, profile="shelly", seed=3)
    topics = ("tele/#", "stat/#", "+/online", "+/status/switch:0", "ops/rpc")
    async with wire.record(mosquitto.host, mosquitto.port, *topics) as rec:
        async with running(tasmota) as tas, running(shelly) as shl:
            topic = tas.meters[0].device_id
            device = shl.meters[0].device_id
            await rec.wait_for(
                lambda: bool(rec.on(f"tele/{topic}/SENSOR") and rec.on(f"{device}/status/switch:0"))
            )
            assert rec.on(f"tele/{topic}/LWT")[0] == b"Online"
            assert rec.on(f"{device}/online")[0] == b"true"
            wire.tasmota_sensor(rec.on(f"tele/{topic}/SENSOR")[0])
            wire.shelly_status(rec.on(f"{device}/status/switch:0")[0])
            await rec.publish(f"cmnd/{topic}/POWER", "OFF")
            request = {
                "id": 41,
                "src": "ops",
                "method": "Switch.Set",
                "params": {"id": 0, "on": False},
            }
            await rec.publish(f"{device}/rpc", json.dumps(request))
            await rec.wait_for(lambda: bool(rec.on(f"stat/{topic}/POWER") and rec.on("ops/rpc")))
            assert rec.on(f"stat/{topic}/POWER") == [b"OFF"]
            reply = json.loads(rec.on("ops/rpc")[0])
            assert reply == {"id": 41, "src": device, "dst": "ops", "result": {"was_on": True}}
            sensors = len(rec.on(f"tele/{topic}/SENSOR"))
            statuses = len(rec.on(f"{device}/status/switch:0"))
            await rec.wait_for(
                lambda: (
                    len(rec.on(f"tele/{topic}/SENSOR")) >= sensors + 3
                    and len(rec.on(f"{device}/status/switch:0")) >= statuses + 3
                )
            )
            after = rec.on(f"tele/{topic}/SENSOR")[sensors + 1 :]
            energy = [wire.tasmota_sensor(p)["ENERGY"] for p in after]
            assert all(e["Power"] == 0 for e in energy) and len({e["Total"] for e in energy}) == 1
            after = rec.on(f"{device}/status/switch:0")[statuses + 1 :]
            status = [wire.shelly_status(p) for p in after]
            assert all(s["output"] is False and s["apower"] == 0 for s in status)
            assert len({s["aenergy"]["total"] for s in status}) == 1
        await rec.wait_for(
            lambda: (
                b"Offline" in rec.on(f"tele/{topic}/LWT") and b"false" in rec.on(f"{device}/online")
            )
        )


async def test_garbage_goes_through_and_meter_carries_on(mosquitto: Mosquitto) -> None:
    """Malformed messages (an oversized one too) reach the broker; good readings continue."""
    config = config_for(mosquitto, "junk", meters=1, scenarios=(("garbage", 1),), garbage_rate=1.0)
    async with (
        wire.record(mosquitto.host, mosquitto.port, "prepaid/#") as rec,
        running(config) as community,
    ):
        base = f"prepaid/junk/{community.meters[0].meter_id}/telemetry"
        await rec.wait_for(lambda: len(rec.on(base)) >= 16)
    good, bad = 0, 0
    for payload in rec.on(base):
        try:
            wire.native_telemetry(payload)
            good += 1
        except (AssertionError, ValueError, KeyError, TypeError):
            bad += 1
    assert good >= 7 and bad >= 3


async def test_connection_per_meter_gives_each_meter_its_will(mosquitto: Mosquitto) -> None:
    """--connection-per-meter: one connection per meter, each with the meter's own will."""
    config = config_for(mosquitto, "own", meters=3, connection_per_meter=True)
    async with (
        wire.record(mosquitto.host, mosquitto.port, "prepaid/own/+/availability") as rec,
        running(config) as community,
    ):
        await rec.wait_for(lambda: len(rec.messages) == 3)
        assert len(community.links) == 3 and all(link.dedicated for link in community.links)
        # Pull one connection's plug: the broker says offline for that meter only.
        community.links[1].drop()
        victim = community.links[1].meters[0].meter_id
        await rec.wait_for(
            lambda: rec.on(f"prepaid/own/{victim}/availability")[-1:] == [b"offline"]
        )
        assert [p for t, p, _ in rec.messages if p == b"offline"] == [b"offline"]


async def test_unreachable_broker_is_one_clear_error(socket_enabled: None) -> None:
    """Nothing listening: run() raises SimulatorError naming the broker."""
    port = free_port()
    config = SimConfig(broker=Broker("127.0.0.1", port), meters=2, interval=0.2)
    with pytest.raises(
        SimulatorError, match=f"cannot connect to the MQTT broker at mqtt://127.0.0.1:{port}"
    ):
        await asyncio.wait_for(Community(config).run(), 20)


async def test_broker_restart_meters_reconnect_and_send_backlog(
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    """The broker goes away: meters keep metering; when it is back they reconnect, say online
    and send what they measured meanwhile, seq continuing without a gap."""
    broker = mosquitto_factory(persistence=False)
    config = config_for(broker, "rst", meters=2, publish_timeout=2.0)
    async with running(config) as community:
        topics = [f"prepaid/rst/{m.meter_id}/telemetry" for m in community.meters]
        async with wire.record(broker.host, broker.port, "prepaid/rst/#") as rec:
            await rec.wait_for(lambda: all(len(rec.on(t)) >= 3 for t in topics))
            last_seen = {t: telemetry(rec, t)[-1]["seq"] for t in topics}
        broker.stop()
        await asyncio.sleep(1.5)  # ~7 readings per meter while the broker is down
        assert community.snapshot().backlog > 0
        broker.start()
        async with wire.record(broker.host, broker.port, "prepaid/rst/#") as rec:
            await rec.wait_for(lambda: all(len(rec.on(t)) >= 10 for t in topics), within=20)
            for t in topics:
                rows = telemetry(rec, t)
                seqs = [r["seq"] for r in rows]
                assert seqs[0] <= last_seen[t] + 1  # nothing measured while down was lost
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            availability = [p for topic, p, _ in rec.messages if topic.endswith("/availability")]
            assert availability.count(b"online") == 2


async def test_credentials_are_used_and_a_refusal_is_clear(
    tmp_path: Path, socket_enabled: None
) -> None:
    """A broker with passwords: the right ones connect; wrong ones give one clear error."""
    broker = Mosquitto(tmp_path / "auth", persistence=False, passwords={"meters": "s3cret"})
    if os.geteuid() == 0 and "\nuser " not in broker.config.read_text():
        # As root, mosquitto drops to the `mosquitto` user and then cannot read the password
        # file in pytest's private tmp dir (newer tests/broker.py says `user root` itself).
        with broker.config.open("a") as config:
            config.write("user root\n")
    broker.start()
    try:
        auth = Broker(broker.host, broker.port, "meters", "s3cret")
        community = Community(SimConfig(broker=auth, meters=1, interval=0.2, duration=1.0))
        await asyncio.wait_for(community.run(), 20)
        assert community.stats.published >= 4 and community.stats.connect_errors == 0
        wrong = Broker(broker.host, broker.port, "meters", "wrong")
        with pytest.raises(SimulatorError, match=r"cannot connect to the MQTT broker at mqtt://"):
            await asyncio.wait_for(Community(SimConfig(broker=wrong, meters=1)).run(), 20)
    finally:
        broker.stop()
