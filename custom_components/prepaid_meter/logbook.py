"""Logbook entries for the integration's events: who, what and why, per household.

An alarm episode is two lines: its start and its end (`prepaid_meter_alarm` with `state`
start or clear; the inactivity alarm's start says for how long nobody was active).

The logbook shows what the backend writes, in Home Assistant's language (see texts.py: Home
Assistant has no translation category for logbook messages).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from homeassistant.components.logbook.const import (
    LOGBOOK_ENTRY_ENTITY_ID,
    LOGBOOK_ENTRY_MESSAGE,
    LOGBOOK_ENTRY_NAME,
)
from homeassistant.core import Event, HomeAssistant, callback

from .const import DOMAIN
from .engine.actor import KINDS, Actor
from .events import EVENT_PREFIX, LOGBOOK_EVENTS, PAYMENT_EVENT, money
from .texts import Texts


def _by(texts: Texts, data: Mapping[str, Any]) -> str:
    """Say who acted: "operator Ops", "resident Alice", "the system", "the safety protection".

    Events of earlier versions carry only `actor`, a string whose prefix named the role.
    """
    kind, who = data.get("actor_kind"), data.get("actor")
    if kind not in KINDS:
        actor = Actor.parse(str(who or "system"))
        kind, who = actor.kind, actor.display
    if kind == "system":
        if who in (None, "system"):
            return texts.text("actor_system")
        return texts.text("actor_system_named", name=who)
    if kind == "safety":
        return texts.text("actor_safety")
    role = "operator" if kind == "operator" else "resident"
    if who and who != kind:
        return texts.text(f"actor_{role}_named", name=who)
    return texts.text(f"actor_{role}")


def _message(texts: Texts, kind: str, data: Mapping[str, Any]) -> str:
    balance = money(data.get("balance"))
    reason = texts.word("reason", data.get("reason"))
    if kind == "low_balance":
        return texts.text(kind, balance=balance, level=data.get("level"))
    if kind in ("supply_cut", "supply_restored"):
        return texts.text(kind, reason=reason, actor=_by(texts, data), balance=balance)
    if kind == "supply_cut_deferred":
        return texts.text(kind, reason=reason, balance=balance)
    if kind == "top_up":
        return texts.text(
            "top_up_repeated" if data.get("duplicate") else "top_up",
            amount=money(data.get("amount")),
            channel=texts.channel(data.get("channel")),
            balance=balance,
        )
    if kind == "alarm" and data.get("state") == "clear":
        return texts.text("alarm_cleared", alarm=texts.word("alarm", data.get("type")))
    if kind == "inactivity" or (kind == "alarm" and data.get("type") == "inactivity"):
        return texts.text("inactivity", hours=data.get("hours"))
    if kind in ("alarm", "alarm_cleared"):
        return texts.text(kind, alarm=texts.word("alarm", data.get("type")))
    if kind == "alarm_acknowledged":
        return texts.text(kind, alarm=texts.word("alarm", data.get("type")), actor=_by(texts, data))
    if kind == PAYMENT_EVENT:  # an order paid (or refunded) through a provider
        return texts.text(
            "payment_refund" if data.get("kind") == "refund" else "payment",
            amount=money(data.get("amount")),
            provider=texts.channel(data.get("provider")),
            order=data.get("order"),
        )
    if kind == "command_failed":
        command = texts.text("command_off" if data.get("state") == "off" else "command_on")
        if data.get("outcome") == "failed":
            error = data.get("error") or texts.text("no_reason_given")
            return texts.text("command_refused", command=command, reason=reason, error=error)
        return texts.text("command_unacknowledged", command=command, reason=reason)
    return kind.replace("_", " ")


@callback
def async_describe_events(
    hass: HomeAssistant,
    async_describe_event: Callable[[str, str, Callable[[Event], dict[str, str]]], None],
) -> None:
    """Describe each prepaid_meter event for the logbook."""
    for kind in sorted(LOGBOOK_EVENTS):

        @callback
        def describe(event: Event, kind: str = kind) -> dict[str, str]:
            data = event.data
            name = data.get("household") or data.get("meter_id") or "Prepaid meter"
            entry: dict[str, str] = {
                LOGBOOK_ENTRY_NAME: str(name),
                LOGBOOK_ENTRY_MESSAGE: _message(Texts(hass), kind, data),
            }
            if data.get("entity_id"):
                entry[LOGBOOK_ENTRY_ENTITY_ID] = str(data["entity_id"])
            return entry

        async_describe_event(DOMAIN, EVENT_PREFIX + kind, describe)
