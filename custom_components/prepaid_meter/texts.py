"""Texts the backend writes for people, in Home Assistant's language (en, zh-Hans).

Home Assistant translates entity names, errors and repairs itself; the logbook's messages and
the words put into an error's placeholders (why a supply was cut, what was refused) are ours.
Their templates are kept with the translated errors (`exceptions.logbook_*` in strings.json),
loaded once at setup (`async_load_texts`) and read from Home Assistant's cache here; a language
without a translation falls back to English, as Home Assistant's own loader does.
"""

from __future__ import annotations

from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers.translation import (
    async_get_cached_translations,
    async_get_translations,
)

from .const import DOMAIN

#: Placeholders of a refusal that carry a key to translate, and the group of its words.
WORD_PLACEHOLDERS = {"reason": "reason", "action": "action"}


async def async_load_texts(hass: HomeAssistant) -> None:
    """Load the logbook's texts in Home Assistant's language into its translation cache."""
    await async_get_translations(hass, hass.config.language, "exceptions", {DOMAIN})
    await async_get_translations(hass, hass.config.language, "selector", {DOMAIN})


class Texts:
    """Our translated texts in Home Assistant's language, as cached when made."""

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


def translated_error(key: str, **placeholders: str) -> ServiceValidationError:
    """Return the translated error `exceptions.<key>` of this integration."""
    return ServiceValidationError(
        translation_domain=DOMAIN, translation_key=key, translation_placeholders=placeholders
    )


def translated_placeholders(hass: HomeAssistant, placeholders: dict[str, str]) -> dict[str, str]:
    """Return an error's placeholders with reasons and actions in people's words."""
    texts = Texts(hass)
    return {
        name: texts.word(WORD_PLACEHOLDERS[name], value) if name in WORD_PLACEHOLDERS else value
        for name, value in placeholders.items()
    }
