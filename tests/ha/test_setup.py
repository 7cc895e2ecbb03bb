"""Setting a community up and taking it down: broker, credentials, tariff files, devices."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
from pathlib import Path
from unittest.mock import patch

import aiomqtt
from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState
from homeassistant.const import CONF_PASSWORD, CONF_PORT, CONF_USERNAME
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prepaid_meter import async_remove_config_entry_device
from custom_components.prepaid_meter.compat import get_device
from custom_components.prepaid_meter.const import CONF_TARIFF, DOMAIN
from custom_components.prepaid_meter.engine.community import Community
from custom_components.prepaid_meter.engine.ledger import Ledger
from tests.broker import Mosquitto, free_port
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter
from tests.ha.test_init import setup_household, wait_until

TARIFF_YAML = """
name: Test community tariff
currency: CNY
timezone: Asia/Shanghai
cycle: {period: month, starts: "01 00:00"}
tiers:
  - {up_to: 100, price: "0.5"}
  - {price: "0.8"}
"""


def _entry(config_entry: MockConfigEntry, **changes: object) -> MockConfigEntry:
    """Return a copy of the fixture's entry with some data changed."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=config_entry.title,
        unique_id=config_entry.unique_id,
        data={**config_entry.data, **changes},
        options=dict(config_entry.options),
    )


def _ledgers(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{DOMAIN}_*.sqlite3"))


async def _setup(hass: HomeAssistant, entry: MockConfigEntry, tmp_path: Path) -> bool:
    hass.config.config_dir = str(tmp_path)
    entry.add_to_hass(hass)
    result = await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return result


async def test_broker_unreachable_retries(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """Nothing listening on the port: the entry is not ready and will be retried."""
    entry = _entry(config_entry, **{CONF_PORT: free_port()})
    assert not await _setup(hass, entry, tmp_path)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert entry.error_reason_translation_key == "cannot_connect"
    placeholders = entry.error_reason_translation_placeholders or {}
    assert "Cannot connect" in placeholders["error"]
    # No ledger was opened: the broker check comes first.
    assert not await hass.async_add_executor_job(_ledgers, tmp_path)
    # Unloading cancels the scheduled retry (no timer is left behind).
    await hass.config_entries.async_unload(entry.entry_id)
    unloaded = hass.config_entries.async_get_entry(entry.entry_id)
    assert unloaded is not None and unloaded.state is ConfigEntryState.NOT_LOADED


async def test_bad_credentials_start_reauth(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    mosquitto_factory: Callable[..., Mosquitto],
    tmp_path: Path,
) -> None:
    """A password broker refusing the credentials: setup error and a reauth flow."""
    broker = mosquitto_factory(passwords={"u": "p"})
    entry = _entry(
        config_entry,
        host=broker.host,
        **{CONF_PORT: broker.port, CONF_USERNAME: "u", CONF_PASSWORD: "wrong"},
    )
    assert not await _setup(hass, entry, tmp_path)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.error_reason_translation_key == "invalid_auth"
    flows = hass.config_entries.flow.async_progress_by_handler(
        DOMAIN, match_context={"source": SOURCE_REAUTH}
    )
    assert [flow["context"]["entry_id"] for flow in flows] == [entry.entry_id]
    assert flows[0]["step_id"] == "reauth_confirm"


async def test_right_credentials_load(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    mosquitto_factory: Callable[..., Mosquitto],
    tmp_path: Path,
) -> None:
    """The same password broker with the right credentials: the entry loads and connects."""
    broker = mosquitto_factory(passwords={"u": "p"})
    entry = _entry(
        config_entry,
        host=broker.host,
        **{CONF_PORT: broker.port, CONF_USERNAME: "u", CONF_PASSWORD: "p"},
    )
    assert await _setup(hass, entry, tmp_path)
    assert entry.state is ConfigEntryState.LOADED
    runtime = entry.runtime_data
    assert runtime.transport.config.username == "u"
    async with asyncio.timeout(10):
        await runtime.transport.wait_connected()
    assert runtime.connected
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: [unclosed\n", "not valid YAML"),
        (TARIFF_YAML.replace('"0.5"', '"-0.5"'), "cannot be negative"),
        (None, "cannot read the tariff file"),
    ],
    ids=["yaml", "negative_price", "missing"],
)
async def test_broken_tariff_file_is_a_setup_error(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    tmp_path: Path,
    content: str | None,
    message: str,
) -> None:
    """A tariff file in the config folder that cannot be used: setup error with the reason."""
    if content is not None:
        (tmp_path / "tariff.yaml").write_text(content)
    entry = _entry(config_entry, **{CONF_TARIFF: "tariff.yaml"})
    assert not await _setup(hass, entry, tmp_path)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.error_reason_translation_key == "invalid_tariff"
    placeholders = entry.error_reason_translation_placeholders or {}
    assert message in placeholders["error"]


async def test_bad_policy_option_is_a_setup_error(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """An option the policy cannot use stops the setup with a clear reason."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id=config_entry.unique_id,
        data=dict(config_entry.data),
        options={"friendly_start": "25:99"},
    )
    assert not await _setup(hass, entry, tmp_path)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.error_reason_translation_key == "invalid_tariff"
    placeholders = entry.error_reason_translation_placeholders or {}
    assert "friendly_start" in placeholders["error"]


async def test_tariff_file_loads_and_prices(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    tmp_path: Path,
    meter: TestMeter,
) -> None:
    """A tariff YAML next to configuration.yaml is used for pricing."""
    (tmp_path / "tariffs").mkdir()
    (tmp_path / "tariffs" / "ours.yaml").write_text(TARIFF_YAML)
    entry = _entry(config_entry, **{CONF_TARIFF: "tariffs/ours.yaml"})
    assert await _setup(hass, entry, tmp_path)
    assert entry.state is ConfigEntryState.LOADED
    runtime = entry.runtime_data
    assert runtime.community.tariff.name == "Test community tariff"
    async with asyncio.timeout(10):
        await runtime.transport.wait_connected()
    await setup_household(hass, entry, meter)
    _tier, _period, price = runtime.community.price_now(runtime.community.meters[METER_ID])
    assert str(price) == "0.5"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_unreadable_ledger_is_a_setup_error(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """A ledger file that is not a database stops the setup, and the file is left alone."""
    community_id = config_entry.data["community_id"]
    ledger = tmp_path / f"{DOMAIN}_{community_id}.sqlite3"
    ledger.write_bytes(b"this is not a SQLite database" * 100)
    assert not await _setup(hass, config_entry, tmp_path)
    assert config_entry.state is ConfigEntryState.SETUP_ERROR
    assert config_entry.error_reason_translation_key == "ledger_error"
    assert ledger.read_bytes().startswith(b"this is not a SQLite database")


async def test_unload_leaves_nothing_running(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """After unload: the transport's tasks are gone, the ledger is closed, no timer is left."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    transport = runtime.transport
    before = {t for t in asyncio.all_tasks() if not t.done()}
    names = {t.get_name() for t in before}
    assert "prepaid_meter mqtt connection" in names
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED
    assert not transport.connected
    assert not runtime.connected
    left = {
        t.get_name()
        for t in asyncio.all_tasks()
        if not t.done() and t.get_name().startswith("prepaid_meter")
    }
    assert left == set()
    assert runtime._unsubs == []
    # The ledger is closed: using it now fails.
    with pytest.raises(Exception, match="closed"):
        runtime.community.ledger.balances("b3-501")
    # The entry's entities stay registered but none reports a live state any more.
    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    assert len(entities) > 5
    for entity in entities:
        found = hass.states.get(entity.entity_id)
        assert found is None or found.state == "unavailable"


async def test_remove_devices(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """The community hub device cannot be removed; a meter's device can."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    registry = dr.async_get(hass)
    await wait_until(hass, lambda: runtime.meter_device(METER_ID) is not None)
    hub = get_device(registry, (DOMAIN, runtime.community_identifier), entry.entry_id)
    device = runtime.meter_device(METER_ID)
    assert hub is not None and device is not None
    assert hub.id == runtime.hub_device_id
    assert device.via_device_id == hub.id
    assert await async_remove_config_entry_device(hass, entry, hub) is False
    assert await async_remove_config_entry_device(hass, entry, device) is True


async def _resume(broker: Mosquitto, client_id: str) -> list[bytes]:
    """Resume a persistent session and return what the broker had queued for it."""
    received: list[bytes] = []
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=client_id, clean_session=False
    ) as client:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    received.append(message.payload)
                    break
    return received


async def _loaded_on(
    hass: HomeAssistant, config_entry: MockConfigEntry, broker: Mosquitto, tmp_path: Path
) -> MockConfigEntry:
    entry = _entry(config_entry, host=broker.host, **{CONF_PORT: broker.port})
    assert await _setup(hass, entry, tmp_path)
    async with asyncio.timeout(10):
        await entry.runtime_data.transport.wait_connected()
    return entry


async def test_remove_entry_drops_the_broker_session(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    mosquitto_factory: Callable[..., Mosquitto],
    tmp_path: Path,
) -> None:
    """Removing the entry makes the broker forget what it queued for the entry's session."""
    broker = mosquitto_factory(persistence=True)
    entry = await _loaded_on(hass, config_entry, broker, tmp_path)
    runtime = entry.runtime_data
    client_id = runtime.transport.config.client_id
    topic = f"prepaid/{runtime.community_id}/{METER_ID}/telemetry"
    assert await hass.config_entries.async_unload(entry.entry_id)
    # Queued by the broker for the (now offline) persistent session of the entry.
    async with aiomqtt.Client(broker.host, broker.port, identifier="publisher") as publisher:
        await publisher.publish(topic, b"queued", qos=1)
    await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    assert hass.config_entries.async_get_entry(entry.entry_id) is None
    # The same client id, resuming its session, gets nothing queued: the session is gone.
    assert await _resume(broker, client_id) == []
    # Control: a session that was not dropped does get the message queued for it.
    async with aiomqtt.Client(
        broker.host, broker.port, identifier="control", clean_session=False
    ) as control:
        await control.subscribe(topic, qos=1)
    async with aiomqtt.Client(broker.host, broker.port, identifier="publisher") as publisher:
        await publisher.publish(topic, b"queued", qos=1)
    assert await _resume(broker, "control") == [b"queued"]
    # The ledger stays: its money history outlives the entry.
    assert await hass.async_add_executor_job(_ledgers, tmp_path)


async def test_remove_entry_with_broker_down(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    mosquitto_factory: Callable[..., Mosquitto],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker cannot be reached to drop the session: the entry is removed all the same."""
    broker = mosquitto_factory(persistence=False)
    entry = await _loaded_on(hass, config_entry, broker, tmp_path)
    broker.stop()
    await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    assert hass.config_entries.async_get_entry(entry.entry_id) is None
    assert "not reachable to drop the session" in caplog.text


async def test_failure_while_starting_stops_what_started(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """An error while loading the community: setup fails, the ledger is closed, nothing runs."""
    closed: list[bool] = []
    real_close = Ledger.close

    def close(ledger: Ledger) -> None:
        closed.append(True)
        real_close(ledger)

    with (
        patch.object(Community, "load", side_effect=RuntimeError("corrupt row")),
        patch.object(Ledger, "close", close),
    ):
        assert not await _setup(hass, config_entry, tmp_path)
    assert config_entry.state is ConfigEntryState.SETUP_ERROR
    assert closed == [True]
    assert not [
        t for t in asyncio.all_tasks() if not t.done() and t.get_name().startswith("prepaid_meter")
    ]


async def test_options_change_reloads_with_the_new_policy(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """New options reload the entry so the new supply rules apply at once."""
    entry = init_integration
    first = entry.runtime_data
    assert first.community.policy.warn_level_1 == 20
    hass.config_entries.async_update_entry(entry, options={**entry.options, "warn_level_1": "35"})
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is not first
    assert entry.runtime_data.community.policy.warn_level_1 == 35
    async with asyncio.timeout(10):
        await entry.runtime_data.transport.wait_connected()


async def test_public_holidays_follow_home_assistants_country(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """The community's friendly days come from the country Home Assistant is set to.

    2026-10-01 (National Day) is friendly all day in China; 2026-10-10, a make-up working
    Saturday, is not, although weekends are friendly.
    """
    from datetime import datetime, timedelta, timezone

    from custom_components.prepaid_meter.engine.policy import is_friendly

    hass.config.config_dir = str(tmp_path)
    hass.config.country = "CN"
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=config_entry.title,
        unique_id=config_entry.unique_id,
        data=dict(config_entry.data),
        options={"friendly_start": "00:00", "friendly_end": "00:00", "friendly_weekends": True},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    policy = entry.runtime_data.community.policy
    assert policy.country == "CN"
    cst = timezone(timedelta(hours=8))
    assert is_friendly(datetime(2026, 10, 1, 12, tzinfo=cst), policy)
    assert not is_friendly(datetime(2026, 10, 10, 12, tzinfo=cst), policy)
    assert is_friendly(datetime(2026, 10, 17, 12, tzinfo=cst), policy)  # an ordinary Saturday
    assert await hass.config_entries.async_unload(entry.entry_id)
