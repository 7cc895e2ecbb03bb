"""Which entities each meter gets: all of them, or the essential set of a large community."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from unittest.mock import patch

from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prepaid_meter import coordinator
from custom_components.prepaid_meter.const import CONF_METER_ENTITIES, DOMAIN
from custom_components.prepaid_meter.engine.safety import ALARM_KINDS
from tests.broker import Mosquitto
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter

ALL_KEYS = {
    ("sensor", key)
    for key in (
        "balance",
        "energy",
        "power",
        "voltage",
        "current",
        "cycle_energy",
        "cycle_cost",
        "tier",
        "price",
        "days_left",
        "today_energy",
        "today_cost",
        "month_energy",
        "month_cost",
        "tier_energy_left",
        "last_reading",
    )
} | {
    ("binary_sensor", "low_balance"),
    ("binary_sensor", "online"),
    ("binary_sensor", "supply_on"),
    ("binary_sensor", "alarm"),
    ("switch", "supply"),
    ("button", "restore_supply"),
    ("number", "low_balance_threshold"),
}
#: One binary sensor per alarm kind: created disabled with all entities, not in the essential
#: set (coordinator.ALARM_KEYS).
ALARM_KEYS = {("binary_sensor", f"alarm_{kind}") for kind in ALARM_KINDS}
ALL_KEYS |= ALARM_KEYS
#: The essential set: the balance, and the entities made on request (created disabled).
ESSENTIAL = {("sensor", "balance"), ("sensor", "energy"), ("switch", "supply")}


async def _wait(hass: HomeAssistant, predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.05)
            await hass.async_block_till_done()


def _meter_entities(
    registry: er.EntityRegistry, entry: MockConfigEntry, community_id: str
) -> dict[tuple[str, str], er.RegistryEntry]:
    """Return the meter's registry entries by (platform, key)."""
    prefix = f"prepaid/{community_id}_{METER_ID}_"
    return {
        (item.domain, item.unique_id.removeprefix(prefix)): item
        for item in er.async_entries_for_config_entry(registry, entry.entry_id)
        if item.unique_id.startswith(prefix)
    }


async def _set_up_with_meter(
    hass: HomeAssistant, entry: MockConfigEntry, mosquitto: Mosquitto, community_id: str
) -> None:
    """Set the entry up and let one meter announce itself and report once."""
    if entry.state.recoverable:
        assert await hass.config_entries.async_reload(entry.entry_id)
    else:
        assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    runtime = entry.runtime_data
    async with asyncio.timeout(10):
        await runtime.transport.wait_connected()
    async with TestMeter(mosquitto.host, mosquitto.port, community_id, METER_ID) as meter:
        await _wait(hass, lambda: METER_ID in runtime.community.meters)
        await meter.reading(1_793_584_800, "100.000")
        await _wait(hass, lambda: runtime.community.meters[METER_ID].seq == 1)
        await hass.async_block_till_done()


async def test_all_entities_in_a_small_community(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    mosquitto: Mosquitto,
    community_id: str,
    tmp_path: Path,
    entity_registry: er.EntityRegistry,
) -> None:
    """Without the option, a small community's meter gets every entity (20 enabled)."""
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    await _set_up_with_meter(hass, config_entry, mosquitto, community_id)
    found = _meter_entities(entity_registry, config_entry, community_id)
    assert set(found) == ALL_KEYS
    enabled = [key for key, item in found.items() if item.disabled_by is None]
    assert len(enabled) == coordinator.ENTITIES_PER_METER
    assert config_entry.runtime_data.entities_per_meter == coordinator.ENTITIES_PER_METER
    assert await hass.config_entries.async_unload(config_entry.entry_id)


async def test_essential_option_keeps_the_balance_and_removes_the_rest(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    mosquitto: Mosquitto,
    community_id: str,
    tmp_path: Path,
    entity_registry: er.EntityRegistry,
) -> None:
    """Choosing the essential set: the balance stays, energy and supply stay, others go."""
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    await _set_up_with_meter(hass, config_entry, mosquitto, community_id)
    assert set(_meter_entities(entity_registry, config_entry, community_id)) == ALL_KEYS

    hass.config_entries.async_update_entry(
        config_entry, options={**config_entry.options, CONF_METER_ENTITIES: "essential"}
    )
    await hass.async_block_till_done()  # the options listener reloads the entry
    await _set_up_with_meter(hass, config_entry, mosquitto, community_id)
    found = _meter_entities(entity_registry, config_entry, community_id)
    assert set(found) == ESSENTIAL
    # They existed enabled before the choice: an entity people use is not disabled under them.
    assert all(found[key].disabled_by is None for key in found)
    await hass.services.async_call(
        DOMAIN, "assign_meter", {"meter_id": METER_ID, "household": "b1-101"}, blocking=True
    )
    await hass.services.async_call(
        DOMAIN,
        "top_up",
        {"household": "b1-101", "amount": "20", "transaction_id": "budget-1"},
        blocking=True,
    )
    await hass.async_block_till_done()
    state = hass.states.get(found["sensor", "balance"].entity_id)
    assert state is not None
    assert float(state.state) == 20
    assert config_entry.runtime_data.entities_per_meter == 1
    assert await hass.config_entries.async_unload(config_entry.entry_id)


async def test_essential_option_on_a_new_meter(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    mosquitto: Mosquitto,
    community_id: str,
    tmp_path: Path,
    entity_registry: er.EntityRegistry,
) -> None:
    """A meter first heard with the essential set: balance enabled, energy and supply not."""
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(
        config_entry, options={**config_entry.options, CONF_METER_ENTITIES: "essential"}
    )
    await _set_up_with_meter(hass, config_entry, mosquitto, community_id)
    found = _meter_entities(entity_registry, config_entry, community_id)
    assert set(found) == ESSENTIAL
    assert found["sensor", "balance"].disabled_by is None
    assert found["sensor", "energy"].disabled_by is er.RegistryEntryDisabler.INTEGRATION
    assert found["switch", "supply"].disabled_by is er.RegistryEntryDisabler.INTEGRATION
    assert hass.states.get(found["switch", "supply"].entity_id) is None
    assert await hass.config_entries.async_unload(config_entry.entry_id)


async def test_large_community_by_size_keeps_what_exists(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    mosquitto: Mosquitto,
    community_id: str,
    tmp_path: Path,
    entity_registry: er.EntityRegistry,
) -> None:
    """Past ESSENTIAL_ABOVE meters the essential set is the default; registered ones stay."""
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    power = entity_registry.async_get_or_create(
        "sensor",
        DOMAIN,
        f"prepaid/{community_id}_{METER_ID}_power",
        config_entry=config_entry,
    )
    with patch.object(coordinator, "ESSENTIAL_ABOVE", -1):  # any community counts as large
        await _set_up_with_meter(hass, config_entry, mosquitto, community_id)
        found = _meter_entities(entity_registry, config_entry, community_id)
        assert set(found) == ESSENTIAL | {("sensor", "power")}
        assert found["sensor", "power"].entity_id == power.entity_id
        assert hass.states.get(power.entity_id) is not None
        assert config_entry.runtime_data.meter_entities == "essential"
        assert await hass.config_entries.async_unload(config_entry.entry_id)


@pytest.mark.parametrize(("budget", "chosen"), [(20, "all"), (19, "essential")])
async def test_the_entity_budget_decides_below_essential_above(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    mosquitto: Mosquitto,
    community_id: str,
    tmp_path: Path,
    budget: int,
    chosen: str,
) -> None:
    """Fewer meters than ESSENTIAL_ABOVE get the essential set once their entities pass
    ENTITY_BUDGET (one meter of 20 entities: all within 20, essential within 19)."""
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    await _set_up_with_meter(hass, config_entry, mosquitto, community_id)  # the ledger knows it
    with patch.object(coordinator, "ENTITY_BUDGET", budget):
        assert await hass.config_entries.async_reload(config_entry.entry_id)  # decided at setup
        await hass.async_block_till_done()
        assert len(config_entry.runtime_data.community.meters) == 1
        assert coordinator.ENTITIES_PER_METER == 20
        assert config_entry.runtime_data.meter_entities == chosen
        assert await hass.config_entries.async_unload(config_entry.entry_id)
