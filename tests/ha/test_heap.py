"""The heap of a Home Assistant holding a large community is frozen, and reclaimed nightly."""

from __future__ import annotations

from datetime import timedelta
import gc
from pathlib import Path
from unittest.mock import patch
import weakref

from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
)

from custom_components.prepaid_meter.heap import RECLAIM_AT, async_hold_frozen


class _Node:
    """An object that can be weakly referenced and can reference itself."""

    def __init__(self) -> None:
        self.me: _Node | None = None


def _frozen_cycle() -> tuple[list[_Node], weakref.ref[_Node]]:
    node = _Node()
    node.me = node  # a reference cycle: only the collector frees it
    return [node], weakref.ref(node)


async def test_large_community_freezes_the_heap_until_unloaded(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """A community above the size limit freezes the heap at start; unloading unfreezes it."""
    assert gc.get_freeze_count() == 0
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    with patch("custom_components.prepaid_meter.FREEZE_ABOVE", -1):
        assert await hass.config_entries.async_setup(config_entry.entry_id)
        await hass.async_block_till_done()
    assert gc.get_freeze_count() > 0
    assert await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()
    assert gc.get_freeze_count() == 0


async def test_small_community_leaves_the_collector_alone(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """A community of a few meters does not touch the collector."""
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    assert gc.get_freeze_count() == 0
    assert await hass.config_entries.async_unload(config_entry.entry_id)


async def test_nightly_reclaim_frees_a_cycle_that_was_frozen(hass: HomeAssistant) -> None:
    """A cycle frozen while in use is freed by the nightly unfreeze-collect-freeze."""
    holder, ref = _frozen_cycle()
    release_a = async_hold_frozen(hass, "a")
    release_b = async_hold_frozen(hass, "b")  # two communities share one frozen heap
    try:
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
