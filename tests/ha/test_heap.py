"""The heap of a Home Assistant holding a large community is frozen, and reclaimed nightly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
import gc
from pathlib import Path
from unittest.mock import patch
import weakref

from homeassistant.const import EVENT_HOMEASSISTANT_STARTED
from homeassistant.core import CoreState, HomeAssistant
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
)

from custom_components.prepaid_meter import coordinator
from custom_components.prepaid_meter.heap import RECLAIM_AT, SETTLE_S, async_hold_frozen
from tests.broker import Mosquitto
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter

LIMIT = "custom_components.prepaid_meter.coordinator.FREEZE_ABOVE"


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """Each test starts and ends with nothing frozen.

    The current Home Assistant's test harness freezes the heap once per module; these tests
    make "someone else's" freeze themselves where they need one.
    """
    gc.unfreeze()
    yield
    gc.unfreeze()


class _Node:
    """An object that can be weakly referenced and can reference itself."""

    def __init__(self) -> None:
        self.me: _Node | None = None


def _frozen_cycle() -> tuple[list[_Node], weakref.ref[_Node]]:
    node = _Node()
    node.me = node  # a reference cycle: only the collector frees it
    return [node], weakref.ref(node)


async def settle(hass: HomeAssistant) -> None:
    """Let the time between a community joining and the freeze pass."""
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=SETTLE_S + 1))
    await hass.async_block_till_done()


async def setup(hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path) -> None:
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()


async def test_large_community_freezes_the_heap_until_unloaded(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """Above the size limit the heap is frozen once things settle; unloading unfreezes it."""
    with patch(LIMIT, -1):
        await setup(hass, config_entry, tmp_path)
        assert gc.get_freeze_count() == 0  # not inside the setup: a minute later
        await settle(hass)
    assert gc.get_freeze_count() > 0
    assert await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()
    assert gc.get_freeze_count() == 0


async def test_small_community_leaves_the_collector_alone(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """A community of a few meters does not touch the collector."""
    await setup(hass, config_entry, tmp_path)
    await settle(hass)
    assert gc.get_freeze_count() == 0
    assert await hass.config_entries.async_unload(config_entry.entry_id)


async def test_community_that_grows_past_the_limit_freezes_then(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    tmp_path: Path,
    mosquitto: Mosquitto,
    community_id: str,
) -> None:
    """Meters discovered while running count: the minute tick holds the heap once it is large."""
    with patch(LIMIT, 0):
        await setup(hass, config_entry, tmp_path)
        runtime = config_entry.runtime_data
        async with asyncio.timeout(10):
            await runtime.transport.wait_connected()
        await settle(hass)
        assert gc.get_freeze_count() == 0  # no meter yet: not large
        async with TestMeter(mosquitto.host, mosquitto.port, community_id, METER_ID):
            async with asyncio.timeout(10):
                while METER_ID not in runtime.community.meters:
                    await asyncio.sleep(0.05)
                    await hass.async_block_till_done()
            await runtime._async_tick(None)
            await settle(hass)
            assert gc.get_freeze_count() > 0
            assert await hass.config_entries.async_unload(config_entry.entry_id)
    assert gc.get_freeze_count() == 0


async def test_freeze_waits_for_home_assistant_to_start(hass: HomeAssistant) -> None:
    """Held while Home Assistant starts, the heap is frozen a while after it has started."""
    hass.set_state(CoreState.starting)
    release = async_hold_frozen(hass, "a")
    try:
        await settle(hass)
        assert gc.get_freeze_count() == 0
        hass.set_state(CoreState.running)
        hass.bus.async_fire(EVENT_HOMEASSISTANT_STARTED)
        await hass.async_block_till_done()
        assert gc.get_freeze_count() == 0
        await settle(hass)
        assert gc.get_freeze_count() > 0
    finally:
        release()
    assert gc.get_freeze_count() == 0


async def test_nightly_reclaim_frees_a_cycle_that_was_frozen(hass: HomeAssistant) -> None:
    """A cycle frozen while in use is freed by the nightly unfreeze-collect-freeze."""
    holder, ref = _frozen_cycle()
    release_a = async_hold_frozen(hass, "a")
    release_b = async_hold_frozen(hass, "b")  # two communities share one frozen heap
    try:
        await settle(hass)
        assert gc.get_freeze_count() > 0
        holder.clear()  # now garbage, but frozen: a collection does not see it
        gc.collect()
        assert ref() is not None
        night = dt_util.now().replace(
            hour=RECLAIM_AT[0], minute=RECLAIM_AT[1], second=0, microsecond=0
        ) + timedelta(days=1)
        async_fire_time_changed(hass, night)
        await hass.async_block_till_done()
        assert ref() is None
        assert gc.get_freeze_count() > 0  # frozen again
        release_a()
        assert gc.get_freeze_count() > 0  # "b" still holds it
    finally:
        release_a()
        release_b()
    assert gc.get_freeze_count() == 0


async def test_a_freeze_made_by_someone_else_is_never_unfrozen(hass: HomeAssistant) -> None:
    """What was frozen before our first freeze stays frozen: at night and at release too."""
    theirs, ref = _frozen_cycle()
    gc.freeze()  # someone else's freeze, holding a cycle that is about to become garbage
    theirs.clear()
    release = async_hold_frozen(hass, "a")
    try:
        await settle(hass)
        night = dt_util.now().replace(
            hour=RECLAIM_AT[0], minute=RECLAIM_AT[1], second=0, microsecond=0
        ) + timedelta(days=1)
        async_fire_time_changed(hass, night)
        await hass.async_block_till_done()
        gc.collect()
        assert ref() is not None  # the nightly reclaim did not unfreeze it
    finally:
        release()
    assert gc.get_freeze_count() > 0
    gc.collect()
    assert ref() is not None  # nor did the release
    gc.unfreeze()
    gc.collect()
    assert ref() is None  # it was garbage all along, kept only by that freeze


async def test_a_community_past_home_assistants_entity_limit_raises_one_repair(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """Where Home Assistant caps entities per entry (2026), a community past it is told so."""
    from homeassistant.helpers import issue_registry as ir

    from custom_components.prepaid_meter import compat

    await setup(hass, config_entry, tmp_path)
    runtime = config_entry.runtime_data
    issue_id = f"too_many_entities_{config_entry.entry_id}"
    with patch.object(compat, "ENTITY_LIMIT", None):  # 2025.4: no limit
        runtime.async_check_size()
    assert ir.async_get(hass).async_get_issue("prepaid_meter", issue_id) is None
    known = {f"m{n}": None for n in range(3)}
    with patch.object(compat, "ENTITY_LIMIT", 30), patch.dict(runtime.community.meters, known):
        runtime.async_check_size()  # 3 meters x 20 entities > 30
    issue = ir.async_get(hass).async_get_issue("prepaid_meter", issue_id)
    assert issue is not None
    assert issue.translation_placeholders == {
        "meters": "3",
        "limit": "30",
        "per_meter": str(coordinator.ENTITIES_PER_METER),
        "fits": "1",
        "community": "Test community",
    }
    assert await hass.config_entries.async_unload(config_entry.entry_id)
