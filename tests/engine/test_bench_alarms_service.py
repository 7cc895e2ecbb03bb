"""bench_alarms' service mode: the engine service, driven in simulated time, finds the episodes.

A small labelled community (6 homes, 6 days: 4 to learn, 2 with injected episodes) runs
through a real `CommunityService` and SQLite ledger: the alarms counted are the `alarm`
events the service emits, the protective cut is the community's own, our own cut is the
operator's `request_supply`.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_alarms import Outcome, run, run_service
from simulator.scenarios import Scenario, build

KINDS = ("overload", "arc_fault", "consumption_while_off", "offline")


async def test_service_mode_finds_every_injected_episode(tmp_path: Path) -> None:
    scenario = build(2, homes=6, area_size=6, days=6, kinds=KINDS)
    injected = {
        "overload": 3,
        "arc_fault": 2,
        "theft:consumption_while_off": 1,
        "offline": 3,
    }
    assert scenario_counts(scenario) == injected

    outcome = await run_service(scenario, ledger_dir=tmp_path)

    assert outcome.mode == "service"
    assert outcome.missed == []
    assert dict(outcome.injected) == injected
    assert dict(outcome.detected) == injected
    assert sum(outcome.false.values()) == 0, outcome.false_list
    assert dict(outcome.quiet_alarms) == {}  # nothing during our own (bypassed) cut
    assert all(delay <= 5 * 60 for delay in outcome.delays["overload"])
    assert outcome.delays["arc_fault"] == [0, 0]
    # The severe overload and the unprotected home's arc fault: cut by the community; the
    # supply-protected home's arc fault: reported, not cut.
    made = {cut.reason for cut in outcome.cuts if not cut.supply_protected}
    reported = [cut.reason for cut in outcome.cuts if cut.supply_protected]
    assert made == {"overload", "arc_fault"}
    assert reported == ["arc_fault"]
    assert outcome.credit_cuts == 0
    assert outcome.rejected == 0
    assert outcome.cleared >= 8  # the episodes end, each once, in the service's events
    assert outcome.readings == 7 * 6 * 24 * 60  # 6 homes and the master, a reading a minute

    # The watch driven directly (the default mode) raises the same episodes at the same
    # minutes and wants the same cuts: the service adds no alarm and loses none.
    watch = run(build(2, homes=6, area_size=6, days=6, kinds=KINDS))
    assert watch.mode == "watch"
    assert starts(outcome) == starts(watch)
    assert sorted(outcome.cuts, key=repr) == sorted(watch.cuts, key=repr)


def starts(outcome: Outcome) -> list[tuple[str, str, int]]:
    """Return the episodes' starts: kind, meter, minute."""
    return [(alarm.kind, alarm.meter_id, alarm.at) for alarm in outcome.alarms]


def scenario_counts(scenario: Scenario) -> dict[str, int]:
    """Return the scenario's labels counted as the bench names them."""
    counts: dict[str, int] = {}
    for label in scenario.labels:
        name = label.kind if label.kind != "theft_suspected" else f"theft:{label.detail}"
        counts[name] = counts.get(name, 0) + 1
    return counts
