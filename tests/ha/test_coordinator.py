"""The runtime as the service's listener: each kind of engine event, and the broker link.

The service is mocked at its seam (tests/ha/seam.py): these tests hand the runtime what the
service would (events, meter changes, the link's state) and check what Home Assistant then
shows: bus events and their logbook lines, repairs raised and cleared, device names and
models, entity availability. No broker, no socket.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
import logging
import time
from typing import TYPE_CHECKING, Any, get_args

from freezegun.api import FrozenDateTimeFactory
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import Event as HassEvent, HomeAssistant
from homeassistant.helpers import device_registry as dr, issue_registry as ir
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    async_capture_events,
    async_fire_time_changed,
)

from custom_components.prepaid_meter.const import DOMAIN
from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.community import (
    PEOPLE_EVENTS,
    Event,
    EventKind,
)
from custom_components.prepaid_meter.events import PAYMENT_EVENT
from custom_components.prepaid_meter.logbook import async_describe_events
from tests.ha.conftest import METER_ID

if TYPE_CHECKING:
    from tests.ha.seam import Seam

pytest_plugins = ["tests.ha.seam"]

HOUSEHOLD = "b3-501"
LABEL = "Household 3-501"
OTHER_METER = "000012345679"
#: The seam's community id and name (tests/ha/seam.py).
COMMUNITY_ID = "seam"
COMMUNITY_NAME = "Seam community"

type Describe = Callable[[HassEvent], dict[str, str]]


def _all_kinds() -> set[str]:
    """Return every kind of engine event, from the `EventKind` alias itself."""
    kinds: set[str] = set()
    pending: list[Any] = [EventKind.__value__]
    while pending:
        item = pending.pop()
        if hasattr(item, "__value__"):  # a type alias (PeopleEventKind)
            pending.append(item.__value__)
        elif isinstance(item, str):
            kinds.add(item)
        else:
            pending.extend(get_args(item))
    return kinds


#: Each kind of engine event and the test here that shows what it becomes.
KIND_TESTS: dict[str, str] = {
    **dict.fromkeys(sorted(PEOPLE_EVENTS), "test_people_events_on_the_bus_and_in_the_logbook"),
    "command_failed": "test_command_failed_repair_until_confirmed",
    "command_confirmed": "test_command_failed_repair_until_confirmed",
    "register_reset": "test_register_reset_raises_one_repair",
    "unassigned_meter": "test_unassigned_meter_repair_cleared_by_assignment",
    "assigned": "test_unassigned_meter_repair_cleared_by_assignment",
    "unknown_meter": "test_unknown_meter_one_community_repair_and_no_device",
    "announce": "test_announce_shows_model_and_firmware_on_the_device",
    "relay": "test_relay_and_account_write_the_community_figures",
    "account": "test_relay_and_account_write_the_community_figures",
    "availability": "test_availability_lists_the_meter_offline",
    "reconcile": "test_service_business_kinds_show_nothing",
    "display": "test_service_business_kinds_show_nothing",
    "cycle_closed": "test_service_business_kinds_show_nothing",
    "rejected": "test_service_business_kinds_show_nothing",
}


def test_every_event_kind_has_a_test() -> None:
    """A kind the engine adds fails here until a test says what Home Assistant makes of it."""
    assert set(KIND_TESTS) == _all_kinds()
    assert len(_all_kinds()) == 23
    for name in set(KIND_TESTS.values()):
        assert callable(globals()[name]), name


def _issues(hass: HomeAssistant) -> dict[str, ir.IssueEntry]:
    return {
        issue_id: issue
        for (domain, issue_id), issue in ir.async_get(hass).issues.items()
        if domain == DOMAIN
    }


def _captured(hass: HomeAssistant) -> list[HassEvent]:
    """Capture every bus event of this integration from now on."""
    captured: list[HassEvent] = []

    def listener(event: HassEvent) -> None:
        if str(event.event_type).startswith("prepaid_meter_"):
            captured.append(event)

    hass.bus.async_listen("*", listener)  # type: ignore[arg-type, unused-ignore]
    return captured


def _logbook(hass: HomeAssistant) -> dict[str, Describe]:
    """Return the integration's logbook describer of each event type."""
    described: dict[str, Describe] = {}

    def collect(domain: str, event_type: str, describe: Describe) -> None:
        assert domain == DOMAIN
        described[event_type] = describe

    async_describe_events(hass, collect)
    return described


# ---------------------------------------------------------------------------- the seam


async def test_the_mock_keeps_the_services_shape(seam: Seam) -> None:
    """The mock refuses what the real service would not take (autospec)."""
    assert seam.runtime.service is seam.service
    with pytest.raises(AttributeError):
        seam.service.cut_everything  # noqa: B018 - the service has no such method
    with pytest.raises(AttributeError):
        seam.service.transport  # noqa: B018 - not handed over by the seam
    with pytest.raises(TypeError):
        seam.service.request_supply(METER_ID, "on")  # the actor is required
    with pytest.raises(TypeError):
        seam.service.set_low_threshold(METER_ID, Decimal(1), Actor.SYSTEM)  # keyword-only
    seam.service.start.assert_awaited_once_with({})  # no relay wishes kept outside the ledger


# ---------------------------------------------------------------------------- people events


def _people_events(ts: int) -> list[tuple[Event, dict[str, Any], str]]:
    """Return one event of each people kind, its bus data beyond the base, its logbook line.

    The events carry the data the engine gives them (engine/community.py, service.py).
    """
    automation = Actor.AUTOMATION.event_data()
    ops = Actor("operator", user_id="u-ops", name="Ops").event_data()
    system = Actor.SYSTEM.event_data()
    return [
        (
            Event(
                "low_balance",
                METER_ID,
                HOUSEHOLD,
                {"balance": "9.996", "level": 1, "household": LABEL},
            ),
            {"balance": "10.00", "level": 1},
            "balance is low: 10.00, warning level 1",
        ),
        (
            Event(
                "supply_cut",
                METER_ID,
                HOUSEHOLD,
                {
                    "state": "off",
                    "reason": "credit_exhausted",
                    **system,
                    "balance": "-0.3051",
                    "household": LABEL,
                },
            ),
            {
                "state": "off",
                "reason": "credit_exhausted",
                "actor": "system",  # no user id: left out, as every None but the household
                "actor_kind": "system",
                "balance": "-0.31",
            },
            "supply cut (credit exhausted) by the system; balance -0.31",
        ),
        (
            Event(
                "supply_restored",
                METER_ID,
                HOUSEHOLD,
                {"state": "on", "reason": "restored", **ops, "balance": "12", "household": LABEL},
            ),
            {
                "state": "on",
                "reason": "restored",
                "actor": "Ops",
                "actor_kind": "operator",
                "actor_user_id": "u-ops",
                "balance": "12.00",
            },
            "supply restored (on request) by operator Ops; balance 12.00",
        ),
        (
            Event(
                "supply_cut_deferred",
                METER_ID,
                HOUSEHOLD,
                {"reason": "friendly_hours", "balance": "-1.5"},
            ),
            {"reason": "friendly_hours", "balance": "-1.50"},
            "cut deferred (friendly hours); balance -1.50",
        ),
        (
            # A top-up names the household only: the bus event finds its meter.
            Event(
                "top_up",
                None,
                HOUSEHOLD,
                {
                    "amount": "20",
                    "channel": "wechat",
                    "transaction_id": "wx-1",
                    "duplicate": False,
                    "balance": "70",
                },
            ),
            {
                "amount": "20.00",
                "channel": "wechat",
                "transaction_id": "wx-1",
                "duplicate": False,
                "balance": "70.00",
            },
            "topped up 20.00 by WeChat Pay; balance 70.00",
        ),
        (
            Event(
                "alarm",
                METER_ID,
                HOUSEHOLD,
                {
                    "household": LABEL,
                    "current_a": 80.0,
                    "rated_current_a": 60.0,
                    "type": "overload",
                },
            ),
            {
                "current_a": 80.0,
                "rated_current_a": 60.0,
                "type": "overload",
                "state": "start",
                "balance": "50.00",
            },
            "alarm: overload",
        ),
        (
            Event(
                "alarm_cleared",
                METER_ID,
                HOUSEHOLD,
                {"household": LABEL, "type": "arc_fault", "started": ts, "minutes": 16},
            ),
            {"type": "arc_fault", "started": ts, "minutes": 16, "balance": "50.00"},
            "alarm cleared: arc fault",
        ),
        (
            Event(
                "inactivity",
                METER_ID,
                HOUSEHOLD,
                {"household": LABEL, "hours": 24.5, "started": ts},
            ),
            {"hours": 24.5, "started": ts, "balance": "50.00"},
            "no activity for 24.5 hours",
        ),
        (
            Event(
                "alarm_acknowledged",
                METER_ID,
                HOUSEHOLD,
                {"type": "tamper", "household": LABEL, "started": ts, "at": ts + 60, **ops},
            ),
            {
                "type": "tamper",
                "started": ts,
                "at": ts + 60,
                "actor": "Ops",
                "actor_kind": "operator",
                "actor_user_id": "u-ops",
                "balance": "50.00",
            },
            "alarm acknowledged: tamper, by operator Ops",
        ),
        (
            Event(
                "command_failed",
                METER_ID,
                HOUSEHOLD,
                {
                    "state": "off",
                    "reason": "manual",
                    **automation,
                    "outcome": "failed",
                    "error": "relay_stuck",
                    "tries": 1,
                    "command_id": "cmd-1",
                },
            ),
            {
                "state": "off",
                "reason": "manual",
                "actor": "automation",
                "actor_kind": "operator",
                "outcome": "failed",
                "error": "relay_stuck",
                "tries": 1,
                "command_id": "cmd-1",
                "balance": "50.00",
            },
            "supply cut (by hand) refused by the meter: relay_stuck; "
            "the supply may not be as wanted",
        ),
    ]


async def test_people_events_on_the_bus_and_in_the_logbook(seam: Seam) -> None:
    """Each people event is one `prepaid_meter_<kind>` with who, where and money to the cent.

    The household's balance stands in where the event has none; the users linked to the
    household (asked of the service) are named, for blueprints to notify. An alarm episode's
    start and end are each one `prepaid_meter_alarm` (its `state` start or clear) and one
    logbook line; `prepaid_meter_alarm_cleared` and `prepaid_meter_inactivity` are fired too
    (automations of earlier versions), with no line of their own.
    """
    hass = seam.hass
    await seam.household()
    seam.service.users_of.return_value = frozenset({"u-bob", "u-alice"})
    device = seam.runtime.meter_device(METER_ID)
    assert device is not None
    base = {
        "config_entry_id": seam.entry.entry_id,
        "community": COMMUNITY_ID,
        "meter_id": METER_ID,
        "device_id": device.id,
        "household": LABEL,
        "account_id": HOUSEHOLD,
        "users": ["u-alice", "u-bob"],
    }
    described = _logbook(hass)
    cases = _people_events(int(time.time()) - 3600)
    assert {event.kind for event, _data, _line in cases} == PEOPLE_EVENTS
    assert set(described) == {
        f"prepaid_meter_{kind}"
        for kind in PEOPLE_EVENTS - {"alarm_cleared", "inactivity"} | {PAYMENT_EVENT}
    }
    states = {"alarm": "start", "inactivity": "start", "alarm_cleared": "clear"}
    for event, data, line in cases:
        fired = async_capture_events(hass, f"prepaid_meter_{event.kind}")
        alarms = async_capture_events(hass, "prepaid_meter_alarm")
        await seam.deliver([event])
        assert len(fired) == 1, event.kind
        assert fired[0].data == {**base, **data}, event.kind
        seam.service.users_of.assert_called_with(HOUSEHOLD)
        if event.kind in states:
            [alarm] = alarms
            assert alarm.data == {
                **base,
                **data,
                "type": data.get("type", "inactivity"),
                "state": states[event.kind],
            }
            entry = described["prepaid_meter_alarm"](alarm)
        else:
            assert alarms == []
            entry = described[f"prepaid_meter_{event.kind}"](fired[0])
        assert entry == {"name": LABEL, "message": line}, event.kind


async def test_people_events_of_an_unassigned_meter(seam: Seam) -> None:
    """A cut of a meter no household has: named by the meter, no users, no balance."""
    hass = seam.hass
    await seam.announce()
    device = seam.runtime.meter_device(METER_ID)
    assert device is not None
    fired = async_capture_events(hass, "prepaid_meter_supply_cut")
    data = {
        "state": "off",
        "reason": "arc_fault",
        **Actor.SAFETY.event_data(),
        "balance": None,
        "household": None,
    }
    await seam.deliver([Event("supply_cut", METER_ID, None, data)])
    assert [event.data for event in fired] == [
        {
            "config_entry_id": seam.entry.entry_id,
            "community": COMMUNITY_ID,
            "meter_id": METER_ID,
            "device_id": device.id,
            "household": None,
            "state": "off",
            "reason": "arc_fault",
            "actor": "safety",
            "actor_kind": "safety",
            "users": [],
        }
    ]
    seam.service.users_of.assert_not_called()
    line = _logbook(hass)["prepaid_meter_supply_cut"](fired[0])
    assert line == {
        "name": METER_ID,
        "message": "supply cut (arc fault) by the safety protection; balance None",
    }


async def test_a_credit_cut_from_the_engine_reaches_the_bus_and_the_switch(seam: Seam) -> None:
    """Readings that exhaust the credit: the engine's own events, as the service hands them."""
    hass = seam.hass
    await seam.household()
    captured = _captured(hass)
    now = int(time.time())
    await seam.reading(now - 120, "100.000")
    # 130 kWh at 0.4883: 63.48 of 50.00, past the 10.00 of emergency credit
    events = await seam.reading(now - 60, "230.000")
    kinds = [event.kind for event in events]
    assert "relay" in kinds
    assert "supply_cut" in kinds
    cut = [event for event in captured if event.event_type == "prepaid_meter_supply_cut"]
    assert len(cut) == 1
    assert cut[0].data["balance"] == "-13.48"
    assert cut[0].data["reason"] == "credit_exhausted"
    assert cut[0].data["actor_kind"] == "system"
    # Only people events reach the bus (not relay, account, display).
    assert {str(event.event_type).removeprefix("prepaid_meter_") for event in captured} <= (
        PEOPLE_EVENTS
    )
    switch = seam.state("switch", "supply")
    assert switch.state == "off"
    assert switch.attributes["reason"] == "credit_exhausted"
    assert seam.state("sensor", "balance").state == "-13.48"


# ---------------------------------------------------------------------------- repairs


async def test_command_failed_repair_until_confirmed(seam: Seam) -> None:
    """A failed cut: one error repair and one event; the same wish failing again is quiet.

    A confirmation clears it; a later failure of a restore is a warning, and raised anew.
    """
    hass = seam.hass
    await seam.household()
    issue_id = f"command_failed_{seam.entry.entry_id}_{METER_ID}"
    failed = async_capture_events(hass, "prepaid_meter_command_failed")

    def failure(state: str, tries: int) -> Event:
        return Event(
            "command_failed",
            METER_ID,
            HOUSEHOLD,
            {
                "state": state,
                "reason": "manual",
                **Actor.AUTOMATION.event_data(),
                "outcome": "expired",
                "error": None,
                "tries": tries,
                "command_id": f"cmd-{state}",
            },
        )

    await seam.deliver([failure("off", 5)])
    issue = seam.issue(issue_id)
    assert issue is not None
    assert issue.severity is ir.IssueSeverity.ERROR  # a home believed cut may still be on
    assert issue.translation_key == "command_failed"
    assert issue.translation_placeholders == {
        "meter_id": METER_ID,
        "community": COMMUNITY_NAME,
        "state": "off",
    }
    assert len(failed) == 1
    line = _logbook(hass)["prepaid_meter_command_failed"](failed[0])
    assert line["message"] == (
        "supply cut (by hand) not acknowledged by the meter; the supply may not be as wanted"
    )

    await seam.deliver([failure("off", 5)])  # the reconcile's retry fails again
    assert len(failed) == 1

    await seam.deliver([Event("command_confirmed", METER_ID, HOUSEHOLD, {"state": "off"})])
    assert seam.issue(issue_id) is None
    assert len(failed) == 1  # a confirmation is no bus event

    await seam.deliver([failure("on", 5)])
    issue = seam.issue(issue_id)
    assert issue is not None
    assert issue.severity is ir.IssueSeverity.WARNING
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["state"] == "on"
    assert len(failed) == 2

    await seam.deliver([Event("command_confirmed", METER_ID, HOUSEHOLD, {"state": "on"})])
    await seam.deliver([failure("on", 5)])  # failing again after a success: told again
    assert len(failed) == 3
    assert seam.issue(issue_id) is not None


async def test_register_reset_raises_one_repair(seam: Seam) -> None:
    """A register that goes back: one warning repair naming the meter, however often."""
    await seam.household()
    now = int(time.time())
    await seam.reading(now - 180, "100.000")
    events = await seam.reading(now - 120, "5.000")
    assert [e.kind for e in events if e.kind == "register_reset"] == ["register_reset"]
    await seam.reading(now - 60, "1.000")
    issues = _issues(seam.hass)
    issue_id = f"register_reset_{seam.entry.entry_id}_{METER_ID}"
    assert [i for i in issues if i.startswith("register_reset")] == [issue_id]
    assert issues[issue_id].severity is ir.IssueSeverity.WARNING
    assert issues[issue_id].translation_placeholders == {
        "meter_id": METER_ID,
        "community": COMMUNITY_NAME,
    }


async def test_unassigned_meter_repair_cleared_by_assignment(
    seam: Seam, device_registry: dr.DeviceRegistry
) -> None:
    """A new meter is a device named by its id and a repair; assigning names it, clears it."""
    devices = len(device_registry.devices)
    events = await seam.announce()
    assert [e.kind for e in events] == ["announce", "unassigned_meter"]
    issue_id = f"unassigned_meter_{seam.entry.entry_id}_{METER_ID}"
    issue = seam.issue(issue_id)
    assert issue is not None
    assert issue.translation_placeholders == {"meter_id": METER_ID, "community": COMMUNITY_NAME}
    device = seam.runtime.meter_device(METER_ID)
    assert device is not None
    assert device.name == f"Meter {METER_ID}"  # in Home Assistant's language

    events = await seam.assign()
    assert [e.kind for e in events] == ["assigned", "account"]
    assert seam.issue(issue_id) is None
    device = seam.runtime.meter_device(METER_ID)  # the same device, renamed
    assert device is not None
    assert device.name == LABEL
    assert len(device_registry.devices) == devices + 1

    # Readings of an unassigned meter raise it again only for a meter without a household.
    await seam.announce(OTHER_METER)
    await seam.reading(int(time.time()) - 60, "1.000", OTHER_METER)
    unassigned = [i for i in _issues(seam.hass) if i.startswith("unassigned_meter")]
    assert unassigned == [f"unassigned_meter_{seam.entry.entry_id}_{OTHER_METER}"]


async def test_unknown_meter_one_community_repair_and_no_device(
    seam: Seam, device_registry: dr.DeviceRegistry
) -> None:
    """Telemetry from ids that never announced: one repair naming the first, no device."""
    now = int(time.time())
    devices = len(device_registry.devices)
    for meter_id in ("999900000001", "999900000002"):
        events = await seam.reading(now - 60, "1.000", meter_id)
        assert [e.kind for e in events] == ["unknown_meter"]
        events = await seam.availability(meter_id, online=True)
        assert [e.kind for e in events] == ["unknown_meter"]
    assert len(device_registry.devices) == devices
    assert seam.hass.states.async_entity_ids("sensor") == [
        seam.community_entity_id("sensor", key)
        for key in (
            "total_balance",
            "arrears_electricity",
            "arrears_property_fee",
            "arrears_parking_fee",
            "supplies_cut",
            "meters_alarmed",
            "meters_offline",
            "top_ups_today",
            "line_loss_rate",
            "fee_collection_rate",
        )
    ]
    issues = _issues(seam.hass)
    assert list(issues) == [f"unknown_meter_{seam.entry.entry_id}"]
    assert issues[f"unknown_meter_{seam.entry.entry_id}"].translation_placeholders == {
        "meter_id": "999900000001",
        "community": COMMUNITY_NAME,
    }


async def test_service_business_kinds_show_nothing(seam: Seam) -> None:
    """Reconcile, display, cycle_closed, rejected: the service acted; no event, no repair."""
    hass = seam.hass
    await seam.household()
    captured = _captured(hass)
    issues = dict(_issues(hass))
    now = int(time.time())
    await seam.reading(now - 60, "100.000", seq=7)
    events = await seam.reading(now - 60, "100.000", seq=7)  # the same message again
    assert [e.kind for e in events] == ["rejected"]
    await seam.deliver(
        [
            Event("reconcile", METER_ID, HOUSEHOLD, {"state": "on", "reason": "in_credit"}),
            Event("display", METER_ID, HOUSEHOLD, {"balance": "4.00", "low": True}),
            Event("cycle_closed", None, HOUSEHOLD, {"cycle": "2026-10", "total": "31.20"}),
        ]
    )
    assert captured == []
    assert _issues(hass) == issues
    assert seam.state("sensor", "balance").state == "50.00"


# ---------------------------------------------------------------------------- devices


async def test_announce_shows_model_and_firmware_on_the_device(
    seam: Seam, device_registry: dr.DeviceRegistry
) -> None:
    """A meter that announces new firmware (or a new model) shows it on its device page."""
    await seam.announce(model="DDZY-60", firmware="1.4.2")
    device = seam.runtime.meter_device(METER_ID)
    assert device is not None
    assert (device.model, device.sw_version, device.serial_number) == (
        "DDZY-60",
        "1.4.2",
        METER_ID,
    )
    await seam.announce(model="DDZY-80", firmware="2.0.0")
    device = seam.runtime.meter_device(METER_ID)
    assert device is not None
    assert (device.model, device.sw_version) == ("DDZY-80", "2.0.0")
    assert len(dr.async_entries_for_config_entry(device_registry, seam.entry.entry_id)) == 2


# ---------------------------------------------------------------------------- community figures


async def _publish_tick(seam: Seam) -> None:
    """Let the community figures' publish timer run (every PUBLISH_INTERVAL_S)."""
    async_fire_time_changed(seam.hass, _utc_in(3))
    await seam.hass.async_block_till_done()


def _utc_in(seconds: float) -> datetime:
    return dt_util.utcnow() + timedelta(seconds=seconds)


async def test_relay_and_account_write_the_community_figures(seam: Seam) -> None:
    """Community figures are written on the publish timer after a charge or a cut."""
    await seam.household()
    await _publish_tick(seam)
    total = seam.community_entity_id("sensor", "total_balance")
    cut = seam.community_entity_id("sensor", "supplies_cut")
    assert seam.hass.states.get(total).state == "50.00"  # type: ignore[union-attr]
    assert seam.hass.states.get(cut).state == "0"  # type: ignore[union-attr]

    now = int(time.time())
    await seam.reading(now - 120, "100.000")
    events = await seam.reading(now - 60, "110.000")  # 10 kWh: 4.883
    assert [e.kind for e in events if e.kind == "account"] == ["account"]
    assert seam.hass.states.get(total).state == "50.00"  # type: ignore[union-attr]
    await _publish_tick(seam)
    assert seam.hass.states.get(total).state == "45.12"  # type: ignore[union-attr]

    events = await seam.reading(now - 30, "235.000")  # 125 kWh more: 61.04
    assert "relay" in [e.kind for e in events]
    await _publish_tick(seam)
    state = seam.hass.states.get(cut)
    assert state is not None
    assert state.state == "1"
    assert state.attributes["households"] == [
        {
            "household": LABEL,
            "account_id": HOUSEHOLD,
            "meter_id": METER_ID,
            "reason": "credit_exhausted",
            "balance": "-15.92",
        }
    ]


async def test_availability_lists_the_meter_offline(seam: Seam) -> None:
    """A meter's last will: its online sensor says so at once, the community lists it."""
    await seam.household()
    events = await seam.availability(METER_ID, online=False)
    assert [e.kind for e in events] == ["availability"]
    online = seam.state("binary_sensor", "online")
    assert online.state == "off"
    await _publish_tick(seam)
    offline = seam.hass.states.get(seam.community_entity_id("sensor", "meters_offline"))
    assert offline is not None
    assert offline.state == "1"
    assert offline.attributes["households"] == [
        {"household": LABEL, "account_id": HOUSEHOLD, "meter_id": METER_ID}
    ]
    await seam.availability(METER_ID, online=True)
    assert seam.state("binary_sensor", "online").state == "on"


# ---------------------------------------------------------------------------- broker link


async def test_broker_lost_and_back(
    seam: Seam, freezer: FrozenDateTimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Link lost: entities unavailable (online stays), logged once, a repair after 5 minutes.

    Back: available again, logged once, the repair gone.
    """
    hass = seam.hass
    caplog.set_level(logging.INFO)
    await seam.household()
    balance = seam.entity_id("sensor", "balance")
    supply = seam.entity_id("switch", "supply")
    online = seam.entity_id("binary_sensor", "online")
    total = seam.community_entity_id("sensor", "total_balance")
    issue_id = f"broker_unreachable_{seam.entry.entry_id}"

    await seam.connection(False, "connection refused")
    await seam.connection(False, "connection refused")  # the retries' own reports
    await _publish_tick(seam)
    for entity_id in (balance, supply, total):
        assert hass.states.get(entity_id).state == STATE_UNAVAILABLE  # type: ignore[union-attr]
    assert hass.states.get(online).state != STATE_UNAVAILABLE  # type: ignore[union-attr]
    lost = [r for r in caplog.records if "is unreachable" in r.getMessage()]
    assert len(lost) == 1
    assert "connection refused" in lost[0].getMessage()
    assert lost[0].levelno == logging.INFO

    freezer.tick(timedelta(seconds=200))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert seam.issue(issue_id) is None  # not yet
    freezer.tick(timedelta(seconds=200))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    issue = seam.issue(issue_id)
    assert issue is not None
    assert issue.severity is ir.IssueSeverity.ERROR
    assert issue.translation_placeholders == {"community": COMMUNITY_NAME}

    await seam.connection(True)
    assert seam.issue(issue_id) is None
    assert hass.states.get(balance).state == "50.00"  # type: ignore[union-attr]
    assert hass.states.get(supply).state == "on"  # type: ignore[union-attr]
    assert hass.states.get(total).state == "50.00"  # type: ignore[union-attr]
    back = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(back) == 1
