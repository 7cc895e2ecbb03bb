"""Diagnostics of a community, with broker credentials and household labels redacted."""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_PASSWORD, CONF_USERNAME
from homeassistant.core import HomeAssistant

from .coordinator import PrepaidConfigEntry

TO_REDACT = {CONF_PASSWORD, CONF_USERNAME, "label", "household"}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: PrepaidConfigEntry
) -> dict[str, Any]:
    """Return the entry's settings and the community's live state."""
    return {
        "entry": {
            "data": async_redact_data(dict(entry.data), TO_REDACT),
            "options": dict(entry.options),
        },
        "runtime": async_redact_data(entry.runtime_data.diagnostics(), TO_REDACT),
    }
