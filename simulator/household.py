"""A pure, deterministic household load model.

Everything here is integer watts over integer UNIX seconds, so the energy a household uses
between two instants is an exact integer number of joules (watt-seconds): the meter's register
never drifts and never needs a float. `power_at(t)` and `energy_j(t0, t1)` agree exactly:
`energy_j(t0, t1) == sum(power_at(t) for t in range(t0, t1))`.

A household's load is the sum of
- a standby load (router, chargers, set-top box),
- a fridge compressor cycling on and off,
- an hourly activity curve (lighting, TV, computers, small cooking) with morning and evening
  peaks, varied per household, per day and per hour,
- appliance events: kettle, rice cooker, induction hob, microwave, washing machine, electric
  water heater, air conditioner in summer, electric heater in winter,
- for the `overload` kind, loads past the meter's rated current for minutes at a time.

Randomness comes from `random.Random` seeded with strings (hashed with SHA-512 by the standard
library, so results do not depend on PYTHONHASHSEED): the same seed always gives the same
household and the same day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import datetime as dt
import math
import random
from typing import Final

DAY: Final = 86_400
HOUR: Final = 3_600

#: Scenario kinds a household can have. `offline`, `reset` and `garbage` are meter behaviours;
#: their households use the ordinary load model.
KINDS: Final = (
    "ordinary",
    "elderly-inactive",
    "vacant",
    "overload",
    "theft",
    "offline",
    "reset",
    "garbage",
)

#: Nominal single-phase voltage in China (GB/T 156).
NOMINAL_VOLTAGE: Final = 220

# Average "everything else" load per local hour of day, in watts, for a typical apartment:
# lights, TV, computers, router peaks, small cooking. Night low, morning and evening peaks.
_HOURLY_SHAPE: Final = (
    25, 20, 15, 15, 15, 20, 70, 170, 120, 60, 55, 110,
    150, 80, 55, 55, 65, 150, 290, 370, 390, 340, 210, 80,
)  # fmt: skip

TAMPER_KINDS: Final = ("cover_open", "magnetic_tamper")


@dataclass(frozen=True, slots=True)
class Appliance:
    """One appliance switched on over [start, end) UNIX seconds, drawing `watts`."""

    name: str
    start: int
    end: int
    watts: int


@dataclass(frozen=True, slots=True)
class Day:
    """What happens in a household on one local day (cached; a pure function of the seed)."""

    index: int
    hourly: tuple[int, ...]
    appliances: tuple[Appliance, ...]
    tamper: tuple[tuple[int, str], ...]


@dataclass(slots=True)
class Household:
    """One household's load; build with `Household.create`.

    `utc_offset_s` places the daily curve in local time (China Standard Time by default; China
    has no daylight saving time).
    """

    seed: int
    kind: str
    rated_current_a: int
    utc_offset_s: int
    standby_w: int
    fridge_w: int
    fridge_period_s: int
    fridge_on_s: int
    fridge_phase_s: int
    scale: float
    has_ac: bool
    has_heater: bool
    has_water_heater: bool
    #: Share of the true load that a theft bypass lets the meter see, in per mille.
    metered_permille: int
    _days: dict[int, Day] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def create(
        cls,
        seed: int,
        kind: str = "ordinary",
        *,
        rated_current_a: int | None = None,
        utc_offset_s: int = 8 * HOUR,
    ) -> Household:
        """Return the household that `seed` and `kind` describe (always the same one)."""
        if kind not in KINDS:
            raise ValueError(f"unknown household kind {kind!r}; expected one of {', '.join(KINDS)}")
        rng = random.Random(f"household:{seed}")
        rated = rated_current_a or rng.choice((40, 40, 60))
        standby = rng.randint(3, 8) if kind == "vacant" else rng.randint(8, 35)
        period = rng.randint(1_800, 3_600)
        return cls(
            seed=seed,
            kind=kind,
            rated_current_a=rated,
            utc_offset_s=utc_offset_s,
            standby_w=standby,
            fridge_w=0 if kind == "vacant" else rng.randint(70, 150),
            fridge_period_s=period,
            fridge_on_s=int(period * rng.uniform(0.3, 0.5)),
            fridge_phase_s=rng.randrange(period),
            scale=rng.uniform(0.6, 1.6),
            has_ac=rng.random() < 0.85,
            has_heater=rng.random() < 0.5,
            has_water_heater=rng.random() < 0.65,
            metered_permille=rng.randint(300, 600) if kind == "theft" else 1_000,
        )

    # -- time helpers ---------------------------------------------------------------------

    def day_index(self, t: int) -> int:
        """Return the local day number (days since 1970-01-01 local) of UNIX second `t`."""
        return (t + self.utc_offset_s) // DAY

    def day_start(self, day: int) -> int:
        """Return the UNIX second at which local day `day` begins."""
        return day * DAY - self.utc_offset_s

    @property
    def active(self) -> bool:
        """Return whether anyone lives a normal life here (curve and appliances)."""
        return self.kind not in ("elderly-inactive", "vacant")

    # -- the load -------------------------------------------------------------------------

    def power_at(self, t: int) -> int:
        """Return the household's true load in watts during second [t, t+1)."""
        watts = self.standby_w + self._fridge_at(t)
        if not self.active:
            return watts
        day = self.day(self.day_index(t))
        watts += day.hourly[(t - self.day_start(day.index)) // HOUR]
        for index in (day.index - 1, day.index):
            for app in self.day(index).appliances:
                if app.start <= t < app.end:
                    watts += app.watts
        return watts

    def energy_j(self, t0: int, t1: int) -> int:
        """Return the exact energy in joules used over [t0, t1) (0 when t1 <= t0)."""
        if t1 <= t0:
            return 0
        joules = self.standby_w * (t1 - t0)
        joules += self.fridge_w * (self._fridge_on_before(t1) - self._fridge_on_before(t0))
        if not self.active:
            return joules
        first, last = self.day_index(t0), self.day_index(t1 - 1)
        for index in range(first, last + 1):
            day = self.day(index)
            start = self.day_start(index)
            h0 = max(0, (t0 - start) // HOUR)
            h1 = min(23, (t1 - 1 - start) // HOUR)
            for hour in range(h0, h1 + 1):
                a = max(t0, start + hour * HOUR)
                b = min(t1, start + (hour + 1) * HOUR)
                joules += day.hourly[hour] * (b - a)
        for index in range(first - 1, last + 1):
            for app in self.day(index).appliances:
                a, b = max(t0, app.start), min(t1, app.end)
                if b > a:
                    joules += app.watts * (b - a)
        return joules

    def overcurrent_between(self, t0: int, t1: int) -> bool:
        """Return whether an overload appliance ran at some second of [t0, t1)."""
        if self.kind != "overload" or t1 <= t0:
            return False
        for index in range(self.day_index(t0) - 1, self.day_index(t1 - 1) + 1):
            for app in self.day(index).appliances:
                if app.name == "overload" and app.start < t1 and app.end > t0:
                    return True
        return False

    def tamper_between(self, t0: int, t1: int) -> list[str]:
        """Return the tamper events (theft kind only) that happened in [t0, t1), in order."""
        if self.kind != "theft" or t1 <= t0:
            return []
        found: list[str] = []
        for index in range(self.day_index(t0), self.day_index(t1 - 1) + 1):
            found += [name for when, name in self.day(index).tamper if t0 <= when < t1]
        return found

    def _fridge_at(self, t: int) -> int:
        if not self.fridge_w:
            return 0
        return (
            self.fridge_w
            if (t + self.fridge_phase_s) % self.fridge_period_s < self.fridge_on_s
            else 0
        )

    def _fridge_on_before(self, t: int) -> int:
        """Return how many seconds the compressor ran over [-phase, t): a prefix count."""
        if not self.fridge_w:
            return 0
        cycles, rest = divmod(t + self.fridge_phase_s, self.fridge_period_s)
        return cycles * self.fridge_on_s + min(rest, self.fridge_on_s)

    # -- one day --------------------------------------------------------------------------

    def day(self, index: int) -> Day:
        """Return local day `index` (computed once, then cached; a few days are kept)."""
        cached = self._days.get(index)
        if cached is not None:
            return cached
        if len(self._days) > 8:
            self._days.clear()
        made = self._make_day(index)
        self._days[index] = made
        return made

    def _make_day(self, index: int) -> Day:
        rng = random.Random(f"day:{self.seed}:{index}")
        start = self.day_start(index)
        date = dt.date(1970, 1, 1) + dt.timedelta(days=index)
        weekend = date.weekday() >= 5
        hourly: tuple[int, ...]
        if not self.active:
            hourly = (0,) * 24
        else:
            mood = rng.uniform(0.7, 1.3)
            hourly = tuple(
                round(
                    base
                    * self.scale
                    * mood
                    * (1.35 if weekend and 9 <= hour <= 17 else 1.0)
                    * rng.uniform(0.75, 1.25)
                )
                for hour, base in enumerate(_HOURLY_SHAPE)
            )
        apps: list[Appliance] = []

        def add(
            name: str, at_hour: float, spread_h: float, dur: tuple[int, int], watts: tuple[int, int]
        ) -> None:
            begin = start + int(max(0.0, rng.gauss(at_hour, spread_h)) * HOUR)
            apps.append(Appliance(name, begin, begin + rng.randint(*dur), rng.randint(*watts)))

        if self.active:
            for at in rng.sample((7.0, 13.0, 19.5, 21.5), rng.randint(0, 3)):
                add("kettle", at, 0.7, (150, 330), (1_800, 2_200))
            for at in (11.3, 17.6):
                if rng.random() < 0.7:
                    add("rice_cooker", at, 0.4, (1_500, 2_400), (600, 800))
            if rng.random() < 0.5:
                add("induction_hob", rng.choice((11.8, 18.2)), 0.4, (600, 1_800), (1_500, 2_100))
            for _ in range(rng.randint(0, 2)):
                add("microwave", rng.choice((7.5, 12.2, 18.8)), 0.5, (60, 300), (900, 1_100))
            if rng.random() < (0.6 if weekend else 0.35):
                add("washing_machine", rng.choice((9.5, 20.0)), 0.8, (2_700, 3_600), (350, 500))
            if self.has_water_heater and rng.random() < 0.8:
                add(
                    "water_heater",
                    rng.choice((7.0, 21.0, 21.5)),
                    0.8,
                    (1_200, 3_600),
                    (2_000, 3_000),
                )
            summer = date.month in (6, 7, 8, 9) or (date.month in (5, 10) and rng.random() < 0.3)
            if self.has_ac and summer:
                add("air_conditioner", 14.0, 1.5, (3_600, 4 * HOUR), (800, 1_600))
                add("air_conditioner", 22.0, 0.7, (3 * HOUR, 7 * HOUR), (600, 1_200))
            winter = date.month in (12, 1, 2) or (date.month in (11, 3) and rng.random() < 0.4)
            if self.has_heater and winter:
                add("electric_heater", 19.5, 1.0, (HOUR, 3 * HOUR), (1_500, 2_000))
        if self.kind == "overload":
            # Old wiring: a heater, hob, water heater and oven on together, past the rating.
            limit = self.rated_current_a * NOMINAL_VOLTAGE
            for _ in range(rng.randint(4, 7)):
                begin = start + rng.randint(7 * HOUR, 23 * HOUR)
                watts = int(limit * rng.uniform(1.15, 1.45))
                apps.append(Appliance("overload", begin, begin + rng.randint(180, 900), watts))
        tamper: list[tuple[int, str]] = []
        if self.kind == "theft":
            tamper = sorted(
                (start + rng.randrange(DAY), rng.choice(TAMPER_KINDS))
                for _ in range(rng.randint(1, 3))
            )
        return Day(index, hourly, tuple(apps), tuple(tamper))

    # -- what a meter measures ------------------------------------------------------------

    def voltage_at(self, t: int, load_w: int) -> float:
        """Return the supply voltage at `t`: higher at night, a little sag under load."""
        local = (t + self.utc_offset_s) % DAY
        swing = 5.0 * math.cos(2 * math.pi * (local - 3.5 * HOUR) / DAY)
        noise = ((t * 2_654_435_761 + self.seed) % 1_000) / 1_000 - 0.5
        return round(NOMINAL_VOLTAGE + 1.5 + swing - load_w / 1_500 + noise, 1)


def power_factor(load_w: int) -> float:
    """Return a plausible power factor: electronics are poor, heating loads are resistive."""
    if load_w <= 0:
        return 1.0
    return round(0.86 + 0.13 * min(1.0, load_w / 3_000), 2)
