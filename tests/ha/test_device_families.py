"""Communities of Tasmota and Shelly devices, end to end on the real broker.

A device publishes what the real firmware publishes (see engine/profiles.py for the sources);
the integration bills it, and cuts it with the firmware's own command when credit runs out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from decimal import Decimal
import json
from pathlib import Path
import time
import uuid
from zoneinfo import ZoneInfo

import aiomqtt
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prepaid_meter.const import CONF_PROFILE, DOMAIN
from tests.broker import Mosquitto

SHANGHAI = ZoneInfo("Asia/Shanghai")  # the `flat` preset's zone: Tasmota's Time is read in it


async def wait_until(hass: HomeAssistant, predicate: Callable[[], bool], limit: float = 10) -> None:
    """Let the loop run until predicate() holds."""
    async with asyncio.timeout(limit):
        while not predicate():
            await asyncio.sleep(0.05)
            await hass.async_block_till_done()


@pytest.fixture
async def device(mosquitto: Mosquitto) -> AsyncIterator[tuple[aiomqtt.Client, str]]:
    """Return a connected MQTT client playing one device, and a device name of this test."""
    name = f"dev{uuid.uuid4().hex[:10]}"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=name) as client:
        yield client, name


async def setup_family(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path, profile: str
) -> MockConfigEntry:
    """Set up the test community with meters of the given family."""
    hass.config.config_dir = str(tmp_path)
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=config_entry.title,
        unique_id=config_entry.unique_id,
        data={**config_entry.data, CONF_PROFILE: profile},
        options=dict(config_entry.options),
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    async with asyncio.timeout(10):
        await entry.runtime_data.transport.wait_connected()
    return entry


async def assign_and_top_up(hass: HomeAssistant, entry: MockConfigEntry, meter_id: str) -> None:
    """Wait for the device to be heard, give it a household and 10 CNY."""
    await wait_until(hass, lambda: meter_id in entry.runtime_data.community.meters)
    for service, data in (
        ("assign_meter", {"meter_id": meter_id, "household": "h1", "label": "Household 1"}),
        ("top_up", {"household": "h1", "amount": "10", "transaction_id": "tx-1"}),
    ):
        await hass.services.async_call(DOMAIN, service, data, blocking=True)


def balance(hass: HomeAssistant, entry: MockConfigEntry, meter_id: str) -> str | None:
    unique_id = f"{entry.runtime_data.community_identifier}_{meter_id}_balance"
    entity_id = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, unique_id)
    state = hass.states.get(entity_id) if entity_id else None
    return None if state is None else state.state


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    """Return the next message the device receives."""
    async with asyncio.timeout(10):
        async for message in client.messages:
            return message
    raise AssertionError("the connection ended")


async def test_tasmota_community_bills_and_cuts_with_power_off(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    tmp_path: Path,
    device: tuple[aiomqtt.Client, str],
) -> None:
    """tele/<topic>/SENSOR readings bill; exhausted credit sends cmnd/<topic>/POWER OFF."""
    client, name = device
    entry = await setup_family(hass, config_entry, tmp_path, "tasmota")
    await client.subscribe(f"cmnd/{name}/POWER", qos=1)
    await client.publish(f"tele/{name}/LWT", b"Online", qos=1)
    now = int(time.time())

    async def sensor(ts: int, total: float) -> None:
        local = datetime.fromtimestamp(ts, SHANGHAI).strftime("%Y-%m-%dT%H:%M:%S")  # no zone
        body = {"Time": local, "ENERGY": {"Total": total, "Power": 880, "Voltage": 220}}
        await client.publish(f"tele/{name}/SENSOR", json.dumps(body).encode(), qos=1)

    await sensor(now - 600, 100.0)
    await assign_and_top_up(hass, entry, name)
    await sensor(now - 300, 101.0)  # 1 kWh at the flat price
    meter = entry.runtime_data.community.meters[name]
    await wait_until(hass, lambda: meter.ts == now - 300)  # the zone-less Time read in Shanghai
    household = entry.runtime_data.community.households["h1"]
    assert 0 < household.electricity < 10
    await entry.runtime_data._async_write_measurements(everything=True)
    await hass.async_block_till_done()
    assert balance(hass, entry, name) == str(household.electricity.quantize(Decimal("0.01")))

    await sensor(now - 60, 200.0)  # 99 kWh more: far below the emergency credit
    message = await next_message(client)
    assert (message.topic.value, message.payload) == (f"cmnd/{name}/POWER", b"OFF")
    await client.publish(f"stat/{name}/POWER", b"OFF", qos=1)  # Tasmota reports the new state
    await wait_until(hass, lambda: meter.reported_relay == "off")
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_shelly_community_bills_and_cuts_with_switch_set(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    tmp_path: Path,
    device: tuple[aiomqtt.Client, str],
) -> None:
    """status/switch:0 readings (Wh) bill; exhausted credit sends Switch.Set on=false; acked."""
    client, name = device
    entry = await setup_family(hass, config_entry, tmp_path, "shelly")
    await client.subscribe(f"{name}/rpc", qos=1)
    await client.publish(f"{name}/online", b"true", qos=1)
    now = int(time.time())

    async def status(ts: int, wh: float) -> None:
        body = {
            "id": 0,
            "output": True,
            "apower": 880.0,
            "voltage": 220.1,
            "aenergy": {"total": wh, "minute_ts": ts},
        }
        await client.publish(f"{name}/status/switch:0", json.dumps(body).encode(), qos=1)

    await status(now - 600, 100_000.0)
    await assign_and_top_up(hass, entry, name)
    await status(now - 300, 101_000.0)  # 1 kWh
    meter = entry.runtime_data.community.meters[name]
    await wait_until(hass, lambda: meter.ts == now - 300)
    assert 0 < entry.runtime_data.community.households["h1"].electricity < 10

    await status(now - 60, 200_000.0)
    message = await next_message(client)
    frame = json.loads(message.payload)
    assert frame["method"] == "Switch.Set"
    assert frame["params"] == {"id": 0, "on": False}
    answer = {"id": frame["id"], "src": name, "dst": frame["src"], "result": {"was_on": True}}
    await client.publish(f"{frame['src']}/rpc", json.dumps(answer).encode(), qos=1)
    await wait_until(hass, lambda: meter.reported_relay == "off")
    status_of = entry.runtime_data.commands.status(name)
    assert status_of is None or status_of.desired == "off"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_unknown_profile_in_stored_data_is_a_setup_error(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """An entry whose stored meter type is unknown does not load, with a translated error."""
    hass.config.config_dir = str(tmp_path)
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id=config_entry.unique_id,
        data={**config_entry.data, CONF_PROFILE: "zigbee"},
    )
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.error_reason_translation_key == "invalid_profile"
