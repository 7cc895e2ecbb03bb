"""Prepaid Meter: smart prepaid electricity meters of a residential community.

The Home Assistant side (config entries, platforms, actions) lives in `entry.py` and the
modules beside it; the domain logic lives in `engine/`, which imports nothing from Home
Assistant. Importing the engine imports this package first, so this file pulls in the Home
Assistant side only when Home Assistant is running in this interpreter (its loader imports
`homeassistant` long before any integration, and imports integrations in its import
executor, so nothing here is imported in the event loop). A program that uses only the
engine (the `bill` command, the simulator's checks, other hosts) then loads no Home
Assistant module: tests/engine/test_standalone.py checks it in a fresh interpreter.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING or "homeassistant" in sys.modules:
    from .entry import (
        CONFIG_SCHEMA as CONFIG_SCHEMA,
        PLATFORMS as PLATFORMS,
        async_remove_config_entry_device as async_remove_config_entry_device,
        async_remove_entry as async_remove_entry,
        async_setup as async_setup,
        async_setup_entry as async_setup_entry,
        async_unload_entry as async_unload_entry,
        resolve_tariff as resolve_tariff,
        transport_config as transport_config,
    )
