"""A community of prepaid meters: readings become charges, balances decide the supply.

`Community` keeps every meter's live state in memory and decides what happens next; it does
no I/O of its own except through the ledger, and its methods come in two kinds:

- memory-only (`handle_reading`, `handle_announce`, `handle_availability`, `take_batch`, ...)
  which the integration calls in Home Assistant's event loop, and
- ledger methods (`commit`, `top_up`, `post_fee`, `assign_meter`, `statement`, `load`, ...)
  which block on SQLite and run in an executor. They never touch the live state: what they
  return is applied back in the loop with `apply_results`.

Money rules: a charge is journaled per reading with the key `charge:<meter>:<seq>`, in the
same transaction as the meter's cursor, so nothing is billed twice across restarts and
duplicate messages; a cycle is settled to its statement when the meter's first reading of
the next cycle is committed. Fee arrears never decide the supply (Civil Code art. 944).

Who may ask for what (engine/permissions.py) is checked here, on every request that carries
an `Actor`, when the community is built with `enforce_permissions`: a resident restores only
a household they are linked to after a credit cut, reads only its statement and sets only its
threshold; cuts, money, assignments and links are an operator's. Without it (the default of
earlier hosts), a request is decided by the balance and the actor's kind alone, as before;
linking people is an operator's either way. The links are loaded from the ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time as day_time, timedelta
from decimal import Decimal
import json
import logging
import re
import time
from typing import Any, Literal, Protocol, get_args

from .actor import Actor, ActorKind
from .billing import (
    CENT,
    BillingState,
    Piece,
    bill_interval,
    current_price,
    statement_for,
    tier_room,
)
from .ledger import (
    Cursor,
    EntryKind,
    Ledger,
    LedgerError,
    MonthUsage,
    Posting,
    PostResult,
    SafetyAck,
    SafetySetting,
    SubAccount,
    SupplyChange,
    UsageDelta,
    UserLink,
)
from .permissions import CREDIT_CUTS, Action, Refusal, UserLinks, check
from .policy import (
    PolicyConfig,
    Requester,
    WarningTracker,
    decide_restore,
    decide_supply,
    estimate_days_left,
)
from .protocol import Issues, MeterGate, Rejected, account_payload
from .safety import (
    ALARM_KINDS,
    AlarmAcknowledged,
    AlarmCleared,
    AlarmStarted,
    HouseholdFlags,
    ProtectiveCutWanted,
    SafetyError,
    SafetyEvent,
    SafetyRules,
    SafetyWatch,
    WatchReading,
)
from .tariff import Tariff, to_us

_LOGGER = logging.getLogger(__name__)
_ZERO = Decimal(0)
#: The highest balance that is a debt to the cent (rounded half up, -0.005 reads -0.01).
ARREARS_AT = Decimal("-0.005")
#: The fee sub-accounts (an enum's iteration is slow in a loop over thousands of households).
FEE_SUBS = (SubAccount.PROPERTY_FEE, SubAccount.PARKING_FEE)
MAX_AMOUNT = Decimal(100_000)
DEFAULT_RATED_CURRENT_A = 60.0
#: Meters one community takes by discovery; announces beyond are refused and counted, so a
#: flood of made-up ids cannot fill Home Assistant's device registry.
METER_LIMIT = 10_000
#: An alarm is one episode: one `alarm` event when it starts, one `alarm_cleared` when the
#: meter's readings have shown no sign of it for this long (the safety watch's default
#: `SafetyRules.clear_s`; a community's options may change it).
ALARM_CLEAR_S = SafetyRules().clear_s
#: What a household's safety setting may hold (engine/safety.py's HouseholdFlags, stored).
SAFETY_FLAGS = ("care", "vacant")
#: A household's own requests (topic `request`): at most this many acted on per window per
#: meter (more are answered `rate_limited`); the last REQUEST_IDS_KEPT ids are remembered, so
#: a repeated request gets its first answer and is never acted on twice.
REQUESTS_PER_WINDOW = 3
REQUEST_WINDOW_S = 60.0
REQUEST_IDS_KEPT = 32
#: Days left divide the balance by the household's daily cost over at most this many whole
#: days before today (and today so far), once at least DAYS_LEFT_MIN_S of use is known.
DAYS_LEFT_WINDOW_DAYS = 7
DAYS_LEFT_MIN_S = 86_400

type Relay = Literal["on", "off"]

_YEAR_RE = re.compile(r"[0-9]{4}")
_MONTH_RE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")

#: How the restore rules see each kind of actor: only an operator may override the reclose
#: threshold; the system's (and the protective watch's) requests are automatic ones.
_REQUESTER: Mapping[ActorKind, Requester] = {
    "operator": "operator",
    "resident": "resident",
    "system": "auto",
    "safety": "auto",
}


#: The action a money movement is, for the permission check (its journal entry kind).
_MONEY_ACTIONS: Mapping[EntryKind, Action] = {
    EntryKind.TOP_UP: "top_up",
    EntryKind.CHARGE: "charge",
    EntryKind.FEE: "fee",
    EntryKind.PAYMENT: "payment",
    EntryKind.ADJUSTMENT: "adjustment",
    EntryKind.REFUND: "refund",
    EntryKind.SETTLEMENT: "settlement",
}


class CommunityError(Exception):
    """A request that cannot be carried out; `key` is its translation key."""

    def __init__(self, key: str, message: str, **placeholders: str) -> None:
        """Keep the translation key and placeholders next to the English message."""
        super().__init__(message)
        self.key = key
        self.placeholders = placeholders


class ReadingLike(Protocol):
    """What a device profile's reading offers (engine.protocol.Reading)."""

    @property
    def meter_id(self) -> str: ...
    @property
    def seq(self) -> int | None: ...
    @property
    def ts(self) -> int: ...
    @property
    def energy_kwh(self) -> Decimal: ...
    @property
    def power_w(self) -> float | None: ...
    @property
    def voltage_v(self) -> float | None: ...
    @property
    def current_a(self) -> float | None: ...
    @property
    def neutral_current_a(self) -> float | None: ...
    @property
    def relay(self) -> str | None: ...
    @property
    def events(self) -> tuple[str, ...]: ...


#: The kinds of Event meant for people and automations (bus events, logbook).
type PeopleEventKind = Literal[
    "low_balance",
    "supply_cut",
    "supply_restored",
    "supply_cut_deferred",
    "top_up",
    "alarm",
    "alarm_cleared",
    "alarm_acknowledged",
    "inactivity",
    "command_failed",
]
PEOPLE_EVENTS: frozenset[str] = frozenset(get_args(PeopleEventKind.__value__))

#: Every kind of Event: the adapter's `match` over it is exhaustive (mypy checks it).
type EventKind = (
    PeopleEventKind
    | Literal[
        # a relay command carried out (after all): clears what command_failed raised
        "command_confirmed",
        # for the operator (repairs)
        "register_reset",
        "unassigned_meter",
        "unknown_meter",
        # for the meter and the household (commands, publishes)
        "relay",  # the wanted relay state changed
        "reconcile",  # the meter reports the other state
        "display",  # tell the meter's display
        "account",  # publish the household's account topic
        # what entities and diagnostics show
        "announce",
        "assigned",
        "availability",
        "cycle_closed",
        "rejected",
    ]
)


@dataclass(frozen=True, slots=True)
class Event:
    """Something the integration turns into a bus event, a command, a repair or a publish."""

    kind: EventKind
    meter_id: str | None = None
    account_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class MeterState:
    """Live state of one meter, as entities show it."""

    meter_id: str
    account_id: str | None = None
    model: str | None = None
    firmware: str | None = None
    rated_current_a: float = DEFAULT_RATED_CURRENT_A
    announced: bool = False
    online: bool | None = None
    seq: int | None = None
    ts: int | None = None
    energy_kwh: Decimal | None = None
    power_w: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    neutral_current_a: float | None = None
    reported_relay: Relay | None = None
    desired_relay: Relay = "on"
    #: The resident's own low-balance threshold (None: the first warning level).
    low_threshold: Decimal | None = None
    relay_reason: str = "in_credit"
    #: Who decided the wanted relay state (the system until anybody does).
    relay_actor: Actor = Actor.SYSTEM
    deferred: str | None = None
    billing: BillingState = field(default_factory=BillingState)
    cycle_cost: Decimal = _ZERO
    rejected: dict[str, int] = field(default_factory=dict)
    #: The household's last request from its own Home Assistant and the answer, as the
    #: `account` topic's `request` member: {"id", "ok"[, "reason"]}.
    request_answer: dict[str, Any] | None = None
    #: Request ids answered lately (id -> answer) and when requests were last acted on.
    request_ids: dict[str, dict[str, Any]] = field(default_factory=dict)
    request_times: list[float] = field(default_factory=list)

    def cursor(self) -> Cursor | None:
        """Return what the ledger keeps for this meter."""
        if self.ts is None or self.energy_kwh is None:
            return None
        return Cursor(self.meter_id, self.seq, self.ts, self.energy_kwh)


@dataclass(slots=True)
class DayUse:
    """A household's use on one local day: kWh and the money billed for them."""

    kwh: Decimal = _ZERO
    cost: Decimal = _ZERO


@dataclass(slots=True)
class HouseholdState:
    """Live balances of one household, by sub-account."""

    account_id: str
    label: str
    opened_at: int
    supply_protected: bool = False
    #: The safety watch's settings of this household (an operator's): care opted in, marked
    #: vacant, and rule overrides (SafetyRules option names, the community's for the rest).
    care: bool = False
    vacant: bool = False
    safety_rules: dict[str, Any] = field(default_factory=dict)
    balances: dict[SubAccount, Decimal] = field(
        default_factory=lambda: dict.fromkeys(SubAccount, _ZERO)
    )
    seen_entry: dict[SubAccount, int] = field(default_factory=lambda: dict.fromkeys(SubAccount, 0))
    pending: Decimal = _ZERO  # charges taken in memory, not yet committed
    #: kWh and money billed per local day (the tariff's zone), this month's days and the
    #: last week's; read at start from the ledger's sums per day (`Community.load`).
    days: dict[date, DayUse] = field(default_factory=dict)
    #: When the first of the charges in `days` was billed (how much use is known).
    known_since: int | None = None

    @property
    def electricity(self) -> Decimal:
        """Return the live electricity balance: committed entries plus pending charges."""
        return self.balances[SubAccount.ELECTRICITY] + self.pending


@dataclass(slots=True)
class PendingCharge:
    """A meter's charges since the last commit, journaled as one entry."""

    account_id: str
    amount: Decimal
    first_seq: int
    last_seq: int
    ts: int
    energy_kwh: Decimal  # the register of the last reading covered
    kwh: Decimal = _ZERO  # the energy the charge bills
    day: date | None = None  # the local day of its readings (a charge never spans midnight)

    def posting(self, meter_id: str) -> Posting:
        """Return the journal entry; its key names the last reading it covers.

        By its time and register, not its `seq`: a meter that restarted its counter, or one
        without `seq`, must never produce the key of a charge already written (the same key
        with another amount would refuse the whole batch; with the same amount, lose it).
        """
        return Posting(
            key=f"charge:{meter_id}:{self.ts}:{self.energy_kwh}",
            account_id=self.account_id,
            sub=SubAccount.ELECTRICITY,
            kind=EntryKind.CHARGE,
            amount=-self.amount,
            ts=self.ts,
            meta={
                "meter_id": meter_id,
                "first_seq": self.first_seq,
                "last_seq": self.last_seq,
                "kwh": str(self.kwh),
            },
        )


@dataclass(slots=True)
class Batch:
    """Charges, cursors and usage taken from memory, to be committed in one transaction.

    A meter's readings between two commits make one charge entry (not a write per reading):
    its key `charge:<meter>:<last seq>` is written with the meter's cursor, so a reading is
    either in a committed charge and behind the cursor, or in neither; after a crash the
    next reading's delta from the cursor bills the energy of the lost window.
    """

    charges: dict[str, PendingCharge] = field(default_factory=dict)
    cursors: dict[str, Cursor] = field(default_factory=dict)
    usage: dict[tuple[str, str, int, str], tuple[Decimal, Decimal]] = field(default_factory=dict)
    #: The same usage per (account, local month of its charge, tier, period): the report's.
    months: dict[tuple[str, str, int, str], tuple[Decimal, Decimal]] = field(default_factory=dict)
    closing: set[tuple[str, str]] = field(default_factory=set)
    pending: dict[str, Decimal] = field(default_factory=dict)
    #: Supply decisions, written with the charges that led to them.
    supply: list[SupplyChange] = field(default_factory=list)

    def __bool__(self) -> bool:
        """Return whether there is anything to write."""
        return bool(self.charges or self.cursors or self.usage or self.closing or self.supply)


@dataclass(frozen=True, slots=True)
class LedgerResult:
    """What a ledger call wrote: per (account, sub) the newest entry id and its balance."""

    balances: Mapping[tuple[str, SubAccount], tuple[int, Decimal]] = field(default_factory=dict)
    results: Sequence[PostResult] = ()
    events: Sequence[Event] = ()
    batch: Batch | None = None
    unsettled: frozenset[tuple[str, str]] = frozenset()


#: What a move-out does with the electricity credit left (`Community.settle_move_out`).
MOVE_OUT_CREDIT = ("refund", "carry")


@dataclass(frozen=True, slots=True)
class MoveOut:
    """What a move-out settlement did with a household's electricity credit."""

    account_id: str
    credit: str  # refund or carry
    amount: Decimal  # the credit refunded or carried (0: there was none)
    next_account: str | None  # where a carried credit went
    move_key: str  # the key its entries are posted under (see settle_move_out)
    closed: tuple[str, ...]  # the cycles it closed (their statements now final)
    result: LedgerResult  # what was written (empty when settled before)
    duplicate: bool = False  # settled by an earlier call; nothing written now


def usage_period(period: str, price: Decimal) -> str:
    """Return the usage key of a (period, price): prices can change within a cycle."""
    return f"{period}@{price}"


def split_usage_period(key: str) -> tuple[str, Decimal]:
    """Invert usage_period."""
    period, _, price = key.rpartition("@")
    return period, Decimal(price)


class Community:
    """The live community: meters, households, the tariff, the policy and the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        tariff: Tariff,
        policy: PolicyConfig,
        *,
        clock: Callable[[], float] = time.time,
        safety_rules: SafetyRules | None = None,
        protective_cut: bool = True,
        birth_announces: bool = False,
        issues: Issues | None = None,
        enforce_permissions: bool = False,
    ) -> None:
        """Bind the parts; call `load()` (blocking) before use.

        A meter becomes known by its announce, or by an operator assigning it. Device families
        with no announce message (Tasmota, Shelly) take `birth_announces`: their first
        "online" availability message counts as the announce. Every reading passes the one
        `MeterGate` (duplicates, old or future clocks, bad registers), which counts into
        `issues` (share the profile's to have one counter of everything refused).
        `enforce_permissions` checks who may do what (see the module docstring).
        `safety_rules` are the community's thresholds of the safety and care watch
        (engine/safety.py; None: its defaults); `protective_cut` False makes a wanted
        protective cut an alarm only.
        """
        self.ledger = ledger
        self.tariff = tariff
        self.policy = policy
        self.clock = clock
        self.protective_cut = protective_cut
        #: The safety and care watch: alarms as episodes (engine/safety.py).
        self.safety = SafetyWatch(safety_rules, timezone=policy.zone)
        #: Areas of master meters: area id -> (master meter, member meters); a master meter
        #: belongs to no household and is not billed.
        self.areas: dict[str, tuple[str, frozenset[str]]] = {}
        self.meters: dict[str, MeterState] = {}
        #: Messages from ids that are not meters of this community, counted per id.
        self.unknown_meters: dict[str, int] = {}
        self.meter_limit = METER_LIMIT
        self.birth_announces = birth_announces
        self.households: dict[str, HouseholdState] = {}
        self.top_ups_today = _ZERO
        self._top_up_day: date | None = None
        #: The local day last looked up: (its start, the next day's start, the day).
        self._day_span: tuple[int, int, date] = (0, 0, date.min)
        self._batch = Batch()
        self.gate = MeterGate(clock=clock, issues=issues or Issues())
        self.warnings = WarningTracker(policy)
        self.enforce_permissions = enforce_permissions
        #: Which users are linked to which household (loaded from the ledger).
        self.links = UserLinks()

    # ------------------------------------------------------------------ start-up (blocking)

    def load(self) -> None:
        """Read households, meters, cursors, balances and this cycle's usage from the ledger."""
        for household in self.ledger.households():
            state = HouseholdState(
                household.account_id,
                household.label,
                household.opened_at,
                household.supply_protected,
            )
            for sub, amount in self.ledger.balances(household.account_id).items():
                state.balances[sub] = amount
            self.warnings.update(household.account_id, state.electricity)
            self.households[household.account_id] = state
        cursors = self.ledger.cursors()
        self.gate.seed_cursors(cursors.values())
        supply = self.ledger.supply_states()
        # Meters assigned once, and meters someone decided about (an operator's cut of an
        # unassigned meter too): both are known meters after a restart.
        known: dict[str, str | None] = dict.fromkeys(supply) | self.ledger.meters()
        for meter_id, account_id in known.items():
            meter = self.meters[meter_id] = MeterState(meter_id, account_id)
            cursor = cursors.get(meter_id)
            if cursor is not None:
                meter.seq, meter.ts, meter.energy_kwh = cursor.seq, cursor.ts, cursor.energy_kwh
            if account_id is not None and account_id in self.households:
                self._load_cycle(meter, self.households[account_id])
            if (wanted := supply.get(meter_id)) is not None:
                meter.desired_relay = "off" if wanted.state == "off" else "on"
                meter.relay_reason = wanted.reason
                meter.relay_actor = Actor.parse(wanted.actor)  # an earlier version's text too
        self._top_up_day = self._today()
        self.top_ups_today = self.ledger.sum_kind_since(EntryKind.TOP_UP, self._day_start_ts())
        self.links = UserLinks(self.ledger.user_links())
        self._load_use()
        self._load_safety()

    def _load_safety(self) -> None:
        """Restore the watch's state, the households' safety settings and the areas (blocking).

        A kept state that cannot be used is logged and the watch starts afresh (it learns
        again); a setting that no longer fits the community's rules is logged and left out.
        """
        kept = self.ledger.safety_state()
        if kept is not None:
            try:
                self.safety.import_state(json.loads(kept))
            except (SafetyError, ValueError) as err:
                _LOGGER.warning(
                    "The safety watch starts afresh: its kept state is unusable: %s", err
                )
        for account_id, body in self.ledger.safety_settings("household").items():
            household = self.households.get(account_id)
            if household is None:
                continue
            household.care = bool(body.get("care", False))
            household.vacant = bool(body.get("vacant", False))
            rules = body.get("rules") or {}
            household.safety_rules = dict(rules) if isinstance(rules, Mapping) else {}
        for household in self.households.values():
            self.safety.set_household(household.account_id, self._flags(household))
        for area_id, body in self.ledger.safety_settings("area").items():
            try:
                self._set_area(area_id, str(body["master"]), body["members"])
            except (SafetyError, KeyError, TypeError) as err:
                _LOGGER.warning("Area %s of the safety watch is left out: %s", area_id, err)
        for area_id in {a for a in self.safety.export_state()["areas"] if a not in self.areas}:
            self.safety.remove_area(area_id)

    def _flags(self, household: HouseholdState) -> HouseholdFlags:
        """Return the watch's flags of a household (its rules over the community's)."""
        rules: SafetyRules | None = None
        if household.safety_rules:
            try:
                rules = SafetyRules.from_options(household.safety_rules, self.safety.rules)
            except SafetyError as err:
                _LOGGER.warning(
                    "Household %s takes the community's safety rules: its own %s",
                    household.account_id,
                    err,
                )
        return HouseholdFlags(
            care=household.care,
            vacant=household.vacant,
            supply_protected=household.supply_protected,
            rules=rules,
        )

    def _set_area(self, area_id: str, master: str, members: Sequence[str]) -> None:
        """Declare an area in the watch and here; SafetyError when it cannot be one."""
        if isinstance(members, str) or not all(isinstance(m, str) for m in members):
            raise SafetyError(f"the members of area {area_id} must be meter ids")
        self.safety.set_area(area_id, master, members)
        self.areas[area_id] = (master, frozenset(members))

    def _load_use(self) -> None:
        """Read each household's days of use from the ledger's sums per local day (blocking).

        The ledger sums every charge into its household's local day (the tariff's zone) in
        the transaction that journals it, so this reads at most about 40 rows a household
        (this month's days and the last week's), however long the journal. The first start
        after the upgrade that added the sums, or after the tariff moved to another zone,
        sums those days' charges once (`Ledger.set_day_zone`), as every start did before.
        """
        started = time.monotonic()
        first = self._use_window_first()
        if self.ledger.set_day_zone(self.tariff.tz, first) and time.monotonic() - started >= 1:
            _LOGGER.info(
                "Summed the journal's charges per day in %.0f s, once: later starts read "
                "only the sums",
                time.monotonic() - started,
            )
        for use in self.ledger.use_days(first):
            household = self.households.get(use.account_id)
            if household is None:
                continue
            household.days[use.day] = DayUse(use.kwh, use.cost)
            if household.known_since is None or use.first_ts < household.known_since:
                household.known_since = use.first_ts

    def _use_window_first(self) -> date:
        """Return the first day whose use is kept: this month's and the last week's."""
        today = self._today()
        return min(today.replace(day=1), today - timedelta(days=DAYS_LEFT_WINDOW_DAYS))

    def _record_use(
        self, household: HouseholdState, day: date, kwh: Decimal, cost: Decimal, ts: int
    ) -> None:
        use = household.days.get(day)
        if use is None:
            use = household.days[day] = DayUse()
        use.kwh += kwh
        use.cost += cost
        if household.known_since is None or ts < household.known_since:
            household.known_since = ts

    def _load_cycle(self, meter: MeterState, household: HouseholdState) -> None:
        """Enter the meter's current cycle with the kWh and money already taken in it."""
        meter.billing = BillingState(opened=self._opened_date(household))
        at = datetime.fromtimestamp(meter.ts if meter.ts is not None else self.clock(), UTC)
        bill_interval(self.tariff, meter.billing, at - timedelta(seconds=1), at, _ZERO)
        assert meter.billing.cycle is not None
        rows = self.ledger.usage(household.account_id, meter.billing.cycle)
        meter.billing.cycle_kwh = sum((r.kwh for r in rows), _ZERO)
        meter.cycle_cost = sum((r.amount for r in rows), _ZERO)

    def _opened_date(self, household: HouseholdState) -> date:
        return datetime.fromtimestamp(household.opened_at, self.tariff.tz).date()

    # ------------------------------------------------------------------ messages (event loop)

    def _meter(self, meter_id: str) -> MeterState:
        meter = self.meters.get(meter_id)
        if meter is None:
            meter = self.meters[meter_id] = MeterState(meter_id)
            self.unknown_meters.pop(meter_id, None)
        return meter

    def _unknown(self, meter_id: str) -> list[Event]:
        """Count a message from an id that is not a meter here; it creates nothing."""
        count = self.unknown_meters.get(meter_id, 0)
        if count == 0 and len(self.unknown_meters) >= self.meter_limit:
            return []  # the count itself is bounded too
        self.unknown_meters[meter_id] = count + 1
        if count == 0:
            _LOGGER.warning(
                "Messages from %s, which is not a meter of this community (it never announced "
                "itself and is not assigned), are ignored",
                meter_id,
            )
        return [Event("unknown_meter", meter_id)]

    def _reject(self, meter: MeterState, kind: str) -> list[Event]:
        """Count a reading the gate refused (the gate's `Issues` logged it once)."""
        meter.rejected[kind] = meter.rejected.get(kind, 0) + 1
        return [Event("rejected", meter.meter_id, meter.account_id, {"reason": kind})]

    def handle_announce(
        self,
        meter_id: str,
        *,
        model: str | None,
        firmware: str | None,
        rated_current_a: float | None,
    ) -> list[Event]:
        """A meter said who it is; a new one is discovered (unassigned until the operator acts)."""
        if meter_id not in self.meters and len(self.meters) >= self.meter_limit:
            return self._unknown(meter_id)
        meter = self._meter(meter_id)
        new = not meter.announced
        meter.announced = True
        meter.model, meter.firmware = model, firmware
        if rated_current_a:
            meter.rated_current_a = rated_current_a
        events = [Event("announce", meter_id, meter.account_id, {"new": new})]
        if meter.account_id is None and not self.is_master(meter_id):
            events.append(Event("unassigned_meter", meter_id))
        events += self._reconcile(meter)
        return events

    def handle_availability(self, meter_id: str, online: bool) -> list[Event]:
        """A meter came online or went offline (its last will)."""
        events: list[Event] = []
        if meter_id not in self.meters:
            if not (online and self.birth_announces):
                return self._unknown(meter_id)
            events = self.handle_announce(meter_id, model=None, firmware=None, rated_current_a=None)
            if meter_id not in self.meters:
                return events  # over the limit
        meter = self.meters[meter_id]
        meter.online = online
        return [*events, Event("availability", meter_id, meter.account_id, {"online": online})]

    def handle_reading(self, reading: ReadingLike) -> list[Event]:
        """Bill a reading into the pending batch and decide what follows. Never raises."""
        try:
            return self._handle_reading(reading)
        except Exception:
            _LOGGER.exception("Reading from %s could not be handled", reading.meter_id)
            return []

    def _handle_reading(self, reading: ReadingLike) -> list[Event]:
        meter = self.meters.get(reading.meter_id)
        if meter is None:
            return self._unknown(reading.meter_id)
        verdict = self.gate.check(reading)
        if isinstance(verdict, Rejected):
            return self._reject(meter, verdict.kind)
        if verdict.seq_restart:  # the meter restarted its counter: accepted, counted
            meter.rejected["seq_restart"] = meter.rejected.get("seq_restart", 0) + 1

        events: list[Event] = []
        meter.online = True
        meter.power_w, meter.voltage_v = reading.power_w, reading.voltage_v
        meter.current_a, meter.neutral_current_a = reading.current_a, reading.neutral_current_a
        if reading.relay in ("on", "off"):
            meter.reported_relay = reading.relay  # type: ignore[assignment]

        previous_ts, previous_energy = meter.ts, meter.energy_kwh
        meter.seq, meter.ts, meter.energy_kwh = reading.seq, reading.ts, reading.energy_kwh
        cursor = meter.cursor()
        assert cursor is not None
        self._batch.cursors[meter.meter_id] = cursor

        household = self.households.get(meter.account_id) if meter.account_id else None
        if previous_energy is not None and reading.energy_kwh < previous_energy:
            events.append(
                Event(
                    "register_reset",
                    meter.meter_id,
                    meter.account_id,
                    {"before": str(previous_energy), "after": str(reading.energy_kwh)},
                )
            )
        elif (
            household is not None
            and previous_ts is not None
            and previous_energy is not None
            and reading.ts >= previous_ts  # the same second: its energy is billed at that instant
        ):
            events += self._charge(meter, household, reading, previous_ts, previous_energy)
        elif household is None and meter.account_id is None and not self.is_master(meter.meter_id):
            events.append(Event("unassigned_meter", meter.meter_id))

        events += self._watch(meter, reading)
        if household is not None:
            events += self._decide(meter, household)
        events += self._reconcile(meter)
        return events

    def _charge(
        self,
        meter: MeterState,
        household: HouseholdState,
        reading: ReadingLike,
        previous_ts: int,
        previous_energy: Decimal,
    ) -> list[Event]:
        old_cycle = meter.billing.cycle
        pieces: list[Piece] = bill_interval(
            self.tariff,
            meter.billing,
            datetime.fromtimestamp(previous_ts, UTC),
            datetime.fromtimestamp(reading.ts, UTC),
            reading.energy_kwh - previous_energy,
        )
        batch = self._batch
        if old_cycle is not None and meter.billing.cycle != old_cycle:
            batch.closing.add((household.account_id, old_cycle))
            meter.cycle_cost = _ZERO
        amount = _ZERO
        energy = _ZERO
        local = self._day_of(reading.ts)  # the day (and month) of the charge entry
        month = f"{local.year:04d}-{local.month:02d}"
        for piece in pieces:
            period_key = usage_period(piece.period, piece.price)
            key = (household.account_id, piece.cycle, piece.tier, period_key)
            kwh, money = batch.usage.get(key, (_ZERO, _ZERO))
            batch.usage[key] = (kwh + piece.kwh, money + piece.amount)
            key = (household.account_id, month, piece.tier, period_key)
            kwh, money = batch.months.get(key, (_ZERO, _ZERO))
            batch.months[key] = (kwh + piece.kwh, money + piece.amount)
            amount += piece.amount
            energy += piece.kwh
            if piece.cycle == meter.billing.cycle:
                meter.cycle_cost += piece.amount
        if amount:
            seq = reading.seq if reading.seq is not None else reading.ts
            day = local
            self._record_use(household, day, energy, amount, reading.ts)
            pending = batch.charges.get(meter.meter_id)
            if pending is None or pending.account_id != household.account_id or pending.day != day:
                if pending is not None:  # reassigned, or past midnight, within one batch
                    del batch.charges[meter.meter_id]  # kept, and written first
                    batch.charges[f"{meter.meter_id}@{pending.last_seq}"] = pending
                batch.charges[meter.meter_id] = PendingCharge(
                    household.account_id,
                    amount,
                    seq,
                    seq,
                    reading.ts,
                    reading.energy_kwh,
                    kwh=energy,
                    day=day,
                )
            else:
                pending.amount += amount
                pending.kwh += energy
                pending.last_seq, pending.ts = seq, reading.ts
                pending.energy_kwh = reading.energy_kwh
            household.pending += -amount
            batch.pending[household.account_id] = (
                batch.pending.get(household.account_id, _ZERO) - amount
            )
            return [Event("account", meter.meter_id, household.account_id)]
        return []

    def _watch(self, meter: MeterState, reading: ReadingLike) -> list[Event]:
        """Give a reading that passed the gate to the safety watch (engine/safety.py).

        The watch asks for a protective cut once per episode; an arc fault reported while
        the supply is wanted on is cut whatever the episode (one that began while the supply
        was off, then restored, is arcing on a live supply), as every earlier version did.
        """
        events = self._safety(
            self.safety.feed(
                WatchReading(
                    meter.meter_id,
                    meter.account_id,
                    reading.ts,
                    reading.energy_kwh,
                    reading.power_w,
                    reading.current_a,
                    reading.neutral_current_a,
                    meter.reported_relay,
                    meter.desired_relay,
                    own_cut=meter.desired_relay == "off" and meter.reported_relay == "off",
                    events=reading.events,
                    rated_current_a=meter.rated_current_a,
                    received=int(self.clock()),
                )
            )
        )
        if (
            "arc_fault" in reading.events
            and meter.desired_relay == "on"
            and not self.safety.household(meter.account_id).supply_protected
        ):
            wanted = ProtectiveCutWanted(meter.meter_id, meter.account_id, "arc_fault")
            events += self._protective_cut(wanted)
        return events

    def safety_tick(self, now: int) -> list[Event]:
        """Let time pass for the safety watch: offline meters, care alarms, area balances."""
        try:
            return self._safety(self.safety.tick(now))
        except Exception:
            _LOGGER.exception("The safety watch's tick failed")
            return []

    def _label(self, account_id: str | None) -> str | None:
        household = self.households.get(account_id) if account_id else None
        return household.label if household is not None else None

    def _safety(self, found: Sequence[SafetyEvent]) -> list[Event]:
        """Turn the watch's events into the community's (and carry out protective cuts).

        An episode's start is an `alarm` (an `inactivity` for the care watch), its end an
        `alarm_cleared`, an acknowledgement an `alarm_acknowledged`. A wanted protective cut
        is made (the actor is the protective watch) unless protective cuts are off or the
        supply is already off; a supply-protected household's is reported
        (`supply_cut_deferred`) instead.
        """
        events: list[Event] = []
        for item in found:
            label = self._label(item.account_id)
            if isinstance(item, AlarmStarted):
                if item.kind == "inactivity":
                    data = {**item.data, "household": label, "started": item.started}
                    events.append(Event("inactivity", item.meter_id, item.account_id, data))
                else:
                    data = {
                        **item.data,
                        "type": item.kind,
                        "household": label,
                        "started": item.started,
                    }
                    events.append(Event("alarm", item.meter_id, item.account_id, data))
            elif isinstance(item, AlarmCleared):
                data = {
                    "type": item.kind,
                    "household": label,
                    "started": item.started,
                    "minutes": round(item.duration / 60),
                }
                events.append(Event("alarm_cleared", item.meter_id, item.account_id, data))
            elif isinstance(item, AlarmAcknowledged):
                data = {
                    "type": item.kind,
                    "household": label,
                    "started": item.started,
                    "at": item.at,
                    **Actor.parse(item.actor).event_data(),
                }
                events.append(Event("alarm_acknowledged", item.meter_id, item.account_id, data))
            elif isinstance(item, ProtectiveCutWanted):
                events += self._protective_cut(item)
        return events

    def _protective_cut(self, wanted: ProtectiveCutWanted) -> list[Event]:
        meter = self.meters.get(wanted.meter_id)
        if not self.protective_cut or meter is None or meter.desired_relay == "off":
            return []
        household = self.households.get(meter.account_id) if meter.account_id else None
        if wanted.supply_protected or (household is not None and household.supply_protected):
            return [
                Event(
                    "supply_cut_deferred",
                    meter.meter_id,
                    meter.account_id,
                    {"reason": "supply_protected", "cause": wanted.reason},
                )
            ]
        return self._set_relay(meter, "off", wanted.reason, Actor.SAFETY)

    def _decide(self, meter: MeterState, household: HouseholdState) -> list[Event]:
        """Warnings and the credit cut, from the electricity balance alone."""
        events: list[Event] = []
        balance = household.electricity
        warning = self.warnings.update(household.account_id, balance)
        if warning is not None:
            events.append(
                Event(
                    "low_balance",
                    meter.meter_id,
                    household.account_id,
                    {
                        "balance": str(balance),
                        "level": int(warning.level),
                        "household": household.label,
                    },
                )
            )
            events.append(
                Event(
                    "display",
                    meter.meter_id,
                    household.account_id,
                    {"balance": str(balance), "low": True},
                )
            )
        if meter.desired_relay == "on":
            decision = decide_supply(
                balance,
                datetime.fromtimestamp(self.clock(), UTC),
                supply_protected=household.supply_protected,
                supply_on=True,
                config=self.policy,
            )
            if decision.action == "cut":
                meter.deferred = None
                events += self._set_relay(meter, "off", decision.reason, Actor.SYSTEM)
            elif decision.action in ("defer", "protected_debt"):
                if meter.deferred != decision.reason:
                    meter.deferred = decision.reason
                    events.append(
                        Event(
                            "supply_cut_deferred",
                            meter.meter_id,
                            household.account_id,
                            {"reason": decision.reason, "balance": str(balance)},
                        )
                    )
            else:
                meter.deferred = None
        return events

    def _set_relay(self, meter: MeterState, state: Relay, reason: str, actor: Actor) -> list[Event]:
        meter.desired_relay, meter.relay_reason, meter.relay_actor = state, reason, actor
        # The decision is a ledger fact, committed with the charges that led to it (the next
        # commit; a person's request is committed at once by the caller: `take_batch`).
        self._batch.supply.append(
            SupplyChange(meter.meter_id, state, reason, str(actor), int(self.clock()))
        )
        household = self.households.get(meter.account_id) if meter.account_id else None
        data = {
            "state": state,
            "reason": reason,
            **actor.event_data(),
            "balance": str(household.electricity) if household else None,
            "household": household.label if household else None,
        }
        kind: EventKind = "supply_cut" if state == "off" else "supply_restored"
        return [
            Event("relay", meter.meter_id, meter.account_id, data),
            Event(kind, meter.meter_id, meter.account_id, data),
            Event("account", meter.meter_id, meter.account_id),
        ]

    def _reconcile(self, meter: MeterState) -> list[Event]:
        """Ask for the command again when the meter reports the other state.

        Not for an unassigned meter that nobody has decided about (its actor is still the
        system): no household pays for it (an empty flat, works in progress), so it stays as
        the meter reports until it is assigned or someone switches it. A safety cut is a
        decision: it is kept.
        """
        if meter.account_id is None and meter.relay_actor.kind == "system":
            return []
        if meter.reported_relay is not None and meter.reported_relay != meter.desired_relay:
            return [
                Event(
                    "reconcile",
                    meter.meter_id,
                    meter.account_id,
                    {"state": meter.desired_relay, "reason": meter.relay_reason},
                )
            ]
        return []

    def tick(self) -> list[Event]:
        """Re-evaluate deferred cuts (friendly hours end) and reset daily counters."""
        events: list[Event] = []
        self._roll_day()
        for meter in self.meters.values():
            household = self.households.get(meter.account_id) if meter.account_id else None
            if household is not None and meter.desired_relay == "on":
                events += self._decide(meter, household)
        return events

    def _roll_day(self) -> None:
        """Start today's top-up total at local midnight; forget days of use no longer shown."""
        today = self._today()
        if today != self._top_up_day:
            self._top_up_day = today
            self.top_ups_today = _ZERO
            first = self._use_window_first()
            for household in self.households.values():
                for day in [day for day in household.days if day < first]:
                    del household.days[day]

    def _today(self) -> date:
        return self._day_of(int(self.clock()))

    def _day_of(self, ts: int) -> date:
        """Return the local day (the tariff's zone) of a moment; the last one is remembered."""
        start, end, day = self._day_span
        if start <= ts < end:
            return day
        day = datetime.fromtimestamp(ts, self.tariff.tz).date()
        self._day_span = (self._midnight(day), self._midnight(day + timedelta(days=1)), day)
        return day

    def _midnight(self, day: date) -> int:
        """Return when a local day starts."""
        return int(datetime.combine(day, day_time.min, self.tariff.tz).timestamp())

    def month_start_ts(self) -> int:
        """Return the start of this local calendar month (fees are billed monthly)."""
        return self._midnight(self._today().replace(day=1))

    def _day_start_ts(self) -> int:
        return self._midnight(self._today())

    # ------------------------------------------------------------------ supply (event loop)

    def request_relay(
        self, meter_id: str, state: Relay, *, actor: Actor, operator_override: bool = False
    ) -> list[Event]:
        """A person asks for the supply on or off; on is refused while credit is exhausted.

        With `enforce_permissions`, who may ask comes first (engine/permissions.py): only an
        operator cuts, a resident restores only their household after a credit cut (asking
        for a supply that is on changes nothing). Then the actor's kind decides: below the
        reclose threshold only an operator's request with `operator_override` restores (a
        resident's override is ignored); the system's and the protective watch's requests
        are automatic ones (allowed only with automatic restore).
        """
        meter = self._known_meter(meter_id)
        if state == "off":
            self._authorize(actor, "cut", meter=meter)
            return self._set_relay(meter, "off", "manual", actor)
        self._authorize(actor, "restore", meter=meter)
        if self.enforce_permissions and actor.kind == "resident" and meter.desired_relay == "on":
            return []  # nothing to restore
        household = self.households.get(meter.account_id) if meter.account_id else None
        balance = household.electricity if household else _ZERO
        decision = decide_restore(
            balance,
            requested_by=_REQUESTER[actor.kind],
            operator_override=operator_override,
            config=self.policy,
        )
        if not decision.allowed:
            raise CommunityError(
                "credit_exhausted_restore_refused",
                f"Supply of meter {meter_id} stays off: the balance {balance} does not clear "
                f"the reclose threshold {self.policy.reclose_threshold}",
                meter_id=meter_id,
                balance=str(balance),
            )
        meter.deferred = None
        reason = (
            "operator_override"
            if operator_override and balance <= self.policy.reclose_threshold
            else "restored"
        )
        return self._set_relay(meter, "on", reason, actor)

    def household_request(self, meter_id: str, request_id: str, now: float) -> list[Event]:
        """A restore requested from the household's own Home Assistant (topic `request`).

        The broker's ACL lets only that household publish there, so the request speaks for
        the household: the same rules as its residents' restore button (only after a credit
        cut, and only once the balance clears the reclose threshold). Each request id is
        acted on at most once (a repeat gets the same answer), at most REQUESTS_PER_WINDOW
        per REQUEST_WINDOW_S per meter. The answer goes out on the account topic.
        """
        meter = self.meters.get(meter_id)
        if meter is None or meter.account_id is None:
            return []  # nobody pays for this meter: there is no account topic to answer on
        seen = meter.request_ids.get(request_id)
        if seen is not None:
            meter.request_answer = seen
            return [Event("account", meter_id, meter.account_id)]
        meter.request_times = [t for t in meter.request_times if now - t < REQUEST_WINDOW_S]
        events: list[Event] = []
        reason: str | None = None
        if len(meter.request_times) >= REQUESTS_PER_WINDOW:
            reason = "rate_limited"
        else:
            meter.request_times.append(now)
            household = self.households.get(meter.account_id)
            balance = household.electricity if household else _ZERO
            if meter.desired_relay == "on":
                pass  # nothing to restore: granted as it is
            elif meter.relay_reason not in CREDIT_CUTS:
                reason = "restore_needs_operator"
            elif not decide_restore(
                balance, requested_by="resident", operator_override=False, config=self.policy
            ).allowed:
                reason = "credit_exhausted_restore_refused"
            else:
                label = household.label if household else meter.account_id
                actor = Actor("resident", None, label)
                meter.deferred = None
                events += self._set_relay(meter, "on", "restored", actor)
        answer: dict[str, Any] = {"id": request_id, "ok": reason is None}
        if reason is not None:
            answer["reason"] = reason
        meter.request_answer = answer
        meter.request_ids[request_id] = answer
        while len(meter.request_ids) > REQUEST_IDS_KEPT:
            del meter.request_ids[next(iter(meter.request_ids))]
        events.append(Event("account", meter_id, meter.account_id))
        return events

    def refuse_request(self, meter_id: str, request_id: str, reason: str) -> list[Event]:
        """Answer a household's request with a refusal without looking at it further."""
        meter = self.meters.get(meter_id)
        if meter is None or meter.account_id is None:
            return []
        meter.request_answer = {"id": request_id, "ok": False, "reason": reason}
        return [Event("account", meter_id, meter.account_id)]

    def restore_candidates(self, account_id: str) -> list[Event]:
        """After a top-up: restore automatically if the policy allows it."""
        household = self.households.get(account_id)
        if household is None:
            return []
        events: list[Event] = []
        for meter in self.meters.values():
            if meter.account_id != account_id or meter.desired_relay == "on":
                continue
            if meter.relay_reason not in CREDIT_CUTS:
                continue
            decision = decide_restore(
                household.electricity,
                requested_by="auto",
                operator_override=False,
                config=self.policy,
            )
            if decision.allowed:
                events += self._set_relay(meter, "on", "auto_restore", Actor.SYSTEM)
        return events

    def can_restore(self, meter_id: str, actor: Actor | None = None) -> bool:
        """Return whether a restore (no override) by `actor` would succeed now.

        Without an actor: whether the household's restore button would succeed for one of
        its residents (with `enforce_permissions`, only after a credit cut).
        """
        meter = self.meters.get(meter_id)
        if meter is None or meter.desired_relay == "on" or meter.account_id is None:
            return False
        household = self.households.get(meter.account_id)
        if household is None:
            return False
        if self.enforce_permissions:
            if actor is None and meter.relay_reason not in CREDIT_CUTS:
                return False
            if actor is not None and self._refusal(actor, "restore", meter=meter) is not None:
                return False
        return decide_restore(
            household.electricity,
            requested_by="resident" if actor is None else _REQUESTER[actor.kind],
            operator_override=False,
            config=self.policy,
        ).allowed

    # ------------------------------------------------------------------ who may do what

    def authorize(
        self,
        actor: Actor,
        action: Action,
        *,
        meter_id: str | None = None,
        account_id: str | None = None,
    ) -> None:
        """Raise `CommunityError` (and log who tried) if `actor` may not do `action`.

        For a meter (`meter_id`) the household is the one it is assigned to and a restore's
        cut reason is the meter's; an unknown meter is `unknown_meter`. Without
        `enforce_permissions` only linking and unlinking people are checked.
        """
        meter = None if meter_id is None else self._known_meter(meter_id)
        self._authorize(actor, action, meter=meter, account_id=account_id)

    def _known_meter(self, meter_id: str) -> MeterState:
        meter = self.meters.get(meter_id)
        if meter is None:
            raise CommunityError("unknown_meter", f"Unknown meter {meter_id}", meter_id=meter_id)
        return meter

    def _authorize(
        self,
        actor: Actor,
        action: Action,
        *,
        meter: MeterState | None = None,
        account_id: str | None = None,
    ) -> None:
        if not self.enforce_permissions and action not in ("link", "unlink"):
            return
        refusal = self._refusal(actor, action, meter=meter, account_id=account_id)
        if refusal is None:
            return
        _LOGGER.warning(
            "Refused a request of %s (%s, user id %s): %s",
            actor.display,
            actor.kind,
            actor.user_id,
            refusal.message,
        )
        raise CommunityError(refusal.key, refusal.message, **refusal.placeholders)

    def _refusal(
        self,
        actor: Actor,
        action: Action,
        *,
        meter: MeterState | None = None,
        account_id: str | None = None,
    ) -> Refusal | None:
        if meter is not None:
            account_id = meter.account_id
        return check(
            actor,
            action,
            self.links,
            account_id=account_id,
            meter_id=None if meter is None else meter.meter_id,
            cut_reason=(
                meter.relay_reason if meter is not None and meter.desired_relay == "off" else None
            ),
        )

    def set_low_threshold(
        self, meter_id: str, value: Decimal | None, *, actor: Actor | None = None
    ) -> None:
        """Set (None: clear) a meter's low-balance threshold; a resident only their own."""
        meter = self._known_meter(meter_id)
        if actor is not None:
            self._authorize(actor, "threshold", meter=meter)
        meter.low_threshold = value

    # ------------------------------------------------------------------ people (blocking)

    def link_user(self, account_id: str, user_id: str, *, actor: Actor) -> bool:
        """Link a user to a household, an operator's decision (blocking); return if it changed.

        Apply it in the loop with `apply_link`.
        """
        return self._record_link(account_id, user_id, linked=True, actor=actor)

    def unlink_user(self, account_id: str, user_id: str, *, actor: Actor) -> bool:
        """Unlink a user from a household (blocking); return whether they were linked."""
        return self._record_link(account_id, user_id, linked=False, actor=actor)

    def _record_link(self, account_id: str, user_id: str, *, linked: bool, actor: Actor) -> bool:
        self._authorize(actor, "link" if linked else "unlink", account_id=account_id)
        if self.ledger.household(account_id) is None:
            raise CommunityError(
                "unknown_household", f"Unknown household {account_id}", household=account_id
            )
        try:
            return self.ledger.record_link(
                UserLink(account_id, user_id, linked, str(actor), int(self.clock()))
            )
        except LedgerError as err:
            raise CommunityError("ledger_error", str(err), error=str(err)) from err

    def apply_link(self, account_id: str, user_id: str, *, linked: bool) -> None:
        """Take a link or an unlink into the live state (event loop)."""
        if linked:
            self.links.link(account_id, user_id)
        else:
            self.links.unlink(account_id, user_id)

    # ------------------------------------------------------------------ batches

    def take_batch(self) -> Batch:
        """Hand the pending charges to a commit (event loop); new readings go to a new batch."""
        batch, self._batch = self._batch, Batch()
        return batch

    def commit(self, batch: Batch) -> LedgerResult:
        """Write a batch in one transaction, then settle closed cycles (blocking)."""
        usage = [
            UsageDelta(account, cycle, tier, period, kwh, amount)
            for (account, cycle, tier, period), (kwh, amount) in batch.usage.items()
        ]
        postings = [
            charge.posting(meter_id.partition("@")[0]) for meter_id, charge in batch.charges.items()
        ]
        months = [
            MonthUsage(account, month, tier, period, kwh, amount)
            for (account, month, tier, period), (kwh, amount) in batch.months.items()
        ]
        results = self.ledger.commit_batch(
            postings, list(batch.cursors.values()), usage, batch.supply, months
        )
        balances: dict[tuple[str, SubAccount], tuple[int, Decimal]] = {}
        for posting, result in zip(postings, results, strict=True):
            _newest(balances, posting.account_id, posting.sub, result)
        events: list[Event] = []
        unsettled: set[tuple[str, str]] = set()
        for account_id, cycle in sorted(batch.closing):
            try:
                settled, total = self._close_cycle(account_id, cycle)
            except LedgerError:
                _LOGGER.exception(
                    "Cycle %s of %s could not be settled; retried with the next commit",
                    cycle,
                    account_id,
                )
                unsettled.add((account_id, cycle))
                continue
            if settled is not None:
                _newest(balances, account_id, SubAccount.ELECTRICITY, settled)
                events.append(
                    Event("cycle_closed", None, account_id, {"cycle": cycle, "total": str(total)})
                )
        return LedgerResult(balances, results, events, batch, frozenset(unsettled))

    def _close_cycle(self, account_id: str, cycle: str) -> tuple[PostResult | None, Decimal]:
        """Store the cycle's statement and settle its charges to it; LedgerError on failure."""
        rows = self.ledger.usage(account_id, cycle)
        if not rows:
            return None, _ZERO
        lines = []
        for row in rows:
            period, price = split_usage_period(row.period)
            lines.append((row.tier, period, row.kwh, price))
        statement = statement_for(cycle, lines, self.tariff.periods)
        body = json.dumps(statement.to_json(), ensure_ascii=False)
        result = self.ledger.close_cycle(
            account_id, cycle, statement.total, body, int(self.clock())
        )
        return result, statement.total

    def apply_results(self, result: LedgerResult) -> list[Event]:
        """Take what a ledger call wrote into the live state (event loop)."""
        events: list[Event] = list(result.events)
        touched: set[str] = set()
        self._batch.closing |= result.unsettled
        if result.batch is not None:
            for account_id, amount in result.batch.pending.items():
                household = self.households.get(account_id)
                if household is not None:
                    household.pending -= amount
        for (account_id, sub), (entry_id, balance) in result.balances.items():
            household = self.households.get(account_id)
            if household is None or entry_id <= household.seen_entry[sub]:
                continue
            household.seen_entry[sub] = entry_id
            household.balances[sub] = balance
            touched.add(account_id)
        for account_id in sorted(touched):
            events.append(Event("account", None, account_id))
        return events

    def restore_batch(self, batch: Batch) -> None:
        """Put back a batch whose commit failed, so its charges are written with the next one."""
        current = self._batch
        for key, (kwh, amount) in batch.usage.items():
            old = current.usage.get(key, (_ZERO, _ZERO))
            current.usage[key] = (old[0] + kwh, old[1] + amount)
        for key, (kwh, amount) in batch.months.items():
            old = current.months.get(key, (_ZERO, _ZERO))
            current.months[key] = (old[0] + kwh, old[1] + amount)
        for meter_id, charge in batch.charges.items():
            later = current.charges.get(meter_id)
            if later is None:
                current.charges[meter_id] = charge
            elif later.account_id == charge.account_id and later.day == charge.day:
                later.amount += charge.amount
                later.kwh += charge.kwh
                later.first_seq = charge.first_seq
            else:
                current.charges[f"{meter_id}@{charge.last_seq}"] = charge
        for meter_id, cursor in batch.cursors.items():
            current.cursors.setdefault(meter_id, cursor)
        current.closing |= batch.closing
        current.supply[:0] = batch.supply  # older decisions first: the newest wins on reload
        for account_id, amount in batch.pending.items():
            current.pending[account_id] = current.pending.get(account_id, _ZERO) + amount

    # ------------------------------------------------------------------ money (blocking)

    def top_up(
        self,
        account_id: str,
        amount: Decimal,
        transaction_id: str,
        channel: str,
        *,
        actor: Actor,
    ) -> LedgerResult:
        """Credit the electricity wallet once per transaction id (blocking, durable on return)."""
        self._authorize(actor, "top_up", account_id=account_id)
        _check_amount(amount)
        if not transaction_id.strip():
            raise CommunityError("invalid_transaction", "A transaction id is required")
        result = self._post(
            Posting(
                key=f"topup:{transaction_id}",
                account_id=account_id,
                sub=SubAccount.ELECTRICITY,
                kind=EntryKind.TOP_UP,
                amount=amount,
                ts=int(self.clock()),
                meta={"channel": channel, "transaction_id": transaction_id, "actor": str(actor)},
            )
        )
        event = Event(
            "top_up",
            None,
            account_id,
            {
                "amount": str(amount),
                "channel": channel,
                "transaction_id": transaction_id,
                "duplicate": result.duplicate,
                "balance": str(result.balance_after),
            },
        )
        return LedgerResult(
            {(account_id, SubAccount.ELECTRICITY): (result.entry_id, result.balance_after)},
            [result],
            [event],
        )

    def post_money(
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
        """A fee, a fee payment or an adjustment (blocking)."""
        self._authorize(actor, _MONEY_ACTIONS[kind], account_id=account_id)
        if kind in (EntryKind.FEE, EntryKind.PAYMENT):
            _check_amount(amount)
            signed = -amount if kind is EntryKind.FEE else amount
        else:
            if amount == 0 or abs(amount) > MAX_AMOUNT:
                raise CommunityError(
                    "invalid_amount", f"Invalid amount {amount}", amount=str(amount)
                )
            signed = amount
        if not transaction_id.strip():
            raise CommunityError("invalid_transaction", "A transaction id is required")
        result = self._post(
            Posting(
                key=f"{kind.value}:{transaction_id}",
                account_id=account_id,
                sub=sub,
                kind=kind,
                amount=signed,
                ts=int(self.clock()),
                meta={"actor": str(actor), "transaction_id": transaction_id, **(meta or {})},
            )
        )
        return LedgerResult({(account_id, sub): (result.entry_id, result.balance_after)}, [result])

    def _post(self, posting: Posting) -> PostResult:
        if self.ledger.household(posting.account_id) is None:
            raise CommunityError(
                "unknown_household",
                f"Unknown household {posting.account_id}",
                household=posting.account_id,
            )
        try:
            return self.ledger.post(posting)
        except LedgerError as err:
            if "reused" in str(err):
                raise CommunityError(
                    "duplicate_transaction_conflict", str(err), transaction_id=posting.key
                ) from err
            raise CommunityError("ledger_error", str(err), error=str(err)) from err

    def apply_top_up(self, result: LedgerResult) -> list[Event]:
        """Apply a top-up in the loop: balances, today's total, warnings re-armed, auto restore."""
        events = self.apply_results(result)
        self._roll_day()
        for post in result.results:
            if not post.duplicate:
                for event in result.events:
                    if event.kind == "top_up":
                        self.top_ups_today += Decimal(event.data["amount"])
        for account_id, _sub in result.balances:
            household = self.households.get(account_id)
            if household is None:
                continue
            self.warnings.update(account_id, household.electricity, top_up=True)
            events += self.restore_candidates(account_id)
            for meter in self.meters.values():
                if meter.account_id == account_id and meter.desired_relay == "on":
                    meter.deferred = None
                    events += self._decide(meter, household)
        return events

    def assign_meter(
        self,
        meter_id: str,
        account_id: str,
        label: str,
        *,
        supply_protected: bool | None = None,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        """Create the household if new and bind the meter to it (blocking)."""
        if actor is not None:
            self._authorize(actor, "assign", account_id=account_id)
        if self.is_master(meter_id):
            raise CommunityError(
                "meter_is_master",
                f"Meter {meter_id} is the master meter of an area; it belongs to no household",
                meter_id=meter_id,
            )
        owner = [m for m, a in self.ledger.meters().items() if a == account_id and m != meter_id]
        if owner:
            raise CommunityError(
                "household_has_meter",
                f"Household {account_id} already has meter {owner[0]}; unassign it first",
                household=account_id,
                meter_id=owner[0],
            )
        now_cycle = self.cycle_at(int(self.clock()))
        if self.ledger.statement(account_id, now_cycle) is not None:
            # Its cycle was closed (a move-out): usage of it would be refused with every batch.
            raise CommunityError(
                "household_cycle_closed",
                f"Household {account_id} moved out in cycle {now_cycle}; "
                "give the new tenant a new household",
                household=account_id,
                cycle=now_cycle,
            )
        household = self.ledger.ensure_household(account_id, label, int(self.clock()))
        if supply_protected is not None:
            self.ledger.set_supply_protected(account_id, supply_protected)
        self.ledger.assign_meter(meter_id, account_id)
        return {
            "account_id": account_id,
            "label": household.label,
            "opened_at": household.opened_at,
            "supply_protected": (
                household.supply_protected if supply_protected is None else supply_protected
            ),
            "balances": self.ledger.balances(account_id),
        }

    def apply_assignment(self, meter_id: str, info: Mapping[str, Any]) -> list[Event]:
        """Take an assignment into the live state (event loop)."""
        account_id = str(info["account_id"])
        household = self.households.get(account_id)
        if household is None:
            household = self.households[account_id] = HouseholdState(
                account_id, str(info["label"]), int(info["opened_at"])
            )
        household.label = str(info["label"])
        household.supply_protected = bool(info["supply_protected"])
        for sub, amount in info["balances"].items():
            if household.seen_entry[sub] == 0:
                household.balances[sub] = amount
        self.warnings.update(account_id, household.electricity)
        meter = self._meter(meter_id)
        meter.account_id = account_id
        meter.billing = BillingState(opened=self._opened_date(household))
        return [
            Event("assigned", meter_id, account_id, {"household": household.label}),
            Event("account", meter_id, account_id),
            *self._safety(self.safety.set_household(account_id, self._flags(household))),
        ]

    def unassign_meter(self, meter_id: str, *, actor: Actor | None = None) -> str:
        """Unbind a meter from its household, an operator's decision (blocking).

        Call it with nothing of the meter's pending (the service commits first). The household
        and its money stay in the ledger (a move-out settles them); the meter keeps its
        cursor, and its supply stays as it is: a meter nobody pays for is left to an operator.
        Returns the household it belonged to.
        """
        meter = self._known_meter(meter_id)
        if meter.account_id is None:
            raise CommunityError(
                "meter_not_assigned", f"Meter {meter_id} is not assigned", meter_id=meter_id
            )
        if actor is not None:
            self._authorize(actor, "assign", account_id=meter.account_id)
        self.ledger.assign_meter(meter_id, None)
        return meter.account_id

    def apply_unassignment(self, meter_id: str) -> list[Event]:
        """Take an unassignment into the live state (event loop)."""
        meter = self._meter(meter_id)
        account_id, meter.account_id = meter.account_id, None
        meter.billing = BillingState()
        meter.request_answer = None
        meter.request_ids.clear()
        return [Event("unassigned_meter", meter_id, account_id)]

    # ------------------------------------------------------------------ move-out (blocking)

    def cycle_at(self, ts: int) -> str:
        """Return the tariff's billing cycle at a moment (`YYYY` or `YYYY-MM`)."""
        return self.tariff.timeline().segment_at(to_us(datetime.fromtimestamp(ts, UTC))).cycle

    def check_move_out(
        self,
        account_id: str,
        credit: str,
        next_account: str | None = None,
        next_label: str | None = None,
    ) -> None:
        """Refuse a move-out settlement that cannot be done, before anything is changed.

        `credit` is `refund` or `carry`; a carry names the next household: another one that
        exists, or a new one with its label (`next_label`), so that a mistyped id is refused.
        """
        if self.ledger.household(account_id) is None:
            raise CommunityError(
                "unknown_household", f"Unknown household {account_id}", household=account_id
            )
        if credit not in MOVE_OUT_CREDIT:
            raise CommunityError("invalid_credit", f"Unknown credit choice {credit}", credit=credit)
        if credit == "refund":
            if next_account is not None:
                raise CommunityError(
                    "next_household_only_with_carry",
                    "A next household is named only when the credit is carried",
                    household=next_account,
                )
            return
        if next_account is None:
            raise CommunityError(
                "next_household_required", "Carrying the credit needs the next household"
            )
        if next_account == account_id:
            raise CommunityError(
                "next_household_same",
                f"The credit of {account_id} cannot be carried to itself",
                household=account_id,
            )
        if not next_account.strip() or len(next_account) > 200:
            raise CommunityError(
                "unknown_household", f"Unknown household {next_account}", household=next_account
            )
        if self.ledger.household(next_account) is None and not next_label:
            raise CommunityError(
                "unknown_next_household",
                f"Unknown household {next_account}; a new one needs its label",
                household=next_account,
            )

    def settle_move_out(
        self,
        account_id: str,
        credit: str,
        *,
        actor: Actor,
        next_account: str | None = None,
        next_label: str | None = None,
        reason: str = "",
    ) -> MoveOut:
        """Close a moved-out household's cycles and settle its electricity credit (blocking).

        Call it once its meters are unassigned and their charges committed. Its cycles with
        usage and no statement are closed first (the final statements, the charges settled to
        the cent), so the credit left is exact money. `refund` takes that credit out with one
        REFUND entry under the move key `move_out:<account>:<cycle of now>`; `carry` moves it
        to `next_account` (created with `next_label` if new) with two ADJUSTMENT entries in
        one transaction, `<move key>:out` and `<move key>:in`. Every entry's meta holds the
        move key, the actor and the reason. Fee balances are left as they are (arrears are
        never taken from the electricity credit), and a negative electricity balance stays
        owed. Settled once: called again, the entries found are returned as duplicates.
        """
        self.check_move_out(account_id, credit, next_account, next_label)
        now = int(self.clock())
        move_key = f"move_out:{account_id}:{self.cycle_at(now)}"
        keys = [move_key] if credit == "refund" else [f"{move_key}:out", f"{move_key}:in"]
        found = [self.ledger.entry_by_key(key) for key in keys]
        first = found[0]
        if first is not None:
            second = found[-1]
            return MoveOut(
                account_id,
                credit,
                -first.amount,
                second.account_id if credit == "carry" and second is not None else None,
                move_key,
                (),
                LedgerResult(),
                duplicate=True,
            )
        kind = EntryKind.REFUND if credit == "refund" else EntryKind.ADJUSTMENT
        self._authorize(actor, _MONEY_ACTIONS[kind], account_id=account_id)
        closed: list[str] = []
        balances: dict[tuple[str, SubAccount], tuple[int, Decimal]] = {}
        for cycle in self.ledger.open_cycles(account_id):
            settled, _total = self._close_cycle(account_id, cycle)
            if settled is not None:
                _newest(balances, account_id, SubAccount.ELECTRICITY, settled)
            closed.append(cycle)
        left = self.ledger.balance(account_id, SubAccount.ELECTRICITY)
        if left <= 0:
            return MoveOut(
                account_id,
                credit,
                _ZERO,
                next_account,
                move_key,
                tuple(closed),
                LedgerResult(balances),
            )
        meta = {"move_out": move_key, "actor": str(actor), "reason": reason, "credit": credit}
        postings = [Posting(keys[0], account_id, SubAccount.ELECTRICITY, kind, -left, now, meta)]
        if next_account is not None:
            self._authorize(actor, "adjustment", account_id=next_account)
            if self.ledger.household(next_account) is None:
                self.ledger.ensure_household(next_account, next_label or next_account, now)
            postings[0] = Posting(
                keys[0],
                account_id,
                SubAccount.ELECTRICITY,
                kind,
                -left,
                now,
                {**meta, "to": next_account},
            )
            postings.append(
                Posting(
                    keys[1],
                    next_account,
                    SubAccount.ELECTRICITY,
                    kind,
                    left,
                    now,
                    {**meta, "from": account_id},
                )
            )
        try:
            results = self.ledger.post_many(postings)
        except LedgerError as err:
            raise CommunityError("ledger_error", str(err), error=str(err)) from err
        for posting, result in zip(postings, results, strict=True):
            _newest(balances, posting.account_id, posting.sub, result)
        return MoveOut(
            account_id,
            credit,
            left,
            next_account,
            move_key,
            tuple(closed),
            LedgerResult(balances, results),
        )

    # ------------------------------------------------------------------ the safety watch

    def is_master(self, meter_id: str) -> bool:
        """Return whether a meter is the master meter of an area."""
        return any(master == meter_id for master, _ in self.areas.values())

    def alarms(self, meter_id: str) -> list[str]:
        """Return the kinds of a meter's open alarm episodes, sorted."""
        return sorted(self.safety.alarms(meter_id))

    def household_safety(
        self,
        account_id: str,
        *,
        care: bool | None = None,
        vacant: bool | None = None,
        rules: Mapping[str, Any] | None = None,
        actor: Actor,
    ) -> SafetySetting:
        """Check an operator's change of a household's safety settings (event loop).

        `care` opts the household in to (or out of) the care watch, `vacant` marks it empty,
        `rules` replaces its rule overrides (SafetyRules option names; {} clears them); None
        keeps each as it is. Returns the setting to journal (`record_safety_setting`), then to
        apply (`apply_safety_setting`); raises `CommunityError` and changes nothing when it
        cannot be one (`invalid_safety_rule` names the rule).
        """
        self._authorize(actor, "safety", account_id=account_id)
        household = self.households.get(account_id)
        if household is None:
            raise CommunityError(
                "unknown_household", f"Unknown household {account_id}", household=account_id
            )
        overrides = dict(household.safety_rules if rules is None else rules)
        try:
            SafetyRules.from_options(overrides, self.safety.rules)
        except SafetyError as err:
            raise CommunityError("invalid_safety_rule", str(err), error=str(err)) from err
        body: dict[str, Any] = {
            "care": household.care if care is None else bool(care),
            "vacant": household.vacant if vacant is None else bool(vacant),
        }
        if overrides:
            body["rules"] = overrides
        return SafetySetting("household", account_id, body, str(actor), int(self.clock()))

    def master_meter(
        self,
        area_id: str,
        master_meter_id: str | None,
        members: Sequence[str] = (),
        *,
        actor: Actor,
    ) -> SafetySetting:
        """Check an operator's declaration of an area's master meter (event loop).

        The master meter (an unassigned meter: it belongs to no household and is not billed)
        measures what its `members`, households' meters, draw together; None removes the
        area. Returns the setting to journal and apply; raises `CommunityError` and changes
        nothing when it cannot be one (`invalid_area`).
        """
        self._authorize(actor, "safety")
        area = str(area_id).strip() if isinstance(area_id, str) else ""
        if not area:
            raise CommunityError("invalid_area", "An area needs a name", error="no name")
        now = int(self.clock())
        if master_meter_id is None:
            if area not in self.areas:
                raise CommunityError("invalid_area", f"No area {area}", error=f"no area {area}")
            return SafetySetting("area", area, {}, str(actor), now)
        meter = self._known_meter(master_meter_id)
        member_set = sorted(set(members))
        for meter_id in member_set:
            self._known_meter(meter_id)
        problem = None
        if meter.account_id is not None:
            problem = f"meter {master_meter_id} belongs to household {meter.account_id}"
        elif not member_set:
            problem = "an area needs at least one member meter"
        elif master_meter_id in member_set:
            problem = f"meter {master_meter_id} cannot be both master and member"
        else:
            for other_id, (master, others) in self.areas.items():
                if other_id == area:
                    continue
                for meter_id in (master_meter_id, *member_set):
                    if meter_id == master or meter_id in others:
                        problem = f"meter {meter_id} is already in area {other_id}"
            problem = problem or next(
                (
                    f"meter {m} is the master meter of an area"
                    for m in member_set
                    if any(m == master for a, (master, _) in self.areas.items() if a != area)
                ),
                None,
            )
        if problem is not None:
            raise CommunityError("invalid_area", f"Area {area}: {problem}", error=problem)
        body = {"master": master_meter_id, "members": member_set}
        return SafetySetting("area", area, body, str(actor), now)

    def record_safety_setting(self, setting: SafetySetting) -> bool:
        """Journal a checked safety setting (blocking); return whether it changed anything."""
        try:
            return self.ledger.record_safety_setting(setting)
        except LedgerError as err:
            raise CommunityError("ledger_error", str(err), error=str(err)) from err

    def apply_safety_setting(self, setting: SafetySetting) -> list[Event]:
        """Take a journaled safety setting into the live state (event loop)."""
        body = setting.body
        if setting.subject == "area":
            if not body:
                self.areas.pop(setting.key, None)
                self.safety.remove_area(setting.key)
                return []
            try:
                self._set_area(setting.key, str(body["master"]), list(body["members"]))
            except SafetyError:
                _LOGGER.exception("Area %s could not be set", setting.key)
            return []
        household = self.households.get(setting.key)
        if household is None:
            return []
        household.care = bool(body.get("care", False))
        household.vacant = bool(body.get("vacant", False))
        household.safety_rules = dict(body.get("rules") or {})
        return self._safety(self.safety.set_household(household.account_id, self._flags(household)))

    def acknowledgement(self, meter_id: str, kind: str, *, actor: Actor) -> SafetyAck:
        """Check an operator's acknowledgement of an open alarm episode (event loop).

        Returns what to journal (`record_acknowledgement`) and then apply
        (`apply_acknowledgement`); `no_open_alarm` when the meter has no such episode open.
        """
        meter = self._known_meter(meter_id)
        self._authorize(actor, "safety", meter=meter)
        episode = self.safety.alarms(meter_id).get(kind) if kind in ALARM_KINDS else None
        if episode is None:
            raise CommunityError(
                "no_open_alarm",
                f"Meter {meter_id} has no open {kind} alarm",
                meter_id=meter_id,
                kind=str(kind),
            )
        account_id = None if kind == "line_loss" else meter.account_id
        return SafetyAck(meter_id, account_id, kind, episode.started, str(actor), int(self.clock()))

    def record_acknowledgement(self, ack: SafetyAck) -> None:
        """Journal an acknowledgement (blocking)."""
        try:
            self.ledger.record_safety_ack(ack)
        except LedgerError as err:
            raise CommunityError("ledger_error", str(err), error=str(err)) from err

    def apply_acknowledgement(self, ack: SafetyAck) -> list[Event]:
        """Mark the journaled acknowledgement on the episode (event loop).

        An episode that ended in between is acknowledged in the journal only.
        """
        try:
            found = self.safety.acknowledge(ack.meter_id, ack.kind, ack.actor, ack.ts)
        except SafetyError:
            return []
        return self._safety([found])

    def safety_state(self) -> str:
        """Return the watch's state as JSON text, to keep (`Ledger.save_safety_state`)."""
        return json.dumps(self.safety.export_state(), separators=(",", ":"))

    def statement(
        self, account_id: str, cycle: str, *, actor: Actor | None = None
    ) -> dict[str, Any]:
        """Return a cycle's statement: the stored one if closed, else the running one (blocking).

        A resident asking for a household not theirs is refused before it is looked up.
        """
        if actor is not None:
            self._authorize(actor, "statement", account_id=account_id)
        if self.ledger.household(account_id) is None:
            raise CommunityError(
                "unknown_household", f"Unknown household {account_id}", household=account_id
            )
        self._check_cycle(cycle)
        stored = self.ledger.statement(account_id, cycle)
        if stored is not None:
            body: dict[str, Any] = json.loads(stored[1])
            return {**body, "closed": True, "currency": self.tariff.currency}
        rows = self.ledger.usage(account_id, cycle)
        lines = []
        for row in rows:
            period, price = split_usage_period(row.period)
            lines.append((row.tier, period, row.kwh, price))
        return {
            **statement_for(cycle, lines, self.tariff.periods).to_json(),
            "closed": False,
            "currency": self.tariff.currency,
        }

    def _check_cycle(self, cycle: str) -> None:
        """Refuse a cycle id not of this tariff's form (`YYYY` yearly, `YYYY-MM` monthly)."""
        period = self.tariff.versions[0].cycle.period  # every version has the same rule
        expected, pattern = ("YYYY", _YEAR_RE) if period == "year" else ("YYYY-MM", _MONTH_RE)
        if not pattern.fullmatch(cycle):
            raise CommunityError(
                "cycle_not_of_tariff",
                f"Cycle {cycle!r} is not a cycle of this tariff, whose cycles are {expected}",
                cycle=cycle,
                expected=expected,
            )

    # ------------------------------------------------------------------ what entities show

    def balance(self, meter: MeterState) -> Decimal | None:
        """Return the live electricity balance of the meter's household."""
        household = self.households.get(meter.account_id) if meter.account_id else None
        return household.electricity if household else None

    def price_now(self, meter: MeterState) -> tuple[int, str, Decimal]:
        """Return (tier, period, price) for the next kWh of this meter."""
        return current_price(self.tariff, meter.billing, datetime.fromtimestamp(self.clock(), UTC))

    def _household_of(self, meter: MeterState) -> HouseholdState | None:
        return self.households.get(meter.account_id) if meter.account_id else None

    def daily_cost(self, meter: MeterState) -> Decimal | None:
        """Return the household's recent cost a day, at the prices billed (None: unknown).

        The money billed since the start of the seventh local day before today (or since the
        first use known, if later) divided by the days from then to the meter's last reading:
        between 7 and 8 days of history once there is a week, never a cycle's average. Unknown
        until a day (24 h) of readings is known. After a restart, from the ledger's sums of
        the charges per day.
        """
        household = self._household_of(meter)
        if household is None or household.known_since is None:
            return None
        # Up to the meter's last reading: what is known. A meter silent for days (offline, or
        # replaying old readings, as the demo's simulator does) must not look cheaper a day.
        now = int(self.clock())
        end = min(now, meter.ts) if meter.ts is not None else now
        if end - household.known_since < DAYS_LEFT_MIN_S:
            return None
        first = self._today() - timedelta(days=DAYS_LEFT_WINDOW_DAYS)
        start = max(household.known_since, self._midnight(first))
        if end <= start:
            return None
        cost = sum((use.cost for day, use in household.days.items() if day >= first), _ZERO)
        return cost * 86400 / (end - start)

    def days_left(self, meter: MeterState) -> Decimal | None:
        """Return the days the household's credit lasts at its recent daily cost.

        The electricity balance, without the emergency credit (a safety net to repay, not
        credit to plan with: at or below zero there are 0 days left, while the supply runs
        on emergency credit), divided by `daily_cost`, rounded down to a tenth of a day.
        None for an unassigned meter, before a day of use is known, or with no cost.
        """
        balance = self.balance(meter)
        if balance is None:
            return None
        return estimate_days_left(balance, self.daily_cost(meter))

    def use_today(self, meter: MeterState) -> DayUse | None:
        """Return the household's kWh and cost today (local day; None: unassigned)."""
        household = self._household_of(meter)
        if household is None:
            return None
        return household.days.get(self._today()) or DayUse()

    def use_this_month(self, meter: MeterState) -> DayUse | None:
        """Return the household's kWh and cost this calendar month (the tariff's zone)."""
        household = self._household_of(meter)
        if household is None:
            return None
        month = self._today().replace(day=1)
        total = DayUse()
        for day, use in household.days.items():
            if day >= month:
                total.kwh += use.kwh
                total.cost += use.cost
        return total

    def day_started(self) -> datetime:
        """Return when today started (local day of the tariff's zone), as an aware time."""
        return datetime.fromtimestamp(self._day_start_ts(), UTC)

    def month_started(self) -> datetime:
        """Return when this calendar month started (the tariff's zone), as an aware time."""
        return datetime.fromtimestamp(self.month_start_ts(), UTC)

    def tier_kwh_left(self, meter: MeterState) -> Decimal | None:
        """Return the kWh left in the current tier this cycle (None: no tier above)."""
        return tier_room(self.tariff, meter.billing, datetime.fromtimestamp(self.clock(), UTC))

    def low_threshold(self, meter: MeterState) -> Decimal:
        """Return the balance at or below which the meter's household is "low"."""
        if meter.low_threshold is not None:
            return meter.low_threshold
        return self.policy.warn_level_1

    def is_low(self, meter: MeterState) -> bool | None:
        """Return whether the household's balance is low (None for an unassigned meter).

        The one definition of "low": the binary sensor, the account topic and the meter's
        display read it. (The warning events are the two levels' crossings, see
        WarningTracker.)
        """
        balance = self.balance(meter)
        return None if balance is None else balance <= self.low_threshold(meter)

    def account_payload(self, meter: MeterState) -> bytes | None:
        """Return the household's own account state for the `account` topic (None: unassigned)."""
        household = self.households.get(meter.account_id) if meter.account_id else None
        if household is None:
            return None
        tier, _period, price = self.price_now(meter)
        balance = household.electricity
        today, month = self.use_today(meter), self.use_this_month(meter)
        return account_payload(
            balance=balance.quantize(CENT),
            currency=self.tariff.currency,
            low=balance <= self.low_threshold(meter),
            relay=meter.desired_relay,
            cycle=meter.billing.cycle,
            cycle_kwh=meter.billing.cycle_kwh.quantize(Decimal("0.001")),
            tier=tier,
            price=price,
            updated=int(self.clock()),
            reason=meter.relay_reason,
            days_left=self.days_left(meter),
            today=(today.kwh, today.cost) if today is not None else None,
            month=(month.kwh, month.cost) if month is not None else None,
            request=meter.request_answer,
        )

    def totals(self) -> dict[str, Any]:
        """Return community figures computed from memory (one pass; run every few seconds).

        A household is in arrears on a sub-account when its balance is below zero to the
        cent, as people read it (ARREARS_AT): -0.004 is not a debt anyone can pay.
        """
        in_arrears = dict.fromkeys(SubAccount, 0)
        electricity_arrears = 0
        total = _ZERO
        for household in self.households.values():
            electricity = household.electricity
            total += electricity
            if electricity <= ARREARS_AT:
                electricity_arrears += 1
            balances = household.balances
            for sub in FEE_SUBS:
                if balances[sub] <= ARREARS_AT:
                    in_arrears[sub] += 1
        in_arrears[SubAccount.ELECTRICITY] = electricity_arrears
        return {
            "total_balance": total,
            "arrears": in_arrears,
            "supplies_cut": sum(1 for m in self.meters.values() if m.desired_relay == "off"),
            "top_ups_today": self.top_ups_today,
        }


def _newest(
    balances: dict[tuple[str, SubAccount], tuple[int, Decimal]],
    account_id: str,
    sub: SubAccount,
    result: PostResult,
) -> None:
    seen = balances.get((account_id, sub))
    if seen is None or result.entry_id > seen[0]:
        balances[(account_id, sub)] = (result.entry_id, result.balance_after)


def _check_amount(amount: Decimal) -> None:
    if (
        not amount.is_finite()
        or amount <= 0
        or amount > MAX_AMOUNT
        or amount != amount.quantize(Decimal("0.01"))
    ):
        raise CommunityError(
            "invalid_amount",
            f"Amount {amount} must be positive, at most {MAX_AMOUNT}, with at most 2 decimals",
            amount=str(amount),
        )
