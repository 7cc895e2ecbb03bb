"""Dashboards from core cards: built from the registry, stored by Lovelace, shown as panels.

The configs are checked the way the frontend will read them: every card type is a core card
of the frontend package installed with this Home Assistant (`hui-<type>-card` elements in its
JavaScript), every action a tap performs is registered, every entity exists, each markdown
template renders, and the frontend's own websocket command (`lovelace/config`) returns them.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
import importlib.util
from pathlib import Path
import re
import time
from typing import Any

from homeassistant.components.frontend import DATA_PANELS
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import ServiceValidationError, Unauthorized
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.template import Template
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.prepaid_meter import dashboard
from custom_components.prepaid_meter.const import DOMAIN
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter
from tests.ha.test_init import entity_id, setup_household, state, wait_until
from tests.ha.test_services import _resident

HOUSEHOLD = "b3-501"
#: Tap actions the frontend knows (perform-action is the 2024.8+ name of call-service).
TAP_ACTIONS = {"more-info", "toggle", "perform-action", "navigate", "url", "none", "assist"}


@cache
def frontend_cards() -> frozenset[str]:
    """Return the core card types of the installed frontend (`hui-<type>-card` elements)."""
    spec = importlib.util.find_spec("hass_frontend")
    assert spec is not None and spec.origin is not None, "home-assistant-frontend is missing"
    latest = Path(spec.origin).parent / "frontend_latest"
    found: set[str] = set()
    knows_perform_action = False
    for script in latest.glob("*.js"):
        text = script.read_text(errors="replace")
        found.update(re.findall(r'"hui-([a-z-]+)-card"', text))
        knows_perform_action = knows_perform_action or '"perform-action"' in text
    assert knows_perform_action, "this frontend does not know tap_action perform-action"
    return frozenset(found)


def cards_of(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every card of a dashboard config (sections and nested stacks included)."""
    for view in config["views"]:
        stack: list[dict[str, Any]] = list(view.get("cards", []))
        for section in view.get("sections", []):
            assert section["type"] == "grid"
            stack += section["cards"]
        while stack:
            card = stack.pop()
            yield card
            stack += card.get("cards", [])
            if "card" in card:  # a conditional card's one card
                stack.append(card["card"])


def entities_of(card: dict[str, Any]) -> set[str]:
    """Return the entity ids a card names: options, targets and templates."""
    found: set[str] = set()
    if "entity" in card:
        found.add(card["entity"])
    for item in card.get("entities", []):
        found.add(item if isinstance(item, str) else item["entity"])
    found.update(card.get("entity_id", []))
    found.update(re.findall(r"state_attr\('([a-z_]+\.[a-z0-9_]+)'", card.get("content", "")))
    found.update(re.findall(r"states\('([a-z_]+\.[a-z0-9_]+)'\)", card.get("content", "")))
    return found


def check_config(hass: HomeAssistant, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Assert a dashboard config is what the frontend expects; return its cards."""
    assert isinstance(config["views"], list) and config["views"]
    for view in config["views"]:
        assert view["type"] == "sections" and isinstance(view["sections"], list)
    cards = list(cards_of(config))
    core = frontend_cards()
    for card in cards:
        assert card["type"] in core, card["type"]
        assert card["type"] in dashboard.CARD_TYPES
        for entity in entities_of(card):
            assert hass.states.get(entity) is not None, (card["type"], entity)
        tap = card.get("tap_action")
        if tap is not None:
            assert tap["action"] in TAP_ACTIONS
            if tap["action"] == "perform-action":
                domain, service = tap["perform_action"].split(".")
                assert hass.services.has_service(domain, service)
            if tap["action"] == "navigate":
                assert tap["navigation_path"].startswith("/")
        if card["type"] == "markdown":
            # The frontend's markdown card renders strictly: an undefined name blanks it.
            rendered = Template(card["content"], hass).async_render(parse_result=False, strict=True)
            assert "{{" not in rendered and "{%" not in rendered
    return cards


async def _lovelace(hass: HomeAssistant) -> None:
    assert await async_setup_component(hass, "lovelace", {})
    await hass.async_block_till_done()


async def _cut(hass: HomeAssistant, entry: MockConfigEntry, meter: TestMeter) -> None:
    """Bill the household past its credit: its supply is cut for credit_exhausted."""
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "200.000")
    await wait_until(hass, lambda: state(hass, entry, "supply") == "off")


async def test_create_dashboards_stores_and_shows_them(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    meter: TestMeter,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """The action makes the operator's and the linked household's dashboards, from core cards."""
    entry = init_integration
    await _lovelace(hass)
    await setup_household(hass, entry, meter)
    resident = await _resident(hass, HOUSEHOLD, "Alice")
    await _cut(hass, entry, meter)
    await wait_until(hass, lambda: entry.runtime_data.lists.cut != [])

    # Nobody but an operator makes dashboards.
    with pytest.raises(Unauthorized):
        await hass.services.async_call(
            DOMAIN, "create_dashboards", {}, blocking=True, context=Context(user_id=resident.id)
        )

    response = await call_with_response(hass)
    made = {d["url_path"]: d for d in response["dashboards"]}
    runtime = entry.runtime_data
    operator_url = dashboard.operator_url(runtime)
    resident_url = dashboard.resident_url(runtime, HOUSEHOLD)
    assert set(made) == {operator_url, resident_url}  # the linked household by default
    assert made[operator_url]["require_admin"] is True
    assert made[resident_url]["require_admin"] is False
    assert made[resident_url]["household"] == HOUSEHOLD

    panels = hass.data[DATA_PANELS]
    assert panels[operator_url].require_admin is True
    assert panels[resident_url].require_admin is False
    assert panels[resident_url].sidebar_title == "Household 3-501"

    # What the frontend loads, through its own command.
    client = await hass_ws_client(hass)
    await client.send_json_auto_id({"type": "lovelace/config", "url_path": operator_url})
    operator = (await client.receive_json())["result"]
    cards = check_config(hass, operator)
    tiles = {c["entity"] for c in cards if c["type"] == "tile"}
    for key in ("total_balance", "supplies_cut", "meters_offline", "fee_collection_rate"):
        assert f"sensor.test_community_{key}" in tiles
    cut_list = next(c for c in cards if c["type"] == "markdown" and "supplies_cut" in c["content"])
    rendered = Template(cut_list["content"], hass).async_render(parse_result=False)
    assert "| Household 3-501 |" in rendered
    assert "Credit exhausted" in rendered or "credit exhausted" in rendered.lower(), rendered
    offline_list = next(
        c for c in cards if c["type"] == "markdown" and "meters_offline" in c["content"]
    )
    assert "*None*" in Template(offline_list["content"], hass).async_render(parse_result=False)
    # The offline and alarmed lists show the meter, not a balance (their lines have none); an
    # unassigned meter has no household.
    offline_id = next(iter(offline_list["entity_id"]))
    hass.states.async_set(
        offline_id,
        "2",
        {
            "households": [
                {"household": "Household 3-501", "account_id": "b3-501", "meter_id": "m1"},
                {"household": None, "account_id": None, "meter_id": "m2"},
            ]
        },
    )
    rendered = Template(offline_list["content"], hass).async_render(parse_result=False, strict=True)
    assert rendered.startswith("| Household | Meter |\n"), rendered
    assert "| Household 3-501 | m1 |" in rendered
    assert "|  | m2 |" in rendered

    await client.send_json_auto_id({"type": "lovelace/config", "url_path": resident_url})
    home = (await client.receive_json())["result"]
    cards = check_config(hass, home)
    types = [c["type"] for c in cards]
    assert "statistics-graph" in types and "statistic" in types
    shown = set().union(*(entities_of(c) for c in cards))
    for key in ("balance", "days_left", "cycle_cost", "energy", "supply_on", "supply"):
        assert entity_id(hass, entry, key) in shown, key
    restore = next(c for c in cards if c["type"] == "button")
    assert restore["tap_action"] == {
        "action": "perform-action",
        "perform_action": f"{DOMAIN}.restore_supply",
        "data": {"meter_id": METER_ID},
    }
    # Shown only while the supply is off.
    shown_when = next(c for c in cards if c["type"] == "conditional")
    assert shown_when["card"] is restore
    assert shown_when["conditions"] == [
        {"condition": "state", "entity": entity_id(hass, entry, "supply"), "state": "off"}
    ]

    # People's edits are kept when the action runs again, replaced only with overwrite.
    edited = {**home, "title": "Our flat"}
    await client.send_json_auto_id(
        {"type": "lovelace/config/save", "url_path": resident_url, "config": edited}
    )
    assert (await client.receive_json())["success"]
    response = await call_with_response(hass, households=[HOUSEHOLD], operator=False)
    assert response["dashboards"][0]["kept"] is True
    await client.send_json_auto_id({"type": "lovelace/config", "url_path": resident_url})
    assert (await client.receive_json())["result"]["title"] == "Our flat"
    response = await call_with_response(
        hass, households=[HOUSEHOLD], operator=False, overwrite=True
    )
    assert response["dashboards"][0]["kept"] is False
    await client.send_json_auto_id({"type": "lovelace/config", "url_path": resident_url})
    assert (await client.receive_json())["result"]["title"] == "Household 3-501"

    # A reload shows them again (remembered in the entry's store), without the action.
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert operator_url not in hass.data[DATA_PANELS]
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert hass.data[DATA_PANELS][operator_url].require_admin is True
    await client.send_json_auto_id({"type": "lovelace/config", "url_path": operator_url})
    assert (await client.receive_json())["result"]["views"][0]["type"] == "sections"


async def call_with_response(hass: HomeAssistant, **data: Any) -> dict[str, Any]:
    """Call create_dashboards as an automation (an operator) and return its response."""
    response = await hass.services.async_call(
        DOMAIN, "create_dashboards", data, blocking=True, return_response=True
    )
    assert isinstance(response, dict)
    return response


async def test_dashboards_leave_out_entities_that_are_missing(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A disabled or missing entity is left out (the essential set has only the balance)."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    registry = er.async_get(hass)
    for key in ("energy", "days_left", "restore_supply", "supply"):
        registry.async_update_entity(
            entity_id(hass, entry, key), disabled_by=er.RegistryEntryDisabler.USER
        )
    await hass.async_block_till_done()
    words = await dashboard.async_load_words(hass)
    config = dashboard.resident_dashboard(entry.runtime_data, registry, words, HOUSEHOLD)
    cards = list(cards_of(config))
    shown = set().union(*(entities_of(c) for c in cards))
    assert entity_id(hass, entry, "balance") in shown
    assert not {c["type"] for c in cards} & {"statistic", "statistics-graph"}
    assert not any(entity_id(hass, entry, k) in shown for k in ("energy", "days_left"))
    # The restore button calls the action by meter id: it works without the button entity.
    assert any(c["type"] == "button" for c in cards)


async def test_create_dashboards_refuses_without_lovelace_or_unknown_household(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Without Lovelace, or for a household that does not exist: a translated error."""
    with pytest.raises(ServiceValidationError) as info:
        await call_with_response(hass)
    assert info.value.translation_key == "dashboards_unavailable"
    await _lovelace(hass)
    with pytest.raises(ServiceValidationError) as info:
        await call_with_response(hass, households=["no-such-home"])
    assert info.value.translation_key == "unknown_household"


def test_card_types_are_core_cards() -> None:
    """Every card type the module uses is a core card of the installed frontend."""
    assert frontend_cards() >= dashboard.CARD_TYPES
