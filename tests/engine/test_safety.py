"""The safety and care watch: each rule at its edges, episodes, acknowledgement, restore."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from decimal import Decimal
import json
import math
from typing import Any

import pytest

from custom_components.prepaid_meter.engine.safety import (
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

T0 = 1_775_000_000 - 1_775_000_000 % 86_400  # a UTC midnight
RULES = SafetyRules()
RATED = 40.0


def reading(ts: int, **changes: Any) -> WatchReading:
    """Return an ordinary reading of meter m1 of household h1 at `ts`."""
    base: dict[str, Any] = {
        "meter_id": "m1",
        "account_id": "h1",
        "ts": ts,
        "energy_kwh": Decimal("100.000"),
        "power_w": 200.0,
        "current_a": 1.0,
        "neutral_current_a": 1.0,
        "reported_relay": "on",
        "rated_current_a": RATED,
    }
    base.update(changes)
    return WatchReading(**base)


def started(events: Iterable[SafetyEvent], kind: str | None = None) -> list[AlarmStarted]:
    """Return the episode starts (of one kind)."""
    return [e for e in events if isinstance(e, AlarmStarted) and kind in (None, e.kind)]


def cleared(events: Iterable[SafetyEvent], kind: str | None = None) -> list[AlarmCleared]:
    """Return the episode ends (of one kind)."""
    return [e for e in events if isinstance(e, AlarmCleared) and kind in (None, e.kind)]


def cuts(events: Iterable[SafetyEvent]) -> list[ProtectiveCutWanted]:
    """Return the protective cuts wanted."""
    return [e for e in events if isinstance(e, ProtectiveCutWanted)]


def feed_all(watch: SafetyWatch, readings: Iterable[WatchReading]) -> list[SafetyEvent]:
    """Feed readings (and a tick after each); return every event."""
    events: list[SafetyEvent] = []
    for item in readings:
        events += watch.feed(item)
        events += watch.tick(item.received or item.ts)
    return events


def currents(values: Iterable[float], start: int = T0, step: int = 60) -> list[WatchReading]:
    """Return readings a minute apart with these currents (live and neutral equal)."""
    return [
        reading(start + n * step, current_a=value, neutral_current_a=value, power_w=value * 220)
        for n, value in enumerate(values)
    ]


# -- rules and options ---------------------------------------------------------------------


def test_rules_from_options_and_back() -> None:
    rules = SafetyRules.from_options({"overload_s": 180, "surge_fraction": 0.5})
    assert rules.overload_s == 180 and rules.surge_fraction == 0.5
    assert rules.to_options(SafetyRules()) == {"overload_s": 180, "surge_fraction": 0.5}
    assert SafetyRules.from_options(rules.to_options()) == rules
    assert SafetyRules.from_options({"overload_s": 180.0}).overload_s == 180


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"no_such_rule": 1}, "unknown safety rule"),
        ({"overload_s": -1}, "above 0"),
        ({"overload_s": 0}, "above 0"),
        ({"overload_s": 1.5}, "whole number"),
        ({"surge_fraction": "high"}, "a number"),
        ({"surge_fraction": True}, "a number"),
        ({"clear_s": math.inf}, "whole number"),
        ({"care_missing_share": 1.5}, "below 1"),
        ({"cut_factor": 0.5}, "cut_factor"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], words: str) -> None:
    with pytest.raises(SafetyError, match=words):
        SafetyRules.from_options(options)


def test_household_rules_override_the_community() -> None:
    watch = SafetyWatch()
    watch.set_household("h1", HouseholdFlags(rules=replace(RULES, overload_s=600)))
    events = feed_all(watch, currents([41.0] * 6))  # 5 minutes over: the community's 120 s
    assert started(events, "overload") == []
    assert watch.rules_for("h2") == RULES


# -- overload ------------------------------------------------------------------------------


def test_overload_needs_the_level_and_the_duration() -> None:
    watch = SafetyWatch()
    assert started(feed_all(watch, currents([39.9] * 30))) == []  # just under, for 30 min
    watch = SafetyWatch()
    events = feed_all(watch, currents([40.5, 40.5, 5.0] * 10))  # never 120 s on end
    assert started(events, "overload") == []
    watch = SafetyWatch()
    events = feed_all(watch, currents([40.1] * 3))  # just over, for 120 s
    assert [(e.kind, e.started) for e in started(events)] == [("overload", T0 + 120)]
    assert cuts(events) == []


def test_overload_is_one_episode_and_clears_after_quiet() -> None:
    watch = SafetyWatch()
    # Over for 10 min, 5 min normal, over for 5 min: one episode; then 15 min normal.
    pattern = [45.0] * 10 + [5.0] * 5 + [45.0] * 5 + [5.0] * 20
    events = feed_all(watch, currents(pattern))
    assert len(started(events, "overload")) == 1
    [end] = cleared(events, "overload")
    assert end.started == T0 + 120
    last_sign = T0 + 19 * 60
    assert end.duration == last_sign + RULES.clear_s - end.started
    assert watch.alarms("m1") == {}


def test_severe_overload_wants_a_cut_once() -> None:
    watch = SafetyWatch()
    events = feed_all(watch, currents([58.0] * 4 + [59.0] * 10))  # 1.45 x 40 = 58 A
    [cut] = cuts(events)
    assert cut == ProtectiveCutWanted("m1", "h1", "overload", supply_protected=False)
    watch = SafetyWatch()
    events = feed_all(watch, currents([57.9] * 20))  # just under 1.45 x, 20 min
    assert cuts(events) == [] and len(started(events, "overload")) == 1


def test_long_overload_wants_a_cut() -> None:
    watch = SafetyWatch()
    events = feed_all(watch, currents([45.3] * 62))  # 1.13 x 40 = 45.2 A, for an hour
    assert [c.reason for c in cuts(events)] == ["overload"]


def test_protected_household_cut_is_reported_not_asked_for() -> None:
    watch = SafetyWatch()
    watch.set_household("h1", HouseholdFlags(supply_protected=True))
    events = feed_all(watch, currents([60.0] * 10))
    [cut] = cuts(events)
    assert cut.supply_protected is True


def test_no_cut_while_the_supply_is_already_off() -> None:
    watch = SafetyWatch()
    items = [replace(r, own_cut=True, wanted_relay="off") for r in currents([60.0] * 10)]
    events = feed_all(watch, items)
    assert cuts(events) == []


def test_meter_overcurrent_report_counts_as_over() -> None:
    watch = SafetyWatch()
    items = [reading(T0 + n * 60, current_a=None, events=("overcurrent",)) for n in range(3)]
    assert [e.kind for e in started(feed_all(watch, items))] == ["overload"]


# -- surge ---------------------------------------------------------------------------------


def test_surge_is_a_rise_within_the_window() -> None:
    limit = RULES.surge_fraction * RATED  # 24 A
    watch = SafetyWatch()
    assert started(feed_all(watch, currents([2.0, 2.0 + limit - 0.1]))) == []
    watch = SafetyWatch()
    events = feed_all(watch, currents([2.0, 2.0 + limit + 0.1, 26.0, 26.0]))
    assert [(e.kind, e.started) for e in started(events)] == [("surge", T0 + 60)]
    watch = SafetyWatch()  # the same rise over two minutes is no surge
    assert started(feed_all(watch, currents([2.0, 14.0, 27.0]))) == []


# -- arc fault, tamper ---------------------------------------------------------------------


def test_arc_fault_alarms_and_wants_a_cut() -> None:
    watch = SafetyWatch()
    events = feed_all(watch, [reading(T0, events=("arc_fault",)), reading(T0 + 60)])
    assert [e.kind for e in started(events)] == ["arc_fault"]
    assert [c.reason for c in cuts(events)] == ["arc_fault"]
    events = feed_all(watch, [reading(T0 + 120, events=("arc_fault",))])
    assert started(events) == [] and cuts(events) == []  # the same episode


@pytest.mark.parametrize("name", ["cover_open", "magnetic_tamper", "terminal_cover_open"])
def test_tamper_reports(name: str) -> None:
    watch = SafetyWatch()
    [alarm] = started(watch.feed(reading(T0, events=(name, "unknown_thing"))))
    assert alarm.kind == "tamper" and alarm.data == {"events": [name]}


# -- theft ---------------------------------------------------------------------------------


def test_an_intermittent_bypass_is_one_episode_until_a_quiet_day() -> None:
    """A bypass shows its gap only while its load runs: 20 min on, 40 min off, for 12 hours,
    is one theft episode (a short quiet time made a start and a clear every hour); it ends
    `theft_clear_s` after the last sign, while an overload still ends after `clear_s`."""
    assert RULES.theft_clear_s == 86_400 > RULES.clear_s
    watch = SafetyWatch()
    hours = 12
    gap = {"current_a": 10.0, "neutral_current_a": 14.0}
    quiet = {"current_a": 1.0, "neutral_current_a": 1.0}
    readings = [reading(T0 + n * 60, **(gap if n % 60 < 20 else quiet)) for n in range(hours * 60)]
    events = feed_all(watch, readings)
    assert len(started(events, "theft_suspected")) == 1
    assert cleared(events, "theft_suspected") == []
    last_sign = T0 + ((hours - 1) * 60 + 19) * 60
    # Quiet readings every 10 min until just before, then at, the end of the quiet day.
    end = last_sign + RULES.theft_clear_s
    tail = [reading(ts, **quiet) for ts in range(T0 + hours * 3600, end, 600)]
    assert cleared(feed_all(watch, tail), "theft_suspected") == []
    [closed] = cleared(feed_all(watch, [reading(end, **quiet)]), "theft_suspected")
    assert closed.duration == end - closed.started


def test_neutral_gap_edges() -> None:
    watch = SafetyWatch()
    quiet = [reading(T0 + n * 60, current_a=10.0, neutral_current_a=10.9) for n in range(5)]
    assert started(feed_all(watch, quiet)) == []  # 0.9 A < 10 % of 10.9 A
    small = [reading(T0 + n * 60, current_a=0.1, neutral_current_a=0.5) for n in range(5, 10)]
    assert started(feed_all(watch, small)) == []  # 0.4 A < 0.5 A
    gap = [reading(T0 + n * 60, current_a=10.0, neutral_current_a=12.0) for n in range(10, 13)]
    [alarm] = started(feed_all(watch, gap))
    assert alarm.kind == "theft_suspected" and alarm.data["cause"] == "neutral_gap"
    assert alarm.started == T0 + 11 * 60  # the gap lasted theft_gap_s


def test_reverse_energy() -> None:
    watch = SafetyWatch()
    low = {"current_a": 0.2, "neutral_current_a": 0.2}
    assert started(watch.feed(reading(T0, power_w=-40.0, **low))) == []
    [alarm] = started(watch.feed(reading(T0 + 60, power_w=-60.0, **low)))
    assert alarm.data == {"cause": "reverse_energy"}
    watch = SafetyWatch()
    [alarm] = started(watch.feed(reading(T0, events=("reverse_energy",))))
    assert alarm.kind == "theft_suspected"


def test_register_going_back() -> None:
    watch = SafetyWatch()
    watch.feed(reading(T0, energy_kwh=Decimal("100.000")))
    assert started(watch.feed(reading(T0 + 60, energy_kwh=Decimal("99.995")))) == []
    [alarm] = started(watch.feed(reading(T0 + 120, energy_kwh=Decimal("0.000"))))
    assert alarm.data["cause"] == "register_back"
    # Counting goes on from the new register: no further alarm.
    assert started(watch.feed(reading(T0 + 180, energy_kwh=Decimal("0.010")))) == []


def test_consumption_while_our_cut_is_in_force() -> None:
    def cut(ts: int, kwh: str, current: float, relay: str = "off") -> WatchReading:
        return reading(
            ts,
            energy_kwh=Decimal(kwh),
            current_a=current,
            neutral_current_a=current,
            power_w=current * 220,
            own_cut=True,
            wanted_relay="off",
            reported_relay=relay,
        )

    watch = SafetyWatch()
    honest = [cut(T0 + n * 60, "100.000", 0.0) for n in range(30)]
    assert started(feed_all(watch, honest)) == []
    watch = SafetyWatch()
    # The meter says its relay is on: the caller's reconciliation, not theft.
    assert started(feed_all(watch, [cut(T0, "100.000", 3.0, "on")] * 1)) == []
    watch = SafetyWatch()
    bypass = [cut(T0, "100.000", 0.0), cut(T0 + 60, "100.005", 0.0), cut(T0 + 120, "100.010", 0)]
    [alarm] = started(feed_all(watch, bypass))
    assert alarm.data["cause"] == "consumption_while_off" and alarm.started == T0 + 120


# -- offline -------------------------------------------------------------------------------


def test_offline_is_one_episode_and_a_backlog_closes_it() -> None:
    watch = SafetyWatch()
    watch.feed(reading(T0))
    assert watch.tick(T0 + RULES.offline_s - 1) == []
    [alarm] = started(watch.tick(T0 + RULES.offline_s))
    assert alarm.kind == "offline" and alarm.started == T0
    assert watch.tick(T0 + 3 * RULES.offline_s) == []
    back = T0 + 4 * RULES.offline_s
    backlog = [reading(T0 + n * 600, received=back) for n in range(1, 5)]
    events = feed_all(watch, backlog)
    [end] = cleared(events)
    assert end.kind == "offline" and end.duration == back - T0
    assert started(watch.tick(back + 60)) == []  # heard at `back`, not at the backlog's times


# -- episodes: acknowledge, restore --------------------------------------------------------


def test_acknowledge_an_open_episode() -> None:
    watch = SafetyWatch()
    watch.feed(reading(T0, events=("cover_open",)))
    ack = watch.acknowledge("m1", "tamper", "operator:alice", T0 + 30)
    assert ack == AlarmAcknowledged("tamper", "m1", "h1", T0, "operator:alice", T0 + 30)
    assert watch.alarms("m1")["tamper"].acknowledged_by == "operator:alice"
    assert watch.acknowledge("m1", "tamper", "operator:carol").at == T0  # last heard
    assert watch.alarms("m1")["tamper"].acknowledged_by == "operator:carol"
    with pytest.raises(SafetyError, match="no open overload"):
        watch.acknowledge("m1", "overload", "operator:alice", T0)
    with pytest.raises(SafetyError, match="unknown alarm kind"):
        watch.acknowledge("m1", "fire", "operator:alice", T0)
    with pytest.raises(SafetyError, match="actor"):
        watch.acknowledge("m1", "tamper", "", T0)


def test_state_restores_open_episodes() -> None:
    watch = SafetyWatch()
    feed_all(watch, currents([45.0] * 5))
    watch.acknowledge("m1", "overload", "operator:bob", T0 + 300)
    state = json.loads(json.dumps(watch.export_state()))  # plain JSON
    restored = SafetyWatch()
    restored.import_state(state)
    assert restored.alarms("m1")["overload"].acknowledged_by == "operator:bob"
    # The restored watch carries the episode on: no second start, one clear.
    events = feed_all(restored, currents([45.0] * 2 + [5.0] * 20, start=T0 + 300))
    assert started(events) == []
    assert [e.started for e in cleared(events)] == [T0 + 120]
    assert restored.export_state()["meters"]["m1"]["episodes"] == {}


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"version": 99, "meters": {}, "areas": {}},
        {"version": 1, "meters": {"m1": {"account": 5}}, "areas": {}},
        {"version": 1, "meters": [], "areas": {}},
        {"version": 1, "meters": {}, "areas": {"a": {"master": "x", "members": "y"}}},
    ],
)
def test_bad_state_changes_nothing(state: dict[str, Any]) -> None:
    watch = SafetyWatch()
    watch.feed(reading(T0, events=("cover_open",)))
    before = watch.export_state()
    with pytest.raises(SafetyError):
        watch.import_state(state)
    assert watch.export_state() == before


def test_garbage_numbers_do_not_crash() -> None:
    watch = SafetyWatch()
    for n, value in enumerate([math.nan, math.inf, -math.inf, 1e308, -1e308]):
        watch.feed(
            reading(
                T0 + n,
                current_a=value,
                neutral_current_a=value,
                power_w=value,
                energy_kwh=value,
                rated_current_a=value if value < 0 else RATED,
            )
        )
    watch.tick(T0 + 10)


# -- care ----------------------------------------------------------------------------------

HOUR = 3_600
DAY = 86_400


def home_power(t: int) -> float:
    """A lived day: a base of 80 W; lights and cooking mornings and evenings (UTC hours)."""
    hour = (t % DAY) // HOUR
    power = 80.0
    if hour in (7, 8, 18, 19, 20, 21):
        power += 250.0
    if hour in (7, 19) and (t % HOUR) < 900:
        power += 2_000.0  # a kettle, a hob
    return power


def care_readings(
    days: float,
    *,
    start: int = T0,
    step: int = 300,
    power: Callable[[int], float] = home_power,
    energy: float = 1_000.0,
    **changes: Any,
) -> list[WatchReading]:
    """Return a household's readings, its register following `power`."""
    out = []
    for n in range(int(days * DAY / step)):
        t = start + n * step
        watts = power(t)
        energy += watts * step / 3.6e6
        out.append(
            reading(
                t,
                power_w=watts,
                current_a=watts / 220,
                neutral_current_a=watts / 220,
                energy_kwh=round(energy, 6),
                **changes,
            )
        )
    return out


def stops_at(when: int) -> Callable[[int], float]:
    """Return the power of a home whose person stops at `when` (the fridge goes on)."""
    return lambda t: home_power(t) if t < when else 80.0


def test_inactivity_after_the_person_stops() -> None:
    watch = SafetyWatch()
    watch.set_household("h1", HouseholdFlags(care=True))
    stop = T0 + 5 * DAY + 21 * HOUR + 600  # after the evening's last activity
    raised: list[tuple[int, AlarmStarted]] = []
    items = care_readings(7, power=stops_at(stop))
    for item in items:
        raised += [(item.ts, e) for e in started(watch.feed(item) + watch.tick(item.ts))]
    [(when, alarm)] = raised
    assert alarm.kind == "inactivity" and alarm.account_id == "h1"
    assert alarm.started <= stop  # the last activity seen
    # Not before the care hours, and within 12 h of the person's last activity.
    assert RULES.care_hours * HOUR <= when - alarm.started
    assert when - stop <= 12 * HOUR
    # The person is back: the episode ends at the first activity.
    back = care_readings(1, start=items[-1].ts + 300, energy=float(items[-1].energy_kwh or 0))
    [end] = cleared(feed_all(watch, back))
    assert end.kind == "inactivity" and end.started == alarm.started


def test_an_ordinary_week_raises_nothing() -> None:
    watch = SafetyWatch()
    watch.set_household("h1", HouseholdFlags(care=True))
    assert started(feed_all(watch, care_readings(10))) == []


def test_inactivity_needs_the_opt_in() -> None:
    watch = SafetyWatch()
    stop = T0 + 5 * DAY + 22 * HOUR
    assert started(feed_all(watch, care_readings(7, power=stops_at(stop)))) == []


def test_no_inactivity_for_a_vacant_flat() -> None:
    watch = SafetyWatch()
    watch.set_household("h1", HouseholdFlags(care=True))
    stop = T0 + 5 * DAY + 22 * HOUR
    items = care_readings(7, power=stops_at(stop))
    events = feed_all(watch, [r for r in items if r.ts < stop])
    watch.set_household("h1", HouseholdFlags(care=True, vacant=True))
    events += feed_all(watch, [r for r in items if r.ts >= stop])
    assert started(events) == []


def test_marking_vacant_clears_an_open_inactivity() -> None:
    watch = SafetyWatch()
    watch.set_household("h1", HouseholdFlags(care=True))
    stop = T0 + 5 * DAY + 22 * HOUR
    events = feed_all(watch, care_readings(7, power=stops_at(stop)))
    assert [e.kind for e in started(events)] == ["inactivity"]
    [end] = cleared(watch.set_household("h1", HouseholdFlags(care=True, vacant=True)))
    assert end.kind == "inactivity"


def test_no_inactivity_during_our_own_cut() -> None:
    watch = SafetyWatch()
    watch.set_household("h1", HouseholdFlags(care=True))
    cut_at = T0 + 5 * DAY + 22 * HOUR
    items = care_readings(5 + 22 / 24)
    items += care_readings(
        2,
        start=cut_at,
        energy=float(items[-1].energy_kwh or 0),
        power=lambda t: 0.0,
        own_cut=True,
        wanted_relay="off",
        reported_relay="off",
    )
    events = feed_all(watch, items)
    assert started(events) == []


def test_a_silent_meter_is_offline_not_inactive() -> None:
    watch = SafetyWatch()
    watch.set_household("h1", HouseholdFlags(care=True))
    items = care_readings(5 + 22 / 24)
    events = feed_all(watch, items)
    last = items[-1].ts
    for t in range(last + 600, last + DAY, 600):
        events += watch.tick(t)
    assert [e.kind for e in started(events)] == ["offline"]


def test_friendly_hours_add_nothing_to_the_missed_activity() -> None:
    stop = T0 + 5 * DAY + 22 * HOUR
    always = SafetyWatch(friendly=lambda account, ts: True)
    always.set_household("h1", HouseholdFlags(care=True))
    assert started(feed_all(always, care_readings(7, power=stops_at(stop)))) == []


def test_care_state_restores() -> None:
    watch = SafetyWatch()
    watch.set_household("h1", HouseholdFlags(care=True))
    stop = T0 + 5 * DAY + 22 * HOUR
    items = care_readings(7, power=stops_at(stop))
    feed_all(watch, [r for r in items if r.ts < stop])
    restored = SafetyWatch()
    restored.import_state(json.loads(json.dumps(watch.export_state())))
    restored.set_household("h1", HouseholdFlags(care=True))
    events = feed_all(restored, [r for r in items if r.ts >= stop])
    assert [e.kind for e in started(events)] == ["inactivity"]


# -- line loss -----------------------------------------------------------------------------


def test_line_loss_names_the_household_whose_use_fell() -> None:
    watch = SafetyWatch()
    members = [f"m{n}" for n in range(6)]
    watch.set_area("a1", "master", members)
    with pytest.raises(SafetyError, match="already in area"):
        watch.set_area("a2", "master2", ["m0"])
    with pytest.raises(SafetyError):
        watch.set_area("a3", "mX", ["mX"])
    assert watch.loss_rate("a1") is None
    with pytest.raises(SafetyError):
        watch.loss_rate("nowhere")
    registers = dict.fromkeys([*members, "master"], 1_000.0)
    theft_from = T0 + 4 * DAY
    events: list[SafetyEvent] = []
    step = 300
    for t in range(T0, T0 + 6 * DAY, step):
        true_total = 0.0
        for n, meter_id in enumerate(members):
            watts = home_power(t + n * 1_800) * (1 + n / 10)
            true_total += watts
            seen = watts * 0.4 if meter_id == "m3" and t >= theft_from else watts
            registers[meter_id] += seen * step / 3.6e6
            events += watch.feed(
                WatchReading(meter_id, f"h{n}", t, registers[meter_id], seen, seen / 220)
            )
        registers["master"] += (true_total * 1.02 + 150) * step / 3.6e6
        events += watch.feed(WatchReading("master", None, t, registers["master"]))
        events += watch.tick(t)
    [alarm] = started(events)
    assert alarm.kind == "line_loss" and alarm.meter_id == "master"
    assert alarm.started > theft_from
    assert alarm.data["suspects"][0]["meter_id"] == "m3"
    rate = watch.loss_rate("a1")
    assert rate is not None and rate > 0.1
    assert "line_loss" in watch.alarms("master")
    assert watch.acknowledge("master", "line_loss", "operator:eve", T0).kind == "line_loss"


# -- the benchmark, one seed ---------------------------------------------------------------


def test_benchmark_seed_meets_the_targets() -> None:
    from benchmarks.bench_alarms import INACTIVITY_LIMIT_S, run
    from simulator.scenarios import build

    scenario = build(11, homes=48, days=8)
    outcome = run(scenario)
    for name, injected in outcome.injected.items():
        assert outcome.detected.get(name, 0) == injected, (name, outcome.missed)
    allowed = outcome.household_days / 1000  # 1 per 1,000 household-days
    for kind, count in outcome.false.items():
        assert count <= allowed, (kind, outcome.false_list)
    assert all(d <= INACTIVITY_LIMIT_S for d in outcome.delays["inactivity"])
    assert outcome.late_inactivity == 0
    assert dict(outcome.quiet_alarms) == {}
