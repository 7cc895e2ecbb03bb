"""The automation blueprints: valid for Home Assistant, and they notify on the right events."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
import shutil
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.automation.config import AUTOMATION_BLUEPRINT_SCHEMA
from homeassistant.components.blueprint.models import Blueprint
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.setup import async_setup_component
from homeassistant.util import yaml as yaml_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
    async_mock_service,
)

from custom_components.prepaid_meter.const import DOMAIN
from custom_components.prepaid_meter.events import EVENT_PREFIX, FIRED_EVENTS

FOLDER = Path(__file__).parents[2] / "blueprints" / "automation" / DOMAIN
INPUTS = {
    "low_balance.yaml": {
        "community",
        "household",
        "to_linked_users",
        "min_level",
        "notify_action",
        "title",
        "message",
        "extra_actions",
    },
    "elderly_inactivity.yaml": {
        "power_sensor",
        "household",
        "to_linked_users",
        "threshold",
        "hours",
        "notify_action",
        "title",
        "message",
        "extra_actions",
    },
    "caregiver_escalation.yaml": {
        "community",
        "household",
        "first_contact",
        "second_contact",
        "wait",
        "title",
        "message",
        "escalation_message",
    },
    "alarms.yaml": {
        "community",
        "alarm_types",
        "notify_supply_cut",
        "notify_action",
        "extra_actions",
    },
}


def load(name: str) -> Blueprint:
    """Load one blueprint the way Home Assistant does."""
    data = yaml_util.load_yaml_dict(str(FOLDER / name))
    return Blueprint(
        data, path=name, expected_domain="automation", schema=AUTOMATION_BLUEPRINT_SCHEMA
    )


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_blueprint_is_valid(name: str) -> None:
    """Each file passes the automation blueprint schema and declares the expected inputs."""
    blueprint = load(name)
    assert blueprint.domain == "automation"
    assert set(blueprint.inputs) == INPUTS[name]
    assert blueprint.validate() is None  # the running Home Assistant is new enough
    for key, spec in blueprint.inputs.items():
        assert spec["name"], key
        assert "selector" in spec, key


def test_every_folder_file_is_tested() -> None:
    """No blueprint ships without a test."""
    assert {p.name for p in FOLDER.glob("*.yaml")} == set(INPUTS)


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_blueprints_listen_to_events_the_integration_fires(name: str) -> None:
    """Event triggers name events the integration really fires."""
    triggers = load(name).data["triggers"]
    events = {t["event_type"] for t in triggers if t["trigger"] == "event"}
    assert events
    assert events <= {EVENT_PREFIX + kind for kind in FIRED_EVENTS}
    waits = [
        trigger["event_type"]
        for step in load(name).data["actions"]
        for trigger in step.get("wait_for_trigger", [])
        if trigger["trigger"] == "event"
    ]
    assert set(waits) <= {EVENT_PREFIX + kind for kind in FIRED_EVENTS}


async def setup_automation(hass: HomeAssistant, name: str, inputs: dict[str, Any]) -> None:
    """Install the blueprint in the config folder and set up one automation from it."""
    target = Path(hass.config.path("blueprints", "automation", DOMAIN))

    def install() -> None:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(FOLDER / name, target / name)

    await hass.async_add_executor_job(install)
    assert await async_setup_component(
        hass,
        "automation",
        {"automation": {"use_blueprint": {"path": f"{DOMAIN}/{name}", "input": inputs}}},
    )
    await hass.async_block_till_done()
    automations = hass.states.async_all("automation")
    assert [state.state for state in automations] == ["on"]


@pytest.fixture
def config_folder(hass: HomeAssistant, tmp_path: Path) -> Path:
    """Give Home Assistant a config folder of this test's own."""
    hass.config.config_dir = str(tmp_path)
    return tmp_path


@pytest.mark.usefixtures("config_folder")
async def test_low_balance_notifies(hass: HomeAssistant) -> None:
    """The chosen community's second warning is sent with household and balance."""
    calls: list[ServiceCall] = async_mock_service(hass, "notify", "office")
    await setup_automation(
        hass,
        "low_balance.yaml",
        {"community": "entry-a", "min_level": "2", "notify_action": "notify.office"},
    )
    base = {"config_entry_id": "entry-a", "household": "3-501", "meter_id": "000012345678"}
    hass.bus.async_fire("prepaid_meter_low_balance", {**base, "balance": "18.20", "level": 1})
    hass.bus.async_fire(
        "prepaid_meter_low_balance", {**base, "config_entry_id": "entry-b", "level": 2}
    )
    hass.bus.async_fire("prepaid_meter_low_balance", {**base, "balance": "4.10", "level": 2})
    await hass.async_block_till_done()
    assert len(calls) == 1
    assert calls[0].data == {
        "title": "Low electricity balance",
        "message": "3-501: the electricity balance is 4.10 - please top up soon.",
    }


@pytest.mark.usefixtures("config_folder")
async def test_low_balance_every_community_and_own_message(hass: HomeAssistant) -> None:
    """Without a community every one counts; a message of one's own, in Chinese, works."""
    calls: list[ServiceCall] = async_mock_service(hass, "notify", "office")
    await setup_automation(
        hass,
        "low_balance.yaml",
        {
            "notify_action": "notify.office",
            "title": "余额不足",
            "message": "{{ household }} 电费余额 {{ event.balance }} 元，请及时充值",
        },
    )
    hass.bus.async_fire(
        "prepaid_meter_low_balance",
        {"config_entry_id": "x", "household": None, "meter_id": "000012345678", "balance": "9.00"},
    )
    await hass.async_block_till_done()
    assert len(calls) == 0  # no level: not a warning
    hass.bus.async_fire(
        "prepaid_meter_low_balance",
        {"config_entry_id": "x", "household": None, "meter_id": "000012345678", "balance": "9.00",
         "level": 1},
    )  # fmt: skip
    await hass.async_block_till_done()
    assert [call.data for call in calls] == [
        {"title": "余额不足", "message": "000012345678 电费余额 9.00 元，请及时充值"}
    ]


@pytest.mark.usefixtures("config_folder")
async def test_low_balance_to_one_household_and_its_own_people(hass: HomeAssistant) -> None:
    """One household only; its warning goes to the phones of the users linked to it."""
    office: list[ServiceCall] = async_mock_service(hass, "notify", "office")
    alice_phone: list[ServiceCall] = async_mock_service(hass, "notify", "mobile_app_alice_phone")
    bob_phone: list[ServiceCall] = async_mock_service(hass, "notify", "mobile_app_bob_phone")
    # People as the person integration shows them: their user, their phones' trackers.
    hass.states.async_set(
        "person.alice",
        "home",
        {"user_id": "u-alice", "device_trackers": ["device_tracker.alice_phone"]},
    )
    hass.states.async_set(
        "person.bob", "home", {"user_id": "u-bob", "device_trackers": ["device_tracker.bob_phone"]}
    )
    await setup_automation(
        hass,
        "low_balance.yaml",
        {"household": "b3-501", "to_linked_users": True, "notify_action": "notify.office"},
    )
    base = {"config_entry_id": "x", "household": "Household 3-501", "level": 1}
    hass.bus.async_fire(
        "prepaid_meter_low_balance",
        {**base, "account_id": "b3-502", "balance": "5.00", "users": ["u-bob"]},
    )
    hass.bus.async_fire(
        "prepaid_meter_low_balance",
        {**base, "account_id": "b3-501", "balance": "9.00", "users": ["u-alice"]},
    )
    await hass.async_block_till_done()
    assert bob_phone == []  # another household
    assert office == []
    assert [call.data["message"] for call in alice_phone] == [
        "Household 3-501: the electricity balance is 9.00."
    ]
    # Nobody linked: the notify action is the fallback.
    hass.bus.async_fire(
        "prepaid_meter_low_balance",
        {**base, "account_id": "b3-501", "balance": "8.00", "users": []},
    )
    await hass.async_block_till_done()
    assert len(office) == 1
    assert len(alice_phone) == 1


async def test_inactivity_from_power_and_from_event(
    hass: HomeAssistant, config_folder: Path, freezer: FrozenDateTimeFactory
) -> None:
    """Hours of near-zero power, or the meter's inactivity event, alert the caregiver."""
    entry = MockConfigEntry(domain=DOMAIN)
    entry.add_to_hass(hass)
    device = dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id,
        identifiers={(DOMAIN, "prepaid/lotus/000012345678")},
        name="Household 3-501",
    )
    power = er.async_get(hass).async_get_or_create(
        "sensor",
        DOMAIN,
        "lotus_000012345678_power",
        device_id=device.id,
        suggested_object_id="household_3_501_power",
    )
    hass.states.async_set(power.entity_id, "850", {"device_class": "power"})
    calls: list[ServiceCall] = async_mock_service(hass, "notify", "caregiver")
    await setup_automation(
        hass,
        "elderly_inactivity.yaml",
        {"power_sensor": power.entity_id, "threshold": 30, "hours": 6,
         "notify_action": "notify.caregiver"},
    )  # fmt: skip

    hass.states.async_set(power.entity_id, "12", {"device_class": "power"})
    await hass.async_block_till_done()
    freezer.tick(timedelta(hours=5))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert calls == []
    freezer.tick(timedelta(hours=1, seconds=1))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert len(calls) == 1
    assert (
        calls[0]
        .data["message"]
        .startswith("Household 3-501 has used almost no electricity for 6 hours.")
    )

    hass.bus.async_fire("prepaid_meter_inactivity", {"device_id": "another-device", "hours": 30.0})
    hass.bus.async_fire(
        "prepaid_meter_inactivity",
        {"device_id": device.id, "household": "3-501", "hours": 24.5},
    )
    await hass.async_block_till_done()
    assert len(calls) == 2
    assert calls[1].data["message"].startswith("3-501 has used almost no electricity for 24.5")


@pytest.mark.usefixtures("config_folder")
async def test_inactivity_of_every_household_to_its_own_people(hass: HomeAssistant) -> None:
    """No power sensor: each household's inactivity event goes to its linked people's phones."""
    caregiver: list[ServiceCall] = async_mock_service(hass, "notify", "caregiver")
    alice_phone: list[ServiceCall] = async_mock_service(hass, "notify", "mobile_app_alice_phone")
    hass.states.async_set(
        "person.alice",
        "home",
        {"user_id": "u-alice", "device_trackers": ["device_tracker.alice_phone"]},
    )
    await setup_automation(
        hass,
        "elderly_inactivity.yaml",
        {"to_linked_users": True, "notify_action": "notify.caregiver"},
    )
    hass.bus.async_fire(
        "prepaid_meter_inactivity",
        {"account_id": "b3-501", "household": "3-501", "hours": 13.0, "users": ["u-alice"]},
    )
    hass.bus.async_fire(
        "prepaid_meter_inactivity",
        {"account_id": "b3-502", "household": "3-502", "hours": 14.5, "users": []},
    )
    await hass.async_block_till_done()
    assert [c.data["message"][:40] for c in alice_phone] == [
        "3-501 has used almost no electricity for"
    ]
    assert [c.data["message"][:40] for c in caregiver] == [
        "3-502 has used almost no electricity for"
    ]


@pytest.mark.usefixtures("config_folder")
async def test_inactivity_of_one_household_by_id(hass: HomeAssistant) -> None:
    """No power sensor, one household: the others' events are not sent."""
    caregiver: list[ServiceCall] = async_mock_service(hass, "notify", "caregiver")
    await setup_automation(
        hass,
        "elderly_inactivity.yaml",
        {"household": "b3-502", "notify_action": "notify.caregiver"},
    )
    for account in ("b3-501", "b3-502"):
        hass.bus.async_fire(
            "prepaid_meter_inactivity", {"account_id": account, "household": account, "hours": 12}
        )
    await hass.async_block_till_done()
    assert [c.data["message"].split(" ")[0] for c in caregiver] == ["b3-502"]


@pytest.mark.usefixtures("config_folder")
async def test_alarms_and_cuts(hass: HomeAssistant) -> None:
    """Chosen alarm types are sent with their details; cuts only when asked for."""
    calls: list[ServiceCall] = async_mock_service(hass, "notify", "operators")
    await setup_automation(
        hass,
        "alarms.yaml",
        {
            "alarm_types": ["overload", "tamper"],
            "notify_supply_cut": False,
            "notify_action": "notify.operators",
        },
    )
    base = {"config_entry_id": "e", "meter_id": "000012345678", "household": "3-501"}
    hass.bus.async_fire(
        "prepaid_meter_alarm",
        {**base, "type": "overload", "current_a": 71.5, "rated_current_a": 60},
    )
    hass.bus.async_fire("prepaid_meter_alarm", {**base, "type": "theft_suspected"})
    hass.bus.async_fire(
        "prepaid_meter_alarm",
        {**base, "household": None, "type": "tamper", "events": ["cover_open", "magnetic_tamper"]},
    )
    hass.bus.async_fire(
        "prepaid_meter_supply_cut",
        {**base, "reason": "credit_exhausted", "actor": "system", "balance": "-10.01"},
    )
    await hass.async_block_till_done()
    assert [call.data for call in calls] == [
        {
            "title": "Meter alarm: 3-501",
            "message": "3-501 (meter 000012345678): overload, current 71.5 A of 60 A rated.",
        },
        {
            "title": "Meter alarm: meter 000012345678",
            "message": "meter 000012345678 (meter 000012345678): tamper "
            "(cover_open, magnetic_tamper).",
        },
    ]


@pytest.mark.usefixtures("config_folder")
async def test_supply_cut_notification(hass: HomeAssistant) -> None:
    """With cuts wanted (the default), a cut says why, by whom and the balance."""
    calls: list[ServiceCall] = async_mock_service(hass, "notify", "operators")
    await setup_automation(hass, "alarms.yaml", {"notify_action": "notify.operators"})
    hass.bus.async_fire(
        "prepaid_meter_supply_cut",
        {
            "config_entry_id": "e",
            "meter_id": "000012345678",
            "household": "3-501",
            "reason": "credit_exhausted",
            "actor": "system",
            "actor_kind": "system",
            "balance": "-10.01",
        },
    )
    hass.bus.async_fire(
        "prepaid_meter_supply_cut",
        {
            "config_entry_id": "e",
            "meter_id": "000012345678",
            "household": "3-501",
            "reason": "manual",
            "actor": "Ops",
            "actor_kind": "operator",
            "balance": "12.00",
        },
    )
    await hass.async_block_till_done()
    assert [call.data for call in calls] == [
        {
            "title": "Supply cut: 3-501",
            "message": "3-501 (meter 000012345678): supply cut, reason credit_exhausted, by "
            "the system, balance -10.01.",
        },
        {
            "title": "Supply cut: 3-501",
            "message": "3-501 (meter 000012345678): supply cut, reason manual, by "
            "operator Ops, balance 12.00.",
        },
    ]


# ---------------------------------------------------------------------------- care escalation

CARE = {
    "config_entry_id": "e",
    "meter_id": "000012345678",
    "account_id": "b3-501",
    "household": "3-501",
    "type": "inactivity",
    "hours": 11.5,
}


async def _care_automation(
    hass: HomeAssistant, **inputs: Any
) -> tuple[list[ServiceCall], list[ServiceCall]]:
    first: list[ServiceCall] = async_mock_service(hass, "notify", "daughter")
    second: list[ServiceCall] = async_mock_service(hass, "notify", "neighbour")
    await setup_automation(
        hass,
        "caregiver_escalation.yaml",
        {"first_contact": "notify.daughter", "second_contact": "notify.neighbour", **inputs},
    )
    return first, second


async def _settle() -> None:
    """Let the automation's runs go as far as they can (one waiting for an acknowledgement
    is a task that `async_block_till_done` would wait for until its timeout)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def _later(freezer: FrozenDateTimeFactory, hass: HomeAssistant, minutes: float) -> None:
    freezer.tick(timedelta(minutes=minutes))
    async_fire_time_changed(hass)
    await _settle()


async def test_care_alarm_escalates_when_nobody_acknowledges(
    hass: HomeAssistant, config_folder: Path, freezer: FrozenDateTimeFactory
) -> None:
    """The first contact at once; the second after the set time, nobody having acknowledged."""
    first, second = await _care_automation(hass, wait=20)
    hass.bus.async_fire("prepaid_meter_alarm", {**CARE, "state": "start"})
    await _settle()
    assert [c.data["message"][:60] for c in first] == [
        "3-501 has shown none of its usual activity for 11.5 hours. P"
    ]
    assert second == []
    await _later(freezer, hass, 19)
    assert second == []
    await _later(freezer, hass, 2)
    assert len(second) == 1
    assert second[0].data["title"] == "No sign of activity at home"
    assert "nobody has acknowledged the alert in 20 minutes" in second[0].data["message"]
    assert len(first) == 1


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("prepaid_meter_alarm_acknowledged", {"actor": "Ops", "actor_kind": "operator"}),
        ("prepaid_meter_alarm", {"state": "clear", "minutes": 700}),
    ],
)
async def test_care_alarm_acknowledged_or_ended_in_time_goes_no_further(
    hass: HomeAssistant,
    config_folder: Path,
    freezer: FrozenDateTimeFactory,
    event_type: str,
    data: dict[str, Any],
) -> None:
    """Acknowledged (or the person active again) in time: the second contact is not told;
    the same for another meter's alarm does not count."""
    first, second = await _care_automation(hass)
    hass.bus.async_fire("prepaid_meter_alarm", {**CARE, "state": "start"})
    await _settle()
    await _later(freezer, hass, 5)
    hass.bus.async_fire(event_type, {**CARE, "meter_id": "000099999999", **data})
    await _settle()
    await _later(freezer, hass, 5)
    hass.bus.async_fire(event_type, {**CARE, **data})
    await _settle()
    await _later(freezer, hass, 60)
    assert len(first) == 1
    assert second == []


async def test_care_alarm_of_one_household_only(
    hass: HomeAssistant, config_folder: Path, freezer: FrozenDateTimeFactory
) -> None:
    """One household chosen: another's alarm, other kinds and clears tell nobody."""
    first, second = await _care_automation(hass, household="b3-502")
    hass.bus.async_fire("prepaid_meter_alarm", {**CARE, "state": "start"})  # b3-501
    hass.bus.async_fire(
        "prepaid_meter_alarm",
        {
            **CARE,
            "account_id": "b3-502",
            "household": "3-502",
            "type": "overload",
            "state": "start",
        },
    )
    hass.bus.async_fire(
        "prepaid_meter_alarm",
        {**CARE, "account_id": "b3-502", "household": "3-502", "state": "clear"},
    )
    await _settle()
    assert first == []
    hass.bus.async_fire(
        "prepaid_meter_alarm",
        {**CARE, "meter_id": "000012345679", "account_id": "b3-502", "household": "3-502",
         "state": "start"},
    )  # fmt: skip
    await _settle()
    assert [c.data["message"].split(" ")[0] for c in first] == ["3-502"]
    await _later(freezer, hass, 31)
    assert [c.data["message"].split(" ")[0] for c in second] == ["3-502"]


@pytest.mark.usefixtures("config_folder")
async def test_alarm_ends_are_not_sent_as_alarms(hass: HomeAssistant) -> None:
    """An episode's end (state clear) is no new alarm for the operators."""
    calls: list[ServiceCall] = async_mock_service(hass, "notify", "operators")
    await setup_automation(
        hass, "alarms.yaml", {"notify_supply_cut": False, "notify_action": "notify.operators"}
    )
    base = {"config_entry_id": "e", "meter_id": "000012345678", "household": "3-501"}
    hass.bus.async_fire("prepaid_meter_alarm", {**base, "type": "surge", "state": "start"})
    hass.bus.async_fire("prepaid_meter_alarm", {**base, "type": "surge", "state": "clear"})
    hass.bus.async_fire(
        "prepaid_meter_alarm",
        {**base, "household": None, "type": "line_loss", "state": "start", "loss_rate": 0.1234},
    )
    await hass.async_block_till_done()
    assert [call.data["message"] for call in calls] == [
        "3-501 (meter 000012345678): surge.",
        "meter 000012345678 (meter 000012345678): line loss in the area, loss 12.3 %.",
    ]
