"""The household's own client (resident mode) on a real mosquitto with dynamic security.

The community side is played by the platform's broker user publishing what the community
publishes (the retained `account` topic) and reading the household's `request` topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
import dataclasses
from decimal import Decimal
import json
from pathlib import Path
from typing import Any

import pytest

from custom_components.prepaid_meter.engine.broker_acl import ConnectionDetails, DynSecAdmin
from custom_components.prepaid_meter.engine.household import (
    AccessRefused,
    HouseholdClient,
    HouseholdView,
    RequestAnswer,
    RestoreRequest,
    check_household,
    parse_account,
    parse_request,
    request_answer,
    request_payload,
)
from custom_components.prepaid_meter.engine.protocol import Rejected
from custom_components.prepaid_meter.engine.transport import (
    CannotConnect,
    InvalidAuth,
    NotConnected,
    exponential_backoff,
)
from tests.broker import Mosquitto, free_port
from tests.engine.test_broker_acl import admin_config, login
from tests.transport.test_transport import wait_for

C = "elm"
FAST = exponential_backoff(base=0.05, cap=0.3)


def account(**changes: Any) -> bytes:
    """Return an account payload as the community publishes it, with `changes`."""
    body: dict[str, Any] = {
        "v": 1,
        "balance": "12.34",
        "currency": "CNY",
        "low": False,
        "relay": "on",
        "cycle": "2026-11",
        "cycle_kwh": "250.100",
        "tier": 2,
        "price": "0.5383",
        "updated": 1_764_300_000,
    }
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


# -- parsing (no broker) --------------------------------------------------------------------


def test_account_as_the_community_publishes_it() -> None:
    """Today's payload, and the optional members the platform may add."""
    view = parse_account(account())
    assert view == HouseholdView(
        balance=Decimal("12.34"),
        currency="CNY",
        updated=1_764_300_000,
        low=False,
        relay="on",
        cycle="2026-11",
        cycle_kwh=Decimal("250.100"),
        tier=2,
        price=Decimal("0.5383"),
    )
    full = parse_account(
        account(
            relay="off",
            reason="credit_exhausted",
            days_left="3.5",
            today_kwh="4.200",
            today_cost="2.26",
            month_kwh=120,
            month_cost=64.6,
            request={"id": "r-1", "ok": False, "reason": "restore_needs_operator"},
            future_member={"anything": [1, 2]},
        )
    )
    assert isinstance(full, HouseholdView)
    assert full.relay == "off"
    assert full.reason == "credit_exhausted"
    assert full.days_left == Decimal("3.5")
    assert (full.today_kwh, full.today_cost) == (Decimal("4.200"), Decimal("2.26"))
    assert (full.month_kwh, full.month_cost) == (Decimal(120), Decimal("64.6"))
    assert full.request == RequestAnswer(id="r-1", ok=False, reason="restore_needs_operator")
    assert full.ignored == ()
    # Nulls (an unassigned tier, no price) read as absent.
    nulls = parse_account(account(tier=None, price=None, relay=None))
    assert isinstance(nulls, HouseholdView)
    assert (nulls.tier, nulls.price, nulls.relay) == (None, None, None)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b"null",
        b'{"v": 1}',
        account(balance=...),
        account(balance=True),
        account(balance="12,34"),
        account(balance="1e400"),
        account(balance="NaN"),
        account(balance=10**20),
        account(currency=...),
        account(currency=["CNY"]),
        account(updated="yesterday"),
        account(updated=-1),
        account(v=2),
        b'{"v": 1, "balance": NaN, "currency": "CNY", "updated": 1}',
        b'{"balance": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        account(cycle="x" * 5000),
    ],
)
def test_garbage_accounts_are_rejected(payload: bytes) -> None:
    """A payload that is not an account is `Rejected`, never an exception."""
    assert isinstance(parse_account(payload), Rejected)


def test_bad_optional_members_read_as_absent() -> None:
    """A bad optional member does not hide the balance; it is named in `ignored`."""
    view = parse_account(
        account(
            relay="maybe",
            tier=True,
            low="no",
            days_left="soon",
            reason="Not A Key!",
            request={"id": "bad id with spaces", "ok": True},
        )
    )
    assert isinstance(view, HouseholdView)
    assert view.balance == Decimal("12.34")
    assert (view.relay, view.tier, view.low, view.days_left, view.reason, view.request) == (
        None,
        None,
        None,
        None,
        None,
        None,
    )
    assert set(view.ignored) == {"relay", "tier", "low", "days_left", "reason", "request"}


def test_request_payloads() -> None:
    """The request as decided: {v, id, op: restore, ts}; the community's reading of it."""
    payload = request_payload("r-42:a.b_c", 1_764_300_000)
    assert json.loads(payload) == {"v": 1, "id": "r-42:a.b_c", "op": "restore", "ts": 1_764_300_000}
    assert parse_request(payload) == RestoreRequest(id="r-42:a.b_c", op="restore", ts=1_764_300_000)
    for bad in (
        b"{}",
        b'{"v":1,"id":"a b","op":"restore","ts":1}',
        b'{"v":1,"id":"' + b"x" * 129 + b'","op":"restore","ts":1}',
        b'{"v":1,"id":"a","op":"cut","ts":1}',
        b'{"v":1,"id":"a","op":"restore","ts":"now"}',
        b'{"v":2,"id":"a","op":"restore","ts":1}',
        b"[]",
        b"\x00",
    ):
        assert isinstance(parse_request(bad), Rejected), bad
    with pytest.raises(ValueError, match="request id"):
        request_payload("has space", 1)
    assert request_answer("r-1", True) == {"id": "r-1", "ok": True}
    assert request_answer("r-1", False, "not_paid") == {
        "id": "r-1",
        "ok": False,
        "reason": "not_paid",
    }
    with pytest.raises(ValueError, match="reason"):
        request_answer("r-1", False)


# -- on a broker ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dynsec_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """Return one broker with the dynamic security plugin for this module."""
    broker = Mosquitto(
        tmp_path_factory.mktemp("dynsec-hh"), persistence=False, dynamic_security=True
    )
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def dynsec(dynsec_module: Mosquitto, socket_enabled: None) -> Mosquitto:
    """Return the module's broker, with sockets enabled for this test."""
    return dynsec_module


async def provision(broker: Mosquitto, *meters: str) -> tuple[list[ConnectionDetails], Any]:
    """Return household details for `meters` and the platform's details."""
    async with DynSecAdmin(admin_config(broker)) as admin:
        households = [await admin.ensure_household(C, meter) for meter in meters]
        platform = await admin.ensure_platform(C)
    return households, platform


class Views:
    """A listener that records every view it is given."""

    def __init__(self) -> None:
        self.seen: list[HouseholdView] = []

    def __call__(self, view: HouseholdView) -> None:
        self.seen.append(view)


async def test_retained_state_at_once_then_every_change(dynsec: Mosquitto) -> None:
    """The account is there on connect; each change reaches the listener once."""
    meter = "100000000001"
    (household,), platform = await provision(dynsec, meter)
    topic = f"prepaid/{C}/{meter}/account"
    views = Views()
    async with login(platform, dynsec, name="community-1") as community:
        await community.publish(topic, account(balance="5.00"), qos=1, retain=True)
        async with HouseholdClient(household, views, backoff=FAST) as client:
            await wait_for(lambda: len(views.seen) == 1, 5)
            assert client.connected
            assert views.seen[0].balance == Decimal("5.00")
            await community.publish(topic, account(balance="4.50", low=True), qos=1, retain=True)
            await wait_for(lambda: len(views.seen) == 2, 5)
            assert (views.seen[1].balance, views.seen[1].low) == (Decimal("4.50"), True)
            # The same state again is no change.
            await community.publish(topic, account(balance="4.50", low=True), qos=1, retain=True)
            await community.publish(topic, account(balance="4.00"), qos=1, retain=True)
            await wait_for(lambda: len(views.seen) == 3, 5)
            assert client.view == views.seen[-1]
            assert client.view is not None
            assert client.view.balance == Decimal("4.00")
        assert not client.connected


async def test_garbage_is_counted_and_ignored(dynsec: Mosquitto) -> None:
    """Garbage on the account and telemetry topics never crashes and keeps the last state."""
    meter = "100000000002"
    (household,), platform = await provision(dynsec, meter)
    base = f"prepaid/{C}/{meter}"
    views = Views()
    readings: list[Any] = []
    async with login(platform, dynsec, name="community-2") as community:
        await community.publish(f"{base}/account", account(balance="9.00"), qos=1, retain=True)
        async with HouseholdClient(
            household, views, telemetry=True, on_reading=readings.append, backoff=FAST
        ) as client:
            await wait_for(lambda: len(views.seen) == 1, 5)
            garbage = [b"", b"\xff", b"[]", b"{", account(balance=...), account(v=9), b"0" * 9000]
            for payload in garbage:
                await community.publish(f"{base}/account", payload, qos=1)
            await community.publish(f"{base}/telemetry", b"{not telemetry", qos=1)
            await community.publish(
                f"{base}/telemetry",
                b'{"v":1,"seq":1,"ts":1764300000,"energy_kwh":"10.5","relay":"on"}',
                qos=1,
            )
            await community.publish(f"{base}/account", account(balance="8.00"), qos=1, retain=True)
            await wait_for(lambda: len(views.seen) == 2, 5)
            await wait_for(lambda: len(readings) == 1, 5)
            assert client.malformed == {"account": len(garbage), "telemetry": 1}
            assert [v.balance for v in views.seen] == [Decimal("9.00"), Decimal("8.00")]
            assert readings[0].energy_kwh == Decimal("10.5")
            assert client.reading == readings[0]
            assert client.connected


async def test_staleness_follows_the_communitys_clock(dynsec: Mosquitto) -> None:
    """Staleness is how long ago the community stamped the account; unknown before any."""
    meter = "100000000003"
    (household,), platform = await provision(dynsec, meter)
    now = [1_764_300_100.0]
    views = Views()
    client = HouseholdClient(household, views, backoff=FAST, clock=lambda: now[0])
    assert client.staleness() is None
    assert client.is_stale(60)
    async with login(platform, dynsec, name="community-3") as community:
        await community.publish(
            f"prepaid/{C}/{meter}/account", account(updated=1_764_300_000), qos=1, retain=True
        )
        async with client:
            await wait_for(lambda: len(views.seen) == 1, 5)
            assert client.staleness() == 100.0
            assert client.is_stale(60)
            assert not client.is_stale(120)
            now[0] = 1_764_299_000.0  # the household's clock behind the community's
            assert client.staleness() == 0.0
            now[0] = 1_764_300_100.0
            await community.publish(
                f"prepaid/{C}/{meter}/account", account(updated=1_764_300_090), qos=1, retain=True
            )
            await wait_for(lambda: len(views.seen) == 2, 5)
            assert client.staleness() == 10.0


async def test_restore_request_and_its_answer(dynsec: Mosquitto) -> None:
    """A request reaches the community as decided; its answer comes back in the account."""
    meter = "100000000004"
    (household,), platform = await provision(dynsec, meter)
    base = f"prepaid/{C}/{meter}"
    views = Views()
    async with login(platform, dynsec, name="community-4") as community:
        await community.subscribe(f"{base}/request", qos=1)
        await community.publish(f"{base}/account", account(relay="off"), qos=1, retain=True)
        client = HouseholdClient(household, views, backoff=FAST, clock=lambda: 1_764_300_500)
        with pytest.raises(NotConnected):
            await client.request_restore()
        async with client:
            await wait_for(lambda: len(views.seen) == 1, 5)
            assert [client.last_answer] == [None]  # (no narrowing: it changes below)
            with pytest.raises(ValueError, match="request id"):
                await client.request_restore("not valid!")
            request_id = await client.request_restore()
            async with asyncio.timeout(5):
                message = await anext(aiter(community.messages))
            # The first message is the valid request: the bad id was never sent.
            assert message.topic.value == f"{base}/request"
            assert not message.retain
            assert message.qos == 1
            assert bytes(message.payload) == request_payload(request_id, 1_764_300_500)
            request = parse_request(bytes(message.payload))
            assert isinstance(request, RestoreRequest)
            # The community refuses it, then accepts a second one.
            refusal = request_answer(request.id, False, "restore_needs_operator")
            await community.publish(
                f"{base}/account", account(relay="off", request=refusal), qos=1, retain=True
            )
            async with asyncio.timeout(5):
                answer = await client.wait_answer(request_id)
            assert answer == RequestAnswer(id=request_id, ok=False, reason="restore_needs_operator")
            assert await client.request_restore("hh-2") == "hh-2"
            accepted = request_answer("hh-2", True)
            await community.publish(
                f"{base}/account", account(relay="on", request=accepted), qos=1, retain=True
            )
            async with asyncio.timeout(5):
                assert await client.wait_answer("hh-2") == RequestAnswer(id="hh-2", ok=True)
            assert client.last_answer == RequestAnswer(id="hh-2", ok=True)
            assert client.view is not None
            assert client.view.relay == "on"
            assert client.sent_requests == [request_id, "hh-2"]


async def test_check_household_for_a_config_flow(dynsec: Mosquitto) -> None:
    """One login: the account if there is one; wrong meter, password or port are errors."""
    meter, other = "100000000005", "100000000006"
    (household, neighbour), platform = await provision(dynsec, meter, other)
    async with login(platform, dynsec, name="community-5") as community:
        await community.publish(
            f"prepaid/{C}/{meter}/account", account(balance="7.77"), qos=1, retain=True
        )
    view = await check_household(household)
    assert view is not None
    assert view.balance == Decimal("7.77")
    # No account yet for the neighbour: None after the wait, not an error.
    assert await check_household(neighbour, wait=0.2) is None
    # The neighbour's credentials with this meter: the broker refuses the subscription.
    with pytest.raises(AccessRefused):
        await check_household(dataclasses.replace(neighbour, meter=meter))
    with pytest.raises(InvalidAuth):
        await check_household(dataclasses.replace(household, password="wrong"))
    with pytest.raises(CannotConnect):
        await check_household(dataclasses.replace(household, port=free_port()), link_timeout=2)


async def test_reconnects_after_the_broker_restarts(tmp_path: Path, socket_enabled: None) -> None:
    """The client comes back by itself and shows what the community published meanwhile."""
    broker = Mosquitto(tmp_path / "restarts", persistence=True, dynamic_security=True)
    broker.start()
    try:
        meter = "100000000007"
        (household,), platform = await provision(broker, meter)
        topic = f"prepaid/{C}/{meter}/account"
        views = Views()
        links: list[bool] = []
        async with login(platform, broker, name="community-6") as community:
            await community.publish(topic, account(balance="3.00"), qos=1, retain=True)
        async with HouseholdClient(
            household, views, on_connection=links.append, backoff=FAST
        ) as client:
            await wait_for(lambda: len(views.seen) == 1, 5)
            broker.restart()
            await wait_for(lambda: links.count(False) == 1, 5)
            async with login(platform, broker, name="community-7") as community:
                await community.publish(topic, account(balance="2.00"), qos=1, retain=True)
            await wait_for(lambda: len(views.seen) == 2, 10)
            assert views.seen[-1].balance == Decimal("2.00")
            assert client.connected
            assert links[:2] == [True, False]
            assert links[-1] is True
    finally:
        broker.stop()
