"""The demo as a person sees it: Chromium logs in as the operator and opens the overview.

Each screen size gets its own browser context and logs in through Home Assistant's real login
page. The screenshots (and the visible text beside each, `.txt`) land in `.artifacts/browser/`
for a person to look at; the assertions check what must be readable there.
"""

from __future__ import annotations

from collections.abc import Callable
import re

from playwright.sync_api import expect
import pytest

from demo.config import COMMUNITY_NAME
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
        operator.page.keyboard.press("Escape")

    # The community's device page: its name and its figures.
    operator.open(f"/config/devices/device/{community_device_id(demo_hass)}")
    operator.shows(COMMUNITY_NAME)
    operator.shows("Total balance")
    operator.settle()
    operator.screenshot("community-device")
    assert MONEY.search(operator.visible_text())
    assert operator.errors == [], operator.errors
