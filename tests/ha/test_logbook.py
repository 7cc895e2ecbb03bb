"""Logbook descriptions of the integration's events."""

from __future__ import annotations

from collections.abc import Callable

from homeassistant.core import Event, HomeAssistant

from custom_components.prepaid_meter.events import BUS_EVENTS, EVENT_PREFIX, PAYMENT_EVENT
from custom_components.prepaid_meter.logbook import async_describe_events
from custom_components.prepaid_meter.texts import async_load_texts

type Describe = Callable[[Event], dict[str, str]]


async def _described(hass: HomeAssistant, language: str) -> dict[str, Describe]:
    """Return each event type's describer, the texts loaded in `language`."""
    hass.config.language = language
    await async_load_texts(hass)
    described: dict[str, Describe] = {}

    def collect(domain: str, event_type: str, describe: Describe) -> None:
        assert domain == "prepaid_meter"
        described[event_type] = describe

    async_describe_events(hass, collect)
    return described


async def test_every_event_is_described(hass: HomeAssistant) -> None:
    """Each bus event gets a name (the household) and a message saying what happened."""
    described = await _described(hass, "en")
    assert set(described) == {EVENT_PREFIX + kind for kind in BUS_EVENTS | {PAYMENT_EVENT}}
    cut = described["prepaid_meter_supply_cut"](
        Event(
            "prepaid_meter_supply_cut",
            {
                "household": "Bldg 3 / 501",
                "reason": "credit_exhausted",
                "actor": "system",
                "balance": "-10.5071",
            },
        )
    )
    assert cut == {
        "name": "Bldg 3 / 501",
        "message": "supply cut (credit exhausted) by the system; balance -10.51",
    }
    by = {
        # this version's events: the actor's display text and kind
        "operator Ops": {"actor": "Ops", "actor_kind": "operator", "actor_user_id": "u1"},
        "resident Alice": {"actor": "Alice", "actor_kind": "resident"},
        "the system": {"actor": "system", "actor_kind": "system"},
        "the safety protection": {"actor": "safety", "actor_kind": "safety"},
        # events recorded by earlier versions: the role was the actor's prefix
        "operator automation": {"actor": "operator:automation"},
        "resident Bob": {"actor": "resident:Bob"},
        "a resident": {"actor": "resident"},
    }
    for words, actor in by.items():
        restored = described["prepaid_meter_supply_restored"](
            Event(
                "prepaid_meter_supply_restored",
                {"household": "H", "reason": "restored", "balance": "5.00", **actor},
            )
        )
        assert restored["message"] == f"supply restored (on request) by {words}; balance 5.00"
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
    assert top_up == {
        "name": "000012345678",
        "message": "repeated top-up of 50.00 by WeChat Pay, credited once; balance 40.00",
    }
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
        "message": "supply cut (credit exhausted) not acknowledged by the meter; "
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
        "message": "supply restore (top up) refused by the meter: relay_fault; "
        "the supply may not be as wanted",
    }
    for kind in BUS_EVENTS:
        entry = described[EVENT_PREFIX + kind](Event(EVENT_PREFIX + kind, {"household": "H"}))
        assert entry["message"]
        assert "logbook_" not in entry["message"]


async def test_messages_in_chinese(hass: HomeAssistant) -> None:
    """In a Chinese Home Assistant the logbook speaks Chinese, money to the cent."""
    described = await _described(hass, "zh-Hans")
    cut = described["prepaid_meter_supply_cut"](
        Event(
            "prepaid_meter_supply_cut",
            {"household": "3-501", "reason": "arc_fault", "actor_kind": "safety", "balance": "7"},
        )
    )
    assert cut["message"] == "已断电（电弧故障），操作方：安全保护；余额 7.00"
    top_up = described["prepaid_meter_top_up"](
        Event(
            "prepaid_meter_top_up",
            {"household": "3-501", "amount": "50", "channel": "alipay", "balance": "48.9950402"},
        )
    )
    assert top_up["message"] == "充值 50.00（支付宝）；余额 49.00"
    alarm = described["prepaid_meter_alarm"](
        Event("prepaid_meter_alarm", {"household": "3-501", "type": "theft_suspected"})
    )
    assert alarm["message"] == "告警：疑似窃电"


async def test_a_payment_and_its_refund_in_words(hass: HomeAssistant) -> None:
    """An order paid through a provider (payments.py), in en and zh-Hans, money to the cent."""
    data = {"household": "Room 301", "amount": "50", "provider": "wechat", "order": "PME1"}
    for language, paid, refunded in (
        ("en", "Paid 50.00 by WeChat Pay (order PME1)", "Refunded 50.00 by WeChat Pay"),
        ("zh-Hans", "50.00", "50.00"),
    ):
        described = await _described(hass, language)
        describe = described["prepaid_meter_payment"]
        entry = describe(Event("prepaid_meter_payment", data))
        assert entry["name"] == "Room 301"
        assert paid in entry["message"]
        refund = describe(Event("prepaid_meter_payment", {**data, "kind": "refund"}))
        assert refunded in refund["message"]
        assert refund["message"] != entry["message"]
