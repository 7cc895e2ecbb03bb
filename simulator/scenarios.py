"""Labelled ground truth for the safety and care watch: communities in simulated time.

`build(seed, homes=..., days=...)` returns a `Scenario`: households on the simulator's load
model (`simulator.household.Household`), grouped into areas behind master meters, with
ordinary days made varied (early and late risers, night-shift workers, holidays on which
everybody sleeps in, trips away) and with injected episodes, each labelled with its kind, its
meter and its true start and end (`Label`):

| label kind | detail | what is injected |
|---|---|---|
| overload | stepwise, severe | appliances added a minute apart past the rated current, 5-20 min |
| surge | step | a load of 65-85 % of the rated current switched on at once, below the rating |
| arc_fault | report | the meter reports `arc_fault` |
| theft_suspected | neutral_gap | a live-terminal bypass: the meter sees 30-60 %, the neutral all |
| theft_suspected | reverse_energy | the meter reports `reverse_energy`, power negative |
| theft_suspected | register_reset | the register goes back to 0 |
| theft_suspected | consumption_while_off | our cut is in force, the register keeps rising |
| tamper | cover_open, magnetic_tamper | the meter reports it |
| line_loss | bypass | a bypass both wires around the meter: seen only by the master meter |
| inactivity | person_stops | the person stops: only standby and the fridge from then on |
| offline | silent | the meter is off the network for 2-8 h, then sends its backlog |

and labelled periods in which no alarm is right (`Quiet`): our own cuts (`own_cut`), flats
marked vacant (`vacant`: the household is away and the operator set the flag) and trips of
households that did not opt in to care (`travel`).

`Scenario.step(t)` returns the readings of every meter at simulated second `t` (a backlog
after an outage comes at once, oldest first, all `received` at `t`) and `Scenario.flags(t)`
the flag changes the operator makes at `t`. A `Scenario` is a pure function of its seed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
import datetime as dt
from decimal import Decimal
import random
from typing import Final

from simulator.household import DAY, HOUR, NOMINAL_VOLTAGE, Household, power_factor

#: The first days are ordinary everywhere: the watch learns each household's usual day.
LEARN_DAYS: Final = 4
_MILLI: Final = Decimal("0.001")


@dataclass(frozen=True, slots=True)
class Label:
    """An injected episode: the alarm the watch should raise, and when it truly began."""

    kind: str
    detail: str
    meter_id: str
    account_id: str | None
    start: int
    end: int
    #: The meter the alarm is raised on (an area's master meter for line loss).
    alarm_meter: str
    #: For line loss: the household that steals (it should be ranked first).
    suspect: str | None = None
    #: A theft that also takes energy past the meter: the area's line loss may rise too,
    #: so a line-loss alarm on this master meter over the theft is right (not required).
    area_master: str | None = None


@dataclass(frozen=True, slots=True)
class Quiet:
    """A period in which this household should raise no care or theft alarm."""

    why: str  # own_cut, vacant, travel
    meter_id: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Reading:
    """What one meter reports at one instant (the watch's input is made from it)."""

    meter_id: str
    account_id: str | None
    ts: int
    received: int
    energy_kwh: Decimal
    power_w: float
    current_a: float
    neutral_current_a: float | None
    relay: str
    own_cut: bool
    events: tuple[str, ...]
    rated_current_a: float


@dataclass(slots=True)
class _Extra:
    start: int
    end: int
    watts: int


@dataclass(slots=True)
class Home:
    """One household and its meter, with what happens to it."""

    meter_id: str
    account_id: str
    area: str
    house: Household
    #: The same flat with nobody living a day (standby and the fridge only).
    empty: Household
    shift_s: int
    care: bool
    supply_protected: bool
    register_j: int = 0
    last_t: int | None = None
    extras: list[_Extra] = field(default_factory=list)
    away: list[tuple[int, int]] = field(default_factory=list)
    stops_at: int | None = None
    #: (start, end, metered per mille, neutral sees all)
    thefts: list[tuple[int, int, int, bool]] = field(default_factory=list)
    cuts: list[tuple[int, int, bool]] = field(default_factory=list)  # (start, end, bypassed)
    offline: list[tuple[int, int]] = field(default_factory=list)
    resets: list[int] = field(default_factory=list)
    reports: dict[int, tuple[str, ...]] = field(default_factory=dict)
    reverse: list[tuple[int, int]] = field(default_factory=list)
    backlog: list[Reading] = field(default_factory=list)
    #: Protective cuts the caller carried out: (start, end).
    protective: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class Area:
    """A building behind a master meter."""

    area_id: str
    master_id: str
    members: list[Home]
    common_w: int
    loss_permille: int
    register_j: int = 0


@dataclass(slots=True)
class Scenario:
    """A labelled community in simulated time."""

    seed: int
    start: int
    end: int
    interval: int
    homes: list[Home]
    areas: list[Area]
    labels: list[Label]
    quiet: list[Quiet]
    holidays: frozenset[int]
    #: (time, account id, vacant?) flag changes the operator makes.
    flag_changes: list[tuple[int, str, bool]]

    @property
    def household_days(self) -> float:
        """Return the number of household-days simulated."""
        return len(self.homes) * (self.end - self.start) / DAY

    def times(self) -> Iterator[int]:
        """Yield the reading instants."""
        yield from range(self.start, self.end, self.interval)

    def flags(self, t: int) -> list[tuple[str, bool]]:
        """Return the vacant-flag changes made in [t - interval, t)."""
        return [
            (account, vacant)
            for when, account, vacant in self.flag_changes
            if t - self.interval <= when < t
        ]

    def protective_cut(self, meter_id: str, t: int, hours: float = 1.0) -> None:
        """The caller cut a meter for safety at `t`; it restores it `hours` later."""
        for home in self.homes:
            if home.meter_id == meter_id:
                home.protective.append((t, t + int(hours * HOUR)))

    def step(self, t: int) -> list[Reading]:
        """Return every reading delivered at `t` (masters included)."""
        out: list[Reading] = []
        for area in self.areas:
            total_j = 0
            for home in area.members:
                reading, true_j = _read(home, t, self.interval, self.holidays)
                total_j += true_j
                if _in(home.offline, t):
                    home.backlog.append(reading)
                    continue
                if home.backlog:
                    out += [_received(item, t) for item in home.backlog]
                    home.backlog.clear()
                out.append(reading)
            out.append(_master(area, t, self.interval, total_j))
        return out


def _in(spans: list[tuple[int, int]], t: int) -> bool:
    return any(a <= t < b for a, b in spans)


def _received(reading: Reading, t: int) -> Reading:
    return Reading(
        reading.meter_id,
        reading.account_id,
        reading.ts,
        t,
        reading.energy_kwh,
        reading.power_w,
        reading.current_a,
        reading.neutral_current_a,
        reading.relay,
        reading.own_cut,
        reading.events,
        reading.rated_current_a,
    )


def _kwh(joules: int) -> Decimal:
    return (Decimal(joules) / 3_600_000).quantize(_MILLI, rounding="ROUND_DOWN")


def _read(home: Home, t: int, interval: int, holidays: frozenset[int]) -> tuple[Reading, int]:
    """Return the meter's reading at `t` and the true energy of the interval (joules)."""
    house = home.house
    day = house.day_index(t)
    shift = home.shift_s + (2 * HOUR if day in holidays else 0)
    lived = not _in(home.away, t) and (home.stops_at is None or t < home.stops_at)
    true_w = (house if lived else home.empty).power_at(t - shift)
    for extra in home.extras:
        if extra.start <= t < extra.end:
            true_w += extra.watts
    own_cut = False
    bypassed = False
    for a, b, bypass in home.cuts:
        if a <= t < b:
            own_cut, bypassed = True, bypass
    if _in(home.protective, t):
        own_cut = True
    relay_on = not own_cut
    flowing = true_w if relay_on or bypassed else 0
    metered = flowing
    neutral: float | None = None
    for a, b, permille, neutral_all in home.thefts:
        if a <= t < b:
            metered = flowing * permille // 1000
            if neutral_all:
                neutral = flowing
    dt_s = interval if home.last_t is None else t - home.last_t
    home.last_t = t
    if t in home.resets:
        home.register_j = 0
    reverse = _in(home.reverse, t)
    if not reverse:
        home.register_j += metered * dt_s
    voltage = float(NOMINAL_VOLTAGE)
    pf = power_factor(max(metered, 1))
    current = round(metered / (voltage * pf), 2)
    neutral_a = round((neutral if neutral is not None else metered) / (voltage * pf), 2)
    events = home.reports.get(t, ())
    reading = Reading(
        home.meter_id,
        home.account_id,
        t,
        t,
        _kwh(home.register_j),
        float(-metered if reverse else metered),
        current,
        neutral_a,
        "on" if relay_on else "off",
        own_cut,
        events,
        float(house.rated_current_a),
    )
    return reading, flowing * dt_s


def _master(area: Area, t: int, interval: int, members_j: int) -> Reading:
    local_hour = ((t + 8 * HOUR) % DAY) // HOUR
    common = area.common_w * (3 if local_hour >= 18 or local_hour < 6 else 1)
    joules = members_j * (1000 + area.loss_permille) // 1000 + common * interval
    area.register_j += joules
    power = joules / interval
    return Reading(
        area.master_id,
        None,
        t,
        t,
        _kwh(area.register_j),
        power,
        round(power / NOMINAL_VOLTAGE, 2),
        None,
        "on",
        False,
        (),
        400.0,
    )


def build(
    seed: int,
    *,
    homes: int = 120,
    days: int = 10,
    interval: int = 60,
    area_size: int = 12,
    care_share: float = 0.8,
    injections: bool = True,
    kinds: Collection[str] | None = None,
) -> Scenario:
    """Return the labelled community of `seed` (always the same one).

    `kinds` injects only the episodes of these label kinds or details (`overload`,
    `neutral_gap`, ...; `own_cut` for our own cuts): a small community for a quick test has
    no room for all of them. None (the default) injects everything, as always.
    """
    if homes < area_size or days <= LEARN_DAYS + 1 or interval <= 0:
        raise ValueError("need at least one area of homes and more days than the learning")
    rng = random.Random(f"scenario:{seed}")
    month = rng.choice((1, 4, 7, 10))
    start_day = dt.date(2026, month, rng.randint(1, 10))
    start = int(dt.datetime(start_day.year, month, start_day.day, tzinfo=dt.UTC).timestamp())
    start -= 8 * HOUR  # local midnight in UTC+8
    end = start + days * DAY
    first = (start + 8 * HOUR) // DAY
    holidays = frozenset(
        first + d for d in rng.sample(range(LEARN_DAYS, days), k=min(2, days - LEARN_DAYS))
    )
    home_list: list[Home] = []
    areas: list[Area] = []
    for n in range(homes):
        house_seed = seed * 100_000 + n
        # Night-shift workers (6 %), early and late risers (the rest).
        night = rng.random() < 0.06
        shift = rng.randint(8, 11) * HOUR if night else int(rng.uniform(-2.0, 2.5) * HOUR)
        area_id = f"a{n // area_size}"
        home = Home(
            meter_id=f"{seed:04d}{n:08d}",
            account_id=f"h{seed}-{n}",
            area=area_id,
            house=Household.create(house_seed, "ordinary"),
            empty=Household.create(house_seed, "elderly-inactive"),
            shift_s=shift,
            care=rng.random() < care_share,
            supply_protected=rng.random() < 0.1,
        )
        home.register_j = rng.randint(500_000, 9_000_000) * 3_600
        home_list.append(home)
    for index in range(0, homes - homes % area_size, area_size):
        members = home_list[index : index + area_size]
        area_id = members[0].area
        areas.append(
            Area(
                area_id,
                f"M{seed:03d}{area_id}",
                members,
                common_w=rng.randint(80, 300),
                loss_permille=rng.randint(10, 40),
                register_j=rng.randint(10_000_000, 90_000_000) * 3_600,
            )
        )
    in_area = {home.meter_id for area in areas for home in area.members}
    home_list = [home for home in home_list if home.meter_id in in_area]
    if not any(home.supply_protected for home in home_list):
        home_list[-1].supply_protected = True  # at least one, for the reported protective cut
    scenario = Scenario(
        seed, start, end, interval, home_list, areas, [], [], holidays, flag_changes=[]
    )
    _trips(scenario, rng)
    if injections:
        _inject(scenario, rng, kinds)
    return scenario


def _trips(scenario: Scenario, rng: random.Random) -> None:
    """Trips away: flagged vacant (care households) or simply away (the others)."""
    learn_end = scenario.start + LEARN_DAYS * DAY
    for home in scenario.homes:
        if rng.random() >= 0.12:
            continue
        a = rng.randrange(learn_end, scenario.end - DAY, 600)
        b = min(scenario.end, a + rng.randint(1, 3) * DAY + rng.randrange(0, DAY, 600))
        home.away.append((a, b))
        if home.care:
            scenario.flag_changes += [(a, home.account_id, True), (b, home.account_id, False)]
            scenario.quiet.append(Quiet("vacant", home.meter_id, a, b))
        else:
            scenario.quiet.append(Quiet("travel", home.meter_id, a, b))


def _free(home: Home, scenario: Scenario, a: int, b: int) -> bool:
    """Return whether nothing else happens to `home` over [a - 1 day, b + 1 day)."""
    spans = [*home.away, *((x, y) for x, y, *_ in home.thefts), *home.offline]
    spans += [(x, y) for x, y, _ in home.cuts]
    spans += [(e.start, e.end) for e in home.extras]
    spans += [(t, t + 1) for t in (*home.resets, *home.reports)]
    if home.stops_at is not None:
        spans.append((home.stops_at, scenario.end))
    return all(y <= a - DAY or x >= b + DAY for x, y in spans)


def _pick(
    scenario: Scenario,
    rng: random.Random,
    hours: float,
    *,
    care: bool | None = None,
    protected: bool | None = None,
    to_end: bool = False,
) -> tuple[Home, int]:
    """Return a home with nothing else going on, and a start after the learning days.

    Nothing else goes on for `hours` from the start (to the end of the scenario with
    `to_end`: a person who stops does not start again), and a day either side.
    """
    learn_end = scenario.start + LEARN_DAYS * DAY
    for _ in range(10_000):
        home = rng.choice(scenario.homes)
        if care is not None and home.care != care:
            continue
        if protected is not None and home.supply_protected != protected:
            continue
        a = rng.randrange(learn_end, scenario.end - int(hours * HOUR) - 2 * HOUR, 60)
        if _free(home, scenario, a, scenario.end if to_end else a + int(hours * HOUR)):
            return home, a
    raise ValueError("the community is too small for its injected episodes")


def _label(
    scenario: Scenario, kind: str, detail: str, home: Home, a: int, b: int, **extra: str
) -> None:
    alarm_meter = extra.get("alarm_meter", home.meter_id)
    master = next(area.master_id for area in scenario.areas if area.area_id == home.area)
    scenario.labels.append(
        Label(
            kind,
            detail,
            home.meter_id,
            home.account_id,
            a,
            b,
            alarm_meter,
            extra.get("suspect"),
            master if detail in ("neutral_gap", "reverse_energy") else None,
        )
    )


def _inject(scenario: Scenario, rng: random.Random, kinds: Collection[str] | None = None) -> None:
    def many(count: int, *names: str) -> int:  # how many of these to inject
        return count if kinds is None or any(name in kinds for name in names) else 0

    step = scenario.interval
    limit = NOMINAL_VOLTAGE
    # overload: appliances added a minute apart past the rating
    for n in range(many(3, "overload")):
        home, a = _pick(scenario, rng, 1)
        rated_w = home.house.rated_current_a * limit
        target = rated_w * (1.6 if n == 0 else rng.uniform(1.1, 1.4))
        hold = rng.randint(5, 20) * 60 if n else 12 * 60
        a -= a % step
        loads: list[int] = []
        while sum(loads) < target:
            loads.append(rng.randint(1_500, 2_800))
        end = a + len(loads) * step + hold
        own = home.house.power_at(a - home.shift_s)
        over = a
        for k, watts in enumerate(loads):
            home.extras.append(_Extra(a + k * step, end, watts))
            if own + sum(loads[:k]) <= rated_w:
                over = a + k * step  # the step that takes the current past the rating
        _label(scenario, "overload", "severe" if n == 0 else "stepwise", home, over, end)
    for _ in range(many(3, "surge")):  # surge: one load well below the rating, at once
        home, a = _pick(scenario, rng, 1)
        rated_w = home.house.rated_current_a * limit
        watts = int(rated_w * rng.uniform(0.65, 0.8))
        # Place it where the home's own load leaves room under the rating.
        while home.house.power_at(a - home.shift_s) + watts > 0.95 * rated_w:
            a += 600
        b = a + rng.randint(2, 10) * 60
        home.extras.append(_Extra(a, b, watts))
        _label(scenario, "surge", "step", home, a, b)
    # arc faults, reported by the meter (one in a supply-protected home)
    for n in range(many(2, "arc_fault")):
        home, a = _pick(scenario, rng, 1, protected=n == 1)
        a -= a % step
        for k in range(3):
            home.reports[a + k * step] = ("arc_fault",)
        _label(scenario, "arc_fault", "report", home, a, a + 3 * step)
    # a live-terminal bypass: the neutral carries it all
    for _ in range(many(2, "theft_suspected", "neutral_gap")):
        home, a = _pick(scenario, rng, 24)
        b = a + rng.randint(6, 24) * HOUR
        home.thefts.append((a, b, rng.randint(300, 600), True))
        _label(scenario, "theft_suspected", "neutral_gap", home, a, b)
    for _ in range(many(1, "theft_suspected", "reverse_energy")):  # reverse energy
        home, a = _pick(scenario, rng, 2)
        a -= a % step
        home.reverse.append((a, a + 20 * 60))
        home.reports[a] = ("reverse_energy",)
        _label(scenario, "theft_suspected", "reverse_energy", home, a, a + 20 * 60)
    for _ in range(many(2, "theft_suspected", "register_reset")):  # the register goes back to 0
        home, a = _pick(scenario, rng, 1)
        a -= a % step
        home.resets.append(a)
        _label(scenario, "theft_suspected", "register_reset", home, a, a + step)
    for _ in range(many(1, "theft_suspected", "consumption_while_off")):
        home, a = _pick(scenario, rng, 6)  # our cut, bypassed
        b = a + rng.randint(2, 5) * HOUR
        home.cuts.append((a, b, True))
        scenario.quiet.append(Quiet("own_cut", home.meter_id, a, b))
        _label(scenario, "theft_suspected", "consumption_while_off", home, a, b)
    for _ in range(many(2, "tamper")):  # tamper reports
        home, a = _pick(scenario, rng, 1)
        a -= a % step
        home.reports[a] = (rng.choice(("cover_open", "magnetic_tamper")),)
        _label(scenario, "tamper", home.reports[a][0], home, a, a + step)
    used_areas: set[str] = set()
    # a bypass seen only by the master meter
    for _ in range(many(min(2, len(scenario.areas)), "line_loss")):
        for _ in range(1_000):
            home, a = _pick(scenario, rng, 30)
            if home.area not in used_areas:
                break
        used_areas.add(home.area)
        b = min(scenario.end, a + rng.randint(24, 48) * HOUR)
        home.thefts.append((a, b, rng.randint(300, 600), False))
        master = next(area.master_id for area in scenario.areas if area.area_id == home.area)
        _label(
            scenario,
            "line_loss",
            "bypass",
            home,
            a,
            b,
            alarm_meter=master,
            suspect=home.meter_id,
        )
    for _ in range(many(4, "inactivity")):  # the person stops
        home, a = _pick(scenario, rng, 30, care=True, to_end=True)
        home.stops_at = a
        _label(scenario, "inactivity", "person_stops", home, a, scenario.end)
    # our own cuts: nobody uses electricity, nobody should be alarmed
    for _ in range(many(3, "own_cut")):
        home, a = _pick(scenario, rng, 30, care=True)
        b = a + rng.randint(6, 30) * HOUR
        home.cuts.append((a, b, False))
        scenario.quiet.append(Quiet("own_cut", home.meter_id, a, b))
    for _ in range(many(3, "offline")):  # offline, then the backlog
        home, a = _pick(scenario, rng, 10)
        b = a + rng.randint(2, 8) * HOUR
        home.offline.append((a, b))
        _label(scenario, "offline", "silent", home, a, b)
