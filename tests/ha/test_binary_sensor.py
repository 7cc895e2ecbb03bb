"""Each meter's binary sensors: low balance, online, supply on and one per alarm kind, from the
engine's state.

The service is mocked at its seam (tests/ha/seam.py); the engine behind it is real.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from homeassistant.const import STATE_UNAVAILABLE, Platform
from homeassistant.helpers import entity_registry as er
import pytest

from custom_components.prepaid_meter.engine.safety import ALARM_KINDS

if TYPE_CHECKING:
    from tests.ha.seam import Seam

pytest_plugins = ["tests.ha.seam"]


@pytest.fixture
def platforms() -> list[Platform]:
    """Set up the binary sensor platform only."""
    return [Platform.BINARY_SENSOR]


def _on(seam: Seam, key: str) -> str:
    return seam.state(Platform.BINARY_SENSOR, key).state


async def test_low_balance_at_the_threshold_and_cleared_by_a_top_up(seam: Seam) -> None:
    """Low below the first warning level (20.00); a top-up above it clears it."""
    await seam.household()
    assert _on(seam, "low_balance") == "off"
    now = int(time.time())
    await seam.reading(now - 120, "100.000")
    await seam.reading(now - 60, "161.000")  # 61 kWh at 0.4883: 29.79, 20.21 left
    assert _on(seam, "low_balance") == "off"
    await seam.reading(now - 30, "162.000")  # 0.49 more: 19.72
    assert _on(seam, "low_balance") == "on"
    await seam.top_up("5", "seam-2")  # 24.72
    assert _on(seam, "low_balance") == "off"
    assert seam.state(Platform.BINARY_SENSOR, "low_balance").attributes["device_class"] == (
        "problem"
    )


async def test_low_balance_of_an_unassigned_meter_is_unknown(seam: Seam) -> None:
    """No household, no balance: neither low nor not."""
    await seam.announce()
    assert _on(seam, "low_balance") == "unknown"


async def test_online_from_the_meter_and_available_without_the_broker(seam: Seam) -> None:
    """Online follows the meter's messages and last will; it alone stays when the link goes."""
    await seam.announce()
    assert _on(seam, "online") == "off"  # nothing heard yet
    await seam.availability("000012345678", online=True)
    assert _on(seam, "online") == "on"
    await seam.availability("000012345678", online=False)
    assert _on(seam, "online") == "off"
    await seam.reading(int(time.time()) - 60, "1.000")  # a reading says it is back
    assert _on(seam, "online") == "on"
    await seam.connection(False, "connection lost")
    assert _on(seam, "online") == "on"
    assert _on(seam, "supply_on") == STATE_UNAVAILABLE
    assert _on(seam, "low_balance") == STATE_UNAVAILABLE


async def test_supply_on_as_the_meter_reports_it(seam: Seam) -> None:
    """Supply on is what the meter reports; until it reports, what is wanted."""
    await seam.household()
    assert _on(seam, "supply_on") == "on"  # wanted on, nothing reported
    now = int(time.time())
    await seam.reading(now - 120, "100.000", relay="off")  # off by its own button
    assert _on(seam, "supply_on") == "off"
    await seam.reading(now - 90, "100.000", relay="on")
    assert _on(seam, "supply_on") == "on"
    await seam.reading(now - 60, "230.000")  # credit cut: wanted off, still reported on
    assert seam.community.meters["000012345678"].desired_relay == "off"
    assert _on(seam, "supply_on") == "on"
    await seam.reading(now - 30, "230.000", relay="off")  # the meter carried it out
    assert _on(seam, "supply_on") == "off"


async def test_alarm_sensors_are_created_disabled(seam: Seam) -> None:
    """One binary sensor per alarm kind, created disabled (an operator enables those needed)."""
    await seam.household()
    registry = er.async_get(seam.hass)
    for kind in ALARM_KINDS:
        entity = registry.async_get(seam.entity_id(Platform.BINARY_SENSOR, f"alarm_{kind}"))
        assert entity is not None
        assert entity.disabled_by is er.RegistryEntryDisabler.INTEGRATION, kind
        assert entity.translation_key == f"alarm_{kind}"


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_an_alarm_sensor_is_on_for_its_episode(seam: Seam) -> None:
    """A tamper report opens the episode (on), the meter's Alarm sensor with it (its kinds in
    `alarms`); tamper is interference: quiet readings clear it after a day, not after the
    15 minutes of a hazard. A meter not heard for an hour is offline (on)."""
    await seam.household()
    start = int(time.time()) - 2 * 86_400
    await seam.reading(start, "100.000")
    assert _on(seam, "alarm_tamper") == "off"
    assert _on(seam, "alarm") == "off"
    assert seam.state(Platform.BINARY_SENSOR, "alarm").attributes["alarms"] == []
    await seam.reading(start + 60, "100.000", events=("cover_open",))
    assert _on(seam, "alarm_tamper") == "on"
    assert _on(seam, "alarm") == "on"
    assert seam.state(Platform.BINARY_SENSOR, "alarm").attributes["alarms"] == ["tamper"]
    tamper = seam.state(Platform.BINARY_SENSOR, "alarm_tamper")
    assert tamper.attributes["device_class"] == "tamper"
    assert seam.state(Platform.BINARY_SENSOR, "alarm_overload").attributes["device_class"] == (
        "safety"
    )
    assert _on(seam, "alarm_overload") == "off"
    await seam.reading(start + 60 + 1800, "100.000")  # a hazard would have ended
    assert _on(seam, "alarm_tamper") == "on"
    for hour in range(1, 25):  # a quiet day, a reading an hour
        await seam.reading(start + 60 + hour * 3600, "100.000")
    assert _on(seam, "alarm_tamper") == "off"
    assert _on(seam, "alarm") == "off"
    assert _on(seam, "alarm_offline") == "off"
    events = await seam.tick(int(time.time()) + 3600)  # an hour after it was last heard
    assert [(e.kind, e.data["type"]) for e in events] == [("alarm", "offline")]
    assert _on(seam, "alarm_offline") == "on"
    assert seam.state(Platform.BINARY_SENSOR, "alarm_offline").attributes["device_class"] == (
        "problem"
    )
