"""A household's own entry ("My household") on a real mosquitto with dynamic security.

The household logs in as its own broker user (provisioned with `DynSecAdmin`). The community
is either a real `CommunityService` from the engine (on the community platform's user, the
meter on its own user), or the platform's user publishing what a community publishes, where
a test needs the community to say something precise (an old account, no answer at all).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import contextlib
from dataclasses import dataclass
from decimal import Decimal
import json
from pathlib import Path
import time
from typing import Any

import aiomqtt
from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.prepaid_meter.const import DOMAIN
from custom_components.prepaid_meter.diagnostics import async_get_config_entry_diagnostics
from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.broker_acl import ConnectionDetails, DynSecAdmin
from custom_components.prepaid_meter.engine.community import Community
from custom_components.prepaid_meter.engine.household import (
    RestoreRequest,
    parse_request,
    request_answer,
)
from custom_components.prepaid_meter.engine.ledger import Ledger
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.profiles import make_profile
from custom_components.prepaid_meter.engine.service import CommunityService
from custom_components.prepaid_meter.engine.tariff import load_preset
from custom_components.prepaid_meter.household_entry import (
    CONF_STALE_MINUTES,
    STALE_CHECK_INTERVAL,
    HouseholdRuntime,
    household_data,
    household_unique_id,
)
from tests.broker import Mosquitto
from tests.engine.test_broker_acl import admin_config

COMMUNITY = "oak"
METER = "000012345678"
BASE = f"prepaid/{COMMUNITY}/{METER}"


@dataclass(frozen=True)
class Users:
    """The broker users of one test: the household's, the platform's and the meter's."""

    broker: Mosquitto
    household: ConnectionDetails
    platform: ConnectionDetails
    meter: ConnectionDetails


@pytest.fixture
async def users(mosquitto_factory: Callable[..., Mosquitto]) -> Users:
    """Start a broker with dynamic security and provision this community's users."""
    broker = mosquitto_factory(dynamic_security=True, persistence=False)
    async with DynSecAdmin(admin_config(broker)) as admin:
        return Users(
            broker,
            await admin.ensure_household(COMMUNITY, METER),
            await admin.ensure_platform(COMMUNITY),
            await admin.ensure_meter(COMMUNITY, METER),
        )


def household_entry(details: ConnectionDetails) -> MockConfigEntry:
    """Return the entry the config flow makes for these details."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"{COMMUNITY} {METER}",
        unique_id=household_unique_id(COMMUNITY, METER),
        data=household_data(details, "CNY"),
    )


async def set_up(hass: HomeAssistant, entry: MockConfigEntry) -> HouseholdRuntime:
    """Set the household entry up and wait until its client is connected."""
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    runtime: HouseholdRuntime = entry.runtime_data
    async with asyncio.timeout(10):
        await runtime.client.wait_connected()
    return runtime


def entity(hass: HomeAssistant, platform: str, key: str) -> str:
    """Return the entity id of one of the household's entities."""
    unique_id = f"household_prepaid_{COMMUNITY}_{METER}_{key}"
    entity_id = er.async_get(hass).async_get_entity_id(platform, DOMAIN, unique_id)
    assert entity_id is not None, unique_id
    return entity_id


def state_of(hass: HomeAssistant, platform: str, key: str) -> str:
    """Return an entity's state."""
    current = hass.states.get(entity(hass, platform, key))
    assert current is not None
    return current.state


async def until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait until `check()` holds; fail after `seconds`."""
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within {seconds} s")


@contextlib.asynccontextmanager
async def login(details: ConnectionDetails, name: str) -> AsyncIterator[aiomqtt.Client]:
    """Connect as the broker user of `details`."""
    async with aiomqtt.Client(
        details.host,
        details.port,
        username=details.username,
        password=details.password,
        identifier=f"test-{name}",
        timeout=5,
    ) as client:
        yield client


def account(**changes: Any) -> bytes:
    """Return an account payload as a community publishes it (now), with `changes`."""
    body: dict[str, Any] = {
        "v": 1,
        "balance": "12.34",
        "currency": "CNY",
        "low": False,
        "relay": "on",
        "cycle": "2026-11",
        "cycle_kwh": "250.100",
        "tier": 2,
        "price": "0.5383",
        "days_left": "9.5",
        "today_kwh": "4.200",
        "today_cost": "2.26",
        "month_kwh": "120.5",
        "month_cost": "64.87",
        "updated": int(time.time()),
    }
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


async def press(hass: HomeAssistant) -> None:
    """Press the household's restore button."""
    await hass.services.async_call(
        "button", "press", {"entity_id": entity(hass, "button", "restore_supply")}, blocking=True
    )


# -- fed by a real community ------------------------------------------------------------


@pytest.fixture
async def community(hass: HomeAssistant, users: Users, tmp_path: Path) -> AsyncIterator[Any]:
    """Run the engine's community service on the platform's broker user; stop it after."""

    class Listener:
        def __init__(self) -> None:
            self.discovered: list[str] = []

        def events(self, events: Any) -> None:
            pass

        def meter_changed(self, meter_id: str) -> None:
            pass

        def meter_discovered(self, meter_id: str) -> None:
            self.discovered.append(meter_id)

        def connection(self, connected: bool, reason: str) -> None:
            pass

    def build() -> Community:
        policy = PolicyConfig.from_options(
            {
                "friendly_start": "00:00",
                "friendly_end": "00:00",
                "friendly_weekends": False,
                "emergency_credit": "0",
                "auto_restore": False,  # the household's request restores, not the top-up
            }
        )
        return Community(Ledger(tmp_path / "ledger.sqlite3"), load_preset("flat"), policy)

    listener = Listener()
    service = CommunityService(
        await hass.async_add_executor_job(build),
        make_profile("native", community=COMMUNITY),
        users.platform.transport_config("test-community"),
        prefix="prepaid",
        community_id=COMMUNITY,
        currency="CNY",
        listener=listener,
    )
    await service.start()
    async with asyncio.timeout(10):
        await service.transport.wait_connected()
    service.test_listener = listener  # type: ignore[attr-defined]
    yield service
    await service.stop()
    await hass.async_add_executor_job(service.community.ledger.close)


async def test_household_follows_a_running_community(
    hass: HomeAssistant, users: Users, community: CommunityService
) -> None:
    """Balance, supply and energy follow the community; restore requests get its answers.

    After a credit cut the household's request is refused until a top-up clears the
    threshold, then it restores; after an operator's cut it is refused with its reason; a
    replayed request id does nothing.
    """
    async with login(users.meter, "meter") as meter:
        await meter.publish(f"{BASE}/announce", json.dumps({"v": 1, "meter_id": METER}), qos=1)
        await until(lambda: METER in community.test_listener.discovered)  # type: ignore[attr-defined]
        await community.assign(METER, "h1", "Household 1")
        cashier = Actor("operator", name="cashier")
        await community.top_up("h1", Decimal(5), "tx-1", "cash", cashier)
        await community.flush()

        runtime = await set_up(hass, household_entry(users.household))
        await until(lambda: runtime.view is not None and runtime.view.balance == Decimal(5))
        await hass.async_block_till_done()
        assert state_of(hass, "sensor", "balance") == "5.00"
        balance = hass.states.get(entity(hass, "sensor", "balance"))
        assert balance is not None
        assert balance.attributes["unit_of_measurement"] == "CNY"
        assert state_of(hass, "binary_sensor", "supply_on") == STATE_ON
        assert state_of(hass, "sensor", "supply_reason") == "none"
        # 5 CNY is below the default warning level: the community says low.
        assert runtime.view is not None
        assert runtime.view.low is True
        assert state_of(hass, "binary_sensor", "low_balance") == STATE_ON
        assert state_of(hass, "sensor", "energy") == "unknown"  # no reading yet

        # Readings bill the household: 20 kWh at 0.4883 is more than the 5 CNY it has.
        now = int(time.time())
        for seq, (ts, kwh) in enumerate([(now - 120, "100"), (now - 60, "120")], start=1):
            body = {"v": 1, "seq": seq, "ts": ts, "energy_kwh": kwh, "relay": "on"}
            await meter.publish(f"{BASE}/telemetry", json.dumps(body), qos=1)
        await community.flush()
        await until(lambda: runtime.view is not None and runtime.view.relay == "off")
        await until(lambda: runtime.reading is not None and runtime.reading.energy_kwh == 120)
        await hass.async_block_till_done()
        assert state_of(hass, "binary_sensor", "supply_on") == STATE_OFF
        assert state_of(hass, "sensor", "supply_reason") == "credit_exhausted"
        assert state_of(hass, "binary_sensor", "low_balance") == STATE_ON
        assert state_of(hass, "sensor", "balance") == "-4.77"
        assert state_of(hass, "sensor", "energy") == "120"

        # Not paid yet: refused in words.
        with pytest.raises(HomeAssistantError) as refused:
            await press(hass)
        assert refused.value.translation_key == "household_refused_not_paid"
        assert state_of(hass, "binary_sensor", "supply_on") == STATE_OFF

        # Paid: the request restores (the top-up alone does not: auto restore is off).
        await community.top_up("h1", Decimal(20), "tx-2", "cash", cashier)
        await community.flush()
        await until(lambda: runtime.view is not None and runtime.view.balance > 0)
        await hass.async_block_till_done()
        assert state_of(hass, "binary_sensor", "supply_on") == STATE_OFF
        await press(hass)
        accepted = runtime.client.sent_requests[-1]
        await until(lambda: runtime.view is not None and runtime.view.relay == "on")
        await hass.async_block_till_done()
        assert state_of(hass, "binary_sensor", "supply_on") == STATE_ON

        # The operator cuts: the household may not undo it, and says so.
        await community.request_supply(METER, "off", actor=Actor("operator", name="operator"))
        await community.flush()
        await until(lambda: runtime.view is not None and runtime.view.relay == "off")
        await hass.async_block_till_done()
        assert state_of(hass, "sensor", "supply_reason") == "manual"
        with pytest.raises(HomeAssistantError) as refused:
            await press(hass)
        assert refused.value.translation_key == "household_refused_needs_operator"

        # A replayed request id (the one accepted before) gets its old answer and does nothing.
        await runtime.client.request_restore(accepted)
        async with asyncio.timeout(10):
            answer = await runtime.client.wait_answer(accepted)
        assert answer.ok
        await community.flush()
        await asyncio.sleep(0.3)
        assert runtime.view is not None
        assert runtime.view.relay == "off"
        assert community.community.meters[METER].desired_relay == "off"

    # One device, named for the household.
    devices = dr.async_entries_for_config_entry(dr.async_get(hass), runtime.entry.entry_id)
    assert len(devices) == 1
    assert devices[0].serial_number == METER
    await hass.config_entries.async_unload(runtime.entry.entry_id)
    await hass.async_block_till_done()
    assert runtime.entry.state is ConfigEntryState.NOT_LOADED
    assert not runtime.connected


# -- a community played by its platform user ------------------------------------------------


async def test_stale_community_makes_the_household_unavailable(
    hass: HomeAssistant, users: Users
) -> None:
    """Entities go unavailable when the community's last word is older than the option."""
    async with login(users.platform, "platform") as platform:
        await platform.publish(f"{BASE}/account", account(), qos=1, retain=True)
        entry = household_entry(users.household)
        runtime = await set_up(hass, entry)
        await until(lambda: runtime.available)
        await hass.async_block_till_done()
        assert state_of(hass, "sensor", "balance") == "12.34"
        assert state_of(hass, "sensor", "days_left") == "9.5"
        assert state_of(hass, "sensor", "today_energy") == "4.200"
        assert state_of(hass, "sensor", "month_cost") == "64.87"
        assert state_of(hass, "sensor", "price") == "0.5383"
        assert state_of(hass, "sensor", "tier") == "2"

        # Twenty minutes without news (the default limit is fifteen).
        await platform.publish(
            f"{BASE}/account", account(updated=int(time.time()) - 20 * 60), qos=1, retain=True
        )
        await until(lambda: not runtime.available)
        await hass.async_block_till_done()
        assert state_of(hass, "sensor", "balance") == STATE_UNAVAILABLE
        assert state_of(hass, "binary_sensor", "supply_on") == STATE_UNAVAILABLE
        assert state_of(hass, "button", "restore_supply") == STATE_UNAVAILABLE

        # A longer limit in the options: available again at once, no reload.
        hass.config_entries.async_update_entry(entry, options={CONF_STALE_MINUTES: 30})
        await hass.async_block_till_done()
        assert state_of(hass, "sensor", "balance") == "12.34"

        # The clock alone makes it stale: 2 s to the limit, then the periodic check.
        await platform.publish(
            f"{BASE}/account",
            account(balance="8.00", updated=int(time.time()) - 30 * 60 + 2),
            qos=1,
            retain=True,
        )
        await until(lambda: runtime.view is not None and runtime.view.balance == 8)
        await hass.async_block_till_done()
        assert state_of(hass, "sensor", "balance") == "8.00"
        await asyncio.sleep(3)
        async_fire_time_changed(hass, dt_util.utcnow() + STALE_CHECK_INTERVAL)
        await hass.async_block_till_done()
        assert state_of(hass, "sensor", "balance") == STATE_UNAVAILABLE

        # Garbage on the account topic changes nothing and crashes nothing.
        await platform.publish(f"{BASE}/account", account(), qos=1, retain=True)
        await until(lambda: runtime.available)
        await platform.publish(f"{BASE}/account", b"\xff not json", qos=1, retain=True)
        await until(lambda: runtime.client.malformed["account"] == 1)
        await hass.async_block_till_done()
        assert state_of(hass, "sensor", "balance") == "12.34"

    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def test_restore_answers_in_words(hass: HomeAssistant, users: Users) -> None:
    """The button says what the community answered, or that it has not answered yet."""
    async with login(users.platform, "platform") as platform:
        await platform.subscribe(f"{BASE}/request", qos=1)
        await platform.publish(
            f"{BASE}/account", account(relay="off", reason="overload"), qos=1, retain=True
        )
        entry = household_entry(users.household)
        runtime = await set_up(hass, entry)
        await until(lambda: runtime.available)
        await hass.async_block_till_done()
        assert state_of(hass, "sensor", "supply_reason") == "overload"
        runtime.answer_wait_s = 1.0

        async def community_answers(ok: bool, reason: str | None) -> RestoreRequest:
            async for message in platform.messages:
                request = parse_request(message.payload)
                assert isinstance(request, RestoreRequest)
                answer = request_answer(request.id, ok, reason)
                await platform.publish(
                    f"{BASE}/account",
                    account(relay="on" if ok else "off", reason="overload", request=answer),
                    qos=1,
                    retain=True,
                )
                return request
            raise AssertionError("no request")  # pragma: no cover

        # No answer in time: it says the request was sent.
        with pytest.raises(HomeAssistantError) as unanswered:
            await press(hass)
        assert unanswered.value.translation_key == "household_request_unanswered"
        async with asyncio.timeout(5):
            message = await anext(aiter(platform.messages))
        request = parse_request(message.payload)
        assert isinstance(request, RestoreRequest)
        assert request.id == runtime.client.sent_requests[-1]

        # A reason it does not know is shown as sent.
        runtime.answer_wait_s = 10.0
        answering = asyncio.create_task(community_answers(False, "meter_busy"))
        with pytest.raises(HomeAssistantError) as refused:
            await press(hass)
        await answering
        assert refused.value.translation_key == "household_restore_refused"
        assert refused.value.translation_placeholders == {"reason": "meter_busy"}

        # Accepted: no error, and the supply follows.
        answering = asyncio.create_task(community_answers(True, None))
        await press(hass)
        await answering
        await until(lambda: runtime.view is not None and runtime.view.relay == "on")
        await hass.async_block_till_done()
        assert state_of(hass, "binary_sensor", "supply_on") == STATE_ON

    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    text = json.dumps(diagnostics)
    assert users.household.password not in text
    assert diagnostics["entry"]["data"]["password"] == "**REDACTED**"
    assert diagnostics["household"]["connected"] is True
    assert diagnostics["household"]["account"]["relay"] == "on"
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def test_revoked_household_is_asked_to_sign_in_again(
    hass: HomeAssistant, users: Users
) -> None:
    """A revoked user starts a reauth flow; a new code brings the household back."""
    async with login(users.platform, "platform") as platform:
        await platform.publish(f"{BASE}/account", account(), qos=1, retain=True)
    entry = household_entry(users.household)
    runtime = await set_up(hass, entry)
    await until(lambda: runtime.available)

    async with DynSecAdmin(admin_config(users.broker)) as admin:
        assert await admin.revoke_household(COMMUNITY, METER)
    await until(lambda: runtime.refused, seconds=15)
    await hass.async_block_till_done()
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [(f["context"]["source"], f["step_id"]) for f in flows] == [
        (SOURCE_REAUTH, "household_reauth")
    ]
    assert state_of(hass, "sensor", "balance") == STATE_UNAVAILABLE

    # The operator gives out a new code; the resident pastes it.
    async with DynSecAdmin(admin_config(users.broker)) as admin:
        details = await admin.ensure_household(COMMUNITY, METER)
    result = await hass.config_entries.flow.async_configure(
        flows[0]["flow_id"], {"code": details.code()}
    )
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()
    assert entry.data["password"] == details.password
    runtime = entry.runtime_data
    async with asyncio.timeout(10):
        await runtime.client.wait_connected()
    await until(lambda: runtime.available)
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def test_refused_at_setup_asks_for_new_credentials(hass: HomeAssistant, users: Users) -> None:
    """Setting up with a password the broker refuses fails as an auth error: reauth."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=f"{COMMUNITY} {METER}",
        unique_id=household_unique_id(COMMUNITY, METER),
        data={**household_data(users.household, "CNY"), "password": "not-it"},
    )
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_ERROR
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [f["step_id"] for f in flows] == ["household_reauth"]


async def test_unreachable_broker_retries_setup(hass: HomeAssistant, users: Users) -> None:
    """Without the broker the entry is not ready (Home Assistant retries it)."""
    users.broker.stop()
    entry = household_entry(users.household)
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
