"""The one door to a community: meters, money and supply behind one service.

`CommunityService` owns everything a community needs to run, with no Home Assistant in it:
the MQTT transport, the device profile, the live `Community` (gate, pricing, policy, safety
watch), the relay command tracker, the ledger (its blocking work runs in an executor inside
the service), the periodic commit, tick and account publishing, and the meters' displays.
Callers ask it for things (`top_up`, `assign`, `request_supply`, ...) and never pair two-phase
calls by hand; what happens comes back to one `ServiceListener`: the engine's events (after
the service has acted on those that are its own business: commands, publishes), which meter
changed, which meter was discovered, and the state of the broker link.

A Home Assistant config entry is one adapter of it (coordinator.py): events to the bus,
logbook and repairs, meter changes to entity writes. tests/engine/test_standalone.py runs it
with no Home Assistant at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
import contextlib
from dataclasses import dataclass
from decimal import Decimal
import logging
import time
from typing import Any, Protocol, TypeVar

from .actor import Actor
from .commands import CommandOutcome, CommandTracker
from .community import Community, Event, LedgerResult, MoveOut, Relay
from .household import parse_request
from .ledger import EntryKind, SafetySetting, SubAccount, SupplyChange
from .profiles import Profile
from .protocol import (
    Ack,
    Announce,
    Availability,
    Reading,
    Rejected,
    RelayReport,
    parse_topic,
    topic_for,
)
from .transport import MqttTransport, TransportConfig

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

#: A household's request older (or newer) than this, by its own clock, is refused
#: (`expired_request`) instead of acted on: one queued while the community was away.
REQUEST_MAX_AGE_S = 600

__all__ = ["CommunityService", "ServiceListener", "ServiceTiming"]


class ServiceListener(Protocol):
    """What the service tells its host (a Home Assistant entry, a test, another program)."""

    def events(self, events: Sequence[Event]) -> None:
        """Every event, after the service has acted on it (commands, publishes)."""

    def meter_changed(self, meter_id: str) -> None:
        """A meter's live state changed (a reading, a relay report, a balance)."""

    def meter_discovered(self, meter_id: str) -> None:
        """A meter became known (announced, assigned, or loaded from the ledger)."""

    def connection(self, connected: bool, reason: str) -> None:
        """The broker link came up or went down."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceTiming:
    """How often the service does its periodic work, and its command retry budget.

    Charges are committed once a minute: one journal entry per meter and minute (not a write
    per reading), the meter's cursor in the same transaction. A relay command is sent up to
    `command_max_tries` times, the waits doubling from `command_base_delay_s` up to
    `command_max_delay_s`, before it counts as not acknowledged (a `command_failed` event).
    A community of more than `throttle_above` meters publishes a household's account topic
    at most every `account_interval_s` (a relay change at once), and every household's at
    least every `account_heartbeat_s` (its own Home Assistant tells a quiet community from a
    gone one by the `updated` time).
    """

    commit_interval_s: float = 60.0
    publish_interval_s: float = 2.0
    tick_interval_s: float = 60.0
    account_interval_s: float = 30.0
    throttle_above: int = 100
    command_max_tries: int = 5
    command_base_delay_s: float = 2.0
    command_max_delay_s: float = 60.0
    account_heartbeat_s: float = 300.0
    #: How often the safety watch's state (open episodes, what it learned) is kept.
    safety_save_interval_s: float = 300.0


class CommunityService:
    """One community's meters, money and supply (see the module docstring)."""

    def __init__(
        self,
        community: Community,
        profile: Profile,
        transport_config: TransportConfig,
        *,
        prefix: str,
        community_id: str,
        currency: str,
        listener: ServiceListener,
        timing: ServiceTiming | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Bind the parts; nothing runs until `start`."""
        self.community = community
        self.profile = profile
        self.prefix = prefix
        self.community_id = community_id
        self.currency = currency
        self.timing = timing or ServiceTiming()
        self._listener = listener
        self._clock = clock
        self.transport = MqttTransport(
            transport_config,
            self._on_message,
            [*profile.subscriptions(), topic_for(prefix, community_id, "+", "request")],
            on_connected=self._on_connect,
            on_disconnected=self._on_disconnect,
        )
        self.commands = CommandTracker(
            sender=self._send,
            clock=time.monotonic,
            on_outcome=self._on_command_outcome,
            max_tries=self.timing.command_max_tries,
            base_delay=self.timing.command_base_delay_s,
            max_delay=self.timing.command_max_delay_s,
        )
        self.connected = False
        self._flush_lock = asyncio.Lock()
        self._dirty_accounts: set[str] = set()
        self._urgent_accounts: set[str] = set()
        self._account_sent: dict[str, float] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._flush_due = False
        self._stopping = False

    # ------------------------------------------------------------------ life cycle

    async def start(self, legacy_supply: dict[str, dict[str, Any]] | None = None) -> None:
        """Load the ledger (with each meter's wanted supply), connect, start the periodic work.

        `legacy_supply`: relay wishes an earlier version kept outside the ledger (meter id ->
        state, reason, actor, ts); those of the ledger's meters without a decision move in.
        """
        decided = await self._in_executor(self._load, legacy_supply or {})
        for meter_id in decided:  # the ledger's wish for each decided meter: enforced
            self._want(meter_id)
        for meter_id in sorted(self.community.meters):
            self._listener.meter_discovered(meter_id)
        await self.transport.start()
        for work, seconds, name in (
            (self.flush, self.timing.commit_interval_s, "commit"),
            (self._publish_due, self.timing.publish_interval_s, "publish"),
            (self.tick, self.timing.tick_interval_s, "tick"),
            (self.save_safety_state, self.timing.safety_save_interval_s, "safety state"),
        ):
            self._loops.append(
                asyncio.create_task(self._every(seconds, work), name=f"prepaid_meter {name}")
            )

    async def stop(self) -> None:
        """Commit what is pending, stop every task, disconnect and close the ledger."""
        self._stopping = True
        async with self._flush_lock:  # a commit in progress ends first, applied or put back
            for task in self._loops:
                task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()
        await self.flush()
        try:
            await self.save_safety_state()
        except Exception:
            _LOGGER.exception(
                "The safety watch's state of community %s is not kept", self.community_id
            )
        await self.commands.stop()
        await self.transport.stop()
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._in_executor(self.community.ledger.close)

    async def _every(self, seconds: float, work: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Exception:
                _LOGGER.exception("Periodic work of community %s failed", self.community_id)

    def _load(self, legacy: dict[str, dict[str, Any]]) -> list[str]:
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
                            str(Actor.parse(str(record["actor"]))),
                            int(record["ts"]),
                        )
                    )
        self.community.load()
        return [m for m in ledger.supply_states() if m in self.community.meters]

    async def _in_executor(self, func: Callable[..., _T], *args: Any) -> _T:
        """Run blocking (ledger) work off the event loop, in the loop's executor."""
        return await asyncio.get_running_loop().run_in_executor(None, func, *args)

    # ------------------------------------------------------------------ periodic work

    async def flush(self, *, raise_errors: bool = False) -> None:
        """Commit pending charges and decisions, apply the result, publish account topics.

        A failed commit keeps the batch for the next one (logged); `raise_errors` also
        raises it, for a caller who must tell a person that their decision is not saved yet.
        """
        async with self._flush_lock:
            self._flush_due = False
            batch = self.community.take_batch()
            if batch:
                try:
                    result = await self._in_executor(self.community.commit, batch)
                except Exception:
                    _LOGGER.exception("Ledger commit failed; the batch is kept for the next try")
                    self.community.restore_batch(batch)
                    if raise_errors:
                        raise
                    return
                self._dispatch(self.community.apply_results(result))
            await self.publish_accounts()

    def _flush_soon(self) -> None:
        """Commit now in the background (a supply decision must not wait for the minute)."""
        if not self._flush_due and not self._stopping:
            self._flush_due = True
            self._spawn(self.flush())

    async def tick(self) -> None:
        """Re-evaluate deferred cuts (friendly hours end) and daily counters; let time pass
        for the safety watch (offline meters, care alarms, areas' energy balances)."""
        self._dispatch(self.community.tick())
        self._dispatch(self.community.safety_tick(int(self._clock())))
        self._heartbeat()

    async def save_safety_state(self) -> None:
        """Keep the safety watch's state in the ledger (a restart resumes its episodes)."""
        state = self.community.safety_state()
        await self._in_executor(self.community.ledger.save_safety_state, state, int(self._clock()))

    async def _publish_due(self) -> None:
        await self.publish_accounts()

    @property
    def throttled(self) -> bool:
        """Return whether this is a large community (account topics at most every 30 s)."""
        return len(self.community.meters) > self.timing.throttle_above

    @property
    def unpublished_accounts(self) -> frozenset[str]:
        """Return the households whose account topic waits to be published."""
        return frozenset(self._dirty_accounts)

    def account_changed(self, account_id: str) -> None:
        """Publish this household's account topic with the next publish."""
        self._dirty_accounts.add(account_id)

    async def publish_accounts(self) -> None:
        """Publish the retained `account` topic of each household that changed."""
        if not self._dirty_accounts or not self.connected:
            return
        now = time.monotonic()
        interval = self.timing.account_interval_s
        due = {
            account_id
            for account_id in self._dirty_accounts
            if not self.throttled
            or account_id in self._urgent_accounts
            or now - self._account_sent.get(account_id, -interval) >= interval
        }
        self._dirty_accounts -= due
        self._urgent_accounts -= due
        for meter in list(self.community.meters.values()):
            if meter.account_id not in due:
                continue
            payload = self.community.account_payload(meter)
            if payload is None:
                continue
            topic = topic_for(self.prefix, self.community_id, meter.meter_id, "account")
            try:
                await self.transport.publish(topic, payload, qos=1, retain=True)
            except Exception:  # republished on the next change
                self._dirty_accounts.add(meter.account_id)
                return
            self._account_sent[meter.account_id] = now

    def _heartbeat(self) -> None:
        """Mark accounts not published for ACCOUNT_HEARTBEAT_S (a household sees we live)."""
        now = time.monotonic()
        beat = self.timing.account_heartbeat_s
        for meter in self.community.meters.values():
            account_id = meter.account_id
            if account_id is not None and now - self._account_sent.get(account_id, now) >= beat:
                self._dirty_accounts.add(account_id)
                self._urgent_accounts.add(account_id)

    def _on_request(self, meter_id: str, payload: bytes) -> None:
        """A household asks (topic `request`, docs/HOUSEHOLD.md); answered on its account."""
        parsed = parse_request(payload)
        meter = self.community.meters.get(meter_id)
        if meter is None or meter.account_id is None:
            return
        if isinstance(parsed, Rejected):
            meter.rejected[f"request_{parsed.kind}"] = (
                meter.rejected.get(f"request_{parsed.kind}", 0) + 1
            )
            return
        now = self._clock()
        if abs(now - parsed.ts) > REQUEST_MAX_AGE_S:
            events = self.community.refuse_request(meter_id, parsed.id, "expired_request")
        else:
            events = self.community.household_request(meter_id, parsed.id, now)
        self._urgent_accounts.add(meter.account_id)
        self._dispatch(events)
        self._listener.meter_changed(meter_id)

    # ------------------------------------------------------------------ requests

    async def top_up(
        self, account_id: str, amount: Decimal, transaction_id: str, channel: str, actor: Actor
    ) -> LedgerResult:
        """Credit a payment once (by transaction id): durable before it returns."""
        result = await self._in_executor(
            lambda: self.community.top_up(account_id, amount, transaction_id, channel, actor=actor)
        )
        self._money_applied(result, self.community.apply_top_up(result))
        return result

    async def post_money(
        self,
        account_id: str,
        sub: SubAccount,
        kind: EntryKind,
        amount: Decimal,
        transaction_id: str,
        *,
        actor: Actor,
        meta: Mapping[str, str] | None = None,
    ) -> LedgerResult:
        """Post an adjustment, a fee or a fee payment (see `Community.post_money`)."""
        result = await self._in_executor(
            lambda: self.community.post_money(
                account_id, sub, kind, amount, transaction_id, actor=actor, meta=meta
            )
        )
        self._money_applied(result, self.community.apply_results(result))
        return result

    def _money_applied(self, result: LedgerResult, events: list[Event]) -> None:
        self._dispatch(events)
        for account_id, _sub in result.balances:
            for meter in self.community.meters.values():
                if meter.account_id == account_id:
                    self._listener.meter_changed(meter.meter_id)
        # Money moved (a top-up, a payment through a provider, a fee): the household's account
        # topic goes out now, not with the next publish (up to `publish_interval_s` later, or
        # `account_interval_s` in a large community): a resident who just paid sees it at once.
        moved = {account_id for account_id, _sub in result.balances} & self._dirty_accounts
        if moved:
            self._urgent_accounts |= moved
            self._spawn(self.publish_accounts())

    async def assign(
        self,
        meter_id: str,
        account_id: str,
        label: str,
        *,
        supply_protected: bool | None = None,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        """Bind a meter to a household (created if new); return what was assigned.

        With an `actor`, who asks is checked (an operator's); without, the caller has.
        """
        info = await self._in_executor(
            lambda: self.community.assign_meter(
                meter_id, account_id, label, supply_protected=supply_protected, actor=actor
            )
        )
        self._dispatch(self.community.apply_assignment(meter_id, info))
        self._listener.meter_discovered(meter_id)
        self._listener.meter_changed(meter_id)
        return info

    async def unassign(self, meter_id: str, *, actor: Actor | None = None) -> str:
        """Unbind a meter from its household (move-out); return the household it had.

        What the meter used until now is committed to that household first. Its retained
        account topic is cleared, so that nobody reads the old household's figures there.
        """
        await self.flush(raise_errors=True)
        account_id = await self._in_executor(
            lambda: self.community.unassign_meter(meter_id, actor=actor)
        )
        self._dirty_accounts.discard(account_id)
        self._urgent_accounts.discard(account_id)
        self._dispatch(self.community.apply_unassignment(meter_id))
        topic = topic_for(self.prefix, self.community_id, meter_id, "account")
        try:
            await self.transport.publish(topic, b"", qos=1, retain=True)
        except Exception as err:  # the unassignment stands either way
            _LOGGER.warning("The old household's account topic %s stays retained: %s", topic, err)
        self._listener.meter_changed(meter_id)
        return account_id

    async def check_move_out(
        self,
        account_id: str,
        credit: str,
        next_account: str | None = None,
        next_label: str | None = None,
    ) -> None:
        """Refuse a move-out settlement that cannot be done (see `Community.check_move_out`)."""
        await self._in_executor(
            lambda: self.community.check_move_out(account_id, credit, next_account, next_label)
        )

    async def settle_move_out(
        self,
        account_id: str,
        credit: str,
        *,
        actor: Actor,
        next_account: str | None = None,
        next_label: str | None = None,
        reason: str = "",
    ) -> MoveOut:
        """Close a moved-out household's cycles and refund or carry its electricity credit.

        Its meters are unassigned first (`unassign`); what they used is committed here before
        (see `Community.settle_move_out`). Durable before it returns.
        """
        await self.flush(raise_errors=True)
        settled = await self._in_executor(
            lambda: self.community.settle_move_out(
                account_id,
                credit,
                actor=actor,
                next_account=next_account,
                next_label=next_label,
                reason=reason,
            )
        )
        # As a top-up: a next household that has a meter may have its supply restored.
        self._money_applied(settled.result, self.community.apply_top_up(settled.result))
        return settled

    async def statement(
        self, account_id: str, cycle: str, *, actor: Actor | None = None
    ) -> dict[str, Any]:
        """Return a cycle's statement of a household (to a resident, only their own)."""
        if actor is not None:  # in the loop, where the links change
            self.community.authorize(actor, "statement", account_id=account_id)
        return await self._in_executor(
            lambda: self.community.statement(account_id, cycle, actor=actor)
        )

    def set_low_threshold(
        self, meter_id: str, value: Decimal | None, *, actor: Actor | None = None
    ) -> None:
        """Set (None: clear) a meter's low-balance threshold; a resident only their own.

        The host keeps the value (the ledger does not); the account topic says "low" anew.
        """
        self.community.set_low_threshold(meter_id, value, actor=actor)
        account_id = self.community.meters[meter_id].account_id
        if account_id is not None:
            self.account_changed(account_id)
        self._listener.meter_changed(meter_id)

    # ------------------------------------------------------------------ the safety watch

    async def acknowledge_alarm(self, meter_id: str, kind: str, *, actor: Actor) -> None:
        """Acknowledge a meter's open alarm episode (an operator's), journaled with the actor.

        Raises `CommunityError` (`no_open_alarm`, `unknown_meter`, ...) and changes nothing
        when there is none. The episode stays open until it clears.
        """
        ack = self.community.acknowledgement(meter_id, kind, actor=actor)
        await self._in_executor(self.community.record_acknowledgement, ack)
        self._dispatch(self.community.apply_acknowledgement(ack))
        self._listener.meter_changed(meter_id)

    async def set_household_safety(
        self,
        account_id: str,
        *,
        care: bool | None = None,
        vacant: bool | None = None,
        rules: Mapping[str, Any] | None = None,
        actor: Actor,
    ) -> bool:
        """Set a household's care opt-in, vacant mark and rule overrides (an operator's).

        None keeps a setting; `rules` replaces the overrides ({} clears them). Journaled with
        the actor; returns whether anything changed. `CommunityError` (nothing changed) for
        an unknown household or a rule that cannot be (`invalid_safety_rule`).
        """
        setting = self.community.household_safety(
            account_id, care=care, vacant=vacant, rules=rules, actor=actor
        )
        return await self._apply_safety_setting(setting)

    async def set_master_meter(
        self,
        area_id: str,
        master_meter_id: str | None,
        members: Sequence[str] = (),
        *,
        actor: Actor,
    ) -> bool:
        """Make a meter the master of an area of households' meters (None: remove the area).

        An operator's; journaled with the actor; returns whether anything changed.
        `CommunityError` (`invalid_area`, `unknown_meter`; nothing changed) when it cannot be.
        """
        setting = self.community.master_meter(area_id, master_meter_id, members, actor=actor)
        changed = await self._apply_safety_setting(setting)
        for meter_id in sorted({m for m in (master_meter_id, *members) if m is not None}):
            self._listener.meter_changed(meter_id)
        return changed

    async def _apply_safety_setting(self, setting: SafetySetting) -> bool:
        changed = await self._in_executor(self.community.record_safety_setting, setting)
        self._dispatch(self.community.apply_safety_setting(setting))
        if setting.subject == "household":
            for meter in self.community.meters.values():
                if meter.account_id == setting.key:
                    self._listener.meter_changed(meter.meter_id)
        return changed

    # ------------------------------------------------------------------ people

    async def link_user(self, account_id: str, user_id: str, *, actor: Actor) -> bool:
        """Link a user to a household (an operator's); return whether it changed anything."""
        changed = await self._in_executor(
            lambda: self.community.link_user(account_id, user_id, actor=actor)
        )
        self.community.apply_link(account_id, user_id, linked=True)
        return changed

    async def unlink_user(self, account_id: str, user_id: str, *, actor: Actor) -> bool:
        """Unlink a user from a household (an operator's); return whether they were linked."""
        changed = await self._in_executor(
            lambda: self.community.unlink_user(account_id, user_id, actor=actor)
        )
        self.community.apply_link(account_id, user_id, linked=False)
        return changed

    def households_of(self, user_id: str) -> frozenset[str]:
        """Return the households a user is linked to."""
        return self.community.links.households_of(user_id)

    def users_of(self, account_id: str) -> frozenset[str]:
        """Return the users linked to a household."""
        return self.community.links.users_of(account_id)

    async def request_supply(
        self, meter_id: str, state: Relay, *, actor: Actor, operator_override: bool = False
    ) -> None:
        """Turn a supply on or off on someone's request, by the prepaid rules.

        Raises `CommunityError` (nothing changed) when the rules refuse. The decision is in
        the ledger before this returns; if the ledger cannot be written this raises that
        error: the decision stands and is written with the next commit.
        """
        events = self.community.request_relay(
            meter_id, state, actor=actor, operator_override=operator_override
        )
        self._dispatch(events)
        await self.flush(raise_errors=True)

    async def collection_rate(self) -> float | None:
        """Return this month's fee collection rate in percent (None without fees)."""
        return await self._in_executor(self._collection_rate)

    def _collection_rate(self) -> float | None:
        ledger = self.community.ledger
        start = self.community.month_start_ts()
        fees = -ledger.sum_kind_since(EntryKind.FEE, start)
        paid = ledger.sum_kind_since(EntryKind.PAYMENT, start)
        if fees <= 0:
            return None
        return round(float(min(paid / fees, Decimal(1)) * 100), 1)

    # ------------------------------------------------------------------ MQTT

    def _on_connect(self) -> None:
        self.connected = True
        self.commands.reconcile()
        self._listener.connection(True, "")

    def _on_disconnect(self, reason: str = "") -> None:
        self.connected = False
        self._listener.connection(False, reason)

    def _on_message(self, topic: str, payload: bytes) -> None:
        """Handle one MQTT message; nothing a meter sends may raise out of here."""
        if topic.endswith("/request"):
            parts = parse_topic(topic, self.prefix, self.community_id)
            if not isinstance(parts, Rejected) and parts.channel == "request":
                try:
                    self._on_request(parts.meter_id, payload)
                except Exception:
                    _LOGGER.exception("Unexpected error handling a request on %s", topic)
                return
        try:
            parsed = self.profile.parse(topic, payload, self._clock())
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

    def _handle(self, parsed: Reading | Announce | Availability | Ack | RelayReport) -> None:
        meter_id = parsed.meter_id
        known = meter_id in self.community.meters
        if known:  # the tracker keeps state per meter: none for made-up ids
            self.commands.observe(parsed)
        elif isinstance(parsed, Ack | RelayReport):
            return  # an answer from a meter we never heard of: nothing to show
        events: list[Event] = []
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
                self.community.meters[meter_id].reported_relay = parsed.relay
        else:
            self.community.meters[meter_id].reported_relay = parsed.relay
        if meter_id not in self.community.meters:
            self._dispatch(events)  # counted as unknown: nothing to show, nothing queued
            return
        if not known:  # discovered by this message
            self.commands.observe(parsed)
            self._listener.meter_discovered(meter_id)
        self._dispatch(events)
        self._listener.meter_changed(meter_id)

    async def _send(self, meter_id: str, state: str, command_id: str, reason: str) -> None:
        """Publish one relay command through the meter's profile (the tracker retries)."""
        relay: Relay = "off" if state == "off" else "on"
        for topic, payload in self.profile.relay_command(meter_id, relay, command_id, reason):
            await self.transport.publish(topic, payload, qos=1)

    def _on_command_outcome(self, outcome: CommandOutcome) -> None:
        """A command ended: not carried out (expired, failed) or carried out (acked, confirmed)."""
        if outcome.status == "superseded":
            return  # a newer command speaks for the meter now
        meter = self.community.meters.get(outcome.meter_id)
        account_id = None if meter is None else meter.account_id
        if outcome.status in ("acked", "confirmed"):
            self._listener.events(
                [Event("command_confirmed", outcome.meter_id, account_id, {"state": outcome.state})]
            )
            return
        self._listener.events(
            [
                Event(
                    "command_failed",
                    outcome.meter_id,
                    account_id,
                    {
                        "state": "off" if outcome.state == "off" else "on",
                        "reason": outcome.reason,
                        # the tracker keeps the actor's text form
                        **Actor.parse(outcome.actor).event_data(),
                        "outcome": outcome.status,
                        "error": outcome.error,
                        "tries": outcome.tries,
                        "command_id": outcome.id,
                    },
                )
            ]
        )

    # ------------------------------------------------------------------ events

    def _dispatch(self, events: Iterable[Event]) -> None:
        """Act on the events that are the service's business, then hand all to the listener."""
        events = list(events)
        for event in events:
            meter_id, account_id = event.meter_id, event.account_id
            if event.kind == "relay" and meter_id is not None:
                state: Relay = "off" if event.data["state"] == "off" else "on"
                # The event's data is for people (the actor's display text); the tracker
                # keeps the text form of the actor the meter records.
                actor = self.community.meters[meter_id].relay_actor
                self.commands.set_desired(meter_id, state, str(event.data["reason"]), str(actor))
                if account_id is not None:
                    self._urgent_accounts.add(account_id)
                # Whether a home should be on is a ledger fact: written now, not in a minute
                # (Home Assistant does not unload entries when it stops).
                self._flush_soon()
                self._listener.meter_changed(meter_id)
            elif event.kind == "reconcile" and meter_id is not None:
                # The meter reports the other state and the tracker does not know what we
                # want (e.g. a wish lost in a crash): tell it, once; it retries from there.
                status = self.commands.status(meter_id)
                if status is None or status.desired != event.data["state"]:
                    self._want(meter_id)
            elif event.kind == "display" and meter_id is not None:
                self._spawn(self._send_display(event))
            elif event.kind == "account" and account_id is not None:
                self._dirty_accounts.add(account_id)
        if events:
            self._listener.events(events)

    def _want(self, meter_id: str) -> None:
        """Tell the command tracker the meter's wanted relay state (and why, and by whom)."""
        meter = self.community.meters[meter_id]
        self.commands.set_desired(
            meter_id, meter.desired_relay, meter.relay_reason, str(meter.relay_actor)
        )

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send_display(self, event: Event) -> None:
        assert event.meter_id is not None
        messages = self.profile.display_command(
            event.meter_id,
            f"display-{event.meter_id}-{int(self._clock())}",
            Decimal(str(event.data["balance"])),
            self.currency,
            bool(event.data.get("low", True)),
        )
        try:
            for topic, payload in messages:
                await self.transport.publish(topic, payload, qos=1)
        except Exception:  # a display update is best effort
            _LOGGER.debug("Display update for %s not sent", event.meter_id, exc_info=True)
