"""The seam between Home Assistant and the engine: the community service, mocked.

A core integration's tests patch its library's client class with `autospec=True` and hand
the integration a mock whose methods return fixtures. This project's library is the engine,
and its one door is `engine.service.CommunityService`: the fixtures here patch it where the
coordinator builds it, so a config entry loads with no broker and no service behind it.

What stays real is what the entities read: the `Community` that entry.py builds (on a
temporary SQLite ledger in the test's config folder) sits behind `service.community`, and a
test changes it through the engine's own memory-only methods (`handle_announce`,
`handle_reading`, ...) and ledger methods, then tells the runtime what changed through the
`ServiceListener` callbacks, in the order the real service calls them (engine/service.py:
`_handle`, `_dispatch`, `assign`, `_money_applied`). Every request the integration makes
of the service is a call on the mock, which a test asserts (and can make refuse).

The mock keeps the service's real signatures (autospec): a call with a name the service has
not, or with arguments it does not take, fails the test. Attributes the service sets in its
constructor (community, profile, connected) are not on the class and so not on the mock,
except the ones set here; reading any other one (`transport`, `commands`) fails too.

These tests open no socket: the Home Assistant plugin blocks sockets unless a test asks for
`socket_enabled` (the broker fixtures do; the `seam` fixture refuses to run beside them), its
current release fails any test that even tries, and `check_connection` is patched out too.
Run them with `pytest tests/ha/test_<platform>.py`; naming seam.py itself on the command line
collects it as a test module and hides its fixtures.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest.mock import DEFAULT, MagicMock, patch

from homeassistant.auth.models import User
from homeassistant.const import CONF_HOST, CONF_PORT, Platform
from homeassistant.core import HomeAssistant, State
from homeassistant.helpers import entity_registry as er, issue_registry as ir
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prepaid_meter.const import (
    CONF_COMMUNITY_ID,
    CONF_COMMUNITY_NAME,
    CONF_CURRENCY,
    CONF_PREFIX,
    CONF_TARIFF,
    DOMAIN,
)
from custom_components.prepaid_meter.coordinator import PrepaidRuntime
from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.community import Community, Event
from custom_components.prepaid_meter.engine.protocol import Reading
from custom_components.prepaid_meter.entry import PLATFORMS

SERVICE = "custom_components.prepaid_meter.coordinator.CommunityService"
CHECK_CONNECTION = "custom_components.prepaid_meter.entry.check_connection"

COMMUNITY_ID = "seam"
COMMUNITY_NAME = "Seam community"
METER_ID = "000012345678"
HOUSEHOLD = "b3-501"
LABEL = "Household 3-501"
#: The flat preset's one price (engine/presets/flat.yaml), CNY per kWh.
FLAT_PRICE = Decimal("0.4883")


class Seam:
    """A loaded community entry with its service mocked, and the real community behind it."""

    def __init__(self, hass: HomeAssistant, entry: MockConfigEntry, service: MagicMock) -> None:
        """Bind to the loaded entry and the mock the coordinator holds."""
        self.hass = hass
        self.entry = entry
        self.service = service

    @property
    def runtime(self) -> PrepaidRuntime:
        """Return the entry's runtime (the service's listener)."""
        runtime: PrepaidRuntime = self.entry.runtime_data
        return runtime

    @property
    def community(self) -> Community:
        """Return the real community behind the mocked service."""
        community: Community = self.service.community
        return community

    # ------------------------------------------------------------------ entities

    def entity_id(self, domain: str, key: str, meter_id: str = METER_ID) -> str:
        """Return the entity id of a meter's entity, found by its unique id."""
        unique_id = self.runtime.meter_unique_id(meter_id, key)
        entity_id = er.async_get(self.hass).async_get_entity_id(domain, DOMAIN, unique_id)
        assert entity_id is not None, f"no {domain} {key} for {meter_id}"
        return entity_id

    def community_entity_id(self, domain: str, key: str) -> str:
        """Return the entity id of one of the community hub's entities."""
        unique_id = f"{self.runtime.community_identifier}_{key}"
        entity_id = er.async_get(self.hass).async_get_entity_id(domain, DOMAIN, unique_id)
        assert entity_id is not None, f"no community {domain} {key}"
        return entity_id

    def state(self, domain: str, key: str, meter_id: str = METER_ID) -> State:
        """Return the state object of a meter's entity."""
        state = self.hass.states.get(self.entity_id(domain, key, meter_id))
        assert state is not None
        return state

    def issue(self, issue_id: str) -> ir.IssueEntry | None:
        """Return one of the integration's repairs, or None."""
        return ir.async_get(self.hass).async_get_issue(DOMAIN, issue_id)

    # ------------------------------------------------------------------ the listener's side

    async def deliver(self, events: Sequence[Event]) -> None:
        """Hand events to the runtime as the service does once it has acted on them.

        A `relay` event's meter changed first (the service told its command tracker), then
        all the events at once (engine/service.py `_dispatch`).
        """
        for event in events:
            if event.kind == "relay" and event.meter_id is not None:
                self.runtime.meter_changed(event.meter_id)
        if events:
            self.runtime.events(events)
        await self.hass.async_block_till_done()

    async def _heard(self, meter_id: str, known: bool, events: list[Event]) -> list[Event]:
        """After a meter's message: as `CommunityService._handle` tells its listener."""
        if meter_id not in self.community.meters:
            await self.deliver(events)  # an id that is not a meter here: nothing to show
            return events
        if not known:
            self.runtime.meter_discovered(meter_id)
        await self.deliver(events)
        self.runtime.meter_changed(meter_id)
        await self.hass.async_block_till_done()
        return events

    async def announce(
        self, meter_id: str = METER_ID, *, model: str = "DDZY-60", firmware: str = "1.4.2"
    ) -> list[Event]:
        """A meter announces itself (its retained `announce` message)."""
        known = meter_id in self.community.meters
        events = self.community.handle_announce(
            meter_id, model=model, firmware=firmware, rated_current_a=60
        )
        return await self._heard(meter_id, known, events)

    async def availability(self, meter_id: str, online: bool) -> list[Event]:
        """A meter says it is online, or its last will says it is gone."""
        known = meter_id in self.community.meters
        events = self.community.handle_availability(meter_id, online)
        return await self._heard(meter_id, known, events)

    async def reading(
        self,
        ts: int,
        kwh: str,
        meter_id: str = METER_ID,
        *,
        seq: int | None = None,
        **fields: Any,
    ) -> list[Event]:
        """A meter's telemetry reading (by default, seq one past the meter's last)."""
        known = meter_id in self.community.meters
        meter = self.community.meters.get(meter_id)
        if seq is None:
            seq = (meter.seq or 0) + 1 if meter is not None else 1
        values: dict[str, Any] = {
            "power_w": 850.0,
            "voltage_v": 229.8,
            "current_a": 3.9,
            "neutral_current_a": 3.9,
            "relay": "on",
        }
        values.update(fields)
        reading = Reading(meter_id, seq, ts, Decimal(kwh), **values)
        return await self._heard(meter_id, known, self.community.handle_reading(reading))

    async def assign(
        self, meter_id: str = METER_ID, account_id: str = HOUSEHOLD, label: str = LABEL
    ) -> list[Event]:
        """Bind a meter to a household in the real ledger, as `CommunityService.assign` does."""
        info = await self.hass.async_add_executor_job(
            lambda: self.community.assign_meter(meter_id, account_id, label)
        )
        events = self.community.apply_assignment(meter_id, info)
        await self.deliver(events)
        self.runtime.meter_discovered(meter_id)
        self.runtime.meter_changed(meter_id)
        await self.hass.async_block_till_done()
        return events

    async def top_up(
        self, amount: str, transaction_id: str, account_id: str = HOUSEHOLD
    ) -> list[Event]:
        """Credit a payment in the real ledger, as `CommunityService.top_up` does."""
        result = await self.hass.async_add_executor_job(
            lambda: self.community.top_up(
                account_id, Decimal(amount), transaction_id, "cash", actor=Actor.AUTOMATION
            )
        )
        events = self.community.apply_top_up(result)
        await self.deliver(events)
        for meter in list(self.community.meters.values()):
            if meter.account_id == account_id:
                self.runtime.meter_changed(meter.meter_id)
        await self.hass.async_block_till_done()
        return events

    async def tick(self, now: int) -> list[Event]:
        """Time passes for the safety watch, as `CommunityService.tick` tells its listener."""
        events = self.community.safety_tick(now)
        await self.deliver(events)
        return events

    async def connection(self, connected: bool, reason: str = "") -> None:
        """The broker link came up or went down (the service's flag first, then the call)."""
        self.service.connected = connected
        self.runtime.connection(connected, reason)
        await self.hass.async_block_till_done()

    async def resident(self, name: str) -> User:
        """Return a user who is not an administrator (the first user made owns the instance)."""
        auth = self.hass.auth
        if not [user for user in await auth.async_get_users() if not user.system_generated]:
            await auth.async_create_user("Owner", group_ids=["system-admin"])
        user = await auth.async_create_user(name, group_ids=["system-users"])
        assert not user.is_admin
        return user

    async def household(self) -> None:
        """The usual start: the meter announces, is assigned to HOUSEHOLD and paid 50 CNY."""
        await self.announce()
        await self.assign()
        await self.top_up("50", "seam-1")


@pytest.fixture
def platforms() -> list[Platform]:
    """Return the platforms to set up (a test module overrides this with its own)."""
    return list(PLATFORMS)


@pytest.fixture
def seam_entry() -> MockConfigEntry:
    """Return a community entry whose broker is never reached (the service is mocked)."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=COMMUNITY_NAME,
        unique_id=f"broker.invalid:1883/{COMMUNITY_ID}",
        data={
            CONF_HOST: "broker.invalid",
            CONF_PORT: 1883,
            CONF_PREFIX: "prepaid",
            CONF_COMMUNITY_ID: COMMUNITY_ID,
            CONF_COMMUNITY_NAME: COMMUNITY_NAME,
            CONF_CURRENCY: "CNY",
            CONF_TARIFF: "flat",  # one price: amounts do not depend on the day tests run
        },
        options={"friendly_start": "00:00", "friendly_end": "00:00", "friendly_weekends": False},
    )


@pytest.fixture
def mock_service() -> Iterator[MagicMock]:
    """Patch `CommunityService` where the coordinator builds it; return the instance mock.

    Its `start` loads the real community from its ledger and reports the meters found and
    the link up, as the real one does; `stop` closes the ledger. Everything else is the
    autospec's: awaitable where the service's method is a coroutine, returning None unless
    a test says otherwise (`users_of` returns nobody, `collection_rate` no fees).
    """
    with (
        patch(SERVICE, autospec=True) as service_class,
        patch(CHECK_CONNECTION, autospec=True),
    ):
        service = service_class.return_value
        listener: list[PrepaidRuntime] = []

        def build(community: Community, profile: Any, transport_config: Any, **kwargs: Any) -> Any:
            service.community = community
            service.profile = profile
            service.connected = False
            listener.append(kwargs["listener"])
            return DEFAULT

        async def start(legacy_supply: dict[str, dict[str, Any]] | None = None) -> None:
            community: Community = service.community
            await asyncio.get_running_loop().run_in_executor(None, community.load)
            for meter_id in sorted(community.meters):
                listener[-1].meter_discovered(meter_id)
            service.connected = True
            listener[-1].connection(True, "")

        async def stop() -> None:
            community: Community = service.community
            await asyncio.get_running_loop().run_in_executor(None, community.ledger.close)

        service_class.side_effect = build
        service.start.side_effect = start
        service.stop.side_effect = stop
        for name in ("flush", "tick", "publish_accounts", "request_supply"):
            getattr(service, name).return_value = None
        service.collection_rate.return_value = None
        service.users_of.return_value = frozenset()
        service.households_of.return_value = frozenset()
        service.set_low_threshold.return_value = None
        yield service


@pytest.fixture
async def seam(
    hass: HomeAssistant,
    seam_entry: MockConfigEntry,
    mock_service: MagicMock,
    platforms: list[Platform],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Seam]:
    """Set the entry up with the mocked service (the `platforms` only); unloaded at the end.

    Sockets stay blocked: a test that enabled them (a broker fixture) is not a seam test.
    """
    assert "socket_enabled" not in request.fixturenames, "seam tests open no socket"
    hass.config.config_dir = str(tmp_path)
    seam_entry.add_to_hass(hass)
    with patch("custom_components.prepaid_meter.entry.PLATFORMS", platforms):
        assert await hass.config_entries.async_setup(seam_entry.entry_id)
        await hass.async_block_till_done()
        mock_service.start.assert_awaited_once()
        yield Seam(hass, seam_entry, mock_service)
        if seam_entry.state.recoverable:
            assert await hass.config_entries.async_unload(seam_entry.entry_id)
            await hass.async_block_till_done()
