"""Placeholder until the real config flow lands (owned by the config-flow work)."""

from __future__ import annotations

from homeassistant.config_entries import ConfigFlow

from .const import DOMAIN


class PrepaidMeterConfigFlow(ConfigFlow, domain=DOMAIN):
    """Config flow placeholder."""

    VERSION = 1
