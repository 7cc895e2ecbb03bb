"""The whole path, on a real broker: readings to balances, cuts, restores, top-ups, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
import time
from typing import Any
from unittest.mock import patch
from zoneinfo import ZoneInfo

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.prepaid_meter import coordinator
from custom_components.prepaid_meter.const import CONF_MEASUREMENT_INTERVAL, DOMAIN
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter

BALANCE = "sensor.household_3_501_balance"


async def wait_until(hass: HomeAssistant, predicate: Callable[[], bool], limit: float = 10) -> None:
    """Let the loop run until predicate() holds."""
    async with asyncio.timeout(limit):
        while not predicate():
            await asyncio.sleep(0.05)
            await hass.async_block_till_done()


def entity_id(hass: HomeAssistant, entry: MockConfigEntry, key: str) -> str:
    """Return the entity id of this meter's entity with the given description key."""
    registry = er.async_get(hass)
    runtime = entry.runtime_data
    unique_id = f"{runtime.community_identifier}_{METER_ID}_{key}"
    for platform in ("sensor", "binary_sensor", "switch", "button", "number"):
        found = registry.async_get_entity_id(platform, DOMAIN, unique_id)
        if found is not None:
            return found
    raise AssertionError(f"no entity for {key}")


async def call(hass: HomeAssistant, service: str, **data: Any) -> Any:
    """Call one of the integration's actions and return its response."""
    return await hass.services.async_call(
        DOMAIN, service, data, blocking=True, return_response=service == "get_statement"
    )


async def setup_household(
    hass: HomeAssistant, entry: MockConfigEntry, meter: TestMeter, **extra: Any
) -> None:
    """Wait for discovery, then assign the meter to household 3-501."""
    runtime = entry.runtime_data
    await wait_until(hass, lambda: METER_ID in runtime.community.meters)
    await call(
        hass,
        "assign_meter",
        meter_id=METER_ID,
        household="b3-501",
        label="Household 3-501",
        **extra,
    )


def state(hass: HomeAssistant, entry: MockConfigEntry, key: str) -> str | None:
    found = hass.states.get(entity_id(hass, entry, key))
    return None if found is None else found.state


async def test_discovery_reading_balance_and_cut(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    meter: TestMeter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Announce makes a device; readings bill; exhausted credit sends relay off to the meter.

    From setup to unload, Home Assistant's frame helper finds nothing deprecated in our calls
    (it logs "Detected that custom integration ..." for those), on either version.
    """
    entry = init_integration
    await setup_household(hass, entry, meter)
    device = entry.runtime_data.meter_device(METER_ID)
    assert device is not None
    assert device.name == "Household 3-501"

    top_ups = async_capture_events(hass, "prepaid_meter_top_up")
    await call(
        hass, "top_up", household="b3-501", amount="24", transaction_id="wx-1", channel="wechat"
    )
    await wait_until(hass, lambda: state(hass, entry, "balance") == "24.00")
    assert top_ups[0].data["amount"] == "24.00"
    assert top_ups[0].data["device_id"] == device.id

    now = int(time.time())
    low = async_capture_events(hass, "prepaid_meter_low_balance")
    cuts = async_capture_events(hass, "prepaid_meter_supply_cut")
    await meter.reading(now - 600, "100.000")
    await meter.reading(now - 300, "110.000")  # 10 kWh x 0.4883 = 4.883
    await wait_until(hass, lambda: state(hass, entry, "balance") == "19.12")
    assert state(hass, entry, "low_balance") == "on"
    assert len(low) == 1
    assert state(hass, entry, "energy") == "110.000"

    await meter.reading(now - 60, "200.000")  # 90 kWh more: far below the emergency credit
    await meter.wait_for(
        lambda: any(c.get("op") == "relay" and c["state"] == "off" for c in meter.commands)
    )
    await wait_until(hass, lambda: state(hass, entry, "supply") == "off")
    assert cuts[0].data["reason"] == "credit_exhausted"
    assert cuts[0].data["meter_id"] == METER_ID
    await meter.reading(now, "200.000")
    await wait_until(hass, lambda: state(hass, entry, "supply_on") == "off")
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert "Detected that custom integration" not in caplog.text
    assert "Detected code that" not in caplog.text


async def test_restore_refused_then_allowed_after_top_up(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """The button refuses while in debt (translated error) and restores after a top-up."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "200.000")
    await wait_until(hass, lambda: state(hass, entry, "supply") == "off")

    button = entity_id(hass, entry, "restore_supply")
    with pytest.raises(ServiceValidationError) as info:
        await hass.services.async_call("button", "press", {"entity_id": button}, blocking=True)
    assert info.value.translation_key == "credit_exhausted_restore_refused"
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            "switch", "turn_on", {"entity_id": entity_id(hass, entry, "supply")}, blocking=True
        )

    await call(
        hass, "top_up", meter_id=METER_ID, amount="100", transaction_id="ali-7", channel="alipay"
    )
    await hass.async_block_till_done()
    assert state(hass, entry, "supply") == "off"  # never switched on by itself
    restored = async_capture_events(hass, "prepaid_meter_supply_restored")
    await hass.services.async_call("button", "press", {"entity_id": button}, blocking=True)
    await meter.wait_for(lambda: meter.relay == "on")
    assert state(hass, entry, "supply") == "on"
    assert restored[0].data["reason"] == "restored"


async def test_top_up_idempotent_and_bad_input(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """The same transaction twice credits once; bad input is a translated error."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    first = await hass.services.async_call(
        DOMAIN,
        "top_up",
        {"household": "b3-501", "amount": "50", "transaction_id": "tx"},
        blocking=True,
        return_response=True,
    )
    again = await hass.services.async_call(
        DOMAIN,
        "top_up",
        {"household": "b3-501", "amount": "50", "transaction_id": "tx"},
        blocking=True,
        return_response=True,
    )
    assert first == {"household": "b3-501", "balance": "50.00", "duplicate": False}
    assert again == {"household": "b3-501", "balance": "50.00", "duplicate": True}
    await wait_until(hass, lambda: state(hass, entry, "balance") == "50.00")
    for data, key in (
        ({"household": "b3-501", "amount": "-1", "transaction_id": "t2"}, "invalid_amount"),
        ({"household": "b3-501", "amount": "1.001", "transaction_id": "t3"}, "invalid_amount"),
        ({"household": "nobody", "amount": "1", "transaction_id": "t4"}, "unknown_household"),
        (
            {"household": "b3-501", "amount": "51", "transaction_id": "tx"},
            "duplicate_transaction_conflict",
        ),
    ):
        with pytest.raises(ServiceValidationError) as info:
            await call(hass, "top_up", **data)
        assert info.value.translation_key == key
    assert entry.runtime_data.community.households["b3-501"].electricity == 50
    assert (
        await hass.async_add_executor_job(entry.runtime_data.community.ledger.check_invariant) == []
    )


async def test_fees_never_cut_and_statement(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Property fee arrears leave the supply on; the statement comes back as response data."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household="b3-501", amount="100", transaction_id="t1")
    await call(
        hass,
        "charge_fee",
        household="b3-501",
        sub_account="property_fee",
        amount="900",
        period="2026",
        transaction_id="fee-1",
    )
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "110.000")
    await wait_until(hass, lambda: state(hass, entry, "balance") == "95.12")
    assert state(hass, entry, "supply") == "on"
    runtime = entry.runtime_data
    arrears_id = er.async_get(hass).async_get_entity_id(
        "sensor", DOMAIN, f"{runtime.community_identifier}_arrears_property_fee"
    )
    assert arrears_id is not None
    await wait_until(hass, lambda: hass.states.get(arrears_id).state == "1")  # type: ignore[union-attr]
    await call(
        hass,
        "pay_fee",
        household="b3-501",
        sub_account="property_fee",
        amount="450",
        period="2026",
        transaction_id="pay-1",
    )
    await entry.runtime_data.async_flush()
    cycle = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    statement = await call(hass, "get_statement", household="b3-501", cycle=cycle)
    assert statement["closed"] is False
    assert statement["kwh"] == "10.000"
    assert statement["lines"][0]["amount"] == "4.88"


async def test_friendly_hours_and_protected(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Any, meter: TestMeter
) -> None:
    """On a listed holiday the cut is deferred; a protected household is never cut."""
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    hass.config.config_dir = str(tmp_path)
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=config_entry.data,
        unique_id=config_entry.unique_id,
        options={"holidays": [today], "friendly_start": "00:00", "friendly_end": "00:00"},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    async with asyncio.timeout(10):
        await entry.runtime_data.transport.wait_connected()
    deferred = async_capture_events(hass, "prepaid_meter_supply_cut_deferred")
    await setup_household(hass, entry, meter)
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "200.000")
    await wait_until(hass, lambda: len(deferred) == 1)
    assert deferred[0].data["reason"] == "friendly_hours"
    assert state(hass, entry, "supply") == "on"
    await hass.config_entries.async_unload(entry.entry_id)


async def test_protected_household_never_cut(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A supply-protected household runs into debt, reported, and keeps its supply."""
    entry = init_integration
    deferred = async_capture_events(hass, "prepaid_meter_supply_cut_deferred")
    await setup_household(hass, entry, meter, supply_protected=True)
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "300.000")
    await wait_until(hass, lambda: len(deferred) == 1)
    assert deferred[0].data["reason"] == "supply_protected"
    assert state(hass, entry, "supply") == "on"
    assert not any(c.get("op") == "relay" for c in meter.commands)


async def test_restart_bills_nothing_twice(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Unload and set up again mid-stream: the same readings again change nothing."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household="b3-501", amount="100", transaction_id="t1")
    now = int(time.time())
    await meter.reading(now - 300, "100.000")
    await meter.reading(now - 240, "110.000")
    await wait_until(hass, lambda: state(hass, entry, "balance") == "95.12")
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    async with asyncio.timeout(10):
        await entry.runtime_data.transport.wait_connected()
    # The meter repeats its last reading (as after a lost ack), then goes on.
    meter.seq -= 1
    await meter.reading(now - 240, "110.000")
    await meter.reading(now - 180, "120.000")
    await wait_until(hass, lambda: state(hass, entry, "balance") == "90.23")
    community = entry.runtime_data.community
    assert community.meters[METER_ID].rejected.get("duplicate") == 1
    assert await hass.async_add_executor_job(community.ledger.check_invariant) == []


async def test_bad_payloads_never_crash(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Garbage on every channel is counted, not raised; the next good reading still bills."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    for body in (
        b"{",
        b"[]",
        b'{"v":1,"seq":"x"}',
        b"\xff\xfe",
        b"x" * 10000,
        b'{"v":1,"seq":1,"ts":1,"energy_kwh":"NaN"}',
    ):
        await meter.publish("telemetry", body)
        await meter.publish("ack", body)
        await meter.publish("announce", body)
    now = int(time.time())
    await meter.reading(now + 3600, "100.000")  # a clock far in the future
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "101.000")
    await wait_until(hass, lambda: state(hass, entry, "balance") == "-0.49")
    assert entry.state is ConfigEntryState.LOADED


async def test_meter_reporting_the_other_state_is_told_again(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A meter whose relay is off while the platform wants it on gets the command again."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household="b3-501", amount="100", transaction_id="t1")
    meter.relay = "off"  # e.g. tripped locally, or a restore lost before a crash
    now = int(time.time())
    await meter.reading(now - 60, "100.000")
    await meter.wait_for(lambda: meter.relay == "on")
    assert [c["state"] for c in meter.commands if c.get("op") == "relay"] == ["on"]


async def test_device_shows_the_model_the_meter_announces(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A meter that announces a new model or firmware shows it on its device page."""
    entry = init_integration
    runtime = entry.runtime_data
    await wait_until(hass, lambda: runtime.meter_device(METER_ID) is not None)
    device = runtime.meter_device(METER_ID)
    assert device is not None
    assert (device.model, device.sw_version) == ("DDZY-60", "1.4.2")
    await meter.publish(
        "announce",
        {"v": 1, "meter_id": METER_ID, "model": "DDZY-80", "fw": "1.5.0", "relay": True},
    )

    def shown() -> tuple[str | None, str | None]:
        found = runtime.meter_device(METER_ID)
        assert found is not None
        return found.model, found.sw_version

    await wait_until(hass, lambda: shown() == ("DDZY-80", "1.5.0"))


async def test_large_community_writes_measurements_on_a_timer(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Above the threshold, a reading's measurements reach the state machine on the timer;
    the money decision itself is immediate."""

    entry = init_integration
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household="b3-501", amount="10", transaction_id="t1")
    await wait_until(hass, lambda: state(hass, entry, "balance") == "10.00")
    community = entry.runtime_data.community
    with patch("custom_components.prepaid_meter.coordinator.MEASUREMENT_THROTTLE_ABOVE", 0):
        now = int(time.time())
        await meter.reading(now - 120, "100.000")
        # 50 kWh, tiers prorated to the 3 days the account is open in November (24/40 kWh):
        # far below minus the emergency credit.
        await meter.reading(now - 60, "150.000")
        await wait_until(hass, lambda: community.meters[METER_ID].seq == 2)
        balance = community.households["b3-501"].electricity
        assert balance < -10
        assert state(hass, entry, "supply") == "off"  # relay state: at once
        assert state(hass, entry, "balance") == "10.00"  # measurement: not yet
        # The minute timer's job (firing the timer itself would also age the MQTT keepalive).
        await entry.runtime_data._async_write_measurements(everything=True)
        await hass.async_block_till_done()
        assert state(hass, entry, "balance") == str(balance.quantize(Decimal("0.01")))


async def test_community_totals_written_once_per_publish_not_per_reading(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Readings mark the community figures dirty; the 2-second publish job writes them once."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household="b3-501", amount="100", transaction_id="t1")
    await hass.async_block_till_done()
    calls: list[int] = []
    remove = runtime.async_add_community_listener(lambda: calls.append(1))
    now = int(time.time())
    for seq, kwh in enumerate(("100.000", "101.000", "102.000", "103.000"), start=1):
        await meter.reading(now - 300 + seq * 10, kwh)
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 4)
    assert calls == []
    await runtime._async_publish_interval(None)
    assert calls == [1]
    assert runtime.totals["total_balance"] == runtime.community.households["b3-501"].electricity
    remove()


async def test_large_community_totals_wait_but_a_cut_is_written_at_once(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Throttled: readings wait LARGE_PUBLISH_INTERVAL_S; a supply change the next publish."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household="b3-501", amount="100", transaction_id="t1")
    await runtime._async_publish_interval(None)
    calls: list[int] = []
    remove = runtime.async_add_community_listener(lambda: calls.append(1))
    with patch("custom_components.prepaid_meter.coordinator.MEASUREMENT_THROTTLE_ABOVE", 0):
        assert runtime.throttled
        now = int(time.time())
        await meter.reading(now - 120, "100.000")
        await meter.reading(now - 60, "101.000")
        await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 2)
        await runtime._async_publish_interval(None)
        assert calls == []  # only figures moved: they wait
        runtime._community_written -= coordinator.LARGE_PUBLISH_INTERVAL_S
        await runtime._async_publish_interval(None)
        assert calls == [1]
        await hass.services.async_call(
            "switch", "turn_off", {"entity_id": entity_id(hass, entry, "supply")}, blocking=True
        )
        await runtime._async_publish_interval(None)
        assert calls == [1, 1]  # a cut is on the operator's list at once
        assert runtime.totals["supplies_cut"] == 1
    remove()


async def test_measurement_writes_are_sliced_oldest_first(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Each run of the measurement job writes one slice of the changed meters, oldest first."""
    runtime = init_integration.runtime_data
    await wait_until(hass, lambda: METER_ID in runtime.community.meters)
    with patch("custom_components.prepaid_meter.coordinator.MEASUREMENT_THROTTLE_ABOVE", 0):
        for meter_id in ("a", "b", "c"):
            runtime._notify_measurements(meter_id)
        runtime._notify_measurements("a")  # changed again: keeps its place
        assert list(runtime._measured) == ["a", "b", "c"]
        await runtime._async_write_measurements()  # 1 meter known: slices of 1
        assert list(runtime._measured) == ["b", "c"]
        await runtime._async_write_measurements(everything=True)
        assert list(runtime._measured) == []


async def test_measurement_writes_give_the_event_loop_back_between_chunks(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A long slice of state writes pauses for other work (a cut must not wait for it)."""
    runtime = init_integration.runtime_data
    await wait_until(hass, lambda: METER_ID in runtime.community.meters)
    with (
        patch("custom_components.prepaid_meter.coordinator.MEASUREMENT_THROTTLE_ABOVE", 0),
        patch("custom_components.prepaid_meter.coordinator.YIELD_AFTER_S", 0),
    ):
        for meter_id in ("a", "b", "c"):
            runtime._notify_measurements(meter_id)
        job = asyncio.create_task(runtime._async_write_measurements(everything=True))
        await asyncio.sleep(0)
        assert list(runtime._measured) == ["b", "c"]  # one meter written, then a pause
        del runtime._measured["b"]  # written meanwhile by another run: skipped
        await job
        assert list(runtime._measured) == []


async def test_large_community_account_topic_at_most_every_30_s_relay_at_once(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Throttled: a household's account topic waits 30 s between updates, unless the relay moved."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household="b3-501", amount="30", transaction_id="t1")
    sent: list[str] = []

    async def record(topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if topic.endswith("/account"):
            sent.append(topic)

    with (
        patch.object(runtime.service, "timing", replace(runtime.service.timing, throttle_above=0)),
        patch.object(runtime.transport, "publish", record),
    ):
        now = int(time.time())
        await meter.reading(now - 300, "100.000")
        await meter.reading(now - 290, "101.000")
        await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 2)
        await runtime._publish_accounts()
        assert len(sent) == 1  # the first change goes out
        await meter.reading(now - 280, "102.000")
        await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 3)
        await runtime._publish_accounts()
        assert len(sent) == 1  # within 30 s: held back, still dirty
        await meter.reading(now - 270, "200.000")  # exhausts the credit: relay off
        await wait_until(hass, lambda: runtime.community.meters[METER_ID].desired_relay == "off")
        await runtime._publish_accounts()
        assert len(sent) == 2  # a relay change goes out at once
        assert sent[-1].endswith(f"/{METER_ID}/account")


async def test_measurement_interval_by_size_and_by_option(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Small communities write at once, large ones every 300 s; the option overrides both.

    Each slice (every 5 s) writes enough of the changed meters that every one is written
    once per interval: 1,000 changed meters at 300 s are 17 a slice.
    """
    entry = init_integration
    runtime = entry.runtime_data
    await wait_until(hass, lambda: METER_ID in runtime.community.meters)
    assert runtime.measurement_interval == 0 and not runtime.throttled
    with patch("custom_components.prepaid_meter.coordinator.MEASUREMENT_THROTTLE_ABOVE", 0):
        assert runtime.measurement_interval == 300
        with patch.dict(
            runtime.community.meters,
            {f"m{n}": runtime.community.meters[METER_ID] for n in range(999)},
        ):
            for n in range(999):
                runtime._notify_measurements(f"m{n}")
            await runtime._async_write_measurements()
            assert len(runtime._measured) == 999 - 17
            runtime._measured.clear()
    hass.config_entries.async_update_entry(
        entry, options={**entry.options, CONF_MEASUREMENT_INTERVAL: 0}
    )
    await hass.async_block_till_done()  # saving options reloads the entry
    runtime = entry.runtime_data
    with patch("custom_components.prepaid_meter.coordinator.MEASUREMENT_THROTTLE_ABOVE", 0):
        assert runtime.measurement_interval == 0 and not runtime.throttled


async def test_a_statement_of_a_cycle_the_tariff_has_not_is_a_translated_error(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A year on a monthly tariff: a translated error naming the form, not an empty statement."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    with pytest.raises(ServiceValidationError) as info:
        await call(hass, "get_statement", household="b3-501", cycle="2026")
    assert info.value.translation_key == "cycle_not_of_tariff"
    assert info.value.translation_placeholders == {"cycle": "2026", "expected": "YYYY-MM"}
    assert str(info.value).startswith(
        "2026 is not a billing cycle of this tariff: its cycles are written YYYY-MM"
    )


async def test_todays_and_this_months_figures(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Enabled by default (with all entities): the household's use and cost, with last resets."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    registry = er.async_get(hass)
    keys = ("today_energy", "today_cost", "month_energy", "month_cost", "tier_energy_left")
    for key in keys:
        found = registry.async_get(entity_id(hass, entry, key))
        assert found is not None
        assert found.disabled_by is None
    meter_after = entry.runtime_data
    await call(hass, "top_up", household="b3-501", amount="100", transaction_id="t1")
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "110.000")
    await wait_until(hass, lambda: state(hass, entry, "today_cost") == "4.88")
    assert meter_after is entry.runtime_data
    assert state(hass, entry, "today_energy") == "10.000"
    assert state(hass, entry, "month_energy") == "10.000"
    assert state(hass, entry, "month_cost") == "4.88"
    assert state(hass, entry, "tier_energy_left") is not None
    cost = hass.states.get(entity_id(hass, entry, "today_cost"))
    assert cost is not None
    assert cost.attributes["state_class"] == "total"
    assert "last_reset" in cost.attributes


@pytest.mark.parametrize(
    ("language", "name"), [("en", "Meter 000012345678"), ("zh-Hans", "电表 000012345678")]
)
async def test_unassigned_meter_device_named_in_home_assistants_language(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    tmp_path: Path,
    meter: TestMeter,
    language: str,
    name: str,
) -> None:
    """A meter not yet assigned is named by its id, in Home Assistant's language."""
    hass.config.language = language
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    runtime = config_entry.runtime_data
    await wait_until(hass, lambda: runtime.meter_device(METER_ID) is not None)
    device = runtime.meter_device(METER_ID)
    assert device is not None
    assert device.name == name
    assert await hass.config_entries.async_unload(config_entry.entry_id)
