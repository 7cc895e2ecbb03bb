"""Logbook descriptions of the integration's events."""

from __future__ import annotations

from collections.abc import Callable

from homeassistant.core import Event, HomeAssistant

from custom_components.prepaid_meter.coordinator import BUS_EVENTS, EVENT_PREFIX
from custom_components.prepaid_meter.logbook import async_describe_events


async def test_every_event_is_described(hass: HomeAssistant) -> None:
    """Each bus event gets a name (the household) and a message saying what happened."""
    described: dict[str, Callable[[Event], dict[str, str]]] = {}

    def collect(domain: str, event_type: str, describe: Callable[[Event], dict[str, str]]) -> None:
        assert domain == "prepaid_meter"
        described[event_type] = describe

    async_describe_events(hass, collect)
    assert set(described) == {EVENT_PREFIX + kind for kind in BUS_EVENTS}
    cut = described["prepaid_meter_supply_cut"](
        Event(
            "prepaid_meter_supply_cut",
            {
                "household": "Bldg 3 / 501",
                "reason": "credit_exhausted",
                "actor": "system",
                "balance": "-10.50",
            },
        )
    )
    assert cut == {
        "name": "Bldg 3 / 501",
        "message": "supply cut (credit_exhausted, by the system), balance -10.50",
    }
    by = {
        # this version's events: the actor's display text and kind
        "by operator Ops": {"actor": "Ops", "actor_kind": "operator", "actor_user_id": "u1"},
        "by resident Alice": {"actor": "Alice", "actor_kind": "resident"},
        "by the system": {"actor": "system", "actor_kind": "system"},
        "by the safety protection": {"actor": "safety", "actor_kind": "safety"},
        # events recorded by earlier versions: the role was the actor's prefix
        "by operator automation": {"actor": "operator:automation"},
        "by resident Bob": {"actor": "resident:Bob"},
        "by a resident": {"actor": "resident"},
    }
    for words, actor in by.items():
        restored = described["prepaid_meter_supply_restored"](
            Event(
                "prepaid_meter_supply_restored",
                {"household": "H", "reason": "restored", "balance": "5.00", **actor},
            )
        )
        assert restored["message"] == f"supply restored (restored, {words}), balance 5.00"
    top_up = described["prepaid_meter_top_up"](
        Event(
            "prepaid_meter_top_up",
            {
                "meter_id": "000012345678",
                "amount": "50",
                "channel": "wechat",
                "duplicate": True,
                "balance": "40.00",
            },
        )
    )
    assert top_up["name"] == "000012345678"
    assert "credited once" in top_up["message"]
    assert "command_failed" in BUS_EVENTS
    not_acked = described["prepaid_meter_command_failed"](
        Event(
            "prepaid_meter_command_failed",
            {
                "household": "Bldg 3 / 501",
                "state": "off",
                "reason": "credit_exhausted",
                "outcome": "expired",
            },
        )
    )
    assert not_acked == {
        "name": "Bldg 3 / 501",
        "message": "supply cut (credit_exhausted) not acknowledged by the meter; "
        "the supply may not be as wanted",
    }
    refused = described["prepaid_meter_command_failed"](
        Event(
            "prepaid_meter_command_failed",
            {
                "meter_id": "000012345678",
                "state": "on",
                "reason": "top_up",
                "outcome": "failed",
                "error": "relay_fault",
            },
        )
    )
    assert refused == {
        "name": "000012345678",
        "message": "supply restore (top_up) refused by the meter: relay_fault; "
        "the supply may not be as wanted",
    }
    for kind in BUS_EVENTS:
        entry = described[EVENT_PREFIX + kind](Event(EVENT_PREFIX + kind, {"household": "H"}))
        assert entry["message"]
