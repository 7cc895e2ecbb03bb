"""CommunityService on a real mosquitto with dynamic security: a household's own requests.

The community logs in as its platform user, the household as its own (read only its account,
publish only its request), the meter as its own: what the broker's ACLs allow is all there is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
import json
from pathlib import Path
import time

import pytest

from custom_components.prepaid_meter.engine.broker_acl import DynSecAdmin
from custom_components.prepaid_meter.engine.community import Community, Event
from custom_components.prepaid_meter.engine.household import HouseholdClient, RequestAnswer
from custom_components.prepaid_meter.engine.ledger import Ledger
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.profiles import make_profile
from custom_components.prepaid_meter.engine.service import CommunityService, ServiceTiming
from custom_components.prepaid_meter.engine.tariff import load_preset
from tests.broker import Mosquitto
from tests.engine.test_broker_acl import admin_config, dynsec, dynsec_module, login
from tests.transport.test_transport import wait_for

from .test_community import OPS

__all__ = ["dynsec", "dynsec_module"]  # the broker fixtures, used by name

C = "pine"
M1 = "000000000101"
A = "hh-101"


class _Listener:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    def events(self, events: Sequence[Event]) -> None:
        self.kinds += [event.kind for event in events]

    def meter_changed(self, meter_id: str) -> None:
        pass

    def meter_discovered(self, meter_id: str) -> None:
        pass

    def connection(self, connected: bool, reason: str) -> None:
        pass


def _reading(seq: int, kwh: str) -> bytes:
    return json.dumps(
        {"v": 1, "seq": seq, "ts": int(time.time()), "energy_kwh": kwh, "power_w": 500.0}
    ).encode()


async def _ask(household: HouseholdClient) -> RequestAnswer:
    request_id = await household.request_restore()
    async with asyncio.timeout(10):
        return await household.wait_answer(request_id)


async def test_a_household_asks_for_its_supply_back_through_the_broker(
    dynsec: Mosquitto, tmp_path: Path
) -> None:
    """Refused while in debt, granted once paid, refused after an operator's cut."""
    async with DynSecAdmin(admin_config(dynsec)) as admin:
        platform = await admin.ensure_platform(C)
        household_login = await admin.ensure_household(C, M1)
        meter_login = await admin.ensure_meter(C, M1)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    # No emergency credit and no friendly hours: the cut comes with the first debt, any time.
    policy = PolicyConfig.from_options(
        {
            "emergency_credit": 0,
            "friendly_start": "00:00",
            "friendly_end": "00:00",
            "friendly_weekends": False,
        }
    )
    community = Community(ledger, load_preset("beijing_monthly"), policy, enforce_permissions=True)
    community.load()
    listener = _Listener()
    service = CommunityService(
        community,
        make_profile("native", community=C),
        platform.transport_config("pm-pine"),
        prefix="prepaid",
        community_id=C,
        currency="CNY",
        listener=listener,
        timing=ServiceTiming(publish_interval_s=0.1, commit_interval_s=3600),
    )
    household = HouseholdClient(household_login, client_id="pm-pine-101")
    await service.start()
    try:
        async with asyncio.timeout(10):
            await service.transport.wait_connected()
        await service.assign(M1, A, "Room 101", actor=OPS)
        await service.top_up(A, Decimal("1.00"), "t-1", "wechat", actor=OPS)
        await household.start()
        async with login(meter_login, dynsec, name="meter-101", client_id=M1) as meter:
            await meter.publish(f"prepaid/{C}/{M1}/announce", b'{"v":1}', qos=1)
            await meter.publish(f"prepaid/{C}/{M1}/telemetry", _reading(1, "100.000"), qos=1)
            await meter.publish(f"prepaid/{C}/{M1}/telemetry", _reading(2, "110.000"), qos=1)
            await wait_for(lambda: community.meters[M1].desired_relay == "off", 10)
        await wait_for(lambda: household.view is not None and household.view.relay == "off", 10)

        answer = await _ask(household)
        assert (answer.ok, answer.reason) == (False, "credit_exhausted_restore_refused")
        assert community.meters[M1].desired_relay == "off"

        await service.top_up(A, Decimal("100"), "t-2", "wechat", actor=OPS)
        answer = await _ask(household)
        assert (answer.ok, answer.reason) == (True, None)
        assert community.meters[M1].desired_relay == "on"
        await wait_for(lambda: household.view is not None and household.view.relay == "on", 10)
        assert "supply_restored" in listener.kinds

        await service.request_supply(M1, "off", actor=OPS)
        answer = await _ask(household)
        assert (answer.ok, answer.reason) == (False, "restore_needs_operator")
        assert community.meters[M1].desired_relay == "off"

        # Move-out: the meter is freed and its retained account topic cleared.
        assert await service.unassign(M1, actor=OPS) == A
        await household.stop()
        later = HouseholdClient(household_login, client_id="pm-pine-101-later")
        await later.start()
        try:
            await wait_for(lambda: later.connected, 10)
            await asyncio.sleep(0.5)
            assert later.view is None  # nothing retained for a household that left
        finally:
            await later.stop()
    finally:
        await household.stop()
        await service.stop()
        ledger.close()


@pytest.mark.parametrize("payload", [b"not json", b'{"v":1,"id":"x y","op":"restore","ts":1}'])
async def test_a_bad_request_changes_nothing_and_is_counted(
    dynsec: Mosquitto, tmp_path: Path, payload: bytes
) -> None:
    async with DynSecAdmin(admin_config(dynsec)) as admin:
        platform = await admin.ensure_platform(C)
        household_login = await admin.ensure_household(C, M1)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    community = Community(ledger, load_preset("beijing_monthly"), PolicyConfig())
    community.load()
    service = CommunityService(
        community,
        make_profile("native", community=C),
        platform.transport_config("pm-pine"),
        prefix="prepaid",
        community_id=C,
        currency="CNY",
        listener=_Listener(),
        timing=ServiceTiming(publish_interval_s=0.1, commit_interval_s=3600),
    )
    await service.start()
    try:
        async with asyncio.timeout(10):
            await service.transport.wait_connected()
        await service.assign(M1, A, "Room 101")
        async with login(household_login, dynsec, name="hh-101", client_id="hh-101") as client:
            await client.publish(f"prepaid/{C}/{M1}/request", payload, qos=1)
        meter = community.meters[M1]
        await wait_for(lambda: sum(meter.rejected.values()) == 1, 10)
        assert meter.request_answer is None
        assert meter.desired_relay == "on"
    finally:
        await service.stop()
        ledger.close()
