"""The Home Assistant adapter of one community: its config entry's runtime.

The community itself runs in the engine's `CommunityService` (engine/service.py): MQTT,
pricing, policy, the ledger, relay commands and account topics. This runtime turns what the
service tells it into Home Assistant: events onto the bus (and so the logbook), repairs,
devices, and entity writes (a large community's measurements in slices, see below); and it
turns people's requests (actions, entity controls) into service calls, with who asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
import dataclasses
from datetime import timedelta
from decimal import Decimal
import logging
import math
from pathlib import Path
import time
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import CALLBACK_TYPE, Context, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import (
    device_registry as dr,
    entity_registry as er,
    issue_registry as ir,
)
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.helpers.storage import Store

from . import compat
from .compat import get_device
from .const import (
    CONF_MEASUREMENT_INTERVAL,
    CONF_METER_ENTITIES,
    DOMAIN,
    METER_ENTITIES_ALL,
    METER_ENTITIES_ESSENTIAL,
)
from .engine.actor import Actor
from .engine.commands import CommandTracker
from .engine.community import Community, CommunityError, Event, Relay
from .engine.ledger import Ledger
from .engine.profiles import Profile
from .engine.safety import ALARM_KINDS, SafetyError, SafetyRules
from .engine.service import CommunityService, ServiceTiming
from .engine.transport import MqttTransport, TransportConfig
from .engine.views import CommunityLists, MeterView, community_lists, meter_view
from .events import Notices, money
from .heap import FREEZE_ABOVE, async_hold_frozen
from .payments import PaymentSettings
from .texts import translated_error, translated_placeholders

_LOGGER = logging.getLogger(__package__)

type PrepaidConfigEntry = ConfigEntry[PrepaidRuntime]

__all__ = [  # money: services.py's until it takes it from events.py
    "PrepaidConfigEntry",
    "PrepaidRuntime",
    "async_actor",
    "ledger_path",
    "money",
    "open_ledger",
    "refusal",
    "safety_rules",
]

# Charges are committed once a minute (one journal entry per meter and minute, see
# engine/service.py); the community figures are written at most every PUBLISH_INTERVAL_S.
COMMIT_INTERVAL_S = 60.0
PUBLISH_INTERVAL_S = 2.0
#: In a large community (more than MEASUREMENT_THROTTLE_ABOVE meters) every reading moves the
#: totals: they are written at most this often, unless a supply, an alarm, a meter's link or an
#: assignment changes (those within PUBLISH_INTERVAL_S, so the operator's lists stay current).
LARGE_PUBLISH_INTERVAL_S = 30.0
TICK_INTERVAL_S = 60.0
STORE_VERSION = 1
BROKER_ISSUE_AFTER_S = 300
#: Entities each meter has enabled by default with all its entities (13 sensors, 4 binary
#: sensors: low balance, online, supply on and any alarm; switch, button, number; voltage,
#: current, last reading and one alarm sensor per kind start disabled).
ENTITIES_PER_METER = 20
#: A community of more meters gives each meter only the essential entities, unless the option
#: `meter_entities` says otherwise: at 19 per meter current Home Assistant's limit of 10,000
#: enabled entities per entry is passed at about 525 meters, and every entity costs memory,
#: start time and recorder writes. A household's detail is its own instance's (household mode).
ESSENTIAL_ABOVE = 500
#: The enabled meter entities a community may have before the essential set is the default:
#: 500 meters at the 19 entities each had before the alarm sensor (the limit is 10,000).
ENTITY_BUDGET = 9_500
#: The essential set: each meter's balance, enabled (money is what an operator reads per home);
#: its energy and supply switch, created disabled, for an operator to enable where needed.
ESSENTIAL_KEYS = frozenset({"balance"})
#: Each meter's binary sensor per alarm kind (engine/safety.py): created disabled with all
#: entities, not at all in the essential set (eight registry entries per meter cost a large
#: community about 150 MB and seconds of start at 5,000 meters; its alarms are in the
#: operator's lists, the events and the logbook).
ALARM_KEYS = frozenset(f"alarm_{kind}" for kind in ALARM_KINDS)
ON_REQUEST_KEYS = frozenset({"energy", "supply"})
#: Each meter's payment entities when the options configure payments (payment_panel.py): the
#: top-up amount select, the payment code image, and a "pay" button per provider that is on.
#: With all entities only, like the alarm sensors: a large community's residents pay through
#: their own Home Assistant (household mode) or the `create_payment_order` action, and four
#: more registry entries per meter would be 20,000 at 5,000 meters.
PAYMENT_KEYS = frozenset({"payment_amount", "payment_code", "pay_wechat", "pay_alipay"})
ESSENTIAL_ENTITIES_PER_METER = len(ESSENTIAL_KEYS)
# A relay command is sent up to this many times, the waits between tries doubling from the
# base delay up to the maximum (about a minute in all), before it counts as not acknowledged:
# then an event, a logbook entry and a repair say that the supply may not be as wanted.
COMMAND_MAX_TRIES = 5
COMMAND_BASE_DELAY_S = 2.0
COMMAND_MAX_DELAY_S = 60.0
# Measurements (energy, power, balance, cycle figures) of a community of more than
# MEASUREMENT_THROTTLE_ABOVE meters are written to Home Assistant's state machine (and so its
# recorder) at most every LARGE_MEASUREMENT_INTERVAL_S per meter, unless the option
# `measurement_interval` says otherwise; a small one's at once. Relay, low-balance and online
# states are always written at once, and every money and relay decision is taken by the
# engine on each reading, whatever this says. (Five minutes is also the period of Home
# Assistant's short-term statistics, which the Energy dashboard reads.)
LARGE_MEASUREMENT_INTERVAL_S = 300.0
MEASUREMENT_THROTTLE_ABOVE = 100
# The writes are spread over slices run this often, oldest change first, so that no single
# job stalls the event loop with every meter's states at once.
MEASUREMENT_SLICE_S = 5.0
# A long run of state writes gives the event loop back this often, so that a reading that
# exhausts a credit is handled (and its cut sent) without waiting for the whole slice.
YIELD_AFTER_S = 0.01
# A large community's households get their retained `account` topic at most this often (as
# often as its measurement sensors are written); a relay change and the answer to a
# household's request are published at once. Every 60 s, this was a tenth of the event loop's
# work at 5,000 meters (a QoS 1 publish per household a minute).
ACCOUNT_INTERVAL_S = 300.0


#: The entry option holding the community's safety rules that differ from the defaults
#: (SafetyRules option names; the "Safety and care" options step writes it).
CONF_SAFETY = "safety"


def safety_rules(options: Mapping[str, Any]) -> SafetyRules | None:
    """Return the community's safety rules from its entry options (None: the defaults).

    Stored rules that cannot be (a later version's, or edited by hand) are logged and the
    defaults apply: the watch runs either way.
    """
    stored = options.get(CONF_SAFETY)
    if not stored:
        return None
    try:
        if not isinstance(stored, Mapping):
            raise SafetyError(f"the safety options are not a mapping: {stored!r}")
        return SafetyRules.from_options(stored)
    except SafetyError as err:
        _LOGGER.warning("The safety watch takes its default rules: %s", err)
        return None


def payment_entities_per_meter(options: Mapping[str, Any]) -> int:
    """Return how many payment entities each meter gets with all entities (0: no payments)."""
    settings = PaymentSettings.from_options(options)
    if not settings.enabled:
        return 0
    return 2 + int(settings.wechat) + int(settings.alipay)


def refusal(hass: HomeAssistant, err: CommunityError) -> ServiceValidationError:
    """Return the engine's refusal as a translated error, its reason and action in words."""
    return translated_error(err.key, **translated_placeholders(hass, err.placeholders))


class PrepaidRuntime:
    """Everything one community needs in Home Assistant while its config entry is loaded."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: PrepaidConfigEntry,
        *,
        community: Community,
        transport_config: TransportConfig,
        profile: Profile,
        prefix: str,
        community_id: str,
        community_name: str,
        currency: str,
    ) -> None:
        """Bind the parts; nothing runs until `async_start`."""
        self.hass = hass
        self.entry = entry
        self.prefix = prefix
        self.community_id = community_id
        self.community_name = community_name
        self.currency = currency
        self.service = CommunityService(
            community,
            profile,
            transport_config,
            prefix=prefix,
            community_id=community_id,
            currency=currency,
            listener=self,
            timing=ServiceTiming(
                commit_interval_s=COMMIT_INTERVAL_S,
                tick_interval_s=TICK_INTERVAL_S,
                account_interval_s=ACCOUNT_INTERVAL_S,
                throttle_above=MEASUREMENT_THROTTLE_ABOVE,
                command_max_tries=COMMAND_MAX_TRIES,
                command_base_delay_s=COMMAND_BASE_DELAY_S,
                command_max_delay_s=COMMAND_MAX_DELAY_S,
            ),
        )
        #: The community's hub device in the registry (set before any meter device exists).
        self.hub_device_id = ""
        self.fee_collection_rate: float | None = None
        self._disconnected_at: float | None = None
        self._meter_listeners: dict[str, list[CALLBACK_TYPE]] = {}
        self._measurement_listeners: dict[str, list[CALLBACK_TYPE]] = {}
        self._measured: dict[str, None] = {}  # meters whose measurements changed, oldest first
        self._views: dict[str, MeterView] = {}  # built on first read after a change
        self._community_dirty = False  # a figure changed (a reading, a top-up)
        self._community_urgent = False  # a supply, alarm, link or assignment changed
        self._community_written = 0.0  # monotonic time of the last write
        self.totals: dict[str, Any] = community.totals()
        #: The households each operator list names (arrears, cut, alarmed, offline).
        self.lists: CommunityLists = community_lists(community)
        #: Each area's line loss (safety watch): area, master meter, rate in %, alarm open.
        self.line_loss: list[dict[str, Any]] = []
        self._community_listeners: list[CALLBACK_TYPE] = []
        self._new_meter_callbacks: list[Callable[[str], None]] = []
        self._added: set[str] = set()
        self._store: Store[dict[str, Any]] = Store(
            hass, STORE_VERSION, f"{DOMAIN}.{entry.entry_id}.relays"
        )
        self._unsubs: list[CALLBACK_TYPE] = []
        self.notices = Notices(hass, self)
        self._heap_release: CALLBACK_TYPE | None = None
        self._started = False
        self._meter_entities: str | None = None

    # The service's parts, as entities, diagnostics and tests read them.

    @property
    def community(self) -> Community:
        """Return the live community (read-only use: the service changes it)."""
        return self.service.community

    @property
    def transport(self) -> MqttTransport:
        """Return the service's MQTT transport."""
        return self.service.transport

    @property
    def commands(self) -> CommandTracker:
        """Return the service's relay command tracker."""
        return self.service.commands

    @property
    def profile(self) -> Profile:
        """Return the meters' device profile."""
        return self.service.profile

    @property
    def connected(self) -> bool:
        """Return whether the broker link is up."""
        return self.service.connected

    # ------------------------------------------------------------------ identity

    @property
    def community_identifier(self) -> str:
        """Return the community hub device's identifier."""
        return f"{self.prefix}/{self.community_id}"

    def meter_identifier(self, meter_id: str) -> str:
        """Return a meter device's identifier."""
        return f"{self.prefix}/{self.community_id}/{meter_id}"

    def meter_device(self, meter_id: str) -> dr.DeviceEntry | None:
        """Return a meter's device in the registry, or None before it has one."""
        return get_device(
            dr.async_get(self.hass), (DOMAIN, self.meter_identifier(meter_id)), self.entry.entry_id
        )

    def household_of(self, meter_id: str) -> Any:
        """Return the household state of a meter, or None if unassigned."""
        meter = self.community.meters.get(meter_id)
        if meter is None or meter.account_id is None:
            return None
        return self.community.households.get(meter.account_id)

    # ------------------------------------------------------------------ life cycle

    async def async_start(self) -> None:
        """Start the service (ledger, broker, periodic work) and the entity-side timers."""
        stored = await self._store.async_load() or {}
        # Relay wishes of versions before the ledger held them move into the ledger, once.
        await self.service.start(stored.get("relays", {}))
        self._started = True

        async def commit_at_stop(_event: Any) -> None:
            # Home Assistant does not unload entries when it stops: commit what is pending,
            # and keep the safety watch's open episodes and what it learned.
            await self.service.flush()
            try:
                await self.service.save_safety_state()
            except Exception:
                _LOGGER.exception("The safety watch's state of %s is not kept", self.community_id)

        self._unsubs.append(
            self.hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, commit_at_stop)
        )
        for meter_id, value in stored.get("thresholds", {}).items():
            if meter_id in self.community.meters:  # kept by this host (the ledger does not)
                self.service.set_low_threshold(meter_id, Decimal(value))
        for action, seconds, name in (
            (self._async_publish_interval, PUBLISH_INTERVAL_S, "community figures"),
            (self._async_minute, TICK_INTERVAL_S, "minute"),
            (
                self._async_write_measurements,
                MEASUREMENT_SLICE_S,
                "measurements",
            ),
        ):
            self._unsubs.append(
                async_track_time_interval(
                    self.hass,
                    action,
                    timedelta(seconds=seconds),
                    name=f"prepaid_meter {name}",
                    cancel_on_shutdown=True,
                )
            )
        await self._async_refresh_rates()

    async def async_stop(self) -> None:
        """Stop the timers and the service (it commits what is pending and closes the ledger)."""
        for unsub in self._unsubs:
            unsub()
        self._unsubs.clear()
        if self._heap_release is not None:
            self._heap_release()
            self._heap_release = None
        await self.service.stop()
        if self._started:  # a failed start must not overwrite what it could not load
            await self._store.async_save(self._store_data())

    def _store_data(self) -> dict[str, Any]:
        return {
            "thresholds": {
                meter_id: str(meter.low_threshold)
                for meter_id, meter in self.community.meters.items()
                if meter.low_threshold is not None
            },
        }

    # ------------------------------------------------------------------ listeners

    @callback
    def async_add_meter_listener(
        self, meter_id: str, listener: CALLBACK_TYPE, *, measurement: bool = False
    ) -> CALLBACK_TYPE:
        """Call `listener` when this meter changes; return the remover.

        A `measurement` listener is called at most every `measurement_interval` seconds.
        """
        registry = self._measurement_listeners if measurement else self._meter_listeners
        listeners = registry.setdefault(meter_id, [])
        listeners.append(listener)

        def remove() -> None:
            listeners.remove(listener)

        return remove

    @callback
    def async_add_community_listener(self, listener: CALLBACK_TYPE) -> CALLBACK_TYPE:
        """Call `listener` when community totals change; return the remover."""
        self._community_listeners.append(listener)
        return lambda: self._community_listeners.remove(listener)

    @callback
    def async_on_new_meter(self, add: Callable[[str], None]) -> None:
        """Call `add(meter_id)` for every meter now and for each one discovered later."""
        self._new_meter_callbacks.append(add)
        for meter_id in sorted(self.community.meters):  # known from the ledger or heard since
            self._added.add(meter_id)
            add(meter_id)

    @callback
    def _discover(self, meter_id: str) -> None:
        if meter_id in self._added:
            return
        self._added.add(meter_id)
        for add in self._new_meter_callbacks:
            add(meter_id)

    @property
    def throttled(self) -> bool:
        """Return whether measurements are written on a timer (a large community)."""
        return self.measurement_interval > 0

    @property
    def measurement_interval(self) -> float:
        """Return the seconds between a meter's measurement writes (0: every change)."""
        chosen = self.entry.options.get(CONF_MEASUREMENT_INTERVAL)
        if chosen is not None:
            return float(chosen)
        if len(self.community.meters) > MEASUREMENT_THROTTLE_ABOVE:
            return LARGE_MEASUREMENT_INTERVAL_S
        return 0.0

    # ------------------------------------------------------------------ entity budget

    @property
    def meter_entities(self) -> str:
        """Return which entities each meter gets: "all" or "essential" (decided once a load).

        The option decides; without it, the community's size at setup (so that a meter heard
        later does not change what the others have).
        """
        if self._meter_entities is None:
            chosen = self.entry.options.get(CONF_METER_ENTITIES)
            if chosen not in (METER_ENTITIES_ALL, METER_ENTITIES_ESSENTIAL):
                # More than ESSENTIAL_ABOVE meters, or fewer when their entities would pass
                # ENTITY_BUDGET (475 meters at 20 entities each; about 395 with both payment
                # providers on, 24 each).
                per_meter = ENTITIES_PER_METER + payment_entities_per_meter(self.entry.options)
                meters = len(self.community.meters)
                large = meters > ESSENTIAL_ABOVE or meters * per_meter > ENTITY_BUDGET
                chosen = METER_ENTITIES_ESSENTIAL if large else METER_ENTITIES_ALL
            self._meter_entities = chosen
        return self._meter_entities

    @property
    def entities_per_meter(self) -> int:
        """Return how many entities each meter has enabled by default."""
        if self.meter_entities == METER_ENTITIES_ESSENTIAL:
            return ESSENTIAL_ENTITIES_PER_METER
        return ENTITIES_PER_METER + payment_entities_per_meter(self.entry.options)

    def meter_unique_id(self, meter_id: str, key: str) -> str:
        """Return the unique id of a meter's entity."""
        return f"{self.community_identifier}_{meter_id}_{key}"

    def meter_descriptions[D: EntityDescription](
        self, domain: str, meter_id: str, descriptions: Sequence[D]
    ) -> list[D]:
        """Return the descriptions of the entities this meter gets on one platform.

        With all entities, every one. With the essential set: the essential ones, the ones
        on request created disabled, and (when the set was chosen by size, not by the
        option) any other entity already registered, so that nothing people use vanishes.
        """
        if self.meter_entities == METER_ENTITIES_ALL:
            return list(descriptions)
        keep_registered = CONF_METER_ENTITIES not in self.entry.options
        registry = er.async_get(self.hass)
        chosen: list[D] = []
        for description in descriptions:
            if description.key in ESSENTIAL_KEYS:
                chosen.append(description)
            elif description.key in ON_REQUEST_KEYS:
                disabled = dataclasses.replace(description, entity_registry_enabled_default=False)
                chosen.append(disabled)
            elif keep_registered and registry.async_get_entity_id(
                domain, DOMAIN, self.meter_unique_id(meter_id, description.key)
            ):
                chosen.append(description)
        return chosen

    @callback
    def async_remove_unwanted_entities(self, domain: str, keys: Iterable[str]) -> int:
        """Remove a platform's registered meter entities the set leaves out; return how many.

        Only when the option asks for the essential set: an operator who chose it wants the
        others gone (a choice by size keeps what exists, see `meter_descriptions`).
        """
        if self.entry.options.get(CONF_METER_ENTITIES) != METER_ENTITIES_ESSENTIAL:
            return 0
        unwanted = {
            self.meter_unique_id(meter_id, key)
            for meter_id in self.community.meters
            for key in keys
            if key not in ESSENTIAL_KEYS and key not in ON_REQUEST_KEYS
        }
        registry = er.async_get(self.hass)
        removed = 0
        for entry in er.async_entries_for_config_entry(registry, self.entry.entry_id):
            if entry.domain == domain and entry.unique_id in unwanted:
                registry.async_remove(entry.entity_id)
                removed += 1
        return removed

    def view(self, meter_id: str) -> MeterView:
        """Return what a meter shows now: built once per change, read by all its entities."""
        view = self._views.get(meter_id)
        if view is None:
            view = self._views[meter_id] = meter_view(
                self.community, self.community.meters[meter_id]
            )
        return view

    @callback
    def _notify_meter(self, meter_id: str) -> None:
        self._views.pop(meter_id, None)
        for listener in tuple(self._meter_listeners.get(meter_id, ())):
            listener()
        self._notify_measurements(meter_id)

    @callback
    def _notify_measurements(self, meter_id: str) -> None:
        self._views.pop(meter_id, None)
        if self.throttled:
            self._measured.setdefault(meter_id)
            return
        for listener in tuple(self._measurement_listeners.get(meter_id, ())):
            listener()

    async def _async_write_measurements(
        self, _now: Any = None, *, everything: bool = False
    ) -> None:
        """Write the measurements of the meters that changed longest ago (one slice).

        Run every MEASUREMENT_SLICE_S seconds, each meter that keeps changing is written about
        once per `measurement_interval`.
        """
        count = len(self._measured)
        if not everything:
            slices = max(self.measurement_interval / MEASUREMENT_SLICE_S, 1.0)
            count = min(count, math.ceil(len(self.community.meters) / slices))
        pause_at = time.monotonic() + YIELD_AFTER_S
        for meter_id in list(self._measured)[:count]:
            if meter_id not in self._measured:
                continue  # written meanwhile (another run of this job)
            del self._measured[meter_id]
            for listener in tuple(self._measurement_listeners.get(meter_id, ())):
                listener()
            if time.monotonic() >= pause_at:
                # Let readings and relay commands through between chunks of state writes.
                await asyncio.sleep(0)
                pause_at = time.monotonic() + YIELD_AFTER_S

    @callback
    def _notify_community(self) -> None:
        """Recompute the community figures once, then let each community entity write."""
        self._community_dirty = self._community_urgent = False
        self._community_written = time.monotonic()
        self.totals = self.community.totals()
        self.lists = community_lists(self.community)
        self.line_loss = self._line_loss()
        for listener in tuple(self._community_listeners):
            listener()

    def _line_loss(self) -> list[dict[str, Any]]:
        community = self.community
        areas = []
        for area_id, (master, members) in sorted(community.areas.items()):
            rate = community.safety.loss_rate(area_id)
            areas.append(
                {
                    "area": area_id,
                    "master_meter_id": master,
                    "meters": len(members),
                    "loss_rate": None if rate is None else round(rate * 100, 2),
                    "alarm": "line_loss" in community.safety.alarms(master),
                }
            )
        return areas

    # ------------------------------------------------------------------ the service's listener

    @callback
    def events(self, events: Sequence[Event]) -> None:
        """Turn the engine's events into Home Assistant (events.py); figures follow."""
        dirty, urgent = self.notices.handle(events)
        self._community_dirty |= dirty
        self._community_urgent |= urgent

    @callback
    def meter_changed(self, meter_id: str) -> None:
        """A meter's state changed: let its entities write."""
        self._notify_meter(meter_id)

    @callback
    def meter_discovered(self, meter_id: str) -> None:
        """A meter became known: give it a device and entities."""
        self._discover(meter_id)

    @callback
    def connection(self, connected: bool, reason: str) -> None:
        """Log once when the broker goes and once when it is back; entities follow."""
        if connected:
            if self._disconnected_at is not None:
                _LOGGER.info("Broker for community %s is reachable again", self.community_id)
            self._disconnected_at = None
            ir.async_delete_issue(self.hass, DOMAIN, f"broker_unreachable_{self.entry.entry_id}")
        elif self._disconnected_at is None:
            _LOGGER.info(
                "Broker for community %s is unreachable (%s); retrying with backoff",
                self.community_id,
                reason,
            )
            self._disconnected_at = time.monotonic()
        for meter_id in self.community.meters:
            self._notify_meter(meter_id)
        self._notify_community()

    # ------------------------------------------------------------------ periodic work

    async def _async_publish_interval(self, _now: Any = None) -> None:
        """Write the community figures if they changed (readings change them all the time).

        A large community's figures wait up to LARGE_PUBLISH_INTERVAL_S, unless something an
        operator acts on changed.
        """
        if self._community_urgent or (
            self._community_dirty
            and (
                not self.throttled
                or time.monotonic() - self._community_written >= LARGE_PUBLISH_INTERVAL_S
            )
        ):
            self._notify_community()

    async def async_flush(self) -> None:
        """Commit what is pending now (the service also does every minute)."""
        await self.service.flush()
        if self._community_dirty or self._community_urgent:
            self._notify_community()

    async def _publish_accounts(self) -> None:
        await self.service.publish_accounts()

    @callback
    def async_check_size(self) -> None:
        """Hold the heap frozen once the community is large (at setup, then every minute).

        Tens of thousands of entities make every full garbage collection a long pause; see
        heap.py. A community that grows past FREEZE_ABOVE meters while running joins then.
        """
        if self._heap_release is None and len(self.community.meters) > FREEZE_ABOVE:
            self._heap_release = async_hold_frozen(self.hass, self.entry.entry_id)
        limit = compat.ENTITY_LIMIT
        meters = len(self.community.meters)
        per_meter = self.entities_per_meter
        if limit is not None and meters * per_meter > limit:
            # Home Assistant adds no entity past its limit and only logs it: say so plainly.
            self.notices.community_issue(
                "too_many_entities",
                ir.IssueSeverity.WARNING,
                meters=str(meters),
                limit=str(limit),
                per_meter=str(per_meter),
                fits=str(limit // per_meter),
            )

    async def _async_minute(self, _now: Any = None) -> None:
        """Home Assistant's side of the minute: heap, fee figures, clock-driven states."""
        self.async_check_size()
        await self._async_refresh_rates()
        for meter_id in self.community.meters:  # days left and price move with the clock
            self._notify_measurements(meter_id)
        if (
            self._disconnected_at is not None
            and time.monotonic() - self._disconnected_at > BROKER_ISSUE_AFTER_S
        ):
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                f"broker_unreachable_{self.entry.entry_id}",
                is_fixable=False,
                severity=ir.IssueSeverity.ERROR,
                translation_key="broker_unreachable",
                translation_placeholders={"community": self.community_name},
            )

    async def _async_tick(self, _now: Any = None) -> None:
        """The whole minute at once: the service's tick (deferred cuts) and this side's."""
        await self.service.tick()
        await self._async_minute()

    async def _async_refresh_rates(self) -> None:
        """Recompute the fee collection rate of this month from the ledger."""
        self.fee_collection_rate = await self.service.collection_rate()
        self._notify_community()

    # ------------------------------------------------------------------ requests

    async def _actor(self, context: Context | None) -> Actor:
        """Return whoever is behind a service call or entity action."""
        return await async_actor(self.hass, context)

    async def async_request_relay(
        self,
        meter_id: str,
        state: Relay,
        context: Context | None,
        *,
        operator_override: bool = False,
    ) -> None:
        """Turn a supply on or off on someone's request, by the prepaid rules."""
        actor = await self._actor(context)
        if operator_override and not actor.is_operator:
            raise ServiceValidationError(translation_domain=DOMAIN, translation_key="not_admin")
        await self.async_call(
            self.service.request_supply,
            meter_id,
            state,
            actor=actor,
            operator_override=operator_override,
        )

    async def async_call[**P, T](
        self, request: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Ask the service for something; its refusals become translated errors.

        Typed with the request's own parameters, so that mypy checks each argument (an
        `Actor`, not a string, for who asked).
        """
        try:
            return await request(*args, **kwargs)
        except CommunityError as err:
            raise refusal(self.hass, err) from err
        except Exception as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="ledger_error",
                translation_placeholders={"error": str(err)},
            ) from err

    # ------------------------------------------------------------------ thresholds

    def low_threshold(self, meter_id: str) -> Decimal:
        """Return the meter's low-balance threshold (the first warning level by default)."""
        return self.community.low_threshold(self.community.meters[meter_id])

    @callback
    def set_low_threshold(self, meter_id: str, value: Decimal, actor: Actor = Actor.SYSTEM) -> None:
        """Set a meter's low-balance threshold (a resident only their own household's).

        Raises the engine's refusal as a translated error; the value is kept across restarts.
        """
        try:
            self.service.set_low_threshold(meter_id, value, actor=actor)
        except CommunityError as err:
            raise refusal(self.hass, err) from err
        self._store.async_delay_save(self._store_data, 1)

    async def async_set_low_threshold(
        self, meter_id: str, value: Decimal, context: Context | None
    ) -> None:
        """Set a meter's threshold on someone's request (who asked decides whether it may)."""
        self.set_low_threshold(meter_id, value, await self._actor(context))

    def diagnostics(self) -> dict[str, Any]:
        """Return what an operator needs to see to debug this community."""
        return {
            "connected": self.connected,
            "meters": {
                meter_id: {
                    "account_id": meter.account_id,
                    "online": meter.online,
                    "seq": meter.seq,
                    "ts": meter.ts,
                    "energy_kwh": str(meter.energy_kwh),
                    "desired_relay": meter.desired_relay,
                    "reported_relay": meter.reported_relay,
                    "relay_reason": meter.relay_reason,
                    "relay_actor": str(meter.relay_actor),
                    "deferred": meter.deferred,
                    "rejected": dict(meter.rejected),
                    "cycle": meter.billing.cycle,
                    "cycle_kwh": str(meter.billing.cycle_kwh),
                }
                for meter_id, meter in self.community.meters.items()
            },
            "households": len(self.community.households),
            # Ids heard that are not meters here (never announced, not assigned): messages.
            "unknown_meters": dict(self.community.unknown_meters),
            "pending_commands": [
                {"meter_id": c.meter_id, "id": c.id, "state": c.state, "tries": c.tries}
                for c in self.commands.pending()
            ],
            "totals": {k: str(v) for k, v in self.community.totals().items()},
            # The safety watch: open episodes per meter, and each area's master meter,
            # households' meters and loss rate.
            "open_alarms": {
                meter_id: alarms
                for meter_id in self.community.meters
                if (alarms := self.community.alarms(meter_id))
            },
            "areas": {
                area_id: {
                    "master": master,
                    "members": sorted(members),
                    "loss_rate": self.community.safety.loss_rate(area_id),
                }
                for area_id, (master, members) in self.community.areas.items()
            },
        }


async def async_actor(hass: HomeAssistant, context: Context | None) -> Actor:
    """Return the actor behind a service call or entity action, from its Home Assistant user.

    An administrator is an operator, any other user a resident; with no user (an automation
    or a script, which the administrator's configuration runs) the operator "automation". A
    user that no longer exists is a resident (the least privilege).
    """
    if context is None or context.user_id is None:
        return Actor.AUTOMATION
    user = await hass.auth.async_get_user(context.user_id)
    if user is None:
        return Actor("resident", user_id=context.user_id)
    return Actor(
        "operator" if user.is_admin else "resident", user_id=user.id, name=user.name or None
    )


def ledger_path(hass: HomeAssistant, community_id: str) -> Path:
    """Return the community's ledger file in the config folder."""
    return Path(hass.config.path(f"{DOMAIN}_{community_id}.sqlite3"))


def open_ledger(path: Path) -> Ledger:
    """Open (and migrate) the ledger; blocking, run it in an executor."""
    return Ledger(path)
