"""What the action modules share: which community a call is for, who may ask, which household.

services.py, payment_actions.py and reconcile_actions.py each register actions of a
community entry; a call names the entry (`config_entry_id`, optional while one community is
loaded) and a household directly or by its meter.
"""

from __future__ import annotations

from typing import Final

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.exceptions import Unauthorized

from .const import DOMAIN
from .coordinator import PrepaidConfigEntry, PrepaidRuntime, async_actor
from .engine.actor import Actor
from .household_entry import is_household
from .texts import translated_error

__all__ = [
    "ATTR_CONFIG_ENTRY_ID",
    "ATTR_HOUSEHOLD",
    "ATTR_METER_ID",
    "account_of",
    "async_operator",
    "call_runtime",
]

ATTR_CONFIG_ENTRY_ID: Final = "config_entry_id"
ATTR_HOUSEHOLD: Final = "household"
ATTR_METER_ID: Final = "meter_id"


def call_runtime(hass: HomeAssistant, call: ServiceCall) -> PrepaidRuntime:
    """Return the community runtime named by config_entry_id, or the only one loaded."""
    entry_id = call.data.get(ATTR_CONFIG_ENTRY_ID)
    entries: list[PrepaidConfigEntry] = [
        e
        for e in hass.config_entries.async_entries(DOMAIN)
        if e.state is ConfigEntryState.LOADED and not is_household(e)
    ]
    if entry_id is not None:
        entries = [e for e in entries if e.entry_id == entry_id]
    if len(entries) != 1:
        raise translated_error("entry_not_loaded", entry=str(entry_id or ""))
    return entries[0].runtime_data


async def async_operator(hass: HomeAssistant, call: ServiceCall) -> Actor:
    """Return the operator who asks (an administrator, or an automation); refuse anyone else.

    Money moves only on an operator's request, and the operator is recorded with it.
    """
    actor = await async_actor(hass, call.context)
    if not actor.is_operator:
        raise Unauthorized(context=call.context)
    return actor


def account_of(runtime: PrepaidRuntime, call: ServiceCall) -> str:
    """Return the household a call names, directly or by its meter; refuse an unknown one."""
    household = call.data.get(ATTR_HOUSEHOLD)
    if household is not None:
        if household not in runtime.community.households:
            raise translated_error("unknown_household", household=str(household))
        return str(household)
    meter_id = call.data.get(ATTR_METER_ID)
    if meter_id is None:
        raise translated_error("household_or_meter_required")
    meter = runtime.community.meters.get(meter_id)
    if meter is None:
        raise translated_error("unknown_meter", meter_id=str(meter_id)[:80])
    if meter.account_id is None:
        raise translated_error("meter_unassigned", meter_id=str(meter_id))
    return meter.account_id
