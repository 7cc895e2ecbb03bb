"""The runtime of one config entry: a community, its ledger, its MQTT link and its meters.

Messages arrive on the MQTT transport and are handled in the event loop (parsing, pricing,
policy: memory only). Once a second the pending charges are committed to the ledger in an
executor, then each household's `account` topic is published. Relay commands go through the
command tracker, which repeats them until the meter acknowledges and whenever it disagrees;
one the meter does not carry out becomes an event (`prepaid_meter_command_failed`), a logbook
entry and a repair, until the meter confirms the wanted state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import timedelta
from decimal import Decimal
import logging
from pathlib import Path
import time
from typing import Any, assert_never

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import CALLBACK_TYPE, Context, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr, issue_registry as ir
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.helpers.storage import Store

from .compat import get_device
from .const import DOMAIN
from .engine.commands import CommandOutcome, CommandTracker
from .engine.community import Community, CommunityError, Event, LedgerResult, Relay
from .engine.ledger import EntryKind, Ledger, SupplyChange
from .engine.profiles import Profile
from .engine.protocol import (
    Ack,
    Announce,
    Availability,
    Reading,
    Rejected,
    RelayReport,
    account_payload,
    topic_for,
)
from .engine.transport import MqttTransport, TransportConfig
from .heap import FREEZE_ABOVE, async_hold_frozen

_LOGGER = logging.getLogger(__package__)

type PrepaidConfigEntry = ConfigEntry[PrepaidRuntime]

# Charges are committed once a minute: one journal entry per meter and minute (not a write
# per reading), the meter's cursor in the same transaction. Top-ups are durable at once.
COMMIT_INTERVAL_S = 60.0
PUBLISH_INTERVAL_S = 2.0
TICK_INTERVAL_S = 60.0
STORE_VERSION = 1
EVENT_PREFIX = "prepaid_meter_"
BUS_EVENTS = frozenset(
    {
        "low_balance",
        "supply_cut",
        "supply_restored",
        "supply_cut_deferred",
        "top_up",
        "alarm",
        "inactivity",
        "command_failed",
    }
)
BROKER_ISSUE_AFTER_S = 300
# A relay command is sent up to this many times, the waits between tries doubling from the
# base delay up to the maximum (about a minute in all), before it counts as not acknowledged:
# then an event, a logbook entry and a repair say that the supply may not be as wanted.
COMMAND_MAX_TRIES = 5
COMMAND_BASE_DELAY_S = 2.0
COMMAND_MAX_DELAY_S = 60.0
# Measurements (energy, power, balance, cycle figures) of a large community are written to
# Home Assistant's state machine at most this often per meter; a small one's at once. Relay,
# low-balance and online states are always written at once, and every money and relay
# decision is taken by the engine on each reading, whatever this says.
MEASUREMENT_INTERVAL_S = 60.0
MEASUREMENT_THROTTLE_ABOVE = 100
# The minute's writes are spread over this many slices, oldest change first, so that no
# single job stalls the event loop with every meter's states at once.
MEASUREMENT_SLICES = 12
# A long run of state writes gives the event loop back this often, so that a reading that
# exhausts a credit is handled (and its cut sent) without waiting for the whole slice.
YIELD_AFTER_S = 0.01
# A large community's households get their retained `account` topic at most this often; a
# relay change is published at once.
ACCOUNT_INTERVAL_S = 30.0


class PrepaidRuntime:
    """Everything one community needs while its config entry is loaded."""

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
        self.community = community
        self.profile = profile
        self.transport = MqttTransport(
            transport_config,
            self._on_message,
            profile.subscriptions(),
            on_connected=self._on_connect,
            on_disconnected=self._on_disconnect,
        )
        self.prefix = prefix
        self.community_id = community_id
        self.community_name = community_name
        self.currency = currency
        self.commands = CommandTracker(
            sender=self._send,
            clock=time.monotonic,
            on_outcome=self._on_command_outcome,
            max_tries=COMMAND_MAX_TRIES,
            base_delay=COMMAND_BASE_DELAY_S,
            max_delay=COMMAND_MAX_DELAY_S,
        )
        self.connected = False
        #: The community's hub device in the registry (set before any meter device exists).
        self.hub_device_id = ""
        self.fee_collection_rate: float | None = None
        self._disconnected_at: float | None = None
        self._meter_listeners: dict[str, list[CALLBACK_TYPE]] = {}
        self._measurement_listeners: dict[str, list[CALLBACK_TYPE]] = {}
        self._measured: dict[str, None] = {}  # meters whose measurements changed, oldest first
        self._community_dirty = False
        self.totals: dict[str, Any] = community.totals()
        self._community_listeners: list[CALLBACK_TYPE] = []
        self._new_meter_callbacks: list[Callable[[str], None]] = []
        self._added: set[str] = set()
        self._dirty_accounts: set[str] = set()
        self._urgent_accounts: set[str] = set()
        self._account_sent: dict[str, float] = {}
        self._store: Store[dict[str, Any]] = Store(
            hass, STORE_VERSION, f"{DOMAIN}.{entry.entry_id}.relays"
        )
        self._flush_lock = asyncio.Lock()
        self._unsubs: list[CALLBACK_TYPE] = []
        self._issues: set[str] = set()
        # Meters whose supply is not known to be as wanted: the state their failed command asked.
        self._command_failures: dict[str, Relay] = {}
        self._heap_release: CALLBACK_TYPE | None = None

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
        """Load the ledger (with each meter's wanted supply), connect, start the periodic work."""
        stored = await self._store.async_load() or {}
        decided = await self.hass.async_add_executor_job(
            self._load_community, stored.get("relays", {})
        )
        # What the ledger says each decided meter should be: the tracker enforces it.
        for meter_id in decided:
            wanted = self.community.meters[meter_id]
            self.commands.set_desired(
                meter_id, wanted.desired_relay, wanted.relay_reason, wanted.relay_actor
            )
        for meter_id, value in stored.get("thresholds", {}).items():
            if (meter := self.community.meters.get(meter_id)) is not None:
                meter.low_threshold = Decimal(value)
        await self.transport.start()
        for action, seconds, name in (
            (self._async_flush_interval, COMMIT_INTERVAL_S, "commit"),
            (self._async_publish_interval, PUBLISH_INTERVAL_S, "publish"),
            (self._async_tick, TICK_INTERVAL_S, "tick"),
            (
                self._async_write_measurements,
                MEASUREMENT_INTERVAL_S / MEASUREMENT_SLICES,
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
        """Commit what is pending, stop every task, disconnect and close the ledger."""
        for unsub in self._unsubs:
            unsub()
        self._unsubs.clear()
        if self._heap_release is not None:
            self._heap_release()
            self._heap_release = None
        await self.async_flush()
        await self.commands.stop()
        await self.transport.stop()
        await self._store.async_save(self._store_data())
        await self.hass.async_add_executor_job(self.community.ledger.close)

    # ------------------------------------------------------------------ listeners

    @callback
    def async_add_meter_listener(
        self, meter_id: str, listener: CALLBACK_TYPE, *, measurement: bool = False
    ) -> CALLBACK_TYPE:
        """Call `listener` when this meter changes; return the remover.

        A `measurement` listener of a community larger than MEASUREMENT_THROTTLE_ABOVE meters
        is called at most every MEASUREMENT_INTERVAL_S seconds.
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
        return len(self.community.meters) > MEASUREMENT_THROTTLE_ABOVE

    @callback
    def _notify_meter(self, meter_id: str) -> None:
        for listener in tuple(self._meter_listeners.get(meter_id, ())):
            listener()
        self._notify_measurements(meter_id)

    @callback
    def _notify_measurements(self, meter_id: str) -> None:
        if self.throttled:
            self._measured.setdefault(meter_id)
            return
        for listener in tuple(self._measurement_listeners.get(meter_id, ())):
            listener()

    async def _async_write_measurements(
        self, _now: Any = None, *, everything: bool = False
    ) -> None:
        """Write the measurements of the meters that changed longest ago (one slice).

        Run every MEASUREMENT_INTERVAL_S / MEASUREMENT_SLICES seconds, each meter that keeps
        changing is written about once per MEASUREMENT_INTERVAL_S.
        """
        count = len(self._measured)
        if not everything:
            count = min(count, -(-len(self.community.meters) // MEASUREMENT_SLICES))
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
        self._community_dirty = False
        self.totals = self.community.totals()
        for listener in tuple(self._community_listeners):
            listener()

    # ------------------------------------------------------------------ MQTT

    @callback
    def _on_connect(self) -> None:
        if not self.connected and self._disconnected_at is not None:
            _LOGGER.info("Broker for community %s is reachable again", self.community_id)
        self.connected = True
        self._disconnected_at = None
        self.commands.reconcile()
        ir.async_delete_issue(self.hass, DOMAIN, f"broker_unreachable_{self.entry.entry_id}")
        for meter_id in self.community.meters:
            self._notify_meter(meter_id)
        self._notify_community()

    @callback
    def _on_disconnect(self, reason: str = "") -> None:
        if self.connected:
            _LOGGER.info(
                "Broker for community %s is unreachable (%s); retrying with backoff",
                self.community_id,
                reason,
            )
        self.connected = False
        if self._disconnected_at is None:
            self._disconnected_at = time.monotonic()
        for meter_id in self.community.meters:
            self._notify_meter(meter_id)
        self._notify_community()

    @callback
    def _on_message(self, topic: str, payload: bytes) -> None:
        """Handle one MQTT message; nothing a meter sends may raise out of here."""
        try:
            parsed = self.profile.parse(topic, payload, time.time())
        except Exception:
            _LOGGER.exception("Unexpected error parsing a message on %s", topic)
            return
        if parsed is None:
            return
        if isinstance(parsed, Rejected):
            if parsed.meter_id is not None and parsed.meter_id in self.community.meters:
                meter = self.community.meters[parsed.meter_id]
                meter.rejected[parsed.kind] = meter.rejected.get(parsed.kind, 0) + 1
            return
        try:
            self._handle(parsed)
        except Exception:
            _LOGGER.exception("Unexpected error handling a message on %s", topic)

    @callback
    def _handle(self, parsed: Reading | Announce | Availability | Ack | RelayReport) -> None:
        meter_id = parsed.meter_id
        self.commands.observe(parsed)
        if isinstance(parsed, Ack | RelayReport) and meter_id not in self.community.meters:
            return  # an answer from a meter we never heard of: nothing to show
        if isinstance(parsed, Reading):
            events = self.community.handle_reading(parsed)
        elif isinstance(parsed, Announce):
            events = self.community.handle_announce(
                meter_id,
                model=parsed.model,
                firmware=parsed.fw,
                rated_current_a=parsed.rated_current_a,
            )
        elif isinstance(parsed, Availability):
            events = self.community.handle_availability(meter_id, parsed.online)
        elif isinstance(parsed, Ack):
            if parsed.ok and parsed.relay is not None:
                meter = self.community.meters.get(meter_id)
                if meter is not None:
                    meter.reported_relay = parsed.relay
            events = []
        else:
            meter = self.community.meters.get(meter_id)
            if meter is not None:
                meter.reported_relay = parsed.relay
            events = []
        if meter_id in self.community.meters:
            self._discover(meter_id)
        self._dispatch(events)
        self._notify_meter(meter_id)

    async def _send(self, meter_id: str, state: str, command_id: str, reason: str) -> None:
        """Publish one relay command through the meter's profile (the tracker retries)."""
        relay: Relay = "off" if state == "off" else "on"
        for topic, payload in self.profile.relay_command(meter_id, relay, command_id, reason):
            await self.transport.publish(topic, payload, qos=1)

    @callback
    def _on_command_outcome(self, outcome: CommandOutcome) -> None:
        """Tell people about a relay command the meter did not carry out; clear it when it does.

        A command that expired (no ack within its tries) or failed (refused) fires
        `prepaid_meter_command_failed` (once per meter until a command succeeds again) and
        raises a repair; a later command acked, or the meter confirming the wanted state (a
        late ack, a reading), removes the repair.
        """
        meter_id = outcome.meter_id
        issue_id = f"command_failed_{self.entry.entry_id}_{meter_id}"
        if outcome.status in ("acked", "confirmed"):
            self._command_failures.pop(meter_id, None)
            self._issues.discard(issue_id)
            ir.async_delete_issue(self.hass, DOMAIN, issue_id)
            return
        if outcome.status not in ("expired", "failed"):
            return  # superseded: a newer command speaks for the meter now
        state: Relay = "off" if outcome.state == "off" else "on"
        if self._command_failures.get(meter_id) == state:
            return  # the same wish failing again (a retried reconciliation): already told
        self._command_failures[meter_id] = state
        self._issues.add(issue_id)
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            issue_id,
            is_fixable=False,
            # A cut that did not happen leaves a home on that everybody believes off.
            severity=ir.IssueSeverity.ERROR if state == "off" else ir.IssueSeverity.WARNING,
            translation_key="command_failed",
            translation_placeholders={
                "meter_id": meter_id,
                "community": self.community_name,
                "state": state,
            },
        )
        meter = self.community.meters.get(meter_id)
        event = Event(
            "command_failed",
            meter_id,
            None if meter is None else meter.account_id,
            {
                "state": state,
                "reason": outcome.reason,
                "actor": outcome.actor,
                "outcome": outcome.status,
                "error": outcome.error,
                "tries": outcome.tries,
                "command_id": outcome.id,
            },
        )
        self.hass.bus.async_fire(EVENT_PREFIX + event.kind, self._event_data(event))

    # ------------------------------------------------------------------ events

    @callback
    def _dispatch(self, events: Iterable[Event]) -> None:
        """Turn the engine's events into commands, publishes, repairs and bus events.

        The match names every kind (mypy's exhaustiveness check: a new kind the engine adds
        fails type-checking here until the adapter says what it means).
        """
        community_changed = False
        for event in events:
            meter_id, account_id = event.meter_id, event.account_id
            match event.kind:
                case "relay":
                    assert meter_id is not None
                    state: Relay = "off" if event.data["state"] == "off" else "on"
                    reason, actor = str(event.data["reason"]), str(event.data["actor"])
                    # The decision is in the community's next ledger batch (see Community).
                    self.commands.set_desired(meter_id, state, reason, actor)
                    if account_id is not None:
                        self._urgent_accounts.add(account_id)
                    community_changed = True
                case "reconcile":
                    # The meter reports the other state and the tracker does not know what
                    # we want (e.g. a wish lost in a crash): tell it, once; it retries.
                    assert meter_id is not None
                    status = self.commands.status(meter_id)
                    if status is None or status.desired != event.data["state"]:
                        meter = self.community.meters[meter_id]
                        self.commands.set_desired(
                            meter_id, meter.desired_relay, meter.relay_reason, meter.relay_actor
                        )
                case "display":
                    self.hass.async_create_task(self._send_display(event))
                case "account":
                    if account_id is not None:
                        self._dirty_accounts.add(account_id)
                    community_changed = True
                case "register_reset" | "unassigned_meter":
                    assert meter_id is not None
                    self._create_issue(event.kind, meter_id, ir.IssueSeverity.WARNING)
                case "unknown_meter":
                    assert meter_id is not None
                    self._create_community_issue(
                        "unknown_meter", ir.IssueSeverity.WARNING, meter_id=meter_id
                    )
                case "assigned":
                    assert meter_id is not None
                    issue_id = f"unassigned_meter_{self.entry.entry_id}_{meter_id}"
                    ir.async_delete_issue(self.hass, DOMAIN, issue_id)
                    self._issues.discard(issue_id)
                    self._update_device_name(meter_id)
                case (
                    "low_balance"
                    | "supply_cut"
                    | "supply_restored"
                    | "supply_cut_deferred"
                    | "top_up"
                    | "alarm"
                    | "inactivity"
                    | "command_failed"
                ):
                    pass  # bus events only (below)
                case "announce" | "availability" | "cycle_closed" | "rejected":
                    pass  # shown by the meter's entities and diagnostics, already updated
                case unknown:
                    assert_never(unknown)
            if event.kind in BUS_EVENTS:
                self.hass.bus.async_fire(EVENT_PREFIX + event.kind, self._event_data(event))
        if community_changed:
            # Readings change the totals all the time: written with the next publish (2 s),
            # not once per reading (each would walk every household).
            self._community_dirty = True

    def _event_data(self, event: Event) -> dict[str, Any]:
        meter_id = event.meter_id
        if meter_id is None and event.account_id is not None:
            meters = self.community.meters.values()
            meter_id = next((m.meter_id for m in meters if m.account_id == event.account_id), None)
        data: dict[str, Any] = {
            "config_entry_id": self.entry.entry_id,
            "community": self.community_id,
            "meter_id": meter_id,
            "device_id": None,
            "household": None,
            **{k: v for k, v in event.data.items() if v is not None or k == "household"},
        }
        if event.account_id is not None:
            data["account_id"] = event.account_id
            household = self.community.households.get(event.account_id)
            if household is not None:
                data["household"] = household.label
                data.setdefault("balance", str(household.electricity.quantize(Decimal("0.01"))))
        if meter_id is not None:
            device = self.meter_device(meter_id)
            data["device_id"] = device.id if device else None
        return data

    @callback
    def _create_issue(self, kind: str, meter_id: str, severity: ir.IssueSeverity) -> None:
        issue_id = f"{kind}_{self.entry.entry_id}_{meter_id}"
        if issue_id in self._issues:
            return
        self._issues.add(issue_id)
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            issue_id,
            is_fixable=False,
            severity=severity,
            translation_key=kind,
            translation_placeholders={"meter_id": meter_id, "community": self.community_name},
        )

    @callback
    def _create_community_issue(
        self, kind: str, severity: ir.IssueSeverity, **placeholders: str
    ) -> None:
        """Raise one repair of this kind for the community (the first occurrence names it)."""
        issue_id = f"{kind}_{self.entry.entry_id}"
        if issue_id in self._issues:
            return
        self._issues.add(issue_id)
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            issue_id,
            is_fixable=False,
            severity=severity,
            translation_key=kind,
            translation_placeholders={**placeholders, "community": self.community_name},
        )

    @callback
    def _update_device_name(self, meter_id: str) -> None:
        household = self.household_of(meter_id)
        device = self.meter_device(meter_id)
        if device is not None and household is not None:
            dr.async_get(self.hass).async_update_device(device.id, name=household.label)

    async def _send_display(self, event: Event) -> None:
        assert event.meter_id is not None
        messages = self.profile.display_command(
            event.meter_id,
            f"display-{event.meter_id}-{int(time.time())}",
            Decimal(str(event.data["balance"])),
            self.currency,
            bool(event.data.get("low", True)),
        )
        try:
            for topic, payload in messages:
                await self.transport.publish(topic, payload, qos=1)
        except Exception:  # a display update is best effort
            _LOGGER.debug("Display update for %s not sent", event.meter_id, exc_info=True)

    def _load_community(self, legacy: dict[str, dict[str, Any]]) -> list[str]:
        """Load the community; return the meters with a supply decision (blocking).

        Versions before the ledger kept the decisions (`legacy`) in Home Assistant's storage:
        those of the ledger's meters that it has no decision for are written into it, once.
        """
        ledger = self.community.ledger
        if legacy:
            decided, meters = ledger.supply_states(), ledger.meters()
            for meter_id, record in legacy.items():
                if meter_id in meters and meter_id not in decided:
                    ledger.record_supply(
                        SupplyChange(
                            meter_id,
                            "off" if record["state"] == "off" else "on",
                            str(record["reason"]),
                            str(record["actor"]),
                            int(record["ts"]),
                        )
                    )
        self.community.load()
        return [m for m in ledger.supply_states() if m in self.community.meters]

    def _store_data(self) -> dict[str, Any]:
        return {
            "thresholds": {
                meter_id: str(meter.low_threshold)
                for meter_id, meter in self.community.meters.items()
                if meter.low_threshold is not None
            },
        }

    # ------------------------------------------------------------------ periodic work

    async def _async_flush_interval(self, _now: Any) -> None:
        await self.async_flush()

    async def _async_publish_interval(self, _now: Any) -> None:
        if self._community_dirty:
            self._notify_community()
        await self._publish_accounts()

    async def async_flush(self) -> None:
        """Commit pending charges (executor), apply the result and publish account topics."""
        async with self._flush_lock:
            batch = self.community.take_batch()
            if batch:
                try:
                    result = await self.hass.async_add_executor_job(self.community.commit, batch)
                except Exception:
                    _LOGGER.exception("Ledger commit failed; the batch is kept for the next try")
                    self.community.restore_batch(batch)
                    return
                self._dispatch(self.community.apply_results(result))
            if self._community_dirty:
                self._notify_community()
            await self._publish_accounts()
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

    async def _publish_accounts(self) -> None:
        if not self._dirty_accounts or not self.connected:
            return
        now = time.monotonic()
        due = {
            account_id
            for account_id in self._dirty_accounts
            if not self.throttled
            or account_id in self._urgent_accounts
            or now - self._account_sent.get(account_id, -ACCOUNT_INTERVAL_S) >= ACCOUNT_INTERVAL_S
        }
        self._dirty_accounts -= due
        self._urgent_accounts -= due
        for meter in list(self.community.meters.values()):
            if meter.account_id not in due:
                continue
            body = self.community.account_payload(meter)
            if body is None:
                continue
            payload = account_payload(
                balance=Decimal(body["balance"]),
                currency=self.currency,
                low=bool(body["low"]),
                relay=meter.desired_relay,
                cycle=meter.billing.cycle,
                cycle_kwh=Decimal(body["cycle_kwh"]),
                tier=int(body["tier"]),
                price=Decimal(body["price"]),
                updated=int(time.time()),
            )
            topic = topic_for(self.prefix, self.community_id, meter.meter_id, "account")
            try:
                await self.transport.publish(topic, payload, qos=1, retain=True)
            except Exception:  # republished on the next change
                self._dirty_accounts.add(meter.account_id)
                return
            self._account_sent[meter.account_id] = now

    @callback
    def async_check_size(self) -> None:
        """Hold the heap frozen once the community is large (at setup, then every minute).

        Tens of thousands of entities make every full garbage collection a long pause; see
        heap.py. A community that grows past FREEZE_ABOVE meters while running joins then.
        """
        if self._heap_release is None and len(self.community.meters) > FREEZE_ABOVE:
            self._heap_release = async_hold_frozen(self.hass, self.entry.entry_id)

    async def _async_tick(self, _now: Any) -> None:
        self.async_check_size()
        self._dispatch(self.community.tick())
        await self._async_refresh_rates()
        for meter_id in self.community.meters:  # days left and price move with the clock
            self._notify_measurements(meter_id)

    async def _async_refresh_rates(self) -> None:
        """Recompute the fee collection rate of this month from the ledger (executor)."""
        self.fee_collection_rate = await self.hass.async_add_executor_job(self._collection_rate)
        self._notify_community()

    def _collection_rate(self) -> float | None:
        ledger = self.community.ledger
        start = self.community.month_start_ts()
        fees = -ledger.sum_kind_since(EntryKind.FEE, start)
        paid = ledger.sum_kind_since(EntryKind.PAYMENT, start)
        if fees <= 0:
            return None
        return round(float(min(paid / fees, Decimal(1)) * 100), 1)

    # ------------------------------------------------------------------ requests

    async def _actor(self, context: Context | None) -> tuple[str, bool]:
        """Return (actor, is_admin) for whoever is behind a service call or entity action."""
        if context is None or context.user_id is None:
            return "automation", True
        user = await self.hass.auth.async_get_user(context.user_id)
        if user is None:
            return f"user:{context.user_id}", False
        return (
            "operator:" if user.is_admin else "resident:"
        ) + user.name if user.name else context.user_id, user.is_admin

    async def async_request_relay(
        self,
        meter_id: str,
        state: Relay,
        context: Context | None,
        *,
        operator_override: bool = False,
    ) -> None:
        """Turn a supply on or off on someone's request, by the prepaid rules."""
        actor, is_admin = await self._actor(context)
        if operator_override and not is_admin:
            raise ServiceValidationError(translation_domain=DOMAIN, translation_key="not_admin")
        if is_admin and not actor.startswith("operator"):
            actor = f"operator:{actor}"
        try:
            events = self.community.request_relay(
                meter_id, state, actor=actor, operator_override=operator_override
            )
        except CommunityError as err:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key=err.key,
                translation_placeholders=err.placeholders,
            ) from err
        self._dispatch(events)
        self._notify_meter(meter_id)
        # A person's decision is written to the ledger now, not with the next minute's batch.
        await self.async_flush()

    async def async_ledger_call(
        self, func: Callable[..., LedgerResult | Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Run a blocking Community ledger method in the executor; map its errors."""
        try:
            return await self.hass.async_add_executor_job(lambda: func(*args, **kwargs))
        except CommunityError as err:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key=err.key,
                translation_placeholders=err.placeholders,
            ) from err
        except Exception as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="ledger_error",
                translation_placeholders={"error": str(err)},
            ) from err

    @callback
    def apply_money(self, result: LedgerResult, *, top_up: bool) -> None:
        """Take a money movement into the live state and tell whoever needs to know."""
        events = (
            self.community.apply_top_up(result) if top_up else self.community.apply_results(result)
        )
        self._dispatch(events)
        for account_id, _sub in result.balances:
            for meter in self.community.meters.values():
                if meter.account_id == account_id:
                    self._notify_meter(meter.meter_id)
        self._notify_community()

    @callback
    def apply_assignment(self, meter_id: str, info: dict[str, Any]) -> None:
        """Take an assignment into the live state."""
        self._dispatch(self.community.apply_assignment(meter_id, info))
        self._discover(meter_id)
        self._notify_meter(meter_id)
        self._notify_community()

    # ------------------------------------------------------------------ thresholds

    def low_threshold(self, meter_id: str) -> Decimal:
        """Return the meter's low-balance threshold (the first warning level by default)."""
        return self.community.low_threshold(self.community.meters[meter_id])

    @callback
    def set_low_threshold(self, meter_id: str, value: Decimal) -> None:
        """Set a meter's low-balance threshold."""
        self.community.meters[meter_id].low_threshold = value
        if (account := self.community.meters[meter_id].account_id) is not None:
            self._dirty_accounts.add(account)  # its account topic says "low"
        self._store.async_delay_save(self._store_data, 1)
        self._notify_meter(meter_id)

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
                    "relay_actor": meter.relay_actor,
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
        }


def ledger_path(hass: HomeAssistant, community_id: str) -> Path:
    """Return the community's ledger file in the config folder."""
    return Path(hass.config.path(f"{DOMAIN}_{community_id}.sqlite3"))


def open_ledger(path: Path) -> Ledger:
    """Open (and migrate) the ledger; blocking, run it in an executor."""
    return Ledger(path)
