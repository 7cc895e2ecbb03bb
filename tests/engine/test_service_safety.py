"""The service's safety parts: the minute's tick lets time pass for the watch, operators'
requests are journaled before they apply, the watch's state is kept in the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.community import Community, CommunityError, Event
from custom_components.prepaid_meter.engine.ledger import Ledger
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.profiles import make_profile
from custom_components.prepaid_meter.engine.service import CommunityService
from custom_components.prepaid_meter.engine.tariff import load_preset
from custom_components.prepaid_meter.engine.transport import TransportConfig
from tests.engine.test_community import R

M1 = "000000000001"
A = "b3-u2-501"
OPS = Actor("operator", user_id="u-ops", name="Ops")
T0 = 1_790_000_000


class _Listener:
    """What the service tells its host, kept."""

    def __init__(self) -> None:
        self.got: list[Event] = []
        self.changed: list[str] = []

    def kinds(self) -> list[tuple[str, str | None]]:
        """Return the alarm events told, with their type."""
        alarms = ("alarm", "alarm_cleared", "alarm_acknowledged", "inactivity")
        return [(e.kind, e.data.get("type")) for e in self.got if e.kind in alarms]

    def events(self, events: Sequence[Event]) -> None:
        self.got += events

    def meter_changed(self, meter_id: str) -> None:
        self.changed.append(meter_id)

    def meter_discovered(self, meter_id: str) -> None:
        pass

    def connection(self, connected: bool, reason: str) -> None:
        pass


class _Clock:
    def __init__(self, now: int) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


def _service(ledger: Ledger, listener: _Listener, clock: _Clock) -> CommunityService:
    """A service whose transport is never started: its safety parts need no broker."""
    community = Community(ledger, load_preset("flat"), PolicyConfig(), clock=clock)
    community.load()
    return CommunityService(
        community,
        make_profile("native", community="pine"),
        TransportConfig(host="127.0.0.1", client_id="pm-test"),
        prefix="prepaid",
        community_id="pine",
        currency="CNY",
        listener=listener,
        clock=clock,
    )


async def test_tick_acknowledge_settings_and_kept_state(tmp_path: Path) -> None:
    clock = _Clock(T0)
    listener = _Listener()
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        service = _service(ledger, listener, clock)
        community = service.community
        await service.assign(M1, A, "Room 501", actor=OPS)
        assert await service.set_household_safety(A, care=True, actor=OPS) is True
        assert await service.set_household_safety(A, care=True, actor=OPS) is False
        assert community.households[A].care is True
        assert M1 in listener.changed
        with pytest.raises(CommunityError) as err:
            await service.set_household_safety(A, rules={"care_hours": 0}, actor=OPS)
        assert err.value.key == "invalid_safety_rule"

        service.community.handle_reading(R(M1, 1, T0 - 60, Decimal(1)))
        await service.tick()
        assert listener.kinds() == []
        clock.now = T0 + 3600
        await service.tick()  # an hour without a word from the meter
        assert listener.kinds() == [("alarm", "offline")]

        await service.acknowledge_alarm(M1, "offline", actor=OPS)
        assert listener.kinds()[-1] == ("alarm_acknowledged", "offline")
        assert [(a.kind, a.actor) for a in ledger.safety_acks()] == [("offline", str(OPS))]
        with pytest.raises(CommunityError) as err:
            await service.acknowledge_alarm(M1, "tamper", actor=OPS)
        assert err.value.key == "no_open_alarm"

        await service.save_safety_state()
        again = _service(ledger, _Listener(), clock)
        assert again.community.alarms(M1) == ["offline"]
        assert again.community.safety.alarms(M1)["offline"].acknowledged_by == str(OPS)
        assert again.community.households[A].care is True
