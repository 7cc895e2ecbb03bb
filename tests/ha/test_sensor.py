"""Sensors: each meter's figures from the engine's view, the community's from its totals.

The service is mocked at its seam (tests/ha/seam.py); the engine behind it is real, so the
money here is the engine's own pricing of the readings a test hands it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
import time
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from homeassistant.const import STATE_UNAVAILABLE, STATE_UNKNOWN, Platform
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from custom_components.prepaid_meter.const import CONF_MEASUREMENT_INTERVAL

if TYPE_CHECKING:
    from tests.ha.seam import Seam

pytest_plugins = ["tests.ha.seam"]

SHANGHAI = ZoneInfo("Asia/Shanghai")  # the flat preset's zone


@pytest.fixture
def platforms() -> list[Platform]:
    """Set up the sensor platform only."""
    return [Platform.SENSOR]


def _value(seam: Seam, key: str) -> str:
    return seam.state(Platform.SENSOR, key).state


def _community(seam: Seam, key: str) -> str:
    state = seam.hass.states.get(seam.community_entity_id(Platform.SENSOR, key))
    assert state is not None
    return state.state


async def _later(hass: HomeAssistant, seconds: float) -> None:
    """Let the timers due within `seconds` run."""
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=seconds))
    await hass.async_block_till_done()


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_meter_figures_from_two_readings(seam: Seam) -> None:
    """2.5 kWh at the flat 0.4883: 1.22 billed of 50.00; every figure from the same view."""
    await seam.household()
    now = int(time.time())
    await seam.reading(now - 600, "100.000")
    await seam.reading(now - 300, "102.500")
    assert _value(seam, "balance") == "48.78"  # 50 - 1.22075, to the cent
    assert _value(seam, "energy") == "102.500"
    assert _value(seam, "power") == "850.0"
    assert _value(seam, "voltage") == "229.8"
    assert _value(seam, "current") == "3.9"
    assert _value(seam, "cycle_energy") == "2.500"
    assert _value(seam, "cycle_cost") == "1.22"
    assert _value(seam, "tier") == "1"
    assert _value(seam, "price") == "0.4883"
    assert _value(seam, "tier_energy_left") == STATE_UNKNOWN  # one tier: no limit
    assert _value(seam, "days_left") == STATE_UNKNOWN  # less than a day of use known
    assert _value(seam, "last_reading") == datetime.fromtimestamp(now - 300, UTC).isoformat()
    local = datetime.fromtimestamp(now - 300, SHANGHAI)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if datetime.fromtimestamp(now - 600, SHANGHAI).date() == local.date():  # not at midnight
        assert _value(seam, "today_energy") == "2.500"
        assert _value(seam, "today_cost") == "1.22"
        today = seam.state(Platform.SENSOR, "today_cost")
        assert today.attributes["last_reset"] == day.astimezone(UTC).isoformat()
    month = seam.state(Platform.SENSOR, "month_cost").attributes["last_reset"]
    assert month == day.replace(day=1).astimezone(UTC).isoformat()
    units = {
        key: seam.state(Platform.SENSOR, key).attributes.get("unit_of_measurement")
        for key in ("balance", "cycle_cost", "price", "energy", "power")
    }
    assert units == {
        "balance": "CNY",
        "cycle_cost": "CNY",
        "price": "CNY/kWh",
        "energy": "kWh",
        "power": "W",
    }


async def test_an_unassigned_meter_has_no_money(seam: Seam) -> None:
    """Before a household: its energy and power show, its balance and cost do not."""
    await seam.announce()
    now = int(time.time())
    await seam.reading(now - 600, "100.000")
    await seam.reading(now - 300, "102.500")
    assert _value(seam, "energy") == "102.500"
    assert _value(seam, "balance") == STATE_UNKNOWN
    assert _value(seam, "cycle_cost") == STATE_UNKNOWN


async def test_community_figures_on_the_publish_timer(seam: Seam) -> None:
    """Totals, arrears and top-ups are written every few seconds, not on every reading."""
    await seam.household()
    await seam.announce("000012345679")
    await seam.assign("000012345679", "b3-502", "Household 3-502")
    await _later(seam.hass, 3)
    assert _community(seam, "total_balance") == "50.00"
    assert _community(seam, "top_ups_today") == "50"
    assert _community(seam, "arrears_electricity") == "0"
    now = int(time.time())
    await seam.reading(now - 120, "100.000", "000012345679")
    await seam.reading(now - 60, "110.000", "000012345679")  # b3-502: 4.883 in debt
    assert _community(seam, "total_balance") == "50.00"
    await _later(seam.hass, 3)
    assert _community(seam, "total_balance") == "45.12"
    arrears = seam.hass.states.get(seam.community_entity_id(Platform.SENSOR, "arrears_electricity"))
    assert arrears is not None
    assert arrears.state == "1"
    assert arrears.attributes["households"] == [
        {"household": "Household 3-502", "account_id": "b3-502", "balance": "-4.88"}
    ]


async def test_fee_collection_rate_is_the_services(seam: Seam) -> None:
    """The rate is asked of the service at start and every minute; None is no fees at all."""
    assert _community(seam, "fee_collection_rate") == STATE_UNKNOWN
    seam.service.collection_rate.assert_awaited_once_with()
    seam.service.collection_rate.return_value = 87.5
    await _later(seam.hass, 61)
    assert _community(seam, "fee_collection_rate") == "87.5"
    assert seam.service.collection_rate.await_count == 2


async def test_unavailable_while_the_broker_is_away(seam: Seam) -> None:
    """Meter and community sensors alike, until the link is back."""
    await seam.household()
    await seam.connection(False, "connection refused")
    assert _value(seam, "balance") == STATE_UNAVAILABLE
    assert _community(seam, "total_balance") == STATE_UNAVAILABLE
    await seam.connection(True)
    assert _value(seam, "balance") == "50.00"
    assert _community(seam, "total_balance") == "50.00"


async def test_measurement_interval_option_writes_measurements_on_a_timer(seam: Seam) -> None:
    """With a measurement interval, a reading's figures wait for the next slice of writes.

    Changing the option reloads the entry: the mocked service is built and started anew.
    """
    hass = seam.hass
    await seam.household()
    hass.config_entries.async_update_entry(
        seam.entry, options={**seam.entry.options, CONF_MEASUREMENT_INTERVAL: 60}
    )
    await hass.async_block_till_done()
    assert seam.service.start.await_count == 2
    assert seam.service.stop.await_count == 1
    assert _value(seam, "balance") == "50.00"  # the ledger's balance, read at the new start
    now = int(time.time())
    await seam.reading(now - 600, "100.000")
    await seam.reading(now - 300, "102.500")
    assert _value(seam, "balance") == "50.00"
    assert seam.community.households["b3-501"].electricity < 50  # billed in the engine
    await _later(hass, 6)
    assert _value(seam, "balance") == "48.78"
