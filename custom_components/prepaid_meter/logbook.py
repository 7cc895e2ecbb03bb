"""Logbook entries for the integration's events: who, what and why, per household.

The logbook shows what the backend writes, in Home Assistant's language (en, zh-Hans). Home
Assistant has no translation category for logbook messages, so their templates are kept with
the translated errors (`exceptions.logbook_*` in strings.json), loaded once at setup
(`async_load_texts`) and read from Home Assistant's cache here; a language without a
translation falls back to English, as Home Assistant's own loader does.
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
from homeassistant.helpers.translation import (
    async_get_cached_translations,
    async_get_translations,
)

from .const import DOMAIN
from .coordinator import BUS_EVENTS, EVENT_PREFIX, money
from .engine.actor import KINDS, Actor


async def async_load_texts(hass: HomeAssistant) -> None:
    """Load the logbook's texts in Home Assistant's language into its translation cache."""
    await async_get_translations(hass, hass.config.language, "exceptions", {DOMAIN})
    await async_get_translations(hass, hass.config.language, "selector", {DOMAIN})


class _Texts:
    """The translated templates of one describe call."""

    def __init__(self, hass: HomeAssistant) -> None:
        language = hass.config.language
        self._errors = async_get_cached_translations(hass, language, "exceptions", DOMAIN)
        self._selectors = async_get_cached_translations(hass, language, "selector", DOMAIN)

    def text(self, key: str, **placeholders: Any) -> str:
        """Return the translated text of `logbook_<key>`, filled in; the key if unknown."""
        template = self._errors.get(f"component.{DOMAIN}.exceptions.logbook_{key}.message")
        if template is None:
            return key.replace("_", " ")
        return template.format_map({name: str(value) for name, value in placeholders.items()})

    def word(self, group: str, value: object) -> str:
        """Translate a reason or alarm type; an unknown one is shown as sent."""
        key = f"component.{DOMAIN}.exceptions.logbook_{group}_{value}.message"
        return self._errors.get(key, str(value).replace("_", " "))

    def channel(self, value: object) -> str:
        """Translate a top-up channel (the top-up form's names)."""
        key = f"component.{DOMAIN}.selector.channel.options.{value}"
        return self._selectors.get(key, str(value))


def _by(texts: _Texts, data: Mapping[str, Any]) -> str:
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


def _message(texts: _Texts, kind: str, data: Mapping[str, Any]) -> str:
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
    if kind == "alarm":
        return texts.text(kind, alarm=texts.word("alarm", data.get("type")))
    if kind == "inactivity":
        return texts.text(kind, hours=data.get("hours"))
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
    for kind in sorted(BUS_EVENTS):

        @callback
        def describe(event: Event, kind: str = kind) -> dict[str, str]:
            data = event.data
            name = data.get("household") or data.get("meter_id") or "Prepaid meter"
            entry: dict[str, str] = {
                LOGBOOK_ENTRY_NAME: str(name),
                LOGBOOK_ENTRY_MESSAGE: _message(_Texts(hass), kind, data),
            }
            if data.get("entity_id"):
                entry[LOGBOOK_ENTRY_ENTITY_ID] = str(data["entity_id"])
            return entry

        async_describe_event(DOMAIN, EVENT_PREFIX + kind, describe)
