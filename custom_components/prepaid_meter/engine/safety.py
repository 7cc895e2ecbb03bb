"""The safety and care watch: alarms as episodes, from readings and the passing of time.

`SafetyWatch` is fed every reading (`WatchReading`, in the order each meter sent them) and a
periodic `tick(now)` (every minute is plenty), and returns typed events: `AlarmStarted` once
when an episode begins, `AlarmCleared` once when it ends, `ProtectiveCutWanted` once per
episode that calls for one (the caller carries it out, or reports it for a supply-protected
household), and `AlarmAcknowledged` when an operator acknowledges an open episode. It does
no I/O and knows nothing of money, tariffs or Home Assistant.

The rules and where their defaults come from (`SafetyRules`, one frozen set of thresholds per
community, overridable per household):

- **overload**: current at or above `overload_factor` x the household's rated current for
  `overload_s` (the meter's own `overcurrent` report counts as such a reading). A miniature
  circuit breaker (IEC 60898-1) carries 1.13 In for an hour without tripping (the conventional
  non-tripping current) and trips within an hour at 1.45 In (the conventional tripping
  current); old wiring is protected by asking for a cut before the breaker's curve would:
  at `cut_factor` (1.45) x rated for `cut_s`, or at `cut_long_factor` (1.13) x rated for
  `cut_long_s` (the hour of the breaker's own test).
- **surge**: a rise of the current by at least `surge_fraction` of the rated current within
  `surge_window_s`. There is no standard for this: the default (60 % of rated, 24 A on a
  40 A supply, about 5.3 kW at 220 V) is more than the two largest ordinary appliances
  (a 3 kW water heater and a 2.2 kW kettle) switched on in the same minute.
- **arc_fault**: the meter's (or an AFDD's, IEC 62606) `arc_fault` report; a cut is wanted
  at once.
- **theft_suspected**: the signs utilities use for meter bypasses: a live/neutral current
  gap of more than `theft_gap_a` and `theft_gap_ratio` of the larger for `theft_gap_s` (a
  live-terminal bypass: the neutral carries the whole load), reverse energy (the meter's
  `reverse_energy` report, or power below -`reverse_w`), a register that goes back by more
  than `register_back_kwh`, and consumption while our own cut is in force (the register
  rising by `off_kwh`, or a current of `off_current_a`, with the relay reported open).
- **tamper**: the meter's `cover_open`, `terminal_cover_open`, `magnetic_tamper` or `tamper`
  reports.
- **line_loss** (per area): the way distribution operators find bypassed meters, an energy
  balance: a master meter per building or transformer area, loss = master energy minus the
  sum of its households' energy over the same hours. Each hour's loss is compared with the
  area's usual loss in that hour of the day (common lighting and lifts make nights lossier;
  learned over `loss_learn_hours`); the excess over the last `loss_window_h` hours, as a
  share of the master's energy, above `loss_margin` and `loss_dev_factor` x its usual
  deviation for `loss_hours` hours in a row raises an area alarm (on the master meter)
  naming the households whose use fell when the loss rose: ranked by how well the excess
  is a multiple of their metered use over the hours it rose (a bypass takes a share of the
  load) and by how far their use fell below their usual then. `loss_rate(area)` is the
  latest loss rate.
- **inactivity** (care, opt-in per household): the "unchanged usage" rule of utilities'
  elderly-alert services (a resident's use watched for a day that does not look like their
  usual one). Hour by hour, an hour is active when a reading shows an appliance switched on
  (`care_spike_w` above the home's base load: standby and the fridge, the quietest hour of
  each day), when the hour's lowest power is `care_floor_w` above the usual lowest (lights,
  a television, a computer left on) or when its energy is `care_min_wh` above the base.
  The household's usual day is how often each hour of the day is active (learned over
  `care_learn_days`, not from cut, vacant or alarmed hours). The alarm is raised when no
  activity was seen for `care_hours` and the quiet hours are ones the household is usually
  active in, adding up to `care_missing_share` of a usual day's active hours (a quiet night
  is no alarm; a morning without its usual kettle after it is). Hours the caller calls
  friendly (`friendly(account_id, ts)`, e.g. declared absences) add nothing. Never for a
  household marked vacant, while our own cut is in force, or while its meter is offline.
- **offline**: a meter not heard for `offline_s` (a silent meter is not an inactive person).

Every sign-based episode of a hazard (overload, surge, arc fault) closes after `clear_s` of
readings without a sign; one of interference (theft, tamper) after `theft_clear_s` (a day by
default): a bypass shows a neutral gap only while its load runs, and a cover stays opened once
opened, so a short quiet time opened and closed the same case again and again (seen in the
demo: a start and a clear every half hour of simulated time for one home); offline closes
at the next reading; inactivity at the first activity (or when the household becomes
ineligible); line loss when the loss rate is back.

State is small per meter (a few numbers, and the usual day as 48 32-bit floats) and
`export_state()` / `import_state()` carry it as plain JSON data.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
import math
from typing import Any, Final, Literal, cast, get_args

type AlarmKind = Literal[
    "overload",
    "surge",
    "arc_fault",
    "theft_suspected",
    "tamper",
    "line_loss",
    "inactivity",
    "offline",
]
ALARM_KINDS: Final[tuple[str, ...]] = get_args(AlarmKind.__value__)
#: Kinds opened by a sign in a reading and closed after `clear_s` without one (the
#: interference kinds after `theft_clear_s`).
SIGN_KINDS: Final = frozenset({"overload", "surge", "arc_fault", "theft_suspected", "tamper"})
INTERFERENCE_KINDS: Final = frozenset({"theft_suspected", "tamper"})
TAMPER_EVENTS: Final = frozenset({"cover_open", "terminal_cover_open", "magnetic_tamper", "tamper"})
#: The nominal voltage used to estimate a current from power when a meter sends no current.
NOMINAL_V: Final = 220.0
#: A gap between two readings longer than this leaves the hours in between unknown.
MAX_GAP_S: Final = 7_200
STATE_VERSION: Final = 1
_HOUR: Final = 3_600
_DAY: Final = 86_400

type Relay = Literal["on", "off"]


class SafetyError(ValueError):
    """A request or option the watch cannot take: one clear message; nothing changed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SafetyRules:
    """Thresholds of every rule (see the module docstring for what each rests on)."""

    clear_s: int = 900
    theft_clear_s: int = 86_400
    overload_factor: float = 1.0
    overload_s: int = 120
    cut_factor: float = 1.45
    cut_s: int = 300
    cut_long_factor: float = 1.13
    cut_long_s: int = 3_600
    surge_fraction: float = 0.6
    surge_window_s: int = 60
    theft_gap_a: float = 0.5
    theft_gap_ratio: float = 0.1
    theft_gap_s: int = 60
    reverse_w: float = 50.0
    register_back_kwh: float = 0.01
    off_kwh: float = 0.01
    off_current_a: float = 0.5
    offline_s: int = 3_600
    care_hours: float = 10.0
    care_min_wh: float = 60.0
    care_spike_w: float = 150.0
    care_floor_w: float = 25.0
    care_missing_share: float = 0.2
    care_learn_days: int = 3
    loss_window_h: int = 6
    loss_margin: float = 0.03
    loss_dev_factor: float = 4.0
    loss_hours: int = 2
    loss_learn_hours: int = 48

    def __post_init__(self) -> None:
        """Refuse a threshold that cannot work (not a finite number above zero)."""
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SafetyError(f"safety rule {item.name} must be a number, not {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise SafetyError(f"safety rule {item.name} must be above 0, not {value!r}")
        if self.cut_factor < self.overload_factor:
            raise SafetyError("safety rule cut_factor must not be below overload_factor")
        if self.care_missing_share >= 1 or self.theft_gap_ratio >= 1:
            raise SafetyError("safety rules care_missing_share and theft_gap_ratio are below 1")

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], base: SafetyRules | None = None
    ) -> SafetyRules:
        """Return `base` (the defaults) with the given thresholds changed.

        Options are the field names with numbers; an unknown name or a bad value raises
        `SafetyError` naming it. Integer fields take whole numbers only.
        """
        base = base or cls()
        known = {item.name: item.type for item in fields(cls)}
        changes: dict[str, Any] = {}
        for name, value in options.items():
            if name not in known:
                raise SafetyError(f"unknown safety rule {name!r}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SafetyError(f"safety rule {name} must be a number, not {value!r}")
            if known[name] == "float":
                changes[name] = float(value)
            elif not math.isfinite(value) or value != int(value):
                raise SafetyError(f"safety rule {name} must be a whole number, not {value!r}")
            else:
                changes[name] = int(value)
        return replace(base, **changes)

    def to_options(self, base: SafetyRules | None = None) -> dict[str, Any]:
        """Return the thresholds that differ from `base` (all of them without one)."""
        mine = asdict(self)
        if base is None:
            return mine
        theirs = asdict(base)
        return {name: value for name, value in mine.items() if theirs[name] != value}


@dataclass(frozen=True, slots=True)
class HouseholdFlags:
    """What the operator set for one household."""

    #: The household opted in to the care (inactivity) watch.
    care: bool = False
    #: Marked vacant (away, empty flat): no inactivity alarm.
    vacant: bool = False
    #: Never cut by the watch: a wanted protective cut is reported instead.
    supply_protected: bool = False
    #: Thresholds of this household (None: the community's).
    rules: SafetyRules | None = None


@dataclass(frozen=True, slots=True)
class WatchReading:
    """One reading as the watch needs it (the caller maps its own reading to this)."""

    meter_id: str
    account_id: str | None
    ts: int
    energy_kwh: Decimal | float | None = None
    power_w: float | None = None
    current_a: float | None = None
    neutral_current_a: float | None = None
    #: The relay state the meter reports.
    reported_relay: Relay | None = None
    #: The relay state we want.
    wanted_relay: Relay = "on"
    #: Our own cut is in force (wanted off, and the meter has confirmed it).
    own_cut: bool = False
    #: The meter's own reports since its last reading (overcurrent, arc_fault, tamper, ...).
    events: tuple[str, ...] | frozenset[str] = ()
    rated_current_a: float = 60.0
    #: When the reading arrived (the caller's clock; None: `ts`): a backlog sent after an
    #: outage arrives late, and a meter is offline by when it was last heard.
    received: int | None = None


@dataclass(frozen=True, slots=True)
class AlarmStarted:
    """An episode began."""

    kind: AlarmKind
    meter_id: str
    account_id: str | None
    started: int
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AlarmCleared:
    """An episode ended; `duration` in seconds from its start."""

    kind: AlarmKind
    meter_id: str
    account_id: str | None
    started: int
    duration: int


@dataclass(frozen=True, slots=True)
class AlarmAcknowledged:
    """An operator acknowledged an open episode (journal it with the actor)."""

    kind: AlarmKind
    meter_id: str
    account_id: str | None
    started: int
    actor: str
    at: int


@dataclass(frozen=True, slots=True)
class ProtectiveCutWanted:
    """The watch wants the supply cut; for a supply-protected household report it instead."""

    meter_id: str
    account_id: str | None
    reason: AlarmKind
    supply_protected: bool = False


type SafetyEvent = AlarmStarted | AlarmCleared | AlarmAcknowledged | ProtectiveCutWanted


@dataclass(frozen=True, slots=True)
class OpenAlarm:
    """An open episode, as binary sensors and lists show it."""

    kind: AlarmKind
    started: int
    last_sign: int
    acknowledged_by: str | None


class _Episode:
    __slots__ = ("actor", "cut", "last", "started")

    def __init__(self, started: int, last: int, actor: str | None = None, cut: bool = False):
        self.started = started
        self.last = last
        self.actor = actor
        self.cut = cut

    def dump(self) -> list[Any]:
        return [self.started, self.last, self.actor, self.cut]


class _Meter:
    """Per-meter state; kept small (5,000 of them live in memory)."""

    __slots__ = (
        "account_id",
        "area",
        "base",
        "cut",
        "cut_e",
        "day_min",
        "episodes",
        "floor",
        "floor_day",
        "gap_since",
        "hour",
        "hour_e",
        "hour_min",
        "hours_seen",
        "last_active",
        "last_e",
        "last_i",
        "last_rx",
        "last_ts",
        "long_since",
        "master",
        "missing",
        "over_since",
        "partial",
        "ref_i",
        "ref_ts",
        "severe_since",
        "spiked",
        "usual",
    )

    def __init__(self, account_id: str | None) -> None:
        self.account_id = account_id
        self.area: str | None = None
        self.master = False
        self.last_ts = -1
        self.last_rx = -1
        self.last_e = math.nan
        self.last_i = math.nan
        self.ref_ts = -1
        self.ref_i = math.nan
        self.over_since = -1
        self.severe_since = -1
        self.long_since = -1
        self.gap_since = -1
        self.cut = False
        self.cut_e = math.nan
        self.hour = -1
        self.hour_e = math.nan
        self.partial = False
        self.usual: array[float] | None = None
        self.spiked = False
        self.base = 0.0
        self.day_min = math.inf
        self.floor = 0.0
        self.floor_day = math.inf
        self.hour_min = math.inf
        self.hours_seen = 0
        self.last_active = -1
        self.missing = 0.0
        self.episodes: dict[AlarmKind, _Episode] | None = None


class _Area:
    __slots__ = (
        "dev",
        "episode",
        "hours",
        "learned",
        "master",
        "members",
        "over",
        "rate",
        "recent",
        "under",
        "usual",
        "window",
    )

    def __init__(self, master: str, members: frozenset[str]) -> None:
        self.master = master
        self.members = members
        #: Hours being filled in by the area's meters.
        self.hours: dict[int, _Slot] = {}
        #: The last day's judged hours: (loss above the usual kWh, master kWh, each member's
        #: (Wh, usual Wh)).
        self.recent: list[tuple[float, float, dict[str, tuple[float, float]]]] = []
        #: The last hours: (master kWh, loss kWh, loss above the usual for the hour of day).
        self.window: list[tuple[float, float, float]] = []
        #: The usual loss (kWh) in each hour of the local day.
        self.usual = [0.0] * 24
        self.dev = 0.0
        self.learned = 0
        self.over = 0
        self.under = 0
        self.rate: float | None = None
        self.episode: _Episode | None = None


class _Slot:
    """One hour of an area: the master's kWh and each member's (Wh, usual Wh)."""

    __slots__ = ("master", "members", "uses")

    def __init__(self) -> None:
        self.master = math.nan
        self.members = 0.0
        self.uses: dict[str, tuple[float, float]] = {}


def _fall(
    meter_id: str, hours: list[tuple[float, float, dict[str, tuple[float, float]]]]
) -> tuple[float, float]:
    """Return how far a member's use was below its usual over `hours`: (share, Wh)."""
    actual = usual = 0.0
    for _excess, _master, uses in hours:
        use, normal = uses.get(meter_id, (math.nan, math.nan))
        if math.isnan(use) or math.isnan(normal):
            continue
        actual += use
        usual += normal
    if usual <= 0:
        return 0.0, 0.0
    return 1.0 - actual / usual, usual - actual


def _explains(
    meter_id: str, hours: list[tuple[float, float, dict[str, tuple[float, float]]]]
) -> float:
    """Return how well the excess loss is a multiple of the member's metered use (0 to 1).

    Energy taken past a meter is a share of the load, so over the hours the loss rose the
    excess follows the part the meter still sees: 1 - the residual of the best fit
    excess = k x use (k > 0), relative to the excess.
    """
    pairs = [
        (excess * 1000.0, uses[meter_id][0])
        for excess, _master, uses in hours
        if meter_id in uses and not math.isnan(uses[meter_id][0])
    ]
    saa = sum(a * a for _, a in pairs)
    see = sum(e * e for e, _ in pairs)
    if len(pairs) < 2 or saa <= 0 or see <= 0:
        return 0.5  # too few hours to tell: the fall alone decides
    k = max(0.0, sum(e * a for e, a in pairs) / saa)
    residual = sum((e - k * a) ** 2 for e, a in pairs)
    return max(0.0, 1.0 - residual / see)


def _local_hour(hour: int, zone: tzinfo) -> int:
    return datetime.fromtimestamp(hour * _HOUR + _HOUR // 2, zone).hour


class SafetyWatch:
    """The watch over a community's meters; see the module docstring for the rules."""

    def __init__(
        self,
        rules: SafetyRules | None = None,
        *,
        timezone: tzinfo = UTC,
        friendly: Callable[[str, int], bool] | None = None,
    ) -> None:
        """Take the community's rules, its time zone (for the hour of the day of the care
        profile) and `friendly(account_id, ts)`: hours whose quiet is expected.
        """
        self.rules = rules or SafetyRules()
        self.timezone = timezone
        self.friendly = friendly
        self._meters: dict[str, _Meter] = {}
        self._households: dict[str, HouseholdFlags] = {}
        self._areas: dict[str, _Area] = {}
        self._hours: dict[int, int] = {}

    # -- configuration ---------------------------------------------------------------------

    def set_household(self, account_id: str, flags: HouseholdFlags | None) -> list[SafetyEvent]:
        """Set (None: reset) a household's flags; may clear an inactivity episode at once."""
        if not isinstance(account_id, str) or not account_id:
            raise SafetyError("a household needs an account id")
        if flags is None or flags == HouseholdFlags():
            self._households.pop(account_id, None)
        else:
            self._households[account_id] = flags
        events: list[SafetyEvent] = []
        for meter_id, meter in self._meters.items():
            if meter.account_id == account_id and not self._care_eligible(meter):
                meter.missing = 0.0
                if meter.last_ts >= 0:
                    meter.last_active = max(meter.last_active, meter.last_ts)
                self._close(meter_id, meter, "inactivity", meter.last_ts, events)
        return events

    def household(self, account_id: str | None) -> HouseholdFlags:
        """Return a household's flags (defaults for one not set)."""
        if account_id is None:
            return _NO_FLAGS
        return self._households.get(account_id, _NO_FLAGS)

    def rules_for(self, account_id: str | None) -> SafetyRules:
        """Return the thresholds that apply to a household."""
        return self.household(account_id).rules or self.rules

    def set_area(self, area_id: str, master_meter_id: str, members: Iterable[str]) -> None:
        """Declare (or redeclare) an area: its master meter and its households' meters."""
        member_set = frozenset(members)
        if not area_id or not master_meter_id or not member_set:
            raise SafetyError("an area needs an id, a master meter and at least one member")
        if master_meter_id in member_set:
            raise SafetyError(f"meter {master_meter_id} cannot be both master and member")
        for meter_id in (master_meter_id, *member_set):
            other = self._meters.get(meter_id)
            if other is not None and other.area not in (None, area_id):
                raise SafetyError(f"meter {meter_id} is already in area {other.area}")
        old = self._areas.get(area_id)
        if old is not None:
            for meter_id in (old.master, *old.members):
                if (meter := self._meters.get(meter_id)) is not None:
                    meter.area, meter.master = None, False
        area = _Area(master_meter_id, member_set)
        if old is not None and old.master == master_meter_id and old.members == member_set:
            area.usual, area.dev, area.learned, area.episode = (
                old.usual,
                old.dev,
                old.learned,
                old.episode,
            )
        self._areas[area_id] = area
        for meter_id in (master_meter_id, *member_set):
            meter = self._meter(meter_id, None)
            meter.area, meter.master = area_id, meter_id == master_meter_id

    def remove_area(self, area_id: str) -> None:
        """Forget an area (its open episode too)."""
        area = self._areas.pop(area_id, None)
        if area is None:
            return
        for meter_id in (area.master, *area.members):
            if (meter := self._meters.get(meter_id)) is not None:
                meter.area, meter.master = None, False

    def forget_meter(self, meter_id: str) -> None:
        """Forget a meter (removed from the community); an area still counts it."""
        meter = self._meters.pop(meter_id, None)
        if meter is not None and meter.area is not None:
            fresh = self._meters[meter_id] = _Meter(None)
            fresh.area, fresh.master = meter.area, meter.master

    # -- what is open ----------------------------------------------------------------------

    def alarms(self, meter_id: str) -> dict[str, OpenAlarm]:
        """Return the open episodes of a meter (an area's line loss on its master meter)."""
        found: dict[str, OpenAlarm] = {}
        meter = self._meters.get(meter_id)
        if meter is not None and meter.episodes:
            for kind, ep in meter.episodes.items():
                found[kind] = OpenAlarm(kind, ep.started, ep.last, ep.actor)
        for area in self._areas.values():
            if area.master == meter_id and area.episode is not None:
                ep = area.episode
                found["line_loss"] = OpenAlarm("line_loss", ep.started, ep.last, ep.actor)
        return found

    def loss_rate(self, area_id: str) -> float | None:
        """Return the area's latest loss rate (loss / master energy over the last hours)."""
        area = self._areas.get(area_id)
        if area is None:
            raise SafetyError(f"unknown area {area_id!r}")
        return area.rate

    def acknowledge(
        self, meter_id: str, kind: str, actor: str, at: int | None = None
    ) -> AlarmAcknowledged:
        """Acknowledge the open episode `kind` of a meter; SafetyError when none is open.

        `at` is when (the caller's clock; None: when the meter was last heard). The episode
        stays open until it clears; the event is for the journal, with the actor.
        """
        if kind not in ALARM_KINDS:
            raise SafetyError(f"unknown alarm kind {kind!r}")
        alarm = cast("AlarmKind", kind)
        if not isinstance(actor, str) or not actor:
            raise SafetyError("an acknowledgement needs the actor")
        episode: _Episode | None = None
        account_id: str | None = None
        if kind == "line_loss":
            for area in self._areas.values():
                if area.master == meter_id:
                    episode = area.episode
        else:
            meter = self._meters.get(meter_id)
            if meter is not None and meter.episodes:
                episode = meter.episodes.get(alarm)
                account_id = meter.account_id
        if episode is None:
            raise SafetyError(f"no open {kind} alarm on meter {meter_id}")
        episode.actor = actor
        if at is None:
            meter = self._meters.get(meter_id)
            at = max(episode.last, meter.last_rx if meter is not None else 0)
        return AlarmAcknowledged(alarm, meter_id, account_id, episode.started, actor, at)

    # -- readings --------------------------------------------------------------------------

    def _meter(self, meter_id: str, account_id: str | None) -> _Meter:
        meter = self._meters.get(meter_id)
        if meter is None:
            meter = self._meters[meter_id] = _Meter(account_id)
        return meter

    def feed(self, reading: WatchReading) -> list[SafetyEvent]:
        """Take one reading; return the events it causes (usually none)."""
        meter = self._meters.get(reading.meter_id)
        if meter is None:
            meter = self._meters[reading.meter_id] = _Meter(reading.account_id)
        events: list[SafetyEvent] = []
        if meter.account_id != reading.account_id:
            self._reassign(reading.meter_id, meter, reading.account_id, events)
        rules = self.rules_for(reading.account_id)
        ts = reading.ts
        rx = reading.received if reading.received is not None else ts
        meter.last_rx = max(meter.last_rx, rx)
        if meter.episodes and "offline" in meter.episodes:
            self._close(reading.meter_id, meter, "offline", rx, events)

        in_order = ts > meter.last_ts
        reading_events = reading.events
        if reading_events:
            self._meter_events(reading.meter_id, meter, reading, ts, events)
        if not in_order:
            return events  # a repeat or a late one: its reports count, not its numbers

        current = reading.current_a
        power = reading.power_w
        if current is None and power is not None:
            current = abs(power) / NOMINAL_V
        rated = reading.rated_current_a if reading.rated_current_a > 0 else 60.0
        meter_id = reading.meter_id
        if current is not None and math.isfinite(current):
            self._overload(meter_id, meter, reading, current, rated, rules, events)
            self._surge(meter_id, meter, ts, current, rated, rules, events)
            neutral = reading.neutral_current_a
            if neutral is not None and math.isfinite(neutral):
                self._gap(meter_id, meter, ts, current, neutral, rules, events)
        elif reading_events and "overcurrent" in reading_events:
            self._overload(meter_id, meter, reading, rated, rated, rules, events)
        if power is not None and power < -rules.reverse_w:
            self._sign(meter_id, meter, "theft_suspected", ts, {"cause": "reverse_energy"}, events)

        energy = reading.energy_kwh
        e = float(energy) if energy is not None else math.nan
        if not math.isfinite(e):
            e = math.nan
        meter.cut = reading.own_cut
        if reading.own_cut and reading.reported_relay != "on" and not math.isnan(e):
            if math.isnan(meter.cut_e):
                meter.cut_e = e
            elif e - meter.cut_e >= rules.off_kwh or (
                current is not None and current >= rules.off_current_a
            ):
                data = {"cause": "consumption_while_off", "kwh": round(e - meter.cut_e, 3)}
                self._sign(meter_id, meter, "theft_suspected", ts, data, events)
        elif not reading.own_cut:
            meter.cut_e = math.nan
        if not math.isnan(e) and not math.isnan(meter.last_e) and e < meter.last_e:
            if meter.last_e - e >= rules.register_back_kwh:
                data = {"cause": "register_back", "before": meter.last_e, "after": e}
                self._sign(meter_id, meter, "theft_suspected", ts, data, events)
            meter.last_e = math.nan  # no energy for this interval; the new register is the base
            meter.hour_e = math.nan

        self._hours_and_care(meter_id, meter, reading, ts, e, power, rules, events)
        if meter.episodes:
            self._expire(meter_id, meter, ts, rules, events)
        meter.last_ts = ts
        meter.last_i = current if current is not None else math.nan
        if not math.isnan(e):
            meter.last_e = e
        return events

    def _reassign(
        self, meter_id: str, meter: _Meter, account_id: str | None, events: list[SafetyEvent]
    ) -> None:
        """A meter moved to another household: close its episodes, forget the learned day."""
        for kind in list(meter.episodes or ()):
            self._close(meter_id, meter, kind, max(meter.last_ts, 0), events)
        meter.account_id = account_id
        meter.usual, meter.hours_seen, meter.base = None, 0, 0.0
        meter.last_active, meter.missing = -1, 0.0

    def _meter_events(
        self,
        meter_id: str,
        meter: _Meter,
        reading: WatchReading,
        ts: int,
        events: list[SafetyEvent],
    ) -> None:
        names = reading.events
        if "arc_fault" in names:
            opened = self._sign(meter_id, meter, "arc_fault", ts, {}, events)
            if opened and not reading.own_cut and reading.wanted_relay == "on":
                self._cut(meter_id, meter, "arc_fault", events)
        tamper = sorted(TAMPER_EVENTS.intersection(names))
        if tamper:
            self._sign(meter_id, meter, "tamper", ts, {"events": tamper}, events)
        if "reverse_energy" in names:
            self._sign(meter_id, meter, "theft_suspected", ts, {"cause": "reverse_energy"}, events)

    def _overload(
        self,
        meter_id: str,
        meter: _Meter,
        reading: WatchReading,
        current: float,
        rated: float,
        rules: SafetyRules,
        events: list[SafetyEvent],
    ) -> None:
        ts = reading.ts
        over = current >= rules.overload_factor * rated or "overcurrent" in reading.events
        if not over:
            meter.over_since = meter.severe_since = meter.long_since = -1
            return
        if meter.over_since < 0:
            meter.over_since = ts
        if ts - meter.over_since >= rules.overload_s:
            data = {"current_a": round(current, 2), "rated_current_a": rated}
            self._sign(meter_id, meter, "overload", ts, data, events)
        if current >= rules.cut_factor * rated:
            if meter.severe_since < 0:
                meter.severe_since = ts
        else:
            meter.severe_since = -1
        if current >= rules.cut_long_factor * rated:
            if meter.long_since < 0:
                meter.long_since = ts
        else:
            meter.long_since = -1
        episode = meter.episodes.get("overload") if meter.episodes else None
        if (
            episode is not None
            and not episode.cut
            and not reading.own_cut
            and reading.wanted_relay == "on"
            and (
                (meter.severe_since >= 0 and ts - meter.severe_since >= rules.cut_s)
                or (meter.long_since >= 0 and ts - meter.long_since >= rules.cut_long_s)
            )
        ):
            episode.cut = True
            self._cut(meter_id, meter, "overload", events)

    def _surge(
        self,
        meter_id: str,
        meter: _Meter,
        ts: int,
        current: float,
        rated: float,
        rules: SafetyRules,
        events: list[SafetyEvent],
    ) -> None:
        # The lowest current seen within the window before this reading (approximately: the
        # previous reading's when the lowest is older than the window).
        if meter.ref_ts < 0 or ts - meter.ref_ts > rules.surge_window_s:
            if meter.last_ts >= 0 and ts - meter.last_ts <= rules.surge_window_s:
                meter.ref_ts, meter.ref_i = meter.last_ts, meter.last_i
            else:
                meter.ref_ts, meter.ref_i = ts, current
        rise = current - meter.ref_i
        if rise >= rules.surge_fraction * rated:
            data = {"rise_a": round(rise, 2), "current_a": round(current, 2), "rated": rated}
            self._sign(meter_id, meter, "surge", ts, data, events)
        if not current > meter.ref_i:
            meter.ref_ts, meter.ref_i = ts, current

    def _gap(
        self,
        meter_id: str,
        meter: _Meter,
        ts: int,
        current: float,
        neutral: float,
        rules: SafetyRules,
        events: list[SafetyEvent],
    ) -> None:
        gap = abs(current - neutral)
        if gap > rules.theft_gap_a and gap > rules.theft_gap_ratio * max(current, neutral):
            if meter.gap_since < 0:
                meter.gap_since = ts
            if ts - meter.gap_since >= rules.theft_gap_s:
                data = {"cause": "neutral_gap", "current_a": current, "neutral_current_a": neutral}
                self._sign(meter_id, meter, "theft_suspected", ts, data, events)
        else:
            meter.gap_since = -1

    # -- hours, care, areas ----------------------------------------------------------------

    def _local(self, hour: int) -> int:
        local = self._hours.get(hour)
        if local is None:
            if len(self._hours) > 4_096:
                self._hours.clear()
            local = self._hours[hour] = _local_hour(hour, self.timezone)
        return local

    def _care_eligible(self, meter: _Meter) -> bool:
        """Return whether the care watch looks at this meter's household now."""
        flags = self.household(meter.account_id)
        return meter.account_id is not None and flags.care and not flags.vacant and not meter.cut

    def _hours_and_care(
        self,
        meter_id: str,
        meter: _Meter,
        reading: WatchReading,
        ts: int,
        e: float,
        power: float | None,
        rules: SafetyRules,
        events: list[SafetyEvent],
    ) -> None:
        hour = ts // _HOUR
        if math.isnan(e):
            return
        if meter.hour < 0 or math.isnan(meter.hour_e) or math.isnan(meter.last_e):
            # A first reading, or a register that went back: this hour is known only in part.
            meter.hour, meter.hour_e, meter.partial = hour, e, ts % _HOUR != 0
        elif hour != meter.hour:
            if ts - meter.last_ts > MAX_GAP_S:
                # The hours in between are unknown, and this one in part.
                meter.hour, meter.hour_e, meter.partial = hour, e, ts % _HOUR != 0
                meter.spiked, meter.hour_min = False, math.inf
            else:
                span = ts - meter.last_ts
                while meter.hour < hour:
                    boundary = (meter.hour + 1) * _HOUR
                    at = meter.last_e + (e - meter.last_e) * (boundary - meter.last_ts) / span
                    if meter.partial:
                        meter.partial, meter.spiked, meter.hour_min = False, False, math.inf
                    else:
                        kwh = at - meter.hour_e
                        self._hour_done(meter_id, meter, meter.hour, kwh, reading, rules)
                    meter.hour, meter.hour_e = meter.hour + 1, at
        if power is not None and power < meter.hour_min:
            meter.hour_min = power
        if (
            power is not None
            and meter.usual is not None
            and power - meter.base >= rules.care_spike_w
        ):
            meter.spiked = True  # an appliance switched on: somebody is at home
            self._active(meter_id, meter, ts, events)
        if not self._care_eligible(meter):
            meter.missing = 0.0
            meter.last_active = ts
            if meter.episodes and "inactivity" in meter.episodes:
                self._close(meter_id, meter, "inactivity", ts, events)
            return
        if meter.last_active < 0:
            meter.last_active = ts
        self._check_care(meter_id, meter, ts, rules, events)

    def _active(self, meter_id: str, meter: _Meter, ts: int, events: list[SafetyEvent]) -> None:
        meter.last_active = max(meter.last_active, ts)
        meter.missing = 0.0
        if meter.episodes and "inactivity" in meter.episodes:
            self._close(meter_id, meter, "inactivity", ts, events)

    def _hour_done(
        self,
        meter_id: str,
        meter: _Meter,
        hour: int,
        kwh: float,
        reading: WatchReading,
        rules: SafetyRules,
    ) -> None:
        """Close one hour of a meter: the area's balance, the care watch, the usual day.

        `usual` holds the household's usual use per hour of the local day (Wh, [0:24]) and
        how often it is active in that hour ([24:48], 0 to 1).
        """
        wh = max(0.0, kwh * 1000.0)
        spiked, meter.spiked = meter.spiked, False
        low, meter.hour_min = meter.hour_min, math.inf
        local = self._local(hour)
        usual = meter.usual
        if meter.area is not None:
            self._area_hour(meter_id, meter, hour, kwh, usual[local] if usual else math.nan)
        if meter.account_id is None:
            return
        end = (hour + 1) * _HOUR
        # Somebody is at home: an appliance switched on, more energy than the base load, or
        # a higher floor (the lowest power of the hour: lights, a television, a computer).
        floor_up = low < math.inf and low - meter.floor >= rules.care_floor_w
        energy_up = wh - meter.base >= rules.care_min_wh
        active = spiked or floor_up or energy_up
        # When the activity was: an appliance at its reading (already noted), a raised floor
        # all the hour long, more energy somewhere in it (its middle).
        seen = end if floor_up else end - _HOUR // 2 if energy_up else -1
        if (
            usual is not None
            and self._care_eligible(meter)
            and meter.hours_seen >= rules.care_learn_days * 24
        ):
            if active:
                meter.last_active = max(meter.last_active, seen)
                meter.missing = 0.0
            elif self.friendly is None or not self.friendly(meter.account_id, end - 1):
                meter.missing += usual[24 + local]
        # Learn the household's usual day: not from hours of our own cut, of a vacant flat,
        # or of an open inactivity episode (the learned day must stay the lived one).
        flags = self.household(meter.account_id)
        if meter.cut or flags.vacant or (meter.episodes and "inactivity" in meter.episodes):
            return
        if usual is None:
            meter.usual = array("f", [wh] * 24 + [1.0 if active else 0.0] * 24)
            meter.base = meter.day_min = wh
            meter.floor = meter.floor_day = low if low < math.inf else 0.0
            meter.hours_seen = 1
            return
        days = meter.hours_seen // 24
        rate = max(0.15, 1.0 / (days + 1))
        usual[local] += rate * (wh - usual[local])
        usual[24 + local] += rate * ((1.0 if active else 0.0) - usual[24 + local])
        # The base load: the quietest hour of each day (standby and the fridge), averaged.
        meter.day_min = min(meter.day_min, wh)
        meter.floor_day = min(meter.floor_day, low)
        meter.hours_seen += 1
        if meter.hours_seen % 24 == 0:
            step = max(0.3, 1.0 / days if days else 1.0)
            meter.base += step * (meter.day_min - meter.base)
            if meter.floor_day < math.inf:
                meter.floor += step * (meter.floor_day - meter.floor)
            meter.day_min = meter.floor_day = math.inf
        elif days == 0:
            meter.base = meter.day_min
            meter.floor = meter.floor_day if meter.floor_day < math.inf else meter.floor

    def _check_care(
        self,
        meter_id: str,
        meter: _Meter,
        now: int,
        rules: SafetyRules,
        events: list[SafetyEvent],
    ) -> None:
        usual = meter.usual
        if (
            usual is None
            or meter.hours_seen < rules.care_learn_days * 24
            or (meter.episodes and ("inactivity" in meter.episodes or "offline" in meter.episodes))
            or now - meter.last_active < rules.care_hours * _HOUR
        ):
            return
        day = sum(usual[24:])  # the hours a usual day is active in
        if day <= 0 or meter.missing < rules.care_missing_share * day:
            return
        data = {
            "hours": round((now - meter.last_active) / _HOUR, 1),
            "missed_active_hours": round(meter.missing, 1),
            "usual_active_hours": round(day, 1),
        }
        self._open(meter_id, meter, "inactivity", meter.last_active, now, data, events)

    def _area_hour(
        self, meter_id: str, meter: _Meter, hour: int, kwh: float, usual_wh: float
    ) -> None:
        area = self._areas.get(meter.area or "")
        if area is None:
            return
        slot = area.hours.get(hour)
        if slot is None:
            if len(area.hours) > 48:
                return
            slot = area.hours[hour] = _Slot()
        if meter.master:
            slot.master = kwh
        elif meter_id not in slot.uses:
            slot.members += kwh
            slot.uses[meter_id] = (kwh * 1000.0, usual_wh)

    # -- ticks -----------------------------------------------------------------------------

    def tick(self, now: int) -> list[SafetyEvent]:
        """Let time pass: offline meters, care alarms of silent hours, area balances."""
        events: list[SafetyEvent] = []
        for meter_id, meter in self._meters.items():
            if meter.last_rx < 0:
                continue
            rules = self.rules_for(meter.account_id)
            if now - meter.last_rx >= rules.offline_s and not (
                meter.episodes and "offline" in meter.episodes
            ):
                data = {"last_seen": meter.last_rx}
                self._open(meter_id, meter, "offline", meter.last_rx, now, data, events)
                if meter.episodes and "inactivity" in meter.episodes:
                    self._close(meter_id, meter, "inactivity", now, events)
            elif meter.usual is not None and self._care_eligible(meter):
                self._check_care(meter_id, meter, now, rules, events)
        for area_id, area in self._areas.items():
            self._area_tick(area_id, area, now, events)
        return events

    def _area_tick(self, area_id: str, area: _Area, now: int, events: list[SafetyEvent]) -> None:
        rules = self.rules
        ready = now // _HOUR - 1  # an hour is judged once the next one has passed too
        for hour in sorted(area.hours):
            if hour >= ready:
                break
            slot = area.hours.pop(hour)
            if math.isnan(slot.master) or len(slot.uses) < len(area.members) or slot.master <= 0:
                continue  # incomplete: a meter was silent; the hour tells nothing
            self._area_judge(area_id, area, hour, slot, rules, events)

    def _area_judge(
        self,
        area_id: str,
        area: _Area,
        hour: int,
        slot: _Slot,
        rules: SafetyRules,
        events: list[SafetyEvent],
    ) -> None:
        """Judge one complete hour of an area's energy balance.

        The loss of each hour is compared with the area's usual loss in that hour of the day
        (common lighting and lifts make nights lossier than days); the excess over the last
        `loss_window_h` hours, as a share of the master's energy, is the sign.
        """
        local = self._local(hour)
        master = slot.master
        loss = master - slot.members
        learning = area.learned < rules.loss_learn_hours
        usual = area.usual
        if learning:
            rate = 1.0 / (1 + area.learned // 24)
            usual[local] += max(0.15, rate) * (loss - usual[local])
            area.learned += 1
        area.window.append((master, loss, loss - usual[local]))
        if len(area.window) > rules.loss_window_h:
            del area.window[0]
        area.recent.append((loss - usual[local], master, slot.uses))
        if len(area.recent) > 24:
            del area.recent[0]
        total = sum(item[0] for item in area.window)
        if total <= 0:
            return
        area.rate = sum(item[1] for item in area.window) / total
        if learning or len(area.window) < rules.loss_window_h:
            return
        excess = sum(item[2] for item in area.window) / total
        end = (hour + 1) * _HOUR
        limit = max(rules.loss_margin, rules.loss_dev_factor * area.dev)
        if excess > limit:
            area.over += 1
            area.under = 0
            if area.episode is None and area.over >= rules.loss_hours:
                area.episode = _Episode(end, end)
                events.append(
                    AlarmStarted(
                        "line_loss",
                        area.master,
                        None,
                        end,
                        {
                            "area": area_id,
                            "loss_rate": round(area.rate, 4),
                            "excess_rate": round(excess, 4),
                            "suspects": self._suspects(area, limit),
                        },
                    )
                )
            elif area.episode is not None:
                area.episode.last = end
            return
        area.over = 0
        usual[local] += 0.15 * (loss - usual[local])
        area.dev += (abs(excess) - area.dev) / 48
        if area.episode is not None:
            area.under += 1
            if area.under >= rules.loss_hours:
                started = area.episode.started
                area.episode = None
                events.append(AlarmCleared("line_loss", area.master, None, started, end - started))

    def _suspects(self, area: _Area, limit: float) -> list[dict[str, Any]]:
        """Return the members whose use fell when the loss rose, the likeliest first.

        The area's last hours are split into those whose own loss was above the usual by more
        than `limit` of the master's energy (the loss rose) and the others; a member's `fall`
        is how far its use was below its usual in the first, less how far in the others.
        """
        rose = [item for item in area.recent if item[0] > 0.5 * limit * item[1]]
        other = [item for item in area.recent if item[0] <= 0.5 * limit * item[1]]
        found: list[tuple[float, str, float]] = []
        for meter_id in area.members:
            during, during_wh = _fall(meter_id, rose)
            before, _ = _fall(meter_id, other)
            score = _explains(meter_id, rose) + 0.25 * (during - before)
            if score > 0:
                found.append((score, meter_id, during_wh))
        found.sort(reverse=True)
        result: list[dict[str, Any]] = []
        for score, meter_id, fall_wh in found[:5]:
            meter = self._meters.get(meter_id)
            result.append(
                {
                    "meter_id": meter_id,
                    "account_id": meter.account_id if meter else None,
                    "fall": round(score, 2),
                    "fall_wh": round(fall_wh),
                }
            )
        return result

    # -- episodes --------------------------------------------------------------------------

    def _sign(
        self,
        meter_id: str,
        meter: _Meter,
        kind: AlarmKind,
        ts: int,
        data: Mapping[str, Any],
        events: list[SafetyEvent],
    ) -> bool:
        """Record a sign of `kind`; return whether it opened an episode."""
        return self._open(meter_id, meter, kind, ts, ts, data, events)

    def _open(
        self,
        meter_id: str,
        meter: _Meter,
        kind: AlarmKind,
        started: int,
        ts: int,
        data: Mapping[str, Any],
        events: list[SafetyEvent],
    ) -> bool:
        episodes = meter.episodes
        if episodes is None:
            episodes = meter.episodes = {}
        episode = episodes.get(kind)
        if episode is not None:
            episode.last = max(episode.last, ts)
            return False
        episodes[kind] = _Episode(started, ts)
        events.append(AlarmStarted(kind, meter_id, meter.account_id, started, data))
        return True

    def _close(
        self, meter_id: str, meter: _Meter, kind: AlarmKind, ts: int, events: list[SafetyEvent]
    ) -> None:
        if not meter.episodes or kind not in meter.episodes:
            return
        episode = meter.episodes.pop(kind)
        if not meter.episodes:
            meter.episodes = None
        duration = max(0, ts - episode.started)
        events.append(AlarmCleared(kind, meter_id, meter.account_id, episode.started, duration))

    def _expire(
        self, meter_id: str, meter: _Meter, ts: int, rules: SafetyRules, events: list[SafetyEvent]
    ) -> None:
        for kind, episode in list((meter.episodes or {}).items()):
            if kind not in SIGN_KINDS:
                continue
            quiet = rules.theft_clear_s if kind in INTERFERENCE_KINDS else rules.clear_s
            if ts - episode.last >= quiet:
                self._close(meter_id, meter, kind, ts, events)

    def _cut(
        self, meter_id: str, meter: _Meter, reason: AlarmKind, events: list[SafetyEvent]
    ) -> None:
        protected = self.household(meter.account_id).supply_protected
        events.append(ProtectiveCutWanted(meter_id, meter.account_id, reason, protected))

    # -- persistence -----------------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """Return the watch's state as plain JSON data (open episodes and what was learned)."""
        meters: dict[str, Any] = {}
        for meter_id, m in self._meters.items():
            meters[meter_id] = {
                "account": m.account_id,
                "ts": m.last_ts,
                "rx": m.last_rx,
                "e": None if math.isnan(m.last_e) else m.last_e,
                "usual": None if m.usual is None else [round(v, 2) for v in m.usual],
                "base": round(m.base, 2),
                "floor": round(m.floor, 2),
                "seen": m.hours_seen,
                "active": m.last_active,
                "missing": round(m.missing, 2),
                "episodes": {k: ep.dump() for k, ep in (m.episodes or {}).items()},
            }
        areas = {
            area_id: {
                "master": a.master,
                "members": sorted(a.members),
                "usual": [round(v, 4) for v in a.usual],
                "dev": a.dev,
                "learned": a.learned,
                "episode": None if a.episode is None else a.episode.dump(),
            }
            for area_id, a in self._areas.items()
        }
        return {"version": STATE_VERSION, "meters": meters, "areas": areas}

    def import_state(self, state: Mapping[str, Any]) -> None:
        """Restore `export_state()`'s data; SafetyError (and nothing changed) when malformed."""
        try:
            meters, areas = _parse_state(state)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            if isinstance(err, SafetyError):
                raise
            raise SafetyError(f"watch state not usable: {err!r}") from None
        old = self._meters, self._areas
        self._meters, self._areas = meters, {}
        try:
            for area_id, (master, members, mean, dev, learned, episode) in areas.items():
                self.set_area(area_id, master, members)
                area = self._areas[area_id]
                area.usual, area.dev, area.learned, area.episode = mean, dev, learned, episode
        except SafetyError:
            self._meters, self._areas = old
            raise


_NO_FLAGS: Final = HouseholdFlags()


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SafetyError(f"watch state: {value!r} is not a whole number")
    return value


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SafetyError(f"watch state: {value!r} is not a number")
    return float(value)


def _episode(value: Any) -> _Episode:
    started, last, actor, cut = value
    if actor is not None and not isinstance(actor, str):
        raise SafetyError(f"watch state: actor {actor!r} is not text")
    return _Episode(_int(started), _int(last), actor, bool(cut))


def _parse_state(
    state: Mapping[str, Any],
) -> tuple[
    dict[str, _Meter],
    dict[str, tuple[str, list[str], list[float], float, int, _Episode | None]],
]:
    if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
        raise SafetyError(f"watch state: not version {STATE_VERSION}")
    meters: dict[str, _Meter] = {}
    for meter_id, item in state["meters"].items():
        if not isinstance(meter_id, str):
            raise SafetyError("watch state: a meter id is not text")
        account = item["account"]
        if account is not None and not isinstance(account, str):
            raise SafetyError(f"watch state: account {account!r} is not text")
        m = _Meter(account)
        m.last_ts, m.last_rx = _int(item["ts"]), _int(item["rx"])
        m.last_e = math.nan if item["e"] is None else _num(item["e"])
        usual = item["usual"]
        if usual is not None:
            if len(usual) != 48:
                raise SafetyError("watch state: a usual day has 24 hours of use and of activity")
            m.usual = array("f", [_num(v) for v in usual])
        m.base, m.hours_seen = _num(item["base"]), _int(item["seen"])
        m.floor = _num(item["floor"])
        m.last_active, m.missing = _int(item["active"]), _num(item["missing"])
        episodes: dict[AlarmKind, _Episode] = {}
        for kind, value in item["episodes"].items():
            if kind not in ALARM_KINDS or kind == "line_loss":
                raise SafetyError(f"watch state: unknown alarm kind {kind!r}")
            episodes[cast("AlarmKind", kind)] = _episode(value)
        m.episodes = episodes or None
        meters[meter_id] = m
    areas: dict[str, tuple[str, list[str], list[float], float, int, _Episode | None]] = {}
    for area_id, item in state["areas"].items():
        members = item["members"]
        if not isinstance(members, list) or not all(isinstance(x, str) for x in members):
            raise SafetyError("watch state: area members are meter ids")
        master = item["master"]
        if not isinstance(master, str):
            raise SafetyError("watch state: an area master is a meter id")
        episode = None if item["episode"] is None else _episode(item["episode"])
        usual = item["usual"]
        if not isinstance(usual, list) or len(usual) != 24:
            raise SafetyError("watch state: an area's usual day has 24 hours")
        areas[str(area_id)] = (
            master,
            members,
            [_num(v) for v in usual],
            _num(item["dev"]),
            _int(item["learned"]),
            episode,
        )
    return meters, areas
