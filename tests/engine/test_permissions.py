"""Who may do what: operators everything, residents their own household after a credit cut.

The rules are the engine's, so they hold through every door (an action, a switch, a button,
another program): a community with `enforce_permissions` checks the actor of each request.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal
import logging
from pathlib import Path
import socket
from typing import Any

import pytest

from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.community import Community, CommunityError, Event
from custom_components.prepaid_meter.engine.ledger import (
    EntryKind,
    Ledger,
    SubAccount,
    SupplyChange,
    UserLink,
)
from custom_components.prepaid_meter.engine.permissions import (
    CREDIT_CUTS,
    SAFETY_CUTS,
    UserLinks,
    check,
)
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.profiles import make_profile
from custom_components.prepaid_meter.engine.service import CommunityService, ServiceTiming
from custom_components.prepaid_meter.engine.tariff import load_preset
from custom_components.prepaid_meter.engine.transport import TransportConfig

from .test_community import NOON, OPS, Clock, R

M1, M2 = "000000000001", "000000000002"
A, B = "b3-u2-501", "b3-u2-502"
ALICE = Actor("resident", user_id="u-alice", name="Alice")  # lives in A
BOB = Actor("resident", user_id="u-bob", name="Bob")  # lives in B
NOBODY = Actor("resident", user_id="u-nobody")  # linked to no household
NAMELESS = Actor("resident")  # a resident whose user is unknown


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "community.sqlite3"


@pytest.fixture
def ledger(path: Path) -> Iterator[Ledger]:
    with Ledger(path) as opened:
        yield opened


def _community(ledger: Ledger, clock: Clock, **policy: Any) -> Community:
    community = Community(
        ledger,
        load_preset("beijing_monthly"),
        PolicyConfig.from_options(policy),
        clock=clock,
        enforce_permissions=True,
    )
    community.load()
    return community


def _link(community: Community, account: str, actor: Actor) -> None:
    assert actor.user_id is not None
    changed = community.link_user(account, actor.user_id, actor=OPS)
    community.apply_link(account, actor.user_id, linked=True)
    assert changed


@pytest.fixture
def community(ledger: Ledger, clock: Clock) -> Community:
    """Households A (meter M1, Alice) and B (meter M2, Bob), each with 50 CNY."""
    community = _community(ledger, clock)
    for meter, account in ((M1, A), (M2, B)):
        community.apply_assignment(
            meter, community.assign_meter(meter, account, f"Household {account}")
        )
        community.apply_top_up(
            community.top_up(account, Decimal(50), f"t-{account}", "cash", actor=OPS)
        )
    _link(community, A, ALICE)
    _link(community, B, BOB)
    return community


def _flush(community: Community) -> list[Event]:
    return community.apply_results(community.commit(community.take_batch()))


def _credit_cut(community: Community, meter: str = M1) -> None:
    """Use 200 kWh: the household's 50 CNY run out and the system cuts the supply."""
    community.handle_reading(R(meter, 1, NOON - 60, Decimal(0)))
    community.handle_reading(R(meter, 2, NOON, Decimal(200)))
    assert (community.meters[meter].desired_relay, community.meters[meter].relay_reason) == (
        "off",
        "credit_exhausted",
    )
    _flush(community)


def _refused(key: str, placeholders: dict[str, str], call: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(CommunityError) as info:
        call(*args, **kwargs)
    assert (info.value.key, info.value.placeholders) == (key, placeholders)


def _nothing_pending(community: Community) -> None:
    assert not community.take_batch()


# ---------------------------------------------------------------------------- restore


def test_a_resident_restores_their_household_after_a_credit_cut(
    community: Community, ledger: Ledger
) -> None:
    """Alice restores A once a top-up clears the threshold; recorded as Alice's, a resident's."""
    _credit_cut(community)
    assert not community.can_restore(M1, actor=ALICE)  # the balance does not allow it yet
    _refused(
        "credit_exhausted_restore_refused",
        {"meter_id": M1, "balance": str(community.households[A].electricity)},
        community.request_relay,
        M1,
        "on",
        actor=ALICE,
    )
    community.apply_top_up(community.top_up(A, Decimal(100), "t-2", "cash", actor=OPS))
    assert community.can_restore(M1, actor=ALICE)
    assert community.can_restore(M1)  # the button: some resident of A may press it
    events = community.request_relay(M1, "on", actor=ALICE)
    restored = next(e for e in events if e.kind == "supply_restored")
    assert (restored.data["reason"], restored.data["actor_kind"], restored.data["actor"]) == (
        "restored",
        "resident",
        "Alice",
    )
    _flush(community)
    assert ledger.supply_states()[M1] == SupplyChange(
        M1, "on", "restored", "resident|u-alice|Alice", NOON
    )
    assert community.meters[M1].relay_actor == ALICE


def test_a_resident_restoring_a_supply_that_is_on_changes_nothing(community: Community) -> None:
    """Nothing to restore: no decision, no event (and another household's is still refused)."""
    assert community.request_relay(M1, "on", actor=ALICE) == []
    _nothing_pending(community)
    _refused("not_your_meter", {"meter_id": M2}, community.request_relay, M2, "on", actor=ALICE)


@pytest.mark.parametrize("resident", [BOB, NOBODY, NAMELESS])
def test_a_resident_never_restores_another_household(
    community: Community, ledger: Ledger, resident: Actor, caplog: pytest.LogCaptureFixture
) -> None:
    """Bob, a user linked to nothing, a resident with no user: refused, logged, not written."""
    _credit_cut(community)
    community.apply_top_up(community.top_up(A, Decimal(100), "t-2", "cash", actor=OPS))
    history = ledger.supply_history(M1)
    assert not community.can_restore(M1, actor=resident)
    with caplog.at_level(logging.WARNING):
        _refused(
            "not_your_meter", {"meter_id": M1}, community.request_relay, M1, "on", actor=resident
        )
    assert community.meters[M1].desired_relay == "off"
    _nothing_pending(community)
    assert ledger.supply_history(M1) == history
    refusal = caplog.records[-1]
    assert refusal.levelno == logging.WARNING
    assert resident.display in refusal.getMessage()
    assert M1 in refusal.getMessage()


def test_a_resident_never_switches_an_unassigned_meter(community: Community) -> None:
    """An unassigned meter belongs to no household: no resident's."""
    community.handle_announce("000000000009", model=None, firmware=None, rated_current_a=None)
    community.request_relay("000000000009", "off", actor=OPS)
    _refused(
        "not_your_meter",
        {"meter_id": "000000000009"},
        community.request_relay,
        "000000000009",
        "on",
        actor=ALICE,
    )


@pytest.mark.parametrize(
    "reason", ["arc_fault", "overload", "theft_suspected", "tamper", "manual", "a_future_reason"]
)
def test_a_resident_never_restores_after_a_safety_or_an_operators_cut(
    ledger: Ledger, clock: Clock, community: Community, reason: str
) -> None:
    """Only a credit cut is the resident's to undo; any other (or unknown) reason is not."""
    community.apply_top_up(community.top_up(A, Decimal(100), "t-2", "cash", actor=OPS))
    ledger.record_supply(SupplyChange(M1, "off", reason, "safety", NOON))
    restarted = _community(ledger, clock)
    assert not restarted.can_restore(M1, actor=ALICE)
    assert not restarted.can_restore(M1)
    _refused(
        "restore_needs_operator",
        {"meter_id": M1, "reason": reason},
        restarted.request_relay,
        M1,
        "on",
        actor=ALICE,
    )
    assert restarted.meters[M1].desired_relay == "off"
    _nothing_pending(restarted)
    assert restarted.can_restore(M1, actor=OPS)
    restarted.request_relay(M1, "on", actor=OPS)
    assert restarted.meters[M1].relay_reason == "restored"


def test_a_resident_never_restores_after_an_arc_fault_or_an_operators_cut(
    community: Community,
) -> None:
    """The same with the real cuts: the protective watch's and an operator's."""
    community.handle_reading(R(M1, 1, NOON - 60, Decimal(0), events=("arc_fault",)))
    assert community.meters[M1].relay_reason == "arc_fault"
    _refused(
        "restore_needs_operator",
        {"meter_id": M1, "reason": "arc_fault"},
        community.request_relay,
        M1,
        "on",
        actor=ALICE,
        operator_override=True,
    )
    community.request_relay(M1, "on", actor=OPS)
    community.request_relay(M1, "off", actor=OPS)
    _refused(
        "restore_needs_operator",
        {"meter_id": M1, "reason": "manual"},
        community.request_relay,
        M1,
        "on",
        actor=ALICE,
    )


def test_the_reasons_for_a_cut() -> None:
    """A credit cut is the prepaid rules'; the safety watch's reasons are never a credit cut."""
    assert frozenset({"credit_exhausted"}) == CREDIT_CUTS
    assert {"overload", "arc_fault", "theft_suspected", "tamper"} <= SAFETY_CUTS
    assert not CREDIT_CUTS & SAFETY_CUTS


# ---------------------------------------------------------------------------- cut


@pytest.mark.parametrize("meter", [M1, M2])
def test_a_resident_never_cuts_a_supply(community: Community, ledger: Ledger, meter: str) -> None:
    """Not even their own household's; nothing is written."""
    _refused(
        "cut_needs_operator",
        {"meter_id": meter},
        community.request_relay,
        meter,
        "off",
        actor=ALICE,
    )
    assert community.meters[meter].desired_relay == "on"
    _nothing_pending(community)
    assert ledger.supply_history(meter) == []


# ---------------------------------------------------------------------------- money and more


@pytest.mark.parametrize(
    ("kind", "amount"),
    [
        (EntryKind.FEE, "10"),
        (EntryKind.PAYMENT, "10"),
        (EntryKind.ADJUSTMENT, "10"),
        (EntryKind.ADJUSTMENT, "-10"),
    ],
)
def test_a_resident_never_moves_money(
    community: Community, ledger: Ledger, kind: EntryKind, amount: str
) -> None:
    """Top-ups, fees, payments and adjustments, even on their own household: refused."""
    entries = ledger.entries(A)
    _refused(
        "not_authorized",
        {"action": "top_up"},
        community.top_up,
        A,
        Decimal(10),
        "t-alice",
        "cash",
        actor=ALICE,
    )
    _refused(
        "not_authorized",
        {"action": kind.value},
        community.post_money,
        A,
        SubAccount.PROPERTY_FEE,
        kind,
        Decimal(amount),
        "x-alice",
        actor=ALICE,
    )
    assert ledger.entries(A) == entries


def test_a_resident_never_assigns_a_meter_or_links_a_user(
    community: Community, ledger: Ledger
) -> None:
    """Assigning meters and linking people are an operator's."""
    meters = ledger.meters()
    _refused(
        "not_authorized", {"action": "assign"}, community.assign_meter, M1, B, "B", actor=ALICE
    )
    _refused("not_authorized", {"action": "link"}, community.link_user, A, "u-eve", actor=ALICE)
    _refused(
        "not_authorized", {"action": "unlink"}, community.unlink_user, A, "u-alice", actor=ALICE
    )
    assert ledger.meters() == meters
    assert ledger.user_links() == {A: frozenset({"u-alice"}), B: frozenset({"u-bob"})}


def test_a_resident_reads_only_their_households_statement(community: Community) -> None:
    """Alice reads A's statement; B's and an unknown household's are refused alike."""
    assert community.statement(A, "2026-03", actor=ALICE)["cycle"] == "2026-03"
    _refused("not_your_household", {"household": B}, community.statement, B, "2026-03", actor=ALICE)
    _refused(
        "not_your_household",
        {"household": "nowhere"},
        community.statement,
        "nowhere",
        "2026-03",
        actor=ALICE,
    )


def test_a_resident_sets_only_their_households_threshold(community: Community) -> None:
    """The low-balance warning of their own meter; another's is refused and left alone."""
    community.set_low_threshold(M1, Decimal(20), actor=ALICE)
    assert community.meters[M1].low_threshold == Decimal(20)
    _refused(
        "not_your_meter",
        {"meter_id": M2},
        community.set_low_threshold,
        M2,
        Decimal(20),
        actor=ALICE,
    )
    assert community.meters[M2].low_threshold is None
    community.set_low_threshold(M1, None, actor=OPS)
    assert community.meters[M1].low_threshold is None
    _refused(
        "unknown_meter",
        {"meter_id": "nope"},
        community.set_low_threshold,
        "nope",
        Decimal(1),
        actor=OPS,
    )


# ---------------------------------------------------------------------------- operators


@pytest.mark.parametrize("actor", [OPS, Actor.AUTOMATION, Actor.SYSTEM, Actor.SAFETY])
def test_operators_and_the_machines_do_everything(
    community: Community, ledger: Ledger, actor: Actor
) -> None:
    """An operator, an automation, the system, the safety watch: any household, any request."""
    for meter in (M1, M2):
        community.request_relay(meter, "off", actor=actor)
        assert community.can_restore(meter, actor=actor) is (actor.kind == "operator")
        if actor.kind == "operator":
            community.request_relay(meter, "on", actor=actor)
    community.apply_top_up(community.top_up(B, Decimal(5), "t-any", "cash", actor=actor))
    community.post_money(B, SubAccount.PARKING_FEE, EntryKind.FEE, Decimal(5), "f-any", actor=actor)
    assert community.statement(B, "2026-03", actor=actor)["closed"] is False
    community.set_low_threshold(M2, Decimal(7), actor=actor)
    assert community.link_user(B, "u-carol", actor=actor)
    assert community.unlink_user(B, "u-carol", actor=actor)
    community.assign_meter(M2, B, "Household B", actor=actor)


def test_an_operator_restores_after_a_safety_cut_with_an_override(community: Community) -> None:
    """After an arc fault and in debt, only an operator's override restores."""
    _credit_cut(community)
    community.handle_reading(R(M1, 3, NOON + 1, Decimal(200), events=("arc_fault",)))
    events = community.request_relay(M1, "on", actor=OPS, operator_override=True)
    assert [e.data["reason"] for e in events if e.kind == "supply_restored"] == [
        "operator_override"
    ]


def test_the_rules_of_earlier_versions_without_enforcement(ledger: Ledger, clock: Clock) -> None:
    """Until the host turns them on, a resident's requests are decided as before (by balance)."""
    community = Community(ledger, load_preset("beijing_monthly"), PolicyConfig(), clock=clock)
    community.load()
    assert community.enforce_permissions is False
    community.apply_assignment(M1, community.assign_meter(M1, A, "A"))
    community.request_relay(M1, "off", actor=BOB)
    community.apply_top_up(community.top_up(A, Decimal(10), "t", "cash", actor=BOB))
    assert community.can_restore(M1, actor=BOB)
    community.request_relay(M1, "on", actor=BOB)
    assert community.statement(A, "2026-03", actor=BOB)["closed"] is False
    # Linking people is an operator's whether or not the rest is enforced.
    _refused("not_authorized", {"action": "link"}, community.link_user, A, "u-bob", actor=BOB)


# ---------------------------------------------------------------------------- links


def test_links_live_in_the_ledger_and_survive_a_restart(
    community: Community, ledger: Ledger, clock: Clock, path: Path
) -> None:
    """Who is linked is loaded at start; a restarted community applies the same rules."""
    assert community.links.households_of("u-alice") == frozenset({A})
    assert community.links.users_of(A) == frozenset({"u-alice"})
    ledger.close()
    with Ledger(path) as reopened:
        restarted = _community(reopened, clock)
        assert restarted.links.households_of("u-alice") == frozenset({A})
        assert restarted.links.households_of("u-bob") == frozenset({B})
        _refused("not_your_meter", {"meter_id": M2}, restarted.request_relay, M2, "on", actor=ALICE)
        history = reopened.link_history(A)
        assert [(h.user_id, h.linked, h.actor) for h in history] == [
            ("u-alice", True, "operator|u-ops|Ops")
        ]


def test_unlinking_takes_effect_at_once(community: Community) -> None:
    """Alice unlinked from A: A's statement is refused from then on; linking is idempotent."""
    assert not community.link_user(A, "u-alice", actor=OPS)  # linked already: nothing written
    assert community.unlink_user(A, "u-alice", actor=OPS)
    community.apply_link(A, "u-alice", linked=False)
    assert community.links.households_of("u-alice") == frozenset()
    _refused("not_your_household", {"household": A}, community.statement, A, "2026-03", actor=ALICE)
    assert not community.unlink_user(A, "u-alice", actor=OPS)


def test_a_user_in_two_households(community: Community) -> None:
    """A person may be linked to several households (a landlord's flats, a family's two)."""
    _link(community, B, ALICE)
    assert community.links.households_of("u-alice") == frozenset({A, B})
    assert community.statement(B, "2026-03", actor=ALICE)["closed"] is False


def test_a_link_needs_a_known_household_and_a_user(community: Community) -> None:
    """Errors with their keys; nothing written."""
    _refused(
        "unknown_household",
        {"household": "nowhere"},
        community.link_user,
        "nowhere",
        "u-x",
        actor=OPS,
    )
    with pytest.raises(CommunityError) as info:
        community.link_user(A, "", actor=OPS)
    assert (info.value.key, info.value.placeholders["error"]) == (
        "ledger_error",
        "A user id must be a non-empty string of at most 200 characters.",
    )
    assert community.ledger.link_history() == [
        UserLink(A, "u-alice", True, "operator|u-ops|Ops", NOON),
        UserLink(B, "u-bob", True, "operator|u-ops|Ops", NOON),
    ]


def test_user_links_in_memory() -> None:
    """The live copy: both directions, empty for what is unknown, idempotent."""
    links = UserLinks({A: {"u1", "u2"}})
    links.link(B, "u1")
    links.link(B, "u1")
    assert links.households_of("u1") == frozenset({A, B})
    links.unlink(A, "u1")
    links.unlink(A, "nobody")
    assert links.households_of("u1") == frozenset({B})
    assert links.users_of(A) == frozenset({"u2"})
    assert links.users_of("nowhere") == frozenset()
    assert links.households_of("nobody") == frozenset()
    assert links.as_dict() == {A: frozenset({"u2"}), B: frozenset({"u1"})}


def test_check_is_a_pure_function() -> None:
    """The rules alone, without a community: what an adapter may ask before it offers a control."""
    links = UserLinks({A: {"u-alice"}})
    assert check(OPS, "cut", links, meter_id=M1, account_id=A) is None
    refusal = check(ALICE, "restore", links, meter_id=M1, account_id=A, cut_reason="overload")
    assert refusal is not None
    assert (refusal.key, dict(refusal.placeholders)) == (
        "restore_needs_operator",
        {"meter_id": M1, "reason": "overload"},
    )
    assert (
        check(ALICE, "restore", links, meter_id=M1, account_id=A, cut_reason="credit_exhausted")
        is None
    )
    assert check(ALICE, "statement", links, account_id=A) is None


# ---------------------------------------------------------------------------- through the service


class _Listener:
    def __init__(self) -> None:
        self.changed: list[str] = []

    def events(self, events: Sequence[Event]) -> None:
        pass

    def meter_changed(self, meter_id: str) -> None:
        self.changed.append(meter_id)

    def meter_discovered(self, meter_id: str) -> None:
        pass

    def connection(self, connected: bool, reason: str) -> None:
        pass


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service(ledger: Ledger, clock: Clock) -> CommunityService:
    community = Community(
        ledger,
        load_preset("beijing_monthly"),
        PolicyConfig(),
        clock=clock,
        enforce_permissions=True,
    )
    return CommunityService(
        community,
        make_profile("native", community="c"),
        TransportConfig(host="127.0.0.1", port=_closed_port(), client_id="perm", timeout=1),
        prefix="prepaid",
        community_id="c",
        currency="CNY",
        listener=_Listener(),
        timing=ServiceTiming(commit_interval_s=3600, tick_interval_s=3600),
        clock=clock,
    )


async def test_the_service_links_people_and_checks_every_request(
    ledger: Ledger, clock: Clock, path: Path, socket_enabled: None
) -> None:
    """Link, unlink, ask, and restart: the service's doors apply the community's rules."""
    service = _service(ledger, clock)
    await service.start()
    try:
        await service.assign(M1, A, "A", actor=OPS)
        await service.assign(M2, B, "B")  # no actor: the host decided (as before)
        with pytest.raises(CommunityError, match="operator"):
            await service.assign(M2, A, "A", actor=ALICE)
        assert await service.link_user(A, "u-alice", actor=OPS)
        assert not await service.link_user(A, "u-alice", actor=OPS)
        assert await service.link_user(B, "u-alice", actor=OPS)
        assert await service.link_user(B, "u-bob", actor=OPS)
        assert service.households_of("u-alice") == frozenset({A, B})
        assert service.users_of(B) == frozenset({"u-alice", "u-bob"})
        assert await service.unlink_user(B, "u-alice", actor=OPS)
        assert service.households_of("u-alice") == frozenset({A})
        with pytest.raises(CommunityError) as info:
            await service.link_user(B, "u-alice", actor=BOB)
        assert info.value.key == "not_authorized"
        with pytest.raises(CommunityError) as info:
            await service.statement(B, "2026-03", actor=ALICE)
        assert info.value.key == "not_your_household"
        assert (await service.statement(A, "2026-03", actor=ALICE))["closed"] is False
        with pytest.raises(CommunityError) as info:
            await service.request_supply(M1, "off", actor=ALICE)
        assert info.value.key == "cut_needs_operator"
        with pytest.raises(CommunityError) as info:
            await service.top_up(A, Decimal(10), "t-a", "cash", ALICE)
        assert info.value.key == "not_authorized"
        with pytest.raises(CommunityError) as info:
            await service.post_money(
                A, SubAccount.ELECTRICITY, EntryKind.ADJUSTMENT, Decimal(1), "a", actor=ALICE
            )
        assert info.value.key == "not_authorized"
        with pytest.raises(CommunityError) as info:
            service.set_low_threshold(M2, Decimal(5), actor=ALICE)
        assert info.value.key == "not_your_meter"
        service.set_low_threshold(M1, Decimal(5), actor=ALICE)
        assert service.community.meters[M1].low_threshold == Decimal(5)
        assert ledger.entries(A) == []
    finally:
        await service.stop()

    restarted = _service(Ledger(path), clock)
    await restarted.start()
    try:
        assert restarted.households_of("u-alice") == frozenset({A})
        assert restarted.users_of(B) == frozenset({"u-bob"})
        with pytest.raises(CommunityError) as info:
            await restarted.statement(B, "2026-03", actor=ALICE)
        assert info.value.key == "not_your_household"
    finally:
        await restarted.stop()
