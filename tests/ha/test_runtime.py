"""The runtime of a loaded community: broker outages, repairs, commands, entities, timers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
import json
import logging
from pathlib import Path
import time
from typing import Any
from unittest.mock import patch

import aiomqtt
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_HOST, CONF_PORT, STATE_UNAVAILABLE
from homeassistant.core import Context, HomeAssistant, State
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr, entity_registry as er, issue_registry as ir
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
    mock_restore_cache_with_extra_data,
)

from custom_components.prepaid_meter import coordinator
from custom_components.prepaid_meter.const import CONF_COMMUNITY_ID, DOMAIN
from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.ledger import Ledger, LedgerError, SubAccount
from custom_components.prepaid_meter.engine.protocol import RelayReport
from custom_components.prepaid_meter.engine.transport import NotConnected
from tests.broker import Mosquitto
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter
from tests.ha.test_init import call, entity_id, setup_household, state, wait_until

HOUSEHOLD = "b3-501"


class _Later:
    """Stands in for the `time` module of coordinator.py: the monotonic clock runs ahead."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead

    def time(self) -> float:
        return time.time()


def _issue(hass: HomeAssistant, issue_id: str) -> ir.IssueEntry | None:
    return ir.async_get(hass).async_get_issue(DOMAIN, issue_id)


async def _subscribe(broker: Mosquitto, topic: str) -> tuple[aiomqtt.Client, list[bytes]]:
    """Return a connected client collecting every payload on `topic`."""
    received: list[bytes] = []
    client = aiomqtt.Client(broker.host, broker.port)
    await client.__aenter__()
    await client.subscribe(topic, qos=1)

    async def collect() -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            received.append(message.payload)

    task = asyncio.create_task(collect())
    client._collector = task  # type: ignore[attr-defined]
    return client, received


async def _close(client: aiomqtt.Client) -> None:
    task: asyncio.Task[None] = client._collector  # type: ignore[attr-defined]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.__aexit__(None, None, None)


# ---------------------------------------------------------------------------- broker outage


async def test_broker_outage_and_return(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    mosquitto_factory: Callable[..., Mosquitto],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Broker stops: entities go unavailable; a repair after 5 minutes; back: all recovers."""
    broker = mosquitto_factory()
    hass.config.config_dir = str(tmp_path)
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id="private",
        data={**config_entry.data, CONF_HOST: broker.host, CONF_PORT: broker.port},
        options=dict(config_entry.options),
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    runtime = entry.runtime_data
    async with asyncio.timeout(10):
        await runtime.transport.wait_connected()
    community_id = entry.data[CONF_COMMUNITY_ID]
    async with TestMeter(broker.host, broker.port, community_id, METER_ID) as meter:
        await setup_household(hass, entry, meter)
        await call(hass, "top_up", household=HOUSEHOLD, amount="50", transaction_id="t1")
        await wait_until(hass, lambda: state(hass, entry, "balance") == "50.00")
    issue_id = f"broker_unreachable_{entry.entry_id}"
    connects = runtime.transport.connects

    broker.stop()
    await wait_until(hass, lambda: not runtime.connected)
    assert state(hass, entry, "balance") == STATE_UNAVAILABLE
    assert state(hass, entry, "supply") == STATE_UNAVAILABLE
    assert state(hass, entry, "online") != STATE_UNAVAILABLE  # says offline/online itself
    assert "is unreachable" in caplog.text
    # Money still moves while the broker is away (the ledger is local).
    await call(hass, "top_up", household=HOUSEHOLD, amount="5", transaction_id="t2")
    assert runtime.community.households[HOUSEHOLD].electricity == 55
    await runtime.async_flush()
    await runtime._async_minute()
    assert _issue(hass, issue_id) is None  # not yet: only after five minutes
    with patch.object(coordinator, "time", _Later(coordinator.BROKER_ISSUE_AFTER_S - 10)):
        await runtime._async_minute()
    assert _issue(hass, issue_id) is None
    with patch.object(coordinator, "time", _Later(coordinator.BROKER_ISSUE_AFTER_S + 1)):
        await runtime._async_minute()
    issue = _issue(hass, issue_id)
    assert issue is not None
    assert issue.severity is ir.IssueSeverity.ERROR
    assert issue.translation_placeholders == {"community": "Test community"}

    broker.start()
    async with asyncio.timeout(20):
        await runtime.transport.wait_connected()
    await wait_until(hass, lambda: runtime.connected)
    assert runtime.transport.connects == connects + 1
    assert _issue(hass, issue_id) is None
    assert "is reachable again" in caplog.text
    await wait_until(hass, lambda: state(hass, entry, "balance") == "55.00")
    assert await hass.config_entries.async_unload(entry.entry_id)


# ---------------------------------------------------------------------------- repairs


async def test_register_reset_raises_one_repair(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A register that goes backwards: one repair issue per meter, however often it happens."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    now = int(time.time())
    await meter.reading(now - 300, "500.000")
    await meter.reading(now - 240, "10.000")
    issue_id = f"register_reset_{entry.entry_id}_{METER_ID}"
    await wait_until(hass, lambda: _issue(hass, issue_id) is not None)
    issue = _issue(hass, issue_id)
    assert issue is not None
    assert issue.severity is ir.IssueSeverity.WARNING
    assert issue.translation_placeholders == {"meter_id": METER_ID, "community": "Test community"}
    ir.async_delete_issue(hass, DOMAIN, issue_id)
    await meter.reading(now - 180, "5.000")
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 3)
    assert _issue(hass, issue_id) is None  # already reported once for this meter
    assert runtime.community.households[HOUSEHOLD].electricity == 0  # nothing billed


async def test_unassigned_meter_repair_until_assigned(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A meter nobody assigned raises a repair; assigning it removes the repair."""
    entry = init_integration
    runtime = entry.runtime_data
    issue_id = f"unassigned_meter_{entry.entry_id}_{METER_ID}"
    await wait_until(hass, lambda: _issue(hass, issue_id) is not None)
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "120.000")
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 2)
    assert runtime.community.meters[METER_ID].account_id is None
    assert _issue(hass, issue_id) is not None
    device = runtime.meter_device(METER_ID)
    assert device is not None and device.name == f"Meter {METER_ID}"
    await call(hass, "assign_meter", meter_id=METER_ID, household=HOUSEHOLD, label="3-501")
    assert _issue(hass, issue_id) is None
    device = dr.async_get(hass).async_get(device.id)
    assert device is not None and device.name == "3-501"
    # Energy used before the assignment is not billed to the new household.
    assert runtime.community.households[HOUSEHOLD].electricity == 0


# ---------------------------------------------------------------------------- commands


async def test_refused_ack_leaves_the_reported_state(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A meter that answers ok=false: the command failed, the relay is not taken as switched."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="50", transaction_id="t1")
    meter.ack_commands = False
    await meter.reading(int(time.time()) - 60, "100.000")
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].reported_relay == "on")
    await hass.services.async_call(
        "switch", "turn_off", {"entity_id": entity_id(hass, entry, "supply")}, blocking=True
    )
    await meter.wait_for(lambda: any(c.get("op") == "relay" for c in meter.commands))
    command = next(c for c in meter.commands if c.get("op") == "relay")
    assert command["state"] == "off"
    meter.relay = "on"  # the relay is stuck
    await meter.publish(
        "ack", {"v": 1, "id": command["id"], "ok": False, "error": "relay_stuck", "relay": "on"}
    )
    await wait_until(
        hass, lambda: getattr(runtime.commands.status(METER_ID), "last_outcome", None) == "failed"
    )
    status = runtime.commands.status(METER_ID)
    assert status is not None and status.desired == "off" and status.reported == "on"
    assert runtime.community.meters[METER_ID].reported_relay == "on"
    assert state(hass, entry, "supply") == "off"  # still wanted off
    assert state(hass, entry, "supply_on") == "on"  # but the meter says on

    # An ok ack of a command for a meter the community does not know changes nothing.
    await meter.publish("ack", {"v": 1, "id": "nobody", "ok": True, "relay": "off"})
    # A relay report (as a Tasmota device sends) updates the reported state.
    runtime.service._handle(RelayReport(METER_ID, "off"))
    await hass.async_block_till_done()
    assert runtime.community.meters[METER_ID].reported_relay == "off"
    assert state(hass, entry, "supply_on") == "off"


async def test_ack_from_an_unknown_meter_creates_nothing(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    meter: TestMeter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stray ack on the topic of a meter never announced adds no device and no error."""
    entry = init_integration
    runtime = entry.runtime_data
    await wait_until(hass, lambda: METER_ID in runtime.community.meters)
    stranger = "000000000077"
    await meter._client.publish(
        f"prepaid/{entry.data[CONF_COMMUNITY_ID]}/{stranger}/ack",
        b'{"v":1,"id":"x","ok":true,"relay":"on"}',
        qos=1,
    )
    await meter._client.publish(
        f"prepaid/{entry.data[CONF_COMMUNITY_ID]}/{stranger}/ack",
        b'{"v":1,"id":"y","ok":true,"relay":"off"}',
        qos=1,
    )
    await meter.reading(int(time.time()) - 60, "100.000")
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 1)
    assert stranger not in runtime.community.meters
    device = runtime.meter_device(stranger)
    assert device is None
    assert "Unexpected error handling" not in caplog.text


async def test_switch_turn_off_names_who_and_why(
    hass: HomeAssistant,
    hass_storage: dict[str, Any],
    init_integration: MockConfigEntry,
    meter: TestMeter,
) -> None:
    """Turning the supply switch off cuts the meter, with actor and reason, kept on reload."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="50", transaction_id="t1")
    admin = await hass.auth.async_create_user("Ops", group_ids=["system-admin"])
    cuts = async_capture_events(hass, "prepaid_meter_supply_cut")
    switch = entity_id(hass, entry, "supply")
    await hass.services.async_call(
        "switch",
        "turn_off",
        {"entity_id": switch},
        blocking=True,
        context=Context(user_id=admin.id),
    )
    await meter.wait_for(lambda: meter.relay == "off")
    found = hass.states.get(switch)
    assert found is not None
    assert found.state == "off"
    ops = Actor("operator", user_id=admin.id, name="Ops")
    assert found.attributes["actor"] == "Ops"
    assert found.attributes["actor_kind"] == "operator"
    assert found.attributes["actor_user_id"] == admin.id
    assert found.attributes["reason"] == "manual"
    assert (cuts[0].data["actor"], cuts[0].data["actor_kind"]) == ("Ops", "operator")
    assert cuts[0].data["actor_user_id"] == admin.id
    assert cuts[0].data["reason"] == "manual"
    assert cuts[0].data["household"] == "Household 3-501"
    # The operator's list of cut households names it, with why and the balance.
    await runtime.async_flush()
    await hass.async_block_till_done()
    registry = er.async_get(hass)
    cut_count = registry.async_get_entity_id(
        "sensor", DOMAIN, f"{runtime.community_identifier}_supplies_cut"
    )
    assert cut_count is not None
    listed = hass.states.get(cut_count)
    assert listed is not None
    assert listed.state == "1"
    assert listed.attributes["households"] == [
        {
            "household": "Household 3-501",
            "account_id": HOUSEHOLD,
            "meter_id": METER_ID,
            "reason": "manual",
            "balance": "50.00",
        }
    ]

    # The wish is a ledger fact at once (a person's request is committed before the action
    # returns), with who asked and why; Home Assistant's storage no longer holds it.
    change = entry.runtime_data.community.ledger.supply_states()[METER_ID]
    assert (change.state, change.reason, change.actor) == ("off", "manual", str(ops))
    assert change.actor == f"operator|{admin.id}|Ops"
    assert "relays" not in (hass_storage.get(f"{DOMAIN}.{entry.entry_id}.relays") or {}).get(
        "data", {}
    )

    # The wish survives a reload (from the ledger), with who asked for it and why.
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    runtime = entry.runtime_data
    async with asyncio.timeout(10):
        await runtime.transport.wait_connected()
    restored = runtime.community.meters[METER_ID]
    assert (restored.desired_relay, restored.relay_reason, restored.relay_actor) == (
        "off",
        "manual",
        ops,
    )
    status = runtime.commands.status(METER_ID)
    assert status is not None and status.desired == "off"
    await wait_until(hass, lambda: state(hass, entry, "supply") == "off")

    # Nobody but an operator restores after an operator's cut: not a user id that no longer
    # exists (a resident of no household) ...
    with pytest.raises(ServiceValidationError) as info:
        await hass.services.async_call(
            DOMAIN,
            "restore_supply",
            {"meter_id": METER_ID},
            blocking=True,
            context=Context(user_id="gone"),
        )
    assert info.value.translation_key == "not_your_meter"
    # ... nor a resident of this very household, however much credit it has.
    alice = await hass.auth.async_create_user("Alice")
    await hass.services.async_call(
        DOMAIN, "link_user", {"household": HOUSEHOLD, "user_id": alice.id}, blocking=True
    )
    with pytest.raises(ServiceValidationError) as info:
        await hass.services.async_call(
            DOMAIN,
            "restore_supply",
            {"meter_id": METER_ID},
            blocking=True,
            context=Context(user_id=alice.id),
        )
    assert info.value.translation_key == "restore_needs_operator"
    assert info.value.translation_placeholders == {"meter_id": METER_ID, "reason": "by hand"}
    assert runtime.community.meters[METER_ID].desired_relay == "off"
    with pytest.raises(ServiceValidationError) as info:
        await hass.services.async_call(
            DOMAIN,
            "restore_supply",
            {"meter_id": METER_ID, "operator_override": True},
            blocking=True,
            context=Context(user_id="gone"),
        )
    assert info.value.translation_key == "not_admin"


async def test_known_meter_has_entities_after_reload_without_messages(
    hass: HomeAssistant, init_integration: MockConfigEntry, mosquitto: Mosquitto
) -> None:
    """After a reload, a silent meter from the ledger still shows its household's balance."""
    entry = init_integration
    community_id = entry.data[CONF_COMMUNITY_ID]
    async with TestMeter(mosquitto.host, mosquitto.port, community_id, METER_ID) as meter:
        await setup_household(hass, entry, meter)
        await call(hass, "top_up", household=HOUSEHOLD, amount="30", transaction_id="t1")
    # The broker lost the meter's retained messages (e.g. restarted without persistence).
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as cleaner:
        for channel in ("announce", "availability"):
            await cleaner.publish(f"prepaid/{community_id}/{METER_ID}/{channel}", b"", retain=True)
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    runtime = entry.runtime_data
    async with asyncio.timeout(10):
        await runtime.transport.wait_connected()
    await hass.async_block_till_done()
    assert runtime.community.households[HOUSEHOLD].electricity == 30
    assert state(hass, entry, "balance") == "30.00"


# ---------------------------------------------------------------------------- threshold number


async def test_threshold_number_moves_the_low_balance_sensor(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Setting the threshold above the balance turns low balance on; it survives a reload."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="25", transaction_id="t1")
    await wait_until(hass, lambda: state(hass, entry, "balance") == "25.00")
    number = entity_id(hass, entry, "low_balance_threshold")
    assert state(hass, entry, "low_balance_threshold") == "20.0"  # the first warning level
    assert state(hass, entry, "low_balance") == "off"
    await hass.services.async_call(
        "number", "set_value", {"entity_id": number, "value": 30}, blocking=True
    )
    assert state(hass, entry, "low_balance_threshold") == "30.0"
    assert state(hass, entry, "low_balance") == "on"
    assert entry.runtime_data.low_threshold(METER_ID) == Decimal(30)
    # One definition of "low": the household's account topic says the same as the sensor.
    community = entry.runtime_data.community
    payload = community.account_payload(community.meters[METER_ID])
    assert payload is not None and json.loads(payload)["low"] is True

    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    async with asyncio.timeout(10):
        await entry.runtime_data.transport.wait_connected()
    await wait_until(hass, lambda: state(hass, entry, "low_balance") == "on")
    assert entry.runtime_data.low_threshold(METER_ID) == Decimal(30)
    assert state(hass, entry, "low_balance_threshold") == "30.0"


async def test_threshold_restored_from_the_last_state(
    hass: HomeAssistant,
    hass_storage: dict[str, Any],
    config_entry: MockConfigEntry,
    tmp_path: Path,
    meter: TestMeter,
) -> None:
    """After a restart the number takes back its value from Home Assistant's restore state."""
    # A stored relay wish of a meter the ledger no longer knows is dropped.
    hass_storage[f"{DOMAIN}.{config_entry.entry_id}.relays"] = {
        "version": 1,
        "key": f"{DOMAIN}.{config_entry.entry_id}.relays",
        "data": {
            "relays": {"ghost": {"state": "off", "reason": "manual", "actor": "x", "ts": 1}},
            "thresholds": {},
        },
    }
    unique_id = f"prepaid/{config_entry.data[CONF_COMMUNITY_ID]}_{METER_ID}_low_balance_threshold"
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    er.async_get(hass).async_get_or_create(
        "number",
        DOMAIN,
        unique_id,
        suggested_object_id="threshold_under_test",
        config_entry=config_entry,
    )
    mock_restore_cache_with_extra_data(
        hass,
        [
            (
                State("number.threshold_under_test", "45"),
                {
                    "native_max_value": 1000,
                    "native_min_value": 0,
                    "native_step": 1,
                    "native_unit_of_measurement": "CNY",
                    "native_value": 45.0,
                },
            )
        ],
    )
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    runtime = config_entry.runtime_data
    async with asyncio.timeout(10):
        await runtime.transport.wait_connected()
    await wait_until(hass, lambda: hass.states.get("number.threshold_under_test") is not None)
    found = hass.states.get("number.threshold_under_test")
    assert found is not None and found.state == "45.0"
    assert runtime.low_threshold(METER_ID) == Decimal(45)
    assert "ghost" not in runtime.community.meters
    assert runtime.commands.status("ghost") is None
    await hass.config_entries.async_unload(config_entry.entry_id)


# ---------------------------------------------------------------------------- periodic work


async def test_timers_commit_tick_and_collection_rate(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path, meter: TestMeter
) -> None:
    """The service's commit loop commits charges; the minute timer recomputes the fee rate.

    The commit loop is the engine service's own (asyncio, every COMMIT_INTERVAL_S): made
    short here. The fee collection rate is Home Assistant's minute timer.
    """
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    with patch.object(coordinator, "COMMIT_INTERVAL_S", 0.2):
        assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    entry = config_entry
    runtime = entry.runtime_data
    async with asyncio.timeout(10):
        await runtime.transport.wait_connected()
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="50", transaction_id="t1")
    for kind, amount, txn in (("charge_fee", "300", "f1"), ("pay_fee", "120", "p1")):
        await call(
            hass,
            kind,
            household=HOUSEHOLD,
            sub_account="property_fee",
            amount=amount,
            transaction_id=txn,
        )
    rate: Callable[[], float | None] = lambda: runtime.fee_collection_rate  # noqa: E731
    assert rate() is None  # computed on the tick
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "110.000")
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 2)
    ledger = runtime.community.ledger
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=61))
    await wait_until(hass, lambda: rate() is not None)
    assert rate() == 40.0
    cursor = None
    async with asyncio.timeout(10):
        while cursor is None or cursor.seq != 2:  # the next run of the commit loop
            await asyncio.sleep(0.05)
            cursor = await hass.async_add_executor_job(ledger.cursor, METER_ID)
    balances = await hass.async_add_executor_job(ledger.balances, HOUSEHOLD)
    assert balances[SubAccount.ELECTRICITY] == Decimal("45.117")
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_failed_commit_keeps_the_charges(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A ledger commit that fails keeps the batch; the next flush writes it once."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="50", transaction_id="t1")
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "110.000")
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 2)
    community = runtime.community
    with patch.object(community, "commit", side_effect=OSError("disk full")):
        await runtime.async_flush()
    assert community.households[HOUSEHOLD].electricity == Decimal("45.117")
    assert await hass.async_add_executor_job(community.ledger.cursor, METER_ID) is None
    await runtime.async_flush()
    cursor = await hass.async_add_executor_job(community.ledger.cursor, METER_ID)
    assert cursor is not None and cursor.seq == 2
    balances = await hass.async_add_executor_job(community.ledger.balances, HOUSEHOLD)
    assert balances[SubAccount.ELECTRICITY] == Decimal("45.117")
    assert await hass.async_add_executor_job(community.ledger.check_invariant) == []


async def test_account_topic_published_and_retried(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter, mosquitto: Mosquitto
) -> None:
    """The household's account topic is published; a failed publish is retried later."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    topic = f"prepaid/{entry.data[CONF_COMMUNITY_ID]}/{METER_ID}/account"
    client, received = await _subscribe(mosquitto, topic)
    try:
        with patch.object(
            runtime.transport, "publish", side_effect=NotConnected("Not connected")
        ) as publish:
            await call(hass, "top_up", household=HOUSEHOLD, amount="12.5", transaction_id="t1")
            await runtime.async_flush()
        assert publish.call_count >= 1
        assert HOUSEHOLD in runtime.service.unpublished_accounts  # kept for the next try
        await runtime.async_flush()
        await wait_until(
            hass, lambda: any(json.loads(p)["balance"] == "12.50" for p in received if p)
        )
        body = json.loads(next(p for p in received if p and json.loads(p)["balance"] == "12.50"))
        assert body["currency"] == "CNY"
        assert body["relay"] == "on"
        assert not runtime.service.unpublished_accounts
    finally:
        await _close(client)
        # Clear the retained account message on the shared broker.
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as cleaner:
            await cleaner.publish(topic, b"", qos=1, retain=True)


async def test_low_balance_display_is_best_effort(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    meter: TestMeter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The low-balance warning tells the meter's display; a failed send is only logged."""
    caplog.set_level(logging.DEBUG, logger="custom_components.prepaid_meter")
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="21", transaction_id="t1")
    now = int(time.time())
    await meter.reading(now - 180, "100.000")
    await meter.reading(now - 120, "103.000")  # 21 - 1.46 = 19.54: first warning
    await meter.wait_for(lambda: any(c.get("op") == "display" for c in meter.commands))
    display = next(c for c in meter.commands if c.get("op") == "display")
    assert display["low"] is True
    assert display["currency"] == "CNY"
    with patch.object(runtime.transport, "publish", side_effect=NotConnected("Not connected")):
        await meter.reading(now - 60, "135.000")  # 21 - 17.09 = 3.91: second warning level
        await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 3)
        await hass.async_block_till_done()
        assert "Display update for" in caplog.text
    assert entry.state is ConfigEntryState.LOADED
    assert sum(1 for c in meter.commands if c.get("op") == "display") == 1


# ---------------------------------------------------------------------------- bad input


async def test_message_handler_never_raises(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    meter: TestMeter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A parser or handler bug is logged; the next messages are handled as usual."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    now = int(time.time())
    with patch.object(runtime.profile, "parse", side_effect=RuntimeError("parser bug")):
        await meter.reading(now - 180, "100.000")
        await wait_until(hass, lambda: "Unexpected error parsing" in caplog.text)
    with patch.object(
        runtime.community, "handle_availability", side_effect=RuntimeError("handler bug")
    ):
        await meter.publish("availability", b"online")
        await wait_until(hass, lambda: "Unexpected error handling" in caplog.text)
    # Garbage from a known meter is counted against it.
    await meter.publish("telemetry", b"[]")
    await wait_until(hass, lambda: bool(runtime.community.meters[METER_ID].rejected))
    assert runtime.community.meters[METER_ID].rejected == {"not_object": 1}
    # A cleared retained announce (meter removed) is ignored.
    await meter.publish("announce", b"", retain=True)
    # Garbage from a meter the community does not know is dropped.
    await meter._client.publish(
        f"prepaid/{entry.data[CONF_COMMUNITY_ID]}/000000000099/telemetry", b"{", qos=1
    )
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "101.000")
    await wait_until(hass, lambda: state(hass, entry, "balance") == "-0.49")
    assert "000000000099" not in runtime.community.meters
    assert runtime.community.meters[METER_ID].seq == 3
    assert entry.state is ConfigEntryState.LOADED


# ------------------------------------------------------- defects found from outside (issue 8)


async def test_telemetry_from_a_meter_never_announced_makes_no_device(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    meter: TestMeter,
) -> None:
    """Five made-up ids flooding telemetry: no meter, no device; one repair; diagnostics count."""
    entry = init_integration
    runtime = entry.runtime_data
    await wait_until(hass, lambda: METER_ID in runtime.community.meters)
    devices_before = len(dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id))
    fakes = [f"00000000009{n}" for n in range(5)]
    body = b'{"v":1,"seq":1,"ts":%d,"energy_kwh":"1.000","relay":"on"}' % (int(time.time()) - 60)
    for fake in fakes:
        for _ in range(2):
            await meter._client.publish(
                f"prepaid/{entry.data[CONF_COMMUNITY_ID]}/{fake}/telemetry", body, qos=1
            )
    await wait_until(hass, lambda: sum(runtime.community.unknown_meters.values()) == 10)
    await hass.async_block_till_done()
    assert not set(fakes) & set(runtime.community.meters)
    assert all(runtime.meter_device(fake) is None for fake in fakes)
    after = len(dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id))
    assert after == devices_before
    assert _issue(hass, f"unknown_meter_{entry.entry_id}") is not None
    assert runtime.diagnostics()["unknown_meters"] == dict.fromkeys(fakes, 2)
    # Nothing kept for them either: no command state, no entity writes queued.
    assert all(runtime.commands.status(fake) is None for fake in fakes)
    assert not set(fakes) & set(runtime._measured)
    # As the repair says, an operator can adopt one by assigning it.
    await call(hass, "assign_meter", meter_id=fakes[0], household="h-fake", label="Fake 1")
    assert fakes[0] in runtime.community.meters
    await wait_until(hass, lambda: runtime.meter_device(fakes[0]) is not None)


async def test_an_unassigned_meter_reporting_off_gets_no_command(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A new meter that reports its relay off is not switched on: nobody pays for it."""
    runtime = init_integration.runtime_data
    meter.relay = "off"
    await wait_until(hass, lambda: METER_ID in runtime.community.meters)
    await meter.reading(int(time.time()) - 60, "100.000")
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].reported_relay == "off")
    runtime.commands.reconcile()
    await runtime._async_tick(None)
    await asyncio.sleep(1.5)  # a command would be on the wire within milliseconds
    await hass.async_block_till_done()
    assert [c for c in meter.commands if c.get("op") == "relay"] == []


# ------------------------------------------------- commands not carried out (issue: failed)


async def test_command_not_acknowledged_raises_an_event_and_a_repair_until_confirmed(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path, meter: TestMeter
) -> None:
    """A cut never acknowledged: one event, one repair; a late ack or a reading clears it."""
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    with (
        patch.object(coordinator, "COMMAND_MAX_TRIES", 3),
        patch.object(coordinator, "COMMAND_BASE_DELAY_S", 0.05),
        patch.object(coordinator, "COMMAND_MAX_DELAY_S", 0.1),
    ):
        assert await hass.config_entries.async_setup(config_entry.entry_id)
    entry = config_entry
    runtime = entry.runtime_data
    async with asyncio.timeout(10):
        await runtime.transport.wait_connected()
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="50", transaction_id="t1")
    now = int(time.time())
    await meter.reading(now - 300, "100.000")
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].reported_relay == "on")
    await wait_until(hass, lambda: runtime.commands.pending() == [])
    failed = async_capture_events(hass, "prepaid_meter_command_failed")
    issue_id = f"command_failed_{entry.entry_id}_{METER_ID}"
    relay_commands: Callable[[], list[dict[str, Any]]] = lambda: [  # noqa: E731
        c for c in meter.commands if c.get("op") == "relay"
    ]
    sent_before = len(relay_commands())

    # The meter applies the cut but never answers: the tries run out.
    meter.ack_commands = False
    await hass.services.async_call(
        "switch", "turn_off", {"entity_id": entity_id(hass, entry, "supply")}, blocking=True
    )
    await wait_until(hass, lambda: bool(failed))
    await asyncio.sleep(0.3)  # longer than every retry delay: no second event
    await hass.async_block_till_done()
    assert len(failed) == 1
    cut = relay_commands()[sent_before:]
    assert [c["state"] for c in cut] == ["off"] * 3
    assert len({c["id"] for c in cut}) == 1  # one command, retried with its id
    device = runtime.meter_device(METER_ID)
    assert device is not None
    data = failed[0].data
    assert data == {
        "config_entry_id": entry.entry_id,
        "community": entry.data[CONF_COMMUNITY_ID],
        "meter_id": METER_ID,
        "device_id": device.id,
        "household": "Household 3-501",
        "account_id": HOUSEHOLD,
        "balance": "50.00",
        "state": "off",
        "reason": "manual",
        "actor": "automation",
        "actor_kind": "operator",
        "outcome": "expired",
        "tries": 3,
        "command_id": cut[0]["id"],
        "users": [],  # nobody linked to the household yet
    }
    issue = _issue(hass, issue_id)
    assert issue is not None
    assert issue.severity is ir.IssueSeverity.ERROR  # a home believed cut may still be on
    assert issue.translation_key == "command_failed"
    assert issue.translation_placeholders == {
        "meter_id": METER_ID,
        "community": "Test community",
        "state": "off",
    }

    # The answer arrives late: the cut did happen, the repair goes, nothing is sent again.
    await meter.publish("ack", {"v": 1, "id": cut[0]["id"], "ok": True, "relay": "off"})
    await wait_until(hass, lambda: _issue(hass, issue_id) is None)
    status = runtime.commands.status(METER_ID)
    assert status is not None and status.last_outcome == "confirmed"
    assert runtime.community.meters[METER_ID].reported_relay == "off"
    assert len(failed) == 1

    # A restore nobody acknowledges is a warning; a reading showing the supply on clears it.
    await hass.services.async_call(
        "switch", "turn_on", {"entity_id": entity_id(hass, entry, "supply")}, blocking=True
    )
    await wait_until(hass, lambda: len(failed) == 2)
    assert (failed[1].data["state"], failed[1].data["outcome"]) == ("on", "expired")
    issue = _issue(hass, issue_id)
    assert issue is not None
    assert issue.severity is ir.IssueSeverity.WARNING
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["state"] == "on"
    assert meter.relay == "on"  # the meter did switch, silently
    await meter.reading(now - 240, "100.000")
    await wait_until(hass, lambda: _issue(hass, issue_id) is None)

    # A meter that refuses a cut (ok=false): the event says so, with the meter's error.
    runtime.commands.base_delay = 30.0  # no retry races the refusal below
    sent_before = len(relay_commands())
    await hass.services.async_call(
        "switch", "turn_off", {"entity_id": entity_id(hass, entry, "supply")}, blocking=True
    )
    await meter.wait_for(lambda: len(relay_commands()) > sent_before)
    refused = relay_commands()[sent_before]
    await meter.publish(
        "ack", {"v": 1, "id": refused["id"], "ok": False, "error": "relay_fault", "relay": "on"}
    )
    await wait_until(hass, lambda: len(failed) == 3)
    assert {k: failed[2].data.get(k) for k in ("state", "outcome", "error", "command_id")} == {
        "state": "off",
        "outcome": "failed",
        "error": "relay_fault",
        "command_id": refused["id"],
    }
    issue = _issue(hass, issue_id)
    assert issue is not None and issue.severity is ir.IssueSeverity.ERROR
    # Sent again (reconciliation) and refused again: the same problem, not a second event.
    sent_before = len(relay_commands())
    runtime.commands.reconcile()

    def new_commands() -> list[dict[str, Any]]:
        # A command with a new id; QoS 1 may also deliver the refused one again (same id).
        return [c for c in relay_commands()[sent_before:] if c["id"] != refused["id"]]

    await meter.wait_for(lambda: bool(new_commands()))
    again = new_commands()[0]
    await meter.publish(
        "ack", {"v": 1, "id": again["id"], "ok": False, "error": "relay_fault", "relay": "on"}
    )
    await wait_until(
        hass, lambda: getattr(runtime.commands.status(METER_ID), "pending_id", "") is None
    )
    assert len(failed) == 3
    assert _issue(hass, issue_id) is not None
    meter.relay = "off"  # someone fixed the relay on site; the next reading says so
    await meter.reading(now - 180, "100.000")
    await wait_until(hass, lambda: _issue(hass, issue_id) is None)
    assert len(failed) == 3
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_relay_wishes_of_an_earlier_version_move_into_the_ledger(
    hass: HomeAssistant,
    hass_storage: dict[str, Any],
    config_entry: MockConfigEntry,
    tmp_path: Path,
    community_id: str,
) -> None:
    """A cut kept in Home Assistant's storage by an earlier version is written to the ledger."""
    with Ledger(tmp_path / f"{DOMAIN}_{community_id}.sqlite3") as ledger:
        ledger.ensure_household(HOUSEHOLD, "3-501", int(time.time()))
        ledger.assign_meter(METER_ID, HOUSEHOLD)
    hass_storage[f"{DOMAIN}.{config_entry.entry_id}.relays"] = {
        "version": 1,
        "key": f"{DOMAIN}.{config_entry.entry_id}.relays",
        "data": {
            "relays": {
                METER_ID: {"state": "off", "reason": "arc_fault", "actor": "safety", "ts": 7}
            },
            "thresholds": {},
        },
    }
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    runtime = config_entry.runtime_data
    meter = runtime.community.meters[METER_ID]
    assert (meter.desired_relay, meter.relay_reason, meter.relay_actor) == (
        "off",
        "arc_fault",
        Actor.SAFETY,
    )
    change = runtime.community.ledger.supply_states()[METER_ID]
    assert (change.state, change.reason, change.actor, change.ts) == (
        "off",
        "arc_fault",
        "safety",
        7,
    )
    status = runtime.commands.status(METER_ID)
    assert status is not None and status.desired == "off"
    assert await hass.config_entries.async_unload(config_entry.entry_id)


async def test_a_cut_is_in_the_ledger_at_once_not_a_minute_later(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A credit cut is committed when decided: a restart right after keeps it.

    Home Assistant does not unload config entries when it stops, so waiting for the minute's
    commit could lose a decision the meter has already carried out.
    """
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "200.000")  # far below the emergency credit
    await wait_until(hass, lambda: state(hass, entry, "supply") == "off")
    ledger = runtime.community.ledger

    def decided() -> str | None:
        change = ledger.supply_states().get(METER_ID)
        return None if change is None else change.state

    found = None
    async with asyncio.timeout(5):  # a background commit, well inside the minute
        while found != "off":
            await asyncio.sleep(0.05)
            found = await hass.async_add_executor_job(decided)


async def test_a_supply_request_the_ledger_cannot_save_is_an_error(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """The person is told when their decision is not saved; it is saved with the next commit."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="50", transaction_id="t1")
    admin = await hass.auth.async_create_user("Ops", group_ids=["system-admin"])
    switch = entity_id(hass, entry, "supply")
    with (
        patch.object(runtime.community, "commit", side_effect=LedgerError("disk full")),
        pytest.raises(HomeAssistantError) as info,
    ):
        await hass.services.async_call(
            "switch",
            "turn_off",
            {"entity_id": switch},
            blocking=True,
            context=Context(user_id=admin.id),
        )
    assert info.value.translation_key == "ledger_error"
    assert runtime.community.meters[METER_ID].desired_relay == "off"  # it stands
    await runtime.async_flush()
    change = await hass.async_add_executor_job(runtime.community.ledger.supply_states)
    assert change[METER_ID].state == "off"
