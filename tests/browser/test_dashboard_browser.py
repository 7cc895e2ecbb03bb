"""The demo as a person sees it: Chromium logs in as the operator and opens the overview.

Each screen size gets its own browser context and logs in through Home Assistant's real login
page. The screenshots (and the visible text beside each, `.txt`) land in `.artifacts/browser/`
for a person to look at; the assertions check what must be readable there.
"""

from __future__ import annotations

from collections.abc import Callable
import re
import time

from playwright.sync_api import expect
import pytest

from demo.config import COMMUNITY_NAME
from demo.people import api_post
from tests.browser.conftest import DemoHass, Screen

#: An amount of money as the frontend shows it: a number with the currency before or after it
#: (a price per kWh, "0.4883 CNY/kWh", is not an amount).
MONEY = re.compile(r"-?(?:CN¥|¥|CNY)\s?-?[\d,]+(?:\.\d+)?|-?[\d,]+(?:\.\d+)?\s?(?:CNY|CN¥|¥)(?!/)")


def community_device_id(demo_hass: DemoHass) -> str:
    """Return the community hub's device id (the device of its total balance sensor)."""
    entity_id = next(
        str(s["entity_id"])
        for s in demo_hass.states()
        if str(s["attributes"].get("friendly_name", "")).startswith(COMMUNITY_NAME)
        and str(s["entity_id"]).startswith("sensor.")
    )
    device_id = demo_hass.template(f"{{{{ device_id('{entity_id}') }}}}").strip()
    assert re.fullmatch(r"[0-9a-f]{32}", device_id), (entity_id, device_id)
    return device_id


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_operator_sees_community_and_households(
    screen: Callable[[str], Screen], demo_hass: DemoHass, size: str
) -> None:
    """The operator logs in; the overview and the community's device page read as money."""
    operator = screen(size)
    operator.open("/")
    operator.page.wait_for_selector("input[name='username']")
    operator.screenshot("login")
    operator.login(demo_hass.username, demo_hass.password)

    # The overview: the community hub and the households, each balance as money.
    operator.shows(COMMUNITY_NAME)
    labels = [str(m["label"]) for m in demo_hass.meters]
    operator.shows(labels[0])
    operator.settle()
    operator.screenshot("overview")
    operator.screenshot("overview-full", full_page=True)
    text = operator.visible_text()
    assert COMMUNITY_NAME in text
    shown = [label for label in labels if label in text]
    assert len(shown) >= len(labels) // 2, shown
    amounts = MONEY.findall(text)
    assert amounts, text[:3000]
    # Money as people read it: whole cents, never the ledger's 16 decimal places.
    unrounded = [a for a in amounts if re.search(r"\.\d{3,}", a)]
    assert not unrounded, unrounded

    if size == "desktop":  # what waits in the sidebar's notification drawer, for a person to read
        operator.page.get_by_role("button", name="Notifications").or_(
            operator.page.get_by_text("Notifications", exact=True)
        ).first.click()
        dismiss = operator.page.get_by_role("button", name=re.compile(r"^Dismiss"))
        empty = operator.page.get_by_text(re.compile("no notifications", re.IGNORECASE))
        expect(dismiss.or_(empty).first).to_be_visible()
        operator.settle()
        operator.screenshot("notifications")
        # Nothing was discovered: no "New devices discovered" (see demo.people).
        assert "New devices discovered" not in operator.visible_text()
        operator.page.keyboard.press("Escape")

    # The community's device page: its name and its figures.
    operator.open(f"/config/devices/device/{community_device_id(demo_hass)}")
    operator.shows(COMMUNITY_NAME)
    operator.shows("Total balance")
    operator.settle()
    operator.screenshot("community-device")
    assert MONEY.search(operator.visible_text())
    assert operator.errors == [], operator.errors


def _cut(demo_hass: DemoHass, label: str, timeout: float = 30) -> str:
    """The operator cuts a household's supply (its switch); wait for the operator's list.

    The simulator replays the last day at 600x and the platform acts on credit only for
    readings near the present, so a credit cut may come minutes later: the operator's cut
    is the one a test can wait for. Return the supplies-cut sensor.
    """
    switch = next(
        str(s["entity_id"])
        for s in demo_hass.states()
        if str(s["attributes"].get("friendly_name", "")) == f"{label} Supply"
        and str(s["entity_id"]).startswith("switch.")
    )
    api_post(demo_hass.url, demo_hass.token, "/api/services/switch/turn_off", {"entity_id": switch})
    deadline = time.monotonic() + timeout
    sensor = next(
        str(s["entity_id"])
        for s in demo_hass.states()
        if str(s["attributes"].get("friendly_name", "")) == f"{COMMUNITY_NAME} Supplies cut"
    )
    while time.monotonic() < deadline:
        rows = demo_hass.state(sensor)["attributes"].get("households") or []
        if any(row.get("household") == label for row in rows):
            return sensor
        time.sleep(1)
    raise AssertionError(f"{label} was not cut: {demo_hass.state(sensor)}")


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_operator_dashboard_lists_who_needs_attention(
    screen: Callable[[str], Screen], demo_hass: DemoHass, size: str
) -> None:
    """The operator's dashboard: totals as money, the cut household with why, quick actions."""
    neighbour = str(demo_hass.resident["neighbour_label"])
    _cut(demo_hass, neighbour)
    operator = screen(size)
    operator.login(demo_hass.username, demo_hass.password)
    operator.open(f"/{demo_hass.dashboards[0]}")
    operator.shows("Total balance")
    operator.shows("Supplies cut")
    expect(operator.page.get_by_role("cell", name=neighbour).first).to_be_visible()
    operator.settle(1500)
    operator.screenshot("operator-dashboard")
    operator.screenshot("operator-dashboard-full", full_page=True)
    text = operator.visible_text()
    for heading in ("Community", "Meters alarmed", "Meters offline", "Quick actions", "Top up"):
        assert heading in text, heading
    # The cut list says why, in words, not the ledger's key.
    assert "by hand" in text and "manual" not in text, text[:3000]
    assert MONEY.search(text), text[:3000]
    unrounded = [a for a in MONEY.findall(text) if re.search(r"\.\d{3,}", a)]
    assert not unrounded, unrounded
    assert operator.errors == [], operator.errors


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_resident_sees_their_home_and_may_not_restore_a_neighbour(
    screen: Callable[[str], Screen], demo_hass: DemoHass, size: str
) -> None:
    """The resident's dashboard; restoring the neighbour's supply is refused, in words."""
    resident = demo_hass.resident
    neighbour_meter = next(
        str(m["meter_id"]) for m in demo_hass.meters if m["account_id"] == resident["neighbour"]
    )
    _cut(demo_hass, str(resident["neighbour_label"]))
    person = screen(size)
    person.login(str(resident["username"]), demo_hass.resident_password)
    person.open(f"/{demo_hass.dashboards[1]}")
    person.shows("Supply state")
    person.settle(2000)
    person.screenshot("resident-dashboard")
    person.screenshot("resident-dashboard-full", full_page=True)
    text = person.visible_text()
    for word in ("Balance", "Days left", "Supply state", "Today", "This month"):
        assert word in text, word
    # Their own supply is on: no restore button to press for nothing.
    assert "Restore supply" not in text
    assert MONEY.search(text), text[:3000]

    # The neighbour's dashboard is open to every user, but its restore is theirs alone: the
    # button performs the action and the frontend shows the translated refusal.
    person.open(f"/{demo_hass.dashboards[2]}")
    person.shows("Supply state")
    assert person.errors == [], person.errors
    person.page.get_by_text("Restore supply", exact=True).first.click()
    refusal = f"Meter {neighbour_meter} does not belong to a household you are linked to"
    person.shows(re.compile(re.escape(refusal)))
    person.settle(300)
    person.screenshot("resident-refused")
    # The same through the frontend's websocket connection, with the resident's token.
    message = person.call_action("prepaid_meter", "restore_supply", {"meter_id": neighbour_meter})
    assert message is not None and refusal in message, message
    supply = next(
        s
        for s in demo_hass.states()
        if str(s["attributes"].get("friendly_name", "")) == f"{resident['neighbour_label']} Supply"
        and str(s["entity_id"]).startswith("switch.")
    )
    assert supply["state"] == "off", supply
    # The frontend leaves the refused action's rejection unhandled (an "Object" page error).
    assert set(person.errors) <= {"Object"}, person.errors
