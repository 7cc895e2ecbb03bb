"""Dashboards from core Lovelace cards only: one for operators, one per household.

The configs are plain dicts built by pure functions (`operator_dashboard`,
`resident_dashboard`) from a community's runtime, the entity registry (entity ids are looked
up by unique id, an entity that does not exist or is disabled is left out: the "essential"
entity set has only each meter's balance) and the words to show (`DashboardWords`, loaded in
Home Assistant's language). Only core cards are used: `heading`, `tile`, `markdown` (the
households lists, a Jinja template over the community sensors' `households` attribute),
`button` (`tap_action: perform-action`, the 2024.8+ name that 2025.4 and 2026 both accept, or
`navigate` to an action's form through the `developer_call_service` my-link), `statistic` and
`statistics-graph` (long-term statistics of the energy sensor), in a `sections` view.

How they get into Home Assistant. Home Assistant has no API for an integration to add a
dashboard: its dashboards collection (Settings > Dashboards) is reachable only through the
websocket commands of an administrator's session. So the integration owns its dashboards:

- the action `prepaid_meter.create_dashboards` (operators only) builds the configs and saves
  each with Lovelace's own storage class (`LovelaceStorage`, `.storage/lovelace.prepaid_meter_*`),
  the way Lovelace stores a dashboard made in the UI; a config already stored is kept (people
  may have edited it) unless `overwrite` is set. It then registers the panel the way Lovelace
  does for its storage dashboards (`hass.data[LOVELACE_DATA].dashboards[url_path]` and
  `frontend.async_register_built_in_panel`), and remembers the dashboard in the entry's store
  (`.storage/prepaid_meter.<entry_id>.dashboards`);
- at every setup of the entry the remembered dashboards are registered again (once Lovelace
  is set up), and at unload their panels are removed (their configs stay).

Feature-detected, not version-tested: if Lovelace's data (`LOVELACE_DATA` with a `dashboards`
mapping) or `LovelaceStorage` is missing, the action refuses with a translated error and setup
registers nothing. Checked on Home Assistant 2025.4 and 2026.10.

Limits: the dashboards are not listed under Settings > Dashboards (that list is Lovelace's
collection) and cannot be deleted there; they are edited in place like any dashboard (the
pencil, raw configuration editor) and vanish from the sidebar while the entry is not loaded.
Removing the entry leaves their `.storage/lovelace.prepaid_meter_*` files. A resident
dashboard is open to every user (`require_admin: false`): Home Assistant has no per-user
panels, and every user may read every entity anyway (README: what a shared instance exposes);
what a resident may *do* is checked by the actions, not by the dashboard. Resident dashboards
are made for the households that have linked users unless the action names households.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
import importlib
import logging
import re
from typing import Any, Final

from homeassistant.components import frontend
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.storage import Store
from homeassistant.helpers.translation import async_get_translations
from homeassistant.setup import async_when_setup
from homeassistant.util.json import JsonValueType

from .const import DOMAIN
from .coordinator import PrepaidConfigEntry, PrepaidRuntime
from .engine.ledger import SubAccount
from .texts import translated_error as _error

_LOGGER = logging.getLogger(__name__)

LOVELACE: Final = "lovelace"
LOVELACE_MODULE: Final = f"homeassistant.components.{LOVELACE}"
STORE_VERSION: Final = 1
OPERATOR_ICON: Final = "mdi:transmission-tower"
RESIDENT_ICON: Final = "mdi:home-lightning-bolt"
#: Card types this module uses; all are core cards (tests check them against the frontend).
CARD_TYPES: Final = frozenset(
    {
        "heading",
        "tile",
        "markdown",
        "button",
        "conditional",
        "picture-entity",
        "statistic",
        "statistics-graph",
    }
)

#: The words a dashboard shows, by key; translated as `exceptions.dashboard_<key>.message`
#: in strings.json (where the logbook's texts are kept too, see texts.py).
WORD_KEYS: Final = (
    "operator_title",
    "community",
    "arrears",
    "arrears_electricity",
    "arrears_property_fee",
    "arrears_parking_fee",
    "cut",
    "alarmed",
    "offline",
    "actions",
    "household",
    "balance",
    "meter",
    "reason",
    "alarms",
    "nobody",
    "more",
    "top_up",
    "pay_fee",
    "charge_fee",
    "restore",
    "statement",
    "link_user",
    "supply",
    "supply_reason",
    "consumption",
    "today",
    "this_month",
    "daily_use",
    "pay",
    "pay_hint",
    "pay_order",
    "wechat_pay",
    "alipay",
)

#: Community sensors by key (all on the sensor platform).
COMMUNITY_TILES: Final = (
    "total_balance",
    "top_ups_today",
    "fee_collection_rate",
    "supplies_cut",
    "meters_alarmed",
    "meters_offline",
    *(f"arrears_{sub.value}" for sub in SubAccount),
)
#: Each meter entity key and its platform.
METER_KEYS: Final[Mapping[str, str]] = {
    "balance": "sensor",
    "days_left": "sensor",
    "cycle_cost": "sensor",
    "cycle_energy": "sensor",
    "energy": "sensor",
    "power": "sensor",
    "price": "sensor",
    "tier": "sensor",
    "low_balance": "binary_sensor",
    "online": "binary_sensor",
    "supply_on": "binary_sensor",
    "supply": "switch",
    "restore_supply": "button",
    "low_balance_threshold": "number",
    # With payments configured (payment_panel.py): amount, pay buttons, the payment code.
    "payment_amount": "select",
    "pay_wechat": "button",
    "pay_alipay": "button",
    "payment_code": "image",
}


type Card = dict[str, Any]
type DashboardConfig = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class DashboardWords:
    """The words a dashboard shows, and how reasons and alarm types read."""

    words: Mapping[str, str]
    reasons: Mapping[str, str]
    alarms: Mapping[str, str]
    #: Entities' own names by key ("Total balance", "Balance"), without their device's.
    names: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> str:
        """Return the word of `key` (the key itself, made readable, if missing)."""
        return self.words.get(key) or key.replace("_", " ")


@dataclass(frozen=True, kw_only=True)
class DashboardSpec:
    """One dashboard: where it lives, who may open it, and its config."""

    url_path: str
    title: str
    icon: str
    require_admin: bool
    account_id: str | None
    config: DashboardConfig

    @property
    def storage_id(self) -> str:
        """Return the id of its Lovelace storage (`.storage/lovelace.<id>`)."""
        return url_to_storage_id(self.url_path)

    def item(self) -> dict[str, Any]:
        """Return the dashboard item as Lovelace's dashboards collection keeps one."""
        return {
            "id": self.storage_id,
            "url_path": self.url_path,
            "title": self.title,
            "icon": self.icon,
            "require_admin": self.require_admin,
            "show_in_sidebar": True,
            "mode": "storage",
        }


# ---------------------------------------------------------------------------- pure builders


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def operator_url(runtime: PrepaidRuntime) -> str:
    """Return the operator dashboard's URL path (it must contain a hyphen)."""
    return f"prepaid-{_slug(runtime.community_id)}"


def resident_url(runtime: PrepaidRuntime, account_id: str) -> str:
    """Return a household dashboard's URL path."""
    return f"prepaid-{_slug(runtime.community_id)}-{_slug(account_id)}"


def url_to_storage_id(url_path: str) -> str:
    """Return the Lovelace storage id of one of our URL paths."""
    return f"{DOMAIN}_{url_path.replace('-', '_')}"


def _entity_id(registry: er.EntityRegistry, domain: str, unique_id: str) -> str | None:
    """Return the entity id of an enabled entity of ours, or None."""
    entity_id = registry.async_get_entity_id(domain, DOMAIN, unique_id)
    if entity_id is None:
        return None
    entry = registry.async_get(entity_id)
    return entity_id if entry is not None and entry.disabled_by is None else None


def community_entities(runtime: PrepaidRuntime, registry: er.EntityRegistry) -> dict[str, str]:
    """Return the community sensors' entity ids by key (those that exist)."""
    found = {
        key: _entity_id(registry, "sensor", f"{runtime.community_identifier}_{key}")
        for key in COMMUNITY_TILES
    }
    return {key: entity_id for key, entity_id in found.items() if entity_id}


def meter_entities(
    runtime: PrepaidRuntime, registry: er.EntityRegistry, meter_id: str
) -> dict[str, str]:
    """Return one meter's entity ids by key (those that exist and are enabled)."""
    found = {
        key: _entity_id(registry, domain, runtime.meter_unique_id(meter_id, key))
        for key, domain in METER_KEYS.items()
    }
    return {key: entity_id for key, entity_id in found.items() if entity_id}


def _heading(text: str, icon: str | None = None) -> Card:
    card: Card = {"type": "heading", "heading": text}
    if icon:
        card["icon"] = icon
    return card


def _tile(entity_id: str, **extra: Any) -> Card:
    return {"type": "tile", "entity": entity_id, **extra}


def _meter_tile(entity_id: str, words: DashboardWords, key: str, columns: int = 6) -> Card:
    """A meter entity's tile, named without the household (the heading says it)."""
    card = _tile(entity_id, grid_options={"columns": columns})
    if name := words.names.get(key):
        card["name"] = name
    return card


def _community_tile(entity_id: str, words: DashboardWords, key: str, columns: int = 12) -> Card:
    """A community sensor's tile, named without the community's name (the title says it)."""
    card = _tile(entity_id, grid_options={"columns": columns})
    if name := words.names.get(key):
        card["name"] = name
    return card


def _jinja_map(mapping: Mapping[str, str]) -> str:
    """Return a mapping as a Jinja dict literal (keys and values quoted safely)."""

    def quote(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return "{" + ", ".join(f"{quote(k)}: {quote(v)}" for k, v in sorted(mapping.items())) + "}"


def households_markdown(
    entity_id: str,
    words: DashboardWords,
    currency: str,
    *,
    column: str | None,
    money: bool = True,
) -> Card:
    """Return a markdown card listing a community sensor's `households` attribute.

    One table row per household (label, balance or, without `money`, the meter, and the
    reason of a cut or the alarms when `column` is "reason" or "alarms"); "nobody" when the
    list is empty, and how many more there are when the sensor counts more than the
    attribute holds.
    """
    # The markdown card renders strictly (an undefined name blanks the whole card): an
    # unassigned meter has no household. The offline and alarmed lists are about meters, not
    # money: their second column is the meter, not an empty balance.
    if money:
        cell = "| {{ row.household or row.meter_id | default('', true) }}"
        header = f"| {words['household']} | {words['balance']} ({currency}) |"
        rule = "|:--|--:|"
        cell += " | {{ row.balance | default('', true) }} |"
    else:
        header = f"| {words['household']} | {words['meter']} |"
        rule = "|:--|:--|"
        cell = "| {{ row.household | default('', true) }}"
        cell += " | {{ row.meter_id | default('', true) }} |"
    lookup = ""
    if column == "reason":
        header += f" {words['reason']} |"
        rule += ":--|"
        lookup = "{%- set names = " + _jinja_map(words.reasons) + " %}\n"
        cell += " {{ names.get(row.reason, row.reason) | default('', true) }} |"
    elif column == "alarms":
        header += f" {words['alarms']} |"
        rule += ":--|"
        lookup = "{%- set names = " + _jinja_map(words.alarms) + " %}\n"
        cell += " {% for a in row.alarms | default([], true) %}{{ names.get(a, a) }}"
        cell += "{{ ', ' if not loop.last }}"
        cell += "{% endfor %} |"
    content = (
        f"{{%- set rows = state_attr('{entity_id}', 'households') or [] %}}\n"
        f"{lookup}"
        f"{{%- set total = states('{entity_id}') | int(0) %}}\n"
        "{%- if rows %}\n"
        f"{header}\n{rule}\n"
        "{%- for row in rows %}\n"
        f"{cell}\n"
        "{%- endfor %}\n"
        "{%- if total > rows | count %}\n\n"
        f"*{words['more']}*\n"
        "{%- endif %}\n"
        "{%- else %}\n"
        f"*{words['nobody']}*\n"
        "{%- endif %}"
    )
    content = content.replace("{more}", "{{ total - rows | count }}")
    return {"type": "markdown", "content": content, "entity_id": [entity_id]}


def _action_button(name: str, icon: str, service: str) -> Card:
    """A button that opens an action's form (administrators: the action tool)."""
    return {
        "type": "button",
        "name": name,
        "icon": icon,
        "show_state": False,
        "tap_action": {
            "action": "navigate",
            "navigation_path": f"/_my_redirect/developer_call_service?service={DOMAIN}.{service}",
        },
    }


def _section(cards: Sequence[Card], column_span: int | None = None) -> dict[str, Any]:
    section: dict[str, Any] = {"type": "grid", "cards": list(cards)}
    if column_span:
        section["column_span"] = column_span
    return section


def operator_dashboard(
    runtime: PrepaidRuntime, registry: er.EntityRegistry, words: DashboardWords
) -> DashboardConfig:
    """Return the operator dashboard: totals, who needs attention, quick actions."""
    entities = community_entities(runtime, registry)
    currency = runtime.currency
    totals: list[Card] = [_heading(words["community"], "mdi:home-group")]
    totals += [
        _community_tile(entities[key], words, key, columns=6)
        for key in ("total_balance", "top_ups_today", "fee_collection_rate")
        if key in entities
    ]
    sections: list[dict[str, Any]] = [_section(totals)]

    lists: list[tuple[str, str, str | None, str]] = [
        ("supplies_cut", words["cut"], "reason", "mdi:power-plug-off"),
        ("meters_alarmed", words["alarmed"], "alarms", "mdi:alert"),
        ("meters_offline", words["offline"], None, "mdi:lan-disconnect"),
    ]
    lists += [
        (f"arrears_{sub.value}", words[f"arrears_{sub.value}"], None, "mdi:cash-minus")
        for sub in SubAccount
    ]
    for key, title, column, icon in lists:
        if key not in entities:
            continue
        sections.append(
            _section(
                [
                    _heading(title, icon),
                    _community_tile(entities[key], words, key),
                    households_markdown(
                        entities[key],
                        words,
                        currency,
                        column=column,
                        money=key not in ("meters_alarmed", "meters_offline"),
                    ),
                ]
            )
        )
    actions = [
        _heading(words["actions"], "mdi:gesture-tap-button"),
        _action_button(words["top_up"], "mdi:cash-plus", "top_up"),
        _action_button(words["pay_fee"], "mdi:receipt-text-check", "pay_fee"),
        _action_button(words["charge_fee"], "mdi:receipt-text-plus", "charge_fee"),
        _action_button(words["restore"], "mdi:power-plug", "restore_supply"),
        _action_button(words["statement"], "mdi:file-document", "get_statement"),
        _action_button(words["link_user"], "mdi:account-key", "link_user"),
    ]
    sections.append(_section(actions))
    return {
        "title": runtime.community_name,
        "views": [
            {
                "title": words["operator_title"],
                "path": "operator",
                "icon": OPERATOR_ICON,
                "type": "sections",
                "max_columns": 3,
                "sections": sections,
            }
        ],
    }


def household_meters(runtime: PrepaidRuntime, account_id: str) -> list[str]:
    """Return the meters assigned to a household, by id."""
    return sorted(
        meter_id
        for meter_id, meter in runtime.community.meters.items()
        if meter.account_id == account_id
    )


def _pay_cards(entities: Mapping[str, str], words: DashboardWords, currency: str) -> list[Card]:
    """Return the household's top-up cards: amount, pay buttons, the code to scan.

    None without payments (the entities exist only when the options configure them).
    """
    buttons = [key for key in ("pay_wechat", "pay_alipay") if key in entities]
    if not buttons:
        return []
    cards: list[Card] = [
        _heading(words["pay"], "mdi:qrcode"),
        {"type": "markdown", "content": words["pay_hint"]},
    ]
    if "payment_amount" in entities:
        amount = _meter_tile(entities["payment_amount"], words, "payment_amount", 12)
        amount["features"] = [{"type": "select-options"}]
        cards.append(amount)
    for key in buttons:
        button: Card = {
            "type": "button",
            "entity": entities[key],
            "show_state": False,
            "tap_action": {
                "action": "perform-action",
                "perform_action": "button.press",
                "target": {"entity_id": entities[key]},
            },
            "grid_options": {"columns": 6},
        }
        if name := words.names.get(key):
            button["name"] = name
        cards.append(button)
    if "payment_code" in entities:
        code = entities["payment_code"]
        shown = [{"condition": "state", "entity": code, "state_not": "unavailable"}]
        cards.append(  # what the code pays, while there is an order to pay
            {
                "type": "conditional",
                "conditions": shown,
                "card": {"type": "markdown", "content": _order_text(code, words, currency)},
            }
        )
        cards.append(  # the code, while there is an order to pay
            {
                "type": "conditional",
                "conditions": shown,
                "card": {
                    "type": "picture-entity",
                    "entity": code,
                    "show_name": False,
                    "show_state": False,
                    "tap_action": {"action": "none"},
                },
            }
        )
    return cards


def _order_text(image: str, words: DashboardWords, currency: str) -> str:
    """Return the markdown that says what the shown code pays: amount, provider, until when.

    From the payment code image's attributes (image.py), in the household's words; the time
    is Home Assistant's (the community's) local time.
    """

    def attribute(name: str) -> str:
        return f"state_attr('{image}', '{name}')"

    providers = _jinja_map({"wechat": words["wechat_pay"], "alipay": words["alipay"]})
    text = (
        words["pay_order"]
        .replace("{amount}", "{{ " + attribute("amount") + " }}")
        .replace("{currency}", currency)
        .replace("{provider}", "{{ names.get(" + attribute("provider") + ", '') }}")
        .replace(
            "{time}",
            "{{ as_timestamp(" + attribute("expires_at") + ", 0) | timestamp_custom('%H:%M') }}",
        )
    )
    return "{%- set names = " + providers + " %}\n" + text


def resident_dashboard(
    runtime: PrepaidRuntime,
    registry: er.EntityRegistry,
    words: DashboardWords,
    account_id: str,
) -> DashboardConfig:
    """Return a household's dashboard: money, supply and restore, top-up, use over time."""
    household = runtime.community.households[account_id]
    sections: list[dict[str, Any]] = []
    for meter_id in household_meters(runtime, account_id):
        entities = meter_entities(runtime, registry, meter_id)
        money: list[Card] = [_heading(household.label, RESIDENT_ICON)]
        money += [
            _meter_tile(entities[key], words, key)
            for key in ("balance", "days_left", "cycle_cost", "cycle_energy", "price", "tier")
            if key in entities
        ]
        if "low_balance_threshold" in entities:
            money.append(
                _meter_tile(entities["low_balance_threshold"], words, "low_balance_threshold", 12)
            )
        sections.append(_section(money))

        supply: list[Card] = [_heading(words["supply"], "mdi:power-socket-de")]
        supply += [
            _meter_tile(entities[key], words, key)
            for key in ("supply_on", "online")
            if key in entities
        ]
        if "supply" in entities:
            switch = entities["supply"]
            supply.append(
                {
                    "type": "markdown",
                    "content": (
                        "{%- set names = " + _jinja_map(words.reasons) + " %}\n"
                        f"{{%- set reason = state_attr('{switch}', 'reason') %}}\n"
                        f"**{words['supply_reason']}**: "
                        "{{ names.get(reason, reason or '-') }}"
                    ),
                    "entity_id": [switch],
                }
            )
        if "restore_supply" in entities or "balance" in entities:
            restore: Card = {
                "type": "button",
                "name": words["restore"],
                "icon": "mdi:power-plug",
                "show_state": False,
                "tap_action": {
                    "action": "perform-action",
                    "perform_action": f"{DOMAIN}.restore_supply",
                    "data": {"meter_id": meter_id},
                },
            }
            if "supply" in entities:  # shown only while the supply is off
                restore = {
                    "type": "conditional",
                    "conditions": [
                        {"condition": "state", "entity": entities["supply"], "state": "off"}
                    ],
                    "card": restore,
                }
            supply.append(restore)
        sections.append(_section(supply))
        if pay := _pay_cards(entities, words, runtime.currency):
            sections.append(_section(pay))

        if "energy" in entities:
            energy = entities["energy"]
            use: list[Card] = [_heading(words["consumption"], "mdi:chart-bar")]
            use += [
                {
                    "type": "statistic",
                    "entity": energy,
                    "name": words[name],
                    "stat_type": "change",
                    "period": {"calendar": {"period": period}},
                    "grid_options": {"columns": 6},
                }
                for name, period in (("today", "day"), ("this_month", "month"))
            ]
            use.append(
                {
                    "type": "statistics-graph",
                    "title": words["daily_use"],
                    "entities": [energy],
                    "stat_types": ["change"],
                    "chart_type": "bar",
                    "period": "day",
                    "days_to_show": 30,
                }
            )
            sections.append(_section(use, column_span=2))
    return {
        "title": household.label,
        "views": [
            {
                "title": household.label,
                "path": "home",
                "icon": RESIDENT_ICON,
                "type": "sections",
                "max_columns": 3,
                "sections": sections,
            }
        ],
    }


def build_dashboards(
    runtime: PrepaidRuntime,
    registry: er.EntityRegistry,
    words: DashboardWords,
    *,
    operator: bool,
    households: Iterable[str],
) -> list[DashboardSpec]:
    """Return the dashboards asked for: the operator's and one per household."""
    specs: list[DashboardSpec] = []
    if operator:
        specs.append(
            DashboardSpec(
                url_path=operator_url(runtime),
                title=f"{runtime.community_name}: {words['operator_title']}",
                icon=OPERATOR_ICON,
                require_admin=True,
                account_id=None,
                config=operator_dashboard(runtime, registry, words),
            )
        )
    for account_id in households:
        label = runtime.community.households[account_id].label
        specs.append(
            DashboardSpec(
                url_path=resident_url(runtime, account_id),
                title=label,
                icon=RESIDENT_ICON,
                require_admin=False,
                account_id=account_id,
                config=resident_dashboard(runtime, registry, words, account_id),
            )
        )
    return specs


# ---------------------------------------------------------------------------- Home Assistant


async def async_load_words(hass: HomeAssistant) -> DashboardWords:
    """Return the dashboards' words in Home Assistant's language."""
    language = hass.config.language
    errors = await async_get_translations(hass, language, "exceptions", {DOMAIN})
    words = {
        key: errors.get(f"component.{DOMAIN}.exceptions.dashboard_{key}.message", "")
        for key in WORD_KEYS
    }
    prefix = f"component.{DOMAIN}.exceptions.logbook_"
    reasons = {
        key.removeprefix(prefix + "reason_").removesuffix(".message"): text
        for key, text in errors.items()
        if key.startswith(prefix + "reason_")
    }
    alarms = {
        key.removeprefix(prefix + "alarm_").removesuffix(".message"): text
        for key, text in errors.items()
        if key.startswith(prefix + "alarm_")
    }
    entity = await async_get_translations(hass, language, "entity", {DOMAIN})
    platforms = {**dict.fromkeys(COMMUNITY_TILES, "sensor"), **METER_KEYS}
    names = {
        key: entity[name]
        for key, platform in platforms.items()
        if (name := f"component.{DOMAIN}.entity.{platform}.{key}.name") in entity
    }
    return DashboardWords(words=words, reasons=reasons, alarms=alarms, names=names)


def _lovelace_parts(hass: HomeAssistant) -> tuple[Any, Any] | None:
    """Return Lovelace's dashboards mapping and storage class, if this version has them."""
    # By name: Lovelace is Home Assistant's default dashboard, loaded with the frontend; this
    # integration does not depend on it (without it the action says so, setup skips this).
    try:
        lovelace_dashboard: Any = importlib.import_module(f"{LOVELACE_MODULE}.dashboard")
        lovelace_const: Any = importlib.import_module(f"{LOVELACE_MODULE}.const")
    except ImportError:
        return None
    key = getattr(lovelace_const, "LOVELACE_DATA", None)
    if key is None:
        return None
    data = hass.data.get(key)
    dashboards = getattr(data, "dashboards", None)
    storage = getattr(lovelace_dashboard, "LovelaceStorage", None)
    if not isinstance(dashboards, dict) or storage is None:
        return None
    return dashboards, storage


def _store(hass: HomeAssistant, entry: PrepaidConfigEntry) -> Store[dict[str, Any]]:
    return Store(hass, STORE_VERSION, f"{DOMAIN}.{entry.entry_id}.dashboards")


@callback
def _async_register(hass: HomeAssistant, item: dict[str, Any]) -> bool:
    """Register one dashboard's panel with its Lovelace storage; False if the URL is taken."""
    parts = _lovelace_parts(hass)
    if parts is None:
        return False
    dashboards, storage_class = parts
    url_path = item["url_path"]
    existing = dashboards.get(url_path)
    ours = getattr(existing, "config", None) or {}
    if existing is not None and ours.get("id") != item["id"]:
        return False  # someone else's dashboard at this URL
    if existing is None and url_path in hass.data.get(frontend.DATA_PANELS, {}):
        return False  # another panel (an add-on, a YAML dashboard) has this URL
    update = existing is not None
    dashboards[url_path] = existing if update else storage_class(hass, item)
    if update:
        existing.config = item
    frontend.async_register_built_in_panel(
        hass,
        LOVELACE,
        frontend_url_path=url_path,
        sidebar_title=item["title"],
        sidebar_icon=item["icon"],
        require_admin=item["require_admin"],
        config={"mode": "storage"},
        update=update,
    )
    return True


@callback
def _async_unregister(hass: HomeAssistant, item: dict[str, Any]) -> None:
    parts = _lovelace_parts(hass)
    if parts is None:
        return
    dashboards, _storage = parts
    existing = dashboards.get(item["url_path"])
    if existing is not None and (getattr(existing, "config", None) or {}).get("id") == item["id"]:
        dashboards.pop(item["url_path"])
        frontend.async_remove_panel(hass, item["url_path"], warn_if_unknown=False)


async def async_setup_dashboards(hass: HomeAssistant, entry: PrepaidConfigEntry) -> None:
    """Register the dashboards this entry made earlier (once Lovelace is set up)."""
    stored = await _store(hass, entry).async_load() or {}
    items: list[dict[str, Any]] = list(stored.get("dashboards", []))
    if not items:
        return
    registered: list[dict[str, Any]] = []

    async def register(hass: HomeAssistant, _component: str) -> None:
        if entry.state not in (ConfigEntryState.LOADED, ConfigEntryState.SETUP_IN_PROGRESS):
            return
        for item in items:
            if _async_register(hass, item):
                registered.append(item)
            else:
                _LOGGER.warning(
                    "Dashboard %s of %s not shown: its URL is taken or Lovelace is missing",
                    item["url_path"],
                    entry.title,
                )

    @callback
    def unregister() -> None:
        for item in registered:
            _async_unregister(hass, item)
        registered.clear()

    entry.async_on_unload(unregister)
    async_when_setup(hass, LOVELACE, register)


async def async_create_dashboards(
    hass: HomeAssistant,
    entry: PrepaidConfigEntry,
    *,
    operator: bool,
    households: Sequence[str] | None,
    overwrite: bool,
) -> list[JsonValueType]:
    """Build, store and show the dashboards asked for; return what was done to each."""
    runtime = entry.runtime_data
    parts = _lovelace_parts(hass)
    if parts is None:
        raise _error("dashboards_unavailable")
    dashboards, storage_class = parts
    community = runtime.community
    if households is None:
        chosen = [a for a in sorted(community.households) if runtime.service.users_of(a)]
    else:
        for account_id in households:
            if account_id not in community.households:
                raise _error("unknown_household", household=account_id)
        chosen = list(dict.fromkeys(households))
    words = await async_load_words(hass)
    specs = build_dashboards(
        runtime, er.async_get(hass), words, operator=operator, households=chosen
    )
    store = _store(hass, entry)
    stored = await store.async_load() or {}
    remembered = {item["url_path"]: item for item in stored.get("dashboards", [])}
    results: list[JsonValueType] = []
    for spec in specs:
        item = spec.item()
        taken = dashboards.get(spec.url_path)
        if taken is not None and (getattr(taken, "config", None) or {}).get("id") != item["id"]:
            raise _error("dashboard_url_taken", url_path=spec.url_path)
        storage = taken if taken is not None else storage_class(hass, item)
        kept = False
        if not overwrite:
            try:
                kept = bool(await storage.async_load(False))
            except HomeAssistantError:  # Lovelace's ConfigNotFound: nothing stored yet
                kept = False
        if not kept:
            await storage.async_save(spec.config)
        if not _async_register(hass, item):
            raise _error("dashboard_url_taken", url_path=spec.url_path)
        remembered[spec.url_path] = item
        results.append(
            {
                "url_path": spec.url_path,
                "title": spec.title,
                "household": spec.account_id,
                "require_admin": spec.require_admin,
                "kept": kept,
            }
        )
    await store.async_save({"dashboards": list(remembered.values())})

    registered = [remembered[spec.url_path] for spec in specs]

    @callback
    def unregister() -> None:
        for item in registered:
            _async_unregister(hass, item)

    entry.async_on_unload(unregister)
    return results
