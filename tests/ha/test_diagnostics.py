"""Diagnostics of a community: live state for debugging, no secrets, no household names."""

from __future__ import annotations

import asyncio
from decimal import Decimal
import json
from pathlib import Path
import time
from typing import Any

from homeassistant.const import CONF_PASSWORD, CONF_USERNAME
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.prepaid_meter.const import DOMAIN
from custom_components.prepaid_meter.diagnostics import async_get_config_entry_diagnostics
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter
from tests.ha.test_init import call, setup_household, wait_until

REDACTED = "**REDACTED**"


async def test_diagnostics_redact_credentials_and_labels(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    config_entry: MockConfigEntry,
    meter: TestMeter,
    tmp_path: Path,
) -> None:
    """Broker user name and password and household labels never leave the instance."""
    # The session broker lets anyone in, whatever the user name.
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id=config_entry.unique_id,
        data={**config_entry.data, CONF_USERNAME: "mqtt-user", CONF_PASSWORD: "s3cret-pass"},
        options=dict(config_entry.options),
    )
    hass.config.config_dir = str(tmp_path)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    runtime = entry.runtime_data
    async with asyncio.timeout(10):
        await runtime.transport.wait_connected()
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household="b3-501", amount="30", transaction_id="t1")
    meter.ack_commands = False
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "110.000")
    await meter.publish("telemetry", b"{")  # one rejected message
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 2)
    await hass.services.async_call(
        "prepaid_meter",
        "restore_supply",
        {"meter_id": METER_ID},
        blocking=True,
    )

    diagnostics: dict[str, Any] = await get_diagnostics_for_config_entry(hass, hass_client, entry)

    text = json.dumps(diagnostics)
    assert "s3cret-pass" not in text
    assert "mqtt-user" not in text
    assert "Household 3-501" not in text
    data = diagnostics["entry"]["data"]
    assert data[CONF_USERNAME] == REDACTED
    assert data[CONF_PASSWORD] == REDACTED
    assert data["host"] == entry.data["host"]  # what is needed to debug stays
    assert diagnostics["entry"]["options"] == dict(entry.options)
    live = diagnostics["runtime"]
    assert live["connected"] is True
    assert live["households"] == 1
    state = live["meters"][METER_ID]
    assert state["account_id"] == "b3-501"
    assert state["seq"] == 2
    assert state["energy_kwh"] == "110.000"
    assert state["desired_relay"] == "on"
    assert state["rejected"] == {"malformed_json": 1}
    assert state["cycle_kwh"] == "10.000"
    assert Decimal(live["totals"]["total_balance"]) == Decimal("25.117")
    assert live["open_alarms"] == {}  # ordinary readings: no episode open
    assert live["areas"] == {}  # no master meter set

    # Called directly the same function gives the same, JSON-safe, redacted data.
    direct = await async_get_config_entry_diagnostics(hass, entry)
    assert json.loads(json.dumps(direct))["entry"] == diagnostics["entry"]
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_diagnostics_list_pending_commands(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    init_integration: MockConfigEntry,
    meter: TestMeter,
) -> None:
    """A relay command the meter has not acknowledged shows up with its tries."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    meter.ack_commands = False
    switch_id = next(
        s.entity_id
        for s in hass.states.async_all("switch")
        if s.entity_id.endswith("_supply") or "supply" in s.entity_id
    )
    await hass.services.async_call("switch", "turn_off", {"entity_id": switch_id}, blocking=True)
    await meter.wait_for(lambda: any(c.get("op") == "relay" for c in meter.commands))
    diagnostics: dict[str, Any] = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    pending = diagnostics["runtime"]["pending_commands"]
    assert [(p["meter_id"], p["state"]) for p in pending] == [(METER_ID, "off")]
    assert pending[0]["tries"] >= 1
    assert pending[0]["id"] == meter.commands[0]["id"]
    meter_state = diagnostics["runtime"]["meters"][METER_ID]
    assert meter_state["desired_relay"] == "off"
    assert meter_state["relay_reason"] == "manual"
    assert meter_state["relay_actor"] == "operator||automation"
