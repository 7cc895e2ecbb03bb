"""Diagnostics of a community or a household, with credentials and household labels redacted."""

from __future__ import annotations

from typing import Any, cast

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_PASSWORD, CONF_USERNAME
from homeassistant.core import HomeAssistant

from .coordinator import PrepaidConfigEntry
from .household_entry import HouseholdConfigEntry, is_household
from .payments import DATA_WEBHOOK_ID, payments_of

# The webhook id is the notification address's secret part (anyone may post to it).
TO_REDACT = {CONF_PASSWORD, CONF_USERNAME, "label", "household", DATA_WEBHOOK_ID}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: PrepaidConfigEntry
) -> dict[str, Any]:
    """Return the entry's settings and the community's (or the household's) live state."""
    if is_household(entry):
        household = cast("HouseholdConfigEntry", entry)
        return {
            "entry": {
                "data": async_redact_data(dict(household.data), TO_REDACT),
                "options": dict(household.options),
            },
            "household": async_redact_data(household.runtime_data.diagnostics(), TO_REDACT),
        }
    payments = payments_of(hass, entry.entry_id)
    return {
        "entry": {
            "data": async_redact_data(dict(entry.data), TO_REDACT),
            "options": dict(entry.options),
        },
        "runtime": async_redact_data(entry.runtime_data.diagnostics(), TO_REDACT),
        # Counts only (orders, notices, refusals by provider and reason): no key, no body.
        "payments": None if payments is None else await payments.async_diagnostics(),
    }
