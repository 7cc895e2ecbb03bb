"""The live community: readings to charges, credit cuts, restores, alarms, restarts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from custom_components.prepaid_meter.engine.community import Community, CommunityError, Event
from custom_components.prepaid_meter.engine.ledger import EntryKind, Ledger, SubAccount
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.tariff import load_preset

# Tuesday 2026-03-10 12:00 in Shanghai: not friendly hours, not a weekend.
NOON = int(datetime(2026, 3, 10, 4, 0, tzinfo=UTC).timestamp())
# Tuesday 2026-03-10 20:00 in Shanghai: friendly hours.
EVENING = NOON + 8 * 3600


@dataclass(frozen=True)
class R:
    """A reading as the protocol delivers it."""

    meter_id: str
    seq: int | None
    ts: int
    energy_kwh: Decimal
    power_w: float | None = 500.0
    voltage_v: float | None = 230.0
    current_a: float | None = 2.0
    neutral_current_a: float | None = 2.0
    relay: str | None = "on"
    events: tuple[str, ...] = field(default_factory=tuple)


class Clock:
    """A settable clock."""

    def __init__(self, now: int) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "community.sqlite3") as opened:
        yield opened


def _community(ledger: Ledger, clock: Clock, **policy: object) -> Community:
    community = Community(
        ledger, load_preset("beijing_monthly"), PolicyConfig.from_options(policy), clock=clock
    )
    community.load()
    return community


def _assign(community: Community, meter: str = "000000000001", account: str = "b3-u2-501") -> None:
    info = community.assign_meter(meter, account, "Bldg 3 / Unit 2 / 501")
    community.apply_assignment(meter, info)


def _top_up(community: Community, amount: str, txn: str, account: str = "b3-u2-501") -> list[Event]:
    return community.apply_top_up(
        community.top_up(account, Decimal(amount), txn, "wechat", actor="test")
    )


def _flush(community: Community) -> list[Event]:
    return community.apply_results(community.commit(community.take_batch()))


def _kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def test_reading_charges_balance_and_survives_restart(ledger: Ledger, clock: Clock) -> None:
    """Two readings 10 kWh apart charge 10 x 0.4883; the charge is durable once committed."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "100", "tx-1")
    community.handle_reading(R("000000000001", 1, NOON - 3600, Decimal("100.000")))
    community.handle_reading(R("000000000001", 2, NOON, Decimal("110.000")))
    household = community.households["b3-u2-501"]
    assert household.electricity == Decimal("100") - Decimal("4.883")
    _flush(community)
    assert ledger.balance("b3-u2-501", SubAccount.ELECTRICITY) == Decimal("95.117")
    assert household.electricity == Decimal("95.117")
    assert ledger.check_invariant() == []

    restarted = _community(ledger, clock)
    meter = restarted.meters["000000000001"]
    assert meter.billing.cycle == "2026-03"
    assert meter.billing.cycle_kwh == Decimal(10)
    # The same reading delivered again after the restart is a duplicate.
    restarted.handle_reading(R("000000000001", 2, NOON, Decimal("110.000")))
    assert restarted.meters["000000000001"].rejected == {"duplicate": 1}
    _flush(restarted)
    assert ledger.balance("b3-u2-501", SubAccount.ELECTRICITY) == Decimal("95.117")


def test_bad_readings_are_counted_and_change_nothing(ledger: Ledger, clock: Clock) -> None:
    """Future timestamps, older timestamps and repeated seqs bill nothing."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 5, NOON - 60, Decimal(100)))
    community.handle_reading(R("000000000001", 6, NOON + 3600, Decimal(200)))
    community.handle_reading(R("000000000001", 7, NOON - 120, Decimal(200)))
    community.handle_reading(R("000000000001", 5, NOON - 60, Decimal(100)))
    meter = community.meters["000000000001"]
    assert meter.rejected == {"future_ts": 1, "old_ts": 1, "duplicate": 1}
    assert community.households["b3-u2-501"].electricity == 0


def test_register_reset_is_a_new_baseline(ledger: Ledger, clock: Clock) -> None:
    """A register that goes down bills nothing and is reported."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 1, NOON - 120, Decimal(500)))
    events = community.handle_reading(R("000000000001", 2, NOON - 60, Decimal(1)))
    assert "register_reset" in _kinds(events)
    community.handle_reading(R("000000000001", 3, NOON, Decimal(2)))
    assert community.households["b3-u2-501"].electricity == Decimal("-0.4883")


def test_credit_exhausted_cuts_outside_friendly_hours(ledger: Ledger, clock: Clock) -> None:
    """Below minus the emergency credit the relay goes off, with its reason."""
    community = _community(ledger, clock, emergency_credit="10")
    _assign(community)
    _top_up(community, "10", "tx-1")
    community.handle_reading(R("000000000001", 1, NOON - 7200, Decimal(0)))
    events = community.handle_reading(R("000000000001", 2, NOON - 3600, Decimal(30)))
    assert "low_balance" in _kinds(events)
    assert "supply_cut" not in _kinds(events)  # 10 - 14.649 is within the emergency credit
    events = community.handle_reading(R("000000000001", 3, NOON, Decimal(50)))
    cut = [e for e in events if e.kind == "supply_cut"]
    assert cut and cut[0].data["reason"] == "credit_exhausted"
    assert community.meters["000000000001"].desired_relay == "off"
    assert "reconcile" in _kinds(events)  # the meter still reports on


def test_friendly_hours_defer_the_cut(ledger: Ledger, clock: Clock) -> None:
    """At 20:00 the household runs into debt instead; the cut comes when the window ends."""
    clock.now = EVENING
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 1, EVENING - 60, Decimal(0)))
    events = community.handle_reading(R("000000000001", 2, EVENING, Decimal(100)))
    deferred = [e for e in events if e.kind == "supply_cut_deferred"]
    assert deferred and deferred[0].data["reason"] == "friendly_hours"
    assert community.meters["000000000001"].desired_relay == "on"
    clock.now = NOON + 86400  # Wednesday noon
    assert "supply_cut" in _kinds(community.tick())


def test_protected_household_is_never_cut(ledger: Ledger, clock: Clock) -> None:
    """A supply-protected household runs into debt and is reported."""
    community = _community(ledger, clock)
    info = community.assign_meter("000000000001", "b1-101", "Bldg 1 / 101", supply_protected=True)
    community.apply_assignment("000000000001", info)
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(0)))
    events = community.handle_reading(R("000000000001", 2, NOON, Decimal(1000)))
    assert "supply_cut" not in _kinds(events)
    assert [e.data["reason"] for e in events if e.kind == "supply_cut_deferred"] == [
        "supply_protected"
    ]


def test_fee_arrears_never_cut(ledger: Ledger, clock: Clock) -> None:
    """A property fee far in arrears leaves the electricity supply alone."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "50", "tx-1")
    result = community.post_money(
        "b3-u2-501",
        SubAccount.PROPERTY_FEE,
        EntryKind.FEE,
        Decimal("5000"),
        "fee-2026-03",
        actor="op",
    )
    community.apply_results(result)
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(0)))
    events = community.handle_reading(R("000000000001", 2, NOON, Decimal(1)))
    assert "supply_cut" not in _kinds(events)
    assert community.households["b3-u2-501"].balances[SubAccount.PROPERTY_FEE] == Decimal(-5000)
    assert community.totals()["arrears"][SubAccount.PROPERTY_FEE] == 1


def test_restore_after_top_up(ledger: Ledger, clock: Clock) -> None:
    """Restore is refused while in debt, allowed after a top-up clears it; not automatic."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(0)))
    community.handle_reading(R("000000000001", 2, NOON, Decimal(100)))
    assert community.meters["000000000001"].desired_relay == "off"
    with pytest.raises(CommunityError) as info:
        community.request_relay("000000000001", "on", actor="resident")
    assert info.value.key == "credit_exhausted_restore_refused"
    events = _top_up(community, "100", "tx-2")
    assert "supply_restored" not in _kinds(events)
    assert community.can_restore("000000000001")
    events = community.request_relay("000000000001", "on", actor="resident")
    assert [e.data["actor"] for e in events if e.kind == "supply_restored"] == ["resident"]


def test_auto_restore_option(ledger: Ledger, clock: Clock) -> None:
    """With auto_restore a top-up that clears the debt restores the supply."""
    community = _community(ledger, clock, auto_restore=True)
    _assign(community)
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(0)))
    community.handle_reading(R("000000000001", 2, NOON, Decimal(100)))
    assert "supply_restored" in _kinds(_top_up(community, "100", "tx-2"))


def test_operator_override(ledger: Ledger, clock: Clock) -> None:
    """Only an operator may restore supply with credit exhausted."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(0)))
    community.handle_reading(R("000000000001", 2, NOON, Decimal(100)))
    with pytest.raises(CommunityError):
        community.request_relay("000000000001", "on", actor="resident", operator_override=True)
    events = community.request_relay(
        "000000000001", "on", actor="operator:admin", operator_override=True
    )
    assert [e.data["reason"] for e in events if e.kind == "supply_restored"] == [
        "operator_override"
    ]


def test_top_up_is_idempotent(ledger: Ledger, clock: Clock) -> None:
    """The same transaction id twice credits once."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "30", "wx-123")
    _top_up(community, "30", "wx-123")
    assert community.households["b3-u2-501"].electricity == Decimal(30)
    assert community.top_ups_today == Decimal(30)
    with pytest.raises(CommunityError) as info:
        community.top_up("b3-u2-501", Decimal("31"), "wx-123", "wechat", actor="test")
    assert info.value.key == "duplicate_transaction_conflict"
    for bad in ("0", "-5", "0.001", "1000000"):
        with pytest.raises(CommunityError) as info:
            community.top_up("b3-u2-501", Decimal(bad), "wx-9", "wechat", actor="test")
        assert info.value.key == "invalid_amount"
    with pytest.raises(CommunityError) as info:
        community.top_up("nobody", Decimal(1), "wx-10", "wechat", actor="test")
    assert info.value.key == "unknown_household"
    assert ledger.check_invariant() == []


def test_cycle_close_settles_to_statement(ledger: Ledger, clock: Clock) -> None:
    """The money taken for March equals March's statement to the cent."""
    clock.now = NOON + 40 * 86400
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "500", "tx-1")
    start = int(datetime(2026, 2, 28, 16, 0, tzinfo=UTC).timestamp())  # 1 March 00:00 local
    energy = Decimal(0)
    for hour in range(31 * 24 + 5):  # hourly readings through March into April
        seq = hour + 1
        energy += Decimal("0.4031")
        community.handle_reading(R("000000000001", seq, start + hour * 3600, energy))
        if hour % 50 == 0:
            _flush(community)
    _flush(community)
    stored = ledger.statement("b3-u2-501", "2026-03")
    assert stored is not None
    total, _body = stored
    march = [
        e
        for e in ledger.entries("b3-u2-501", SubAccount.ELECTRICITY, limit=10_000)
        if e.kind in (EntryKind.CHARGE, EntryKind.SETTLEMENT)
    ]
    assert march
    statement = community.statement("b3-u2-501", "2026-03")
    assert statement["closed"] is True
    assert Decimal(statement["total"]) == total
    # Charges for March plus the settlement == the statement total.
    usage = ledger.usage("b3-u2-501", "2026-03")
    charged = sum((u.amount for u in usage), Decimal(0))
    settle = ledger.entry_by_key("settle:b3-u2-501:2026-03")
    assert settle is not None
    assert charged - settle.amount == total
    assert ledger.check_invariant() == []


def test_alarms(ledger: Ledger, clock: Clock) -> None:
    """Overload, suspected theft, tamper and inactivity each raise one alarm per episode."""
    community = Community(
        ledger, load_preset("flat"), PolicyConfig(), clock=clock, inactivity_hours=1
    )
    community.load()
    _assign(community)
    _top_up(community, "1000", "tx")
    m = "000000000001"
    events = community.handle_reading(
        R(m, 1, NOON - 7200, Decimal(1), current_a=70.0, neutral_current_a=70.0)
    )
    assert [e.data["type"] for e in events if e.kind == "alarm"] == ["overload"]
    events = community.handle_reading(
        R(m, 2, NOON - 7100, Decimal(2), current_a=70.0, neutral_current_a=70.0)
    )
    assert "alarm" not in _kinds(events)
    for seq in (3, 4):
        events = community.handle_reading(
            R(m, seq, NOON - 7200 + seq * 100, Decimal(seq), current_a=5.0, neutral_current_a=1.0)
        )
    assert [e.data["type"] for e in events if e.kind == "alarm"] == ["theft_suspected"]
    events = community.handle_reading(R(m, 5, NOON - 6600, Decimal(5), events=("cover_open",)))
    assert [e.data["type"] for e in events if e.kind == "alarm"] == ["tamper"]
    # Only the fridge for over an hour: a care alarm, once.
    events = []
    for seq in range(6, 10):
        events += community.handle_reading(
            R(m, seq, NOON - 6600 + (seq - 5) * 1500, Decimal(seq), power_w=90.0)
        )
    assert _kinds(events).count("inactivity") == 1


def test_protective_cut_on_sustained_severe_overload(ledger: Ledger, clock: Clock) -> None:
    """Three readings far above the rated current cut the supply for safety."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "1000", "tx")
    events: list[Event] = []
    for seq in range(1, 4):
        events += community.handle_reading(
            R("000000000001", seq, NOON - 300 + seq * 10, Decimal(seq), current_a=90.0)
        )
    assert [e.data["reason"] for e in events if e.kind == "supply_cut"] == ["overload"]


def test_seq_restart_with_clock_forward_is_accepted(ledger: Ledger, clock: Clock) -> None:
    """A meter that lost its counter (seq back, ts forward) keeps being billed."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 900, NOON - 120, Decimal(10)))
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(20)))
    assert community.households["b3-u2-501"].electricity == Decimal("-4.883")
    assert community.meters["000000000001"].rejected == {"seq_restart": 1}


def test_readings_between_commits_make_one_charge_entry(ledger: Ledger, clock: Clock) -> None:
    """Six readings in one commit window: one journal entry, keyed by the last seq."""
    community = _community(ledger, clock)
    _assign(community)
    for seq in range(1, 8):
        community.handle_reading(R("000000000001", seq, NOON - 70 + seq * 10, Decimal(100 + seq)))
    _flush(community)
    charges = [
        e for e in ledger.entries("b3-u2-501", SubAccount.ELECTRICITY) if e.kind == EntryKind.CHARGE
    ]
    assert [(e.key, e.amount) for e in charges] == [("charge:000000000001:7", Decimal("-2.9298"))]
    assert charges[0].meta["first_seq"] == 2
    cursor = ledger.cursor("000000000001")
    assert cursor is not None
    assert cursor.seq == 7


def test_failed_commit_keeps_the_batch(ledger: Ledger, clock: Clock) -> None:
    """A commit that fails is put back and written with the next batch, nothing lost."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(100)))
    community.handle_reading(R("000000000001", 2, NOON - 50, Decimal(101)))
    batch = community.take_batch()
    community.restore_batch(batch)  # as the coordinator does when commit raises
    community.handle_reading(R("000000000001", 3, NOON - 40, Decimal(102)))
    _flush(community)
    assert ledger.balance("b3-u2-501", SubAccount.ELECTRICITY) == Decimal("-0.9766")
    assert community.households["b3-u2-501"].electricity == Decimal("-0.9766")
    assert ledger.check_invariant() == []


def test_overcurrent_event_with_normal_current_alarms_once(ledger: Ledger, clock: Clock) -> None:
    """A meter repeating its overcurrent event while its current reads normal: one alarm."""
    community = _community(ledger, clock)
    _assign(community)
    events: list[Event] = []
    for seq in range(1, 5):
        events += community.handle_reading(
            R("000000000001", seq, NOON - 100 + seq * 10, Decimal(seq), events=("overcurrent",))
        )
    assert [e.data["type"] for e in events if e.kind == "alarm"] == ["overload"]


# ------------------------------------------------------- defects found from outside (issue 8)


def test_energy_of_a_reading_in_the_same_second_is_billed(ledger: Ledger, clock: Clock) -> None:
    """A reading with the next seq but the same ts second still bills its energy.

    Three readings of +10 kWh, the second in the same second as the first: 20 kWh billed
    (it was 10: the second reading moved the position past its energy without a charge).
    """
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "50", "tx-1")
    community.handle_reading(R("000000000001", 1, NOON - 600, Decimal("100.000")))
    community.handle_reading(R("000000000001", 2, NOON - 600, Decimal("110.000")))
    community.handle_reading(R("000000000001", 3, NOON - 300, Decimal("120.000")))
    meter = community.meters["000000000001"]
    assert meter.rejected == {}
    assert meter.billing.cycle_kwh == Decimal(20)
    assert community.households["b3-u2-501"].electricity == Decimal(50) - 2 * Decimal("4.883")
    _flush(community)
    assert ledger.balance("b3-u2-501", SubAccount.ELECTRICITY) == Decimal("40.234")


def test_an_unassigned_meter_reporting_off_is_left_off(ledger: Ledger, clock: Clock) -> None:
    """Nobody pays for an unassigned meter: no command switches it on (flat empty or in works)."""
    community = _community(ledger, clock)
    events = community.handle_announce(
        "000000000001", model=None, firmware=None, rated_current_a=None
    )
    events += community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(5), relay="off"))
    assert "reconcile" not in _kinds(events)
    assert "relay" not in _kinds(events)


def test_telemetry_of_a_meter_never_announced_creates_no_meter(
    ledger: Ledger, clock: Clock
) -> None:
    """Readings and availability of unknown ids are counted, not taken as meters."""
    community = _community(ledger, clock)
    events: list[Event] = []
    for n in range(5):
        events += community.handle_reading(R(f"fake{n}", 1, NOON - 60, Decimal(1)))
    events += community.handle_availability("fake9", True)
    assert community.meters == {}
    assert community.unknown_meters == {f"fake{n}": 1 for n in range(5)} | {"fake9": 1}
    assert _kinds(events) == ["unknown_meter"] * 6
    # Announced, it becomes a meter; its next reading is taken.
    community.handle_announce("fake0", model=None, firmware=None, rated_current_a=None)
    community.handle_reading(R("fake0", 2, NOON - 30, Decimal(2)))
    assert community.meters["fake0"].seq == 2
    assert "fake0" not in community.unknown_meters


def test_discovery_stops_at_the_community_limit(ledger: Ledger, clock: Clock) -> None:
    """Announces beyond the meter limit are refused and counted (a flood cannot fill it)."""
    community = _community(ledger, clock)
    community.meter_limit = 3
    for n in range(5):
        community.handle_announce(f"m{n}", model=None, firmware=None, rated_current_a=None)
    assert sorted(community.meters) == ["m0", "m1", "m2"]
    assert community.unknown_meters == {"m3": 1, "m4": 1}


def test_a_family_without_announce_is_introduced_by_its_birth_message(
    ledger: Ledger, clock: Clock
) -> None:
    """Tasmota and Shelly have no announce: their first "online" introduces the device."""
    community = Community(
        ledger,
        load_preset("beijing_monthly"),
        PolicyConfig.from_options({}),
        clock=clock,
        birth_announces=True,
    )
    community.load()
    assert _kinds(community.handle_availability("plug-1", False)) == ["unknown_meter"]
    events = community.handle_availability("plug-1", True)
    assert _kinds(events)[:2] == ["announce", "unassigned_meter"]
    assert community.meters["plug-1"].online is True
