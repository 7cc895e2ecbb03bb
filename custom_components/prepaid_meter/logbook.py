"""Logbook entries for the integration's events: who, what and why, per household."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeassistant.components.logbook.const import (
    LOGBOOK_ENTRY_ENTITY_ID,
    LOGBOOK_ENTRY_MESSAGE,
    LOGBOOK_ENTRY_NAME,
)
from homeassistant.core import Event, HomeAssistant, callback

from .const import DOMAIN
from .coordinator import BUS_EVENTS, EVENT_PREFIX
from .engine.actor import KINDS, Actor


def _by(data: dict[str, Any]) -> str:
    """Say who acted: "operator Ops", "resident Alice", "the system", "the safety protection".

    Events of earlier versions carry only `actor`, a string whose prefix named the role.
    """
    kind, who = data.get("actor_kind"), data.get("actor")
    if kind not in KINDS:
        actor = Actor.parse(str(who or "system"))
        kind, who = actor.kind, actor.display
    if kind == "system":
        return "the system" if who in (None, "system") else f"the system ({who})"
    if kind == "safety":
        return "the safety protection"
    if who and who != kind:
        return f"{kind} {who}"
    return "an operator" if kind == "operator" else "a resident"


def _message(kind: str, data: dict[str, Any]) -> str:
    balance = data.get("balance")
    if kind == "low_balance":
        return f"balance is low ({balance}), warning level {data.get('level')}"
    if kind == "supply_cut":
        return f"supply cut ({data.get('reason')}, by {_by(data)}), balance {balance}"
    if kind == "supply_restored":
        return f"supply restored ({data.get('reason')}, by {_by(data)}), balance {balance}"
    if kind == "supply_cut_deferred":
        return f"cut deferred ({data.get('reason')}), balance {balance}"
    if kind == "top_up":
        duplicate = " (repeated transaction, credited once)" if data.get("duplicate") else ""
        return (
            f"topped up {data.get('amount')} by {data.get('channel')}{duplicate}, balance {balance}"
        )
    if kind == "alarm":
        return f"alarm: {data.get('type')}"
    if kind == "inactivity":
        return f"no activity for {data.get('hours')} hours"
    if kind == "command_failed":
        what = "supply cut" if data.get("state") == "off" else "supply restore"
        if data.get("outcome") == "failed":
            told = f"refused by the meter: {data.get('error') or 'no reason given'}"
        else:
            told = "not acknowledged by the meter"
        return f"{what} ({data.get('reason')}) {told}; the supply may not be as wanted"
    return kind.replace("_", " ")


@callback
def async_describe_events(
    hass: HomeAssistant,
    async_describe_event: Callable[[str, str, Callable[[Event], dict[str, str]]], None],
) -> None:
    """Describe each prepaid_meter event for the logbook."""
    for kind in sorted(BUS_EVENTS):

        @callback
        def describe(event: Event, kind: str = kind) -> dict[str, str]:
            data = dict(event.data)
            name = data.get("household") or data.get("meter_id") or "Prepaid meter"
            entry: dict[str, str] = {
                LOGBOOK_ENTRY_NAME: str(name),
                LOGBOOK_ENTRY_MESSAGE: _message(kind, data),
            }
            if data.get("entity_id"):
                entry[LOGBOOK_ENTRY_ENTITY_ID] = str(data["entity_id"])
            return entry

        async_describe_event(DOMAIN, EVENT_PREFIX + kind, describe)
