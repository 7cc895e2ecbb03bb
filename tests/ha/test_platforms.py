"""Snapshots of every platform after a fixed sequence of readings and money movements."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from unittest.mock import patch

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, snapshot_platform
from syrupy.assertion import SnapshotAssertion

from custom_components.prepaid_meter.const import DOMAIN
from tests.broker import Mosquitto
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter

# 2026-11-02 10:00 Shanghai: fixed times, so states do not depend on when the test runs.
T0 = 1793584800


async def _wait(hass: HomeAssistant, predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.05)
            await hass.async_block_till_done()


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
@pytest.mark.parametrize(
    "platform",
    [Platform.SENSOR, Platform.BINARY_SENSOR, Platform.SWITCH, Platform.BUTTON, Platform.NUMBER],
)
async def test_platform_snapshot(
    hass: HomeAssistant,
    mosquitto: Mosquitto,
    tmp_path: Path,
    snapshot: SnapshotAssertion,
    entity_registry: er.EntityRegistry,
    platform: Platform,
) -> None:
    """Each platform's entities and states, for one assigned meter with a known history."""
    community = f"snap{platform.value.replace('_', '')}"
    entry = MockConfigEntry(
        domain=DOMAIN,
        entry_id=f"snapshot_{platform.value}",
        title="Snapshot community",
        unique_id=f"127.0.0.1/{community}",
        data={
            "host": mosquitto.host,
            "port": mosquitto.port,
            "prefix": "prepaid",
            "community_id": community,
            "community_name": "Snapshot community",
            "currency": "CNY",
            "tariff": "beijing_monthly",
        },
        options={"friendly_start": "00:00", "friendly_end": "00:00", "friendly_weekends": False},
    )
    hass.config.config_dir = str(tmp_path)
    entry.add_to_hass(hass)
    with patch("custom_components.prepaid_meter.entry.PLATFORMS", [platform]):
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        runtime = entry.runtime_data
        async with asyncio.timeout(10):
            await runtime.transport.wait_connected()
        async with TestMeter(mosquitto.host, mosquitto.port, community, METER_ID) as meter:
            await _wait(hass, lambda: METER_ID in runtime.community.meters)
            await hass.services.async_call(
                DOMAIN,
                "assign_meter",
                {"meter_id": METER_ID, "household": "b3-501", "label": "Household 3-501"},
                blocking=True,
            )
            await hass.services.async_call(
                DOMAIN,
                "top_up",
                {"household": "b3-501", "amount": "30", "transaction_id": "snap-1"},
                blocking=True,
            )
            await meter.reading(T0, "100.000")
            await meter.reading(T0 + 3600, "102.500")
            await meter.reading(T0 + 7200, "105.000")
            await _wait(hass, lambda: runtime.community.meters[METER_ID].seq == 3)
            await runtime.async_flush()
            await hass.async_block_till_done()
            await snapshot_platform(hass, entity_registry, snapshot, entry.entry_id)
        assert await hass.config_entries.async_unload(entry.entry_id)
