"""Config flow: a community (its broker, id and tariff) or "My household" (a resident's link).

The first step is a menu. A community: every step that stores broker settings connects to
the broker first (with the settings the integration will use at setup) and loads the tariff,
so a saved entry is one that works; the unique id is `<host>:<port>/<community_id>`. A
household: the one-line connection code the operator hands over (`pm1:...`) or the same
details by hand; the flow logs in as the household and subscribes to its account before it
saves (`engine.household.check_household`); the unique id is one per community and meter.
Both have reconfigure and reauth; the options are the policy and residents (a community) or
the staleness limit (a household).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
import logging
from pathlib import Path
import re
from typing import Any

from homeassistant.components import webhook
from homeassistant.config_entries import (
    ConfigEntry,
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlow,
)
from homeassistant.const import CONF_HOST, CONF_PASSWORD, CONF_PORT, CONF_USERNAME
from homeassistant.core import HomeAssistant, callback
from homeassistant.data_entry_flow import section
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
    TimeSelector,
)
import voluptuous as vol

from .const import (
    CONF_AUTO_RESTORE,
    CONF_CA_FILE,
    CONF_CLIENT_CERT,
    CONF_CLIENT_KEY,
    CONF_COMMUNITY_ID,
    CONF_COMMUNITY_NAME,
    CONF_CURRENCY,
    CONF_EMERGENCY_CREDIT,
    CONF_FRIENDLY_END,
    CONF_FRIENDLY_START,
    CONF_FRIENDLY_WEEKENDS,
    CONF_HOLIDAYS,
    CONF_MEASUREMENT_INTERVAL,
    CONF_METER_ENTITIES,
    CONF_PREFIX,
    CONF_PROFILE,
    CONF_RECLOSE_THRESHOLD,
    CONF_TARIFF,
    CONF_TLS,
    CONF_WARN_LEVEL_1,
    CONF_WARN_LEVEL_2,
    CONF_WORKDAYS,
    DEFAULT_CURRENCY,
    DEFAULT_PORT,
    DEFAULT_PREFIX,
    DEFAULT_PROFILE,
    DOMAIN,
    METER_ENTITIES_ALL,
    METER_ENTITIES_ESSENTIAL,
    POLICY_OPTIONS,
    PRESET_TARIFFS,
    SECTION_TLS,
)
from .coordinator import CONF_SAFETY, safety_rules
from .engine.actor import Actor
from .engine.broker_acl import ConnectionDetails, InvalidConnectionCode, parse_connection_code
from .engine.community import CommunityError
from .engine.household import AccessRefused, HouseholdView, check_household
from .engine.policy import PolicyConfig, PolicyError
from .engine.profiles import PROFILE_NAMES
from .engine.protocol import COMMUNITY_RE, METER_ID_RE
from .engine.safety import SafetyError, SafetyRules
from .engine.tariff import TariffError
from .engine.transport import CannotConnect, InvalidAuth, check_connection
from .entry import resolve_tariff, transport_config
from .household_entry import (
    CONF_METER_ID,
    CONF_STALE_MINUTES,
    DEFAULT_STALE_MINUTES,
    MAX_STALE_MINUTES,
    MIN_STALE_MINUTES,
    household_data,
    household_details,
    household_unique_id,
    is_household,
    stale_minutes,
)
from .payments import (
    CONF_PAYMENTS,
    CONF_PUBLIC_URL,
    DATA_WEBHOOK_ID,
    SETUP_ERRORS as PAYMENT_SETUP_ERRORS,
    PaymentSetupError,
    key_error_placeholders,
    payment_form_input,
    payment_form_schema,
    payment_form_values,
    validate_payment_options,
    webhook_url,
)

_LOGGER = logging.getLogger(__name__)
MAX_MEASUREMENT_INTERVAL_S = 3600
# The residents step of the options: who links, and its fields.
OPTIONS_ACTOR = Actor("operator", name="options")
CONF_HOUSEHOLD = "household"
CONF_USER = "user"
CONF_LINK = "link"
RESIDENT_ERRORS = ("unknown_household", "ledger_error")

CURRENCY_RE = re.compile(r"[A-Z]{3}")
PREFIX_MAX_LENGTH = 100
TLS_FILES = (CONF_CA_FILE, CONF_CLIENT_CERT, CONF_CLIENT_KEY)
# Error keys the policy may report; anything newer is shown as the generic `invalid_option`.
POLICY_ERRORS = frozenset(
    {
        "invalid_amount",
        "invalid_time",
        "invalid_date",
        "invalid_bool",
        "invalid_timezone",
        "negative_amount",
        "warn_levels_order",
        "reclose_below_cut",
        "invalid_options",
    }
)
# Every placeholder an error text may use, so the form never shows a raw `{name}`.
NO_PLACEHOLDERS: dict[str, str] = {"error": "", "path": "", "tariff_currency": ""}

_TEXT = TextSelector()
_PASSWORD = TextSelector(
    TextSelectorConfig(type=TextSelectorType.PASSWORD, autocomplete="current-password")
)
_PORT = vol.All(
    NumberSelector(NumberSelectorConfig(min=1, max=65535, step=1, mode=NumberSelectorMode.BOX)),
    vol.Coerce(int),
)


def _tariff_selector() -> SelectSelector:
    """Pick a shipped preset, or type a YAML file path relative to the config folder."""
    return SelectSelector(
        SelectSelectorConfig(
            options=list(PRESET_TARIFFS),
            custom_value=True,
            mode=SelectSelectorMode.DROPDOWN,
            translation_key=CONF_TARIFF,
        )
    )


def _profile_selector() -> SelectSelector:
    """Pick the device family of the community's meters."""
    return SelectSelector(
        SelectSelectorConfig(
            options=list(PROFILE_NAMES),
            mode=SelectSelectorMode.DROPDOWN,
            translation_key=CONF_PROFILE,
        )
    )


def _tls_section() -> section:
    """Build the TLS section anew each time (suggested values are written into it)."""
    return section(
        vol.Schema(  # type: ignore[arg-type, unused-ignore]
            {
                vol.Required(CONF_TLS, default=False): BooleanSelector(),
                vol.Optional(CONF_CA_FILE): _TEXT,
                vol.Optional(CONF_CLIENT_CERT): _TEXT,
                vol.Optional(CONF_CLIENT_KEY): _TEXT,
            }
        ),
        {"collapsed": True},
    )


def _broker_fields() -> dict[vol.Marker, Any]:
    return {
        vol.Required(CONF_HOST): TextSelector(TextSelectorConfig(autocomplete="off")),
        vol.Required(CONF_PORT, default=DEFAULT_PORT): _PORT,
        vol.Optional(CONF_USERNAME): TextSelector(TextSelectorConfig(autocomplete="username")),
        vol.Optional(CONF_PASSWORD): _PASSWORD,
    }


def user_schema() -> vol.Schema:
    """Return the form of a new community."""
    return vol.Schema(
        {
            **_broker_fields(),
            vol.Required(CONF_PREFIX, default=DEFAULT_PREFIX): _TEXT,
            vol.Required(CONF_COMMUNITY_ID): _TEXT,
            vol.Required(CONF_COMMUNITY_NAME): _TEXT,
            vol.Required(CONF_CURRENCY, default=DEFAULT_CURRENCY): _TEXT,
            vol.Required(CONF_TARIFF): _tariff_selector(),
            vol.Required(CONF_PROFILE, default=DEFAULT_PROFILE): _profile_selector(),
            vol.Required(SECTION_TLS): _tls_section(),
        }
    )


def reconfigure_schema() -> vol.Schema:
    """Return the form that changes the broker, its credentials and the tariff."""
    return vol.Schema(
        {
            **_broker_fields(),
            vol.Required(CONF_COMMUNITY_ID): _TEXT,
            vol.Required(CONF_TARIFF): _tariff_selector(),
            vol.Required(SECTION_TLS): _tls_section(),
        }
    )


def _form_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return entry data shaped like the form (the TLS fields inside their section)."""
    values = {key: value for key, value in data.items() if key != CONF_TLS and key not in TLS_FILES}
    values[SECTION_TLS] = {key: data[key] for key in (CONF_TLS, *TLS_FILES) if key in data}
    return values


def _entry_data(user_input: Mapping[str, Any]) -> dict[str, Any]:
    """Return form input as entry data: flat, trimmed, empty optional fields left out."""
    data: dict[str, Any] = {}
    for key, value in user_input.items():
        if key == SECTION_TLS:
            continue
        # A password is taken as typed: spaces may be part of it.
        text = value.strip() if isinstance(value, str) and key != CONF_PASSWORD else value
        if key in (CONF_USERNAME, CONF_PASSWORD) and not text:
            continue
        data[key] = text
    if CONF_CURRENCY in data:
        data[CONF_CURRENCY] = str(data[CONF_CURRENCY]).upper()
    tls: Mapping[str, Any] = user_input.get(SECTION_TLS) or {}
    data[CONF_TLS] = bool(tls.get(CONF_TLS, False))
    for key in TLS_FILES:
        if path := str(tls.get(key) or "").strip():
            data[key] = path
    return data


def _valid_prefix(prefix: str) -> bool:
    """A topic prefix: one or more `/`-separated levels, no wildcards, nothing empty."""
    return (
        0 < len(prefix) <= PREFIX_MAX_LENGTH
        and all(prefix.split("/"))
        and not any(char in prefix for char in "+#\0")
    )


def _check_fields(data: Mapping[str, Any]) -> dict[str, str]:
    """Return the errors that need neither the disk nor the network."""
    errors: dict[str, str] = {}
    if not COMMUNITY_RE.fullmatch(str(data[CONF_COMMUNITY_ID])):
        errors[CONF_COMMUNITY_ID] = "invalid_community_id"
    if CONF_PREFIX in data and not _valid_prefix(str(data[CONF_PREFIX])):
        errors[CONF_PREFIX] = "invalid_prefix"
    if CONF_CURRENCY in data and not CURRENCY_RE.fullmatch(str(data[CONF_CURRENCY])):
        errors[CONF_CURRENCY] = "invalid_currency"
    if not data[CONF_TLS] and any(key in data for key in TLS_FILES):
        errors["base"] = "tls_files_without_tls"
    elif CONF_CLIENT_KEY in data and CONF_CLIENT_CERT not in data:
        errors["base"] = "client_key_without_cert"
    return errors


def _missing_file(hass: HomeAssistant, data: Mapping[str, Any]) -> str | None:
    """Return the first TLS file that does not exist (blocking: run it in an executor)."""
    for key in TLS_FILES:
        if key in data and not Path(hass.config.path(str(data[key]))).is_file():
            return str(data[key])
    return None


async def validate_input(
    hass: HomeAssistant, data: Mapping[str, Any], placeholders: dict[str, str]
) -> dict[str, str]:
    """Check the files and the tariff, then connect; return the form errors (none if it works).

    Fills `placeholders` with what the error texts need.
    """
    if path := await hass.async_add_executor_job(_missing_file, hass, data):
        placeholders["path"] = path
        return {"base": "file_not_found"}
    errors: dict[str, str] = {}
    try:
        tariff = await hass.async_add_executor_job(resolve_tariff, hass, str(data[CONF_TARIFF]))
    except TariffError as err:
        placeholders["error"] = str(err)
        errors[CONF_TARIFF] = "invalid_tariff"
    else:
        currency = data.get(CONF_CURRENCY)
        if currency is not None and currency != tariff.currency:
            placeholders["tariff_currency"] = tariff.currency
            errors[CONF_TARIFF] = "currency_mismatch"
    if errors:
        return errors
    try:
        await check_connection(transport_config(hass, dict(data), "config_flow"))
    except InvalidAuth:
        return {"base": "invalid_auth"}
    except CannotConnect as err:
        placeholders["error"] = str(err)
        return {"base": "cannot_connect"}
    except Exception:
        _LOGGER.exception("Unexpected error while connecting to the broker")
        return {"base": "unknown"}
    return {}


def unique_id_of(data: Mapping[str, Any]) -> str:
    """Return the unique id of a community on a broker."""
    return f"{data[CONF_HOST]}:{data[CONF_PORT]}/{data[CONF_COMMUNITY_ID]}"


# -- a household ("My household") ---------------------------------------------------------

CONF_CODE = "code"
#: The collapsible section of a household's details typed by hand (instead of the code).
SECTION_DETAILS = "details"
HOUSEHOLD_DETAIL_FIELDS = (
    CONF_HOST,
    CONF_PORT,
    CONF_TLS,
    CONF_USERNAME,
    CONF_PASSWORD,
    CONF_PREFIX,
    CONF_COMMUNITY_ID,
    CONF_METER_ID,
)


def household_schema() -> vol.Schema:
    """Return the household form: the code, or the details in a collapsed section."""
    return vol.Schema(
        {
            vol.Optional(CONF_CODE): TextSelector(TextSelectorConfig(autocomplete="off")),
            vol.Required(SECTION_DETAILS, default=dict): section(
                vol.Schema(  # type: ignore[arg-type, unused-ignore]
                    {
                        vol.Optional(CONF_HOST): TextSelector(
                            TextSelectorConfig(autocomplete="off")
                        ),
                        vol.Optional(CONF_PORT, default=DEFAULT_PORT): _PORT,
                        vol.Optional(CONF_TLS, default=False): BooleanSelector(),
                        vol.Optional(CONF_USERNAME): TextSelector(
                            TextSelectorConfig(autocomplete="username")
                        ),
                        vol.Optional(CONF_PASSWORD): _PASSWORD,
                        vol.Optional(CONF_PREFIX, default=DEFAULT_PREFIX): _TEXT,
                        vol.Optional(CONF_COMMUNITY_ID): _TEXT,
                        vol.Optional(CONF_METER_ID): _TEXT,
                    }
                ),
                {"collapsed": True},
            ),
        }
    )


def _household_form_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return a household entry's data shaped like its form (no code: the details)."""
    return {SECTION_DETAILS: {key: data[key] for key in HOUSEHOLD_DETAIL_FIELDS if key in data}}


def read_household_input(
    user_input: Mapping[str, Any],
) -> tuple[ConnectionDetails | None, dict[str, str]]:
    """Return the household's details from the form, or None and the form errors."""
    code = str(user_input.get(CONF_CODE) or "").strip()
    if code:
        try:
            return parse_connection_code(code), {}
        except InvalidConnectionCode:
            return None, {CONF_CODE: "invalid_code"}
    fields: Mapping[str, Any] = user_input.get(SECTION_DETAILS) or {}

    def text(key: str) -> str:
        return str(fields.get(key) or "").strip()

    host, username, community, meter = (
        text(CONF_HOST),
        text(CONF_USERNAME),
        text(CONF_COMMUNITY_ID),
        text(CONF_METER_ID),
    )
    password = str(fields.get(CONF_PASSWORD) or "")  # taken as typed
    prefix = text(CONF_PREFIX) or DEFAULT_PREFIX
    if not (host and username and password and community and meter):
        return None, {"base": "code_or_details"}
    if not COMMUNITY_RE.fullmatch(community):
        return None, {"base": "invalid_community_id"}
    if not METER_ID_RE.fullmatch(meter):
        return None, {"base": "invalid_meter_id"}
    if not _valid_prefix(prefix) or prefix.startswith("$"):
        return None, {"base": "invalid_prefix"}
    details = ConnectionDetails(
        host=host,
        port=int(fields.get(CONF_PORT) or DEFAULT_PORT),
        tls=bool(fields.get(CONF_TLS, False)),
        username=username,
        password=password,
        prefix=prefix,
        community=community,
        meter=meter,
    )
    return details, {}


async def validate_household(
    details: ConnectionDetails, placeholders: dict[str, str]
) -> tuple[HouseholdView | None, dict[str, str]]:
    """Log in as the household and read its account; return it (or None) and the errors."""
    try:
        view = await check_household(details)
    except InvalidAuth:
        return None, {"base": "invalid_auth"}
    except AccessRefused:
        return None, {"base": "access_refused"}
    except CannotConnect as err:
        placeholders["error"] = str(err)
        return None, {"base": "cannot_connect"}
    except Exception:
        _LOGGER.exception("Unexpected error while checking the household's login")
        return None, {"base": "unknown"}
    return view, {}


def household_title(details: ConnectionDetails) -> str:
    """Return a household entry's title: its community and meter."""
    return f"{details.community} {details.meter}"


class PrepaidMeterConfigFlow(ConfigFlow, domain=DOMAIN):
    """Set up one community: its broker, its id and its tariff."""

    VERSION = 1

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> OptionsFlow:
        """Return the prepaid policy options flow (the staleness limit for a household)."""
        if is_household(config_entry):
            return HouseholdOptionsFlow()
        return PrepaidMeterOptionsFlow()

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask what to set up: a community, or this home's household."""
        return self.async_show_menu(step_id="user", menu_options=["community", "household"])

    async def async_step_community(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the broker and the community; save once the broker accepts us."""
        errors: dict[str, str] = {}
        placeholders = dict(NO_PLACEHOLDERS)
        if user_input is not None:
            data = _entry_data(user_input)
            errors = _check_fields(data)
            if not errors:
                await self.async_set_unique_id(unique_id_of(data), raise_on_progress=False)
                self._abort_if_unique_id_configured()
                if self._community_in_use(str(data[CONF_COMMUNITY_ID])):
                    errors[CONF_COMMUNITY_ID] = "community_in_use"
                elif self._devices_in_use(data):
                    errors[CONF_PROFILE] = "devices_in_use"
                else:
                    errors = await validate_input(self.hass, data, placeholders)
            if not errors:
                return self.async_create_entry(title=str(data[CONF_COMMUNITY_NAME]), data=data)
        return self.async_show_form(
            step_id="community",
            data_schema=self.add_suggested_values_to_schema(user_schema(), user_input),  # type: ignore[arg-type, unused-ignore]
            errors=errors,
            description_placeholders=placeholders,
        )

    def _community_in_use(self, community_id: str) -> bool:
        """Whether another entry (another broker) has this community: they'd share a ledger."""
        return any(
            entry.data.get(CONF_COMMUNITY_ID) == community_id
            for entry in self._async_current_entries(include_ignore=False)
            if not is_household(entry)
        )

    def _devices_in_use(self, data: Mapping[str, Any], entry_id: str | None = None) -> bool:
        """Whether another community hears the same Tasmota or Shelly devices.

        Those devices publish outside the topic prefix: two communities of one type on one
        broker login would both bill, and both cut, every device.
        """
        profile = data.get(CONF_PROFILE, DEFAULT_PROFILE)
        if profile == DEFAULT_PROFILE:
            return False

        def login(data: Mapping[str, Any]) -> tuple[Any, ...]:
            return (data.get(CONF_HOST), data.get(CONF_PORT), data.get(CONF_USERNAME))

        return any(
            entry.entry_id != entry_id
            and not is_household(entry)
            and entry.data.get(CONF_PROFILE, DEFAULT_PROFILE) == profile
            and login(entry.data) == login(data)
            for entry in self._async_current_entries(include_ignore=False)
        )

    def _update_listened(self, entry: ConfigEntry, **changes: Any) -> bool:
        """Save the changes if the loaded entry's own update listener reloads it; say so.

        A loaded entry listens for updates (entry.py, household_entry.py) and reloads itself:
        Home Assistant 2026 asks flows to leave the reload to that listener. An entry that is
        not loaded (its setup failed, the reason for a reauth) has no listener: the caller
        saves and reloads it with `async_update_reload_and_abort`.
        """
        if not entry.update_listeners:
            return False
        self.hass.config_entries.async_update_entry(entry, **changes)
        return True

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the broker, the credentials or the tariff of a community."""
        entry = self._get_reconfigure_entry()
        if is_household(entry):
            return await self.async_step_household_reconfigure()
        errors: dict[str, str] = {}
        placeholders = dict(NO_PLACEHOLDERS)
        if user_input is not None:
            # The form holds the whole broker part: what it leaves empty is no longer set.
            replaced = (CONF_USERNAME, CONF_PASSWORD, CONF_TLS, *TLS_FILES)
            keep = {k: v for k, v in entry.data.items() if k not in replaced}
            data = {**keep, **_entry_data(user_input)}
            if data[CONF_COMMUNITY_ID] != entry.data[CONF_COMMUNITY_ID]:
                return self.async_abort(reason="unique_id_mismatch")
            errors = _check_fields(data)
            unique_id = unique_id_of(data)
            if not errors and unique_id != entry.unique_id:
                await self.async_set_unique_id(unique_id, raise_on_progress=False)
                self._abort_if_unique_id_configured()
            if not errors and self._devices_in_use(data, entry.entry_id):
                errors["base"] = "devices_in_use"
            if not errors:
                errors = await validate_input(self.hass, data, placeholders)
            if not errors:
                if self._update_listened(entry, unique_id=unique_id, data=data):
                    return self.async_abort(reason="reconfigure_successful")
                return self.async_update_reload_and_abort(entry, unique_id=unique_id, data=data)
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                reconfigure_schema(),  # type: ignore[arg-type, unused-ignore]
                user_input or _form_values(entry.data),
            ),
            errors=errors,
            description_placeholders={**placeholders, "community": entry.title},
        )

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """Start when the broker refused the stored credentials."""
        if is_household(self._get_reauth_entry()):
            return await self.async_step_household_reauth()
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for a new user name and password; save once the broker accepts them."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        placeholders = dict(NO_PLACEHOLDERS)
        if user_input is not None:
            keep = {k: v for k, v in entry.data.items() if k not in (CONF_USERNAME, CONF_PASSWORD)}
            data = {**keep, **_entry_data(user_input)}
            try:
                await check_connection(transport_config(self.hass, data, "config_flow"))
            except InvalidAuth:
                errors["base"] = "invalid_auth"
            except CannotConnect as err:
                placeholders["error"] = str(err)
                errors["base"] = "cannot_connect"
            except Exception:
                _LOGGER.exception("Unexpected error while connecting to the broker")
                errors["base"] = "unknown"
            else:
                if self._update_listened(entry, data=data):
                    return self.async_abort(reason="reauth_successful")
                return self.async_update_reload_and_abort(entry, data=data)
        schema = vol.Schema(
            {
                vol.Optional(CONF_USERNAME): TextSelector(
                    TextSelectorConfig(autocomplete="username")
                ),
                vol.Optional(CONF_PASSWORD): _PASSWORD,
            }
        )
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=self.add_suggested_values_to_schema(
                schema,  # type: ignore[arg-type, unused-ignore]
                user_input or {CONF_USERNAME: entry.data.get(CONF_USERNAME)},
            ),
            errors=errors,
            description_placeholders={
                **placeholders,
                "community": entry.title,
                "broker": f"{entry.data[CONF_HOST]}:{entry.data[CONF_PORT]}",
            },
        )

    # -- a household --------------------------------------------------------------------

    async def async_step_household(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the connection code (or the details); save once the broker lets us read."""
        errors: dict[str, str] = {}
        placeholders = dict(NO_PLACEHOLDERS)
        if user_input is not None:
            details, errors = read_household_input(user_input)
            if details is not None:
                unique_id = household_unique_id(details.community, str(details.meter))
                await self.async_set_unique_id(unique_id, raise_on_progress=False)
                if unique_id in self._async_current_ids(include_ignore=False):
                    return self.async_abort(reason="household_configured")
                view, errors = await validate_household(details, placeholders)
                if not errors:
                    currency = view.currency if view is not None else None
                    return self.async_create_entry(
                        title=household_title(details), data=household_data(details, currency)
                    )
        return self.async_show_form(
            step_id="household",
            data_schema=self.add_suggested_values_to_schema(household_schema(), user_input),  # type: ignore[arg-type, unused-ignore]
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_household_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the household's broker, login or code; the community and meter stay."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        placeholders = dict(NO_PLACEHOLDERS)
        if user_input is not None:
            details, errors = read_household_input(user_input)
            if details is not None:
                if household_unique_id(details.community, str(details.meter)) != entry.unique_id:
                    return self.async_abort(reason="household_mismatch")
                view, errors = await validate_household(details, placeholders)
                if not errors:
                    currency = view.currency if view is not None else None
                    data = household_data(details, currency or entry.data.get(CONF_CURRENCY))
                    title = household_title(details)
                    if self._update_listened(entry, title=title, data=data):
                        return self.async_abort(reason="reconfigure_successful")
                    return self.async_update_reload_and_abort(entry, title=title, data=data)
        return self.async_show_form(
            step_id="household_reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                household_schema(),  # type: ignore[arg-type, unused-ignore]
                user_input or _household_form_values(entry.data),
            ),
            errors=errors,
            description_placeholders={**placeholders, "household": entry.title},
        )

    async def async_step_household_reauth(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for a new code (or password) once the broker refused the household's login."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        placeholders = dict(NO_PLACEHOLDERS)
        if user_input is not None:
            code = str(user_input.get(CONF_CODE) or "").strip()
            password = str(user_input.get(CONF_PASSWORD) or "")
            current = household_details(entry.data)
            details: ConnectionDetails | None = None
            if code:
                try:
                    details = parse_connection_code(code)
                except InvalidConnectionCode:
                    errors[CONF_CODE] = "invalid_code"
                else:
                    if (details.community, details.meter) != (current.community, current.meter):
                        details = None
                        errors[CONF_CODE] = "wrong_household"
            elif password:
                details = replace(current, password=password)
            else:
                errors["base"] = "code_or_password"
            if details is not None:
                view, errors = await validate_household(details, placeholders)
                if not errors:
                    currency = view.currency if view is not None else None
                    data = household_data(details, currency or entry.data.get(CONF_CURRENCY))
                    if self._update_listened(entry, data=data):
                        return self.async_abort(reason="reauth_successful")
                    return self.async_update_reload_and_abort(entry, data=data)
        schema = vol.Schema(
            {
                vol.Optional(CONF_CODE): TextSelector(TextSelectorConfig(autocomplete="off")),
                vol.Optional(CONF_PASSWORD): _PASSWORD,
            }
        )
        return self.async_show_form(
            step_id="household_reauth",
            data_schema=schema,  # type: ignore[arg-type, unused-ignore]
            errors=errors,
            description_placeholders={
                **placeholders,
                "household": entry.title,
                "broker": f"{entry.data[CONF_HOST]}:{entry.data[CONF_PORT]}",
            },
        )


def _amount_selector(currency: str, *, minimum: float) -> NumberSelector:
    return NumberSelector(
        NumberSelectorConfig(
            min=minimum,
            max=100000,
            step=0.01,
            unit_of_measurement=currency,
            mode=NumberSelectorMode.BOX,
        )
    )


def options_schema(currency: str) -> vol.Schema:
    """Return the prepaid policy form."""
    return vol.Schema(
        {
            vol.Required(CONF_WARN_LEVEL_1): _amount_selector(currency, minimum=0),
            vol.Required(CONF_WARN_LEVEL_2): _amount_selector(currency, minimum=0),
            vol.Required(CONF_EMERGENCY_CREDIT): _amount_selector(currency, minimum=0),
            vol.Required(CONF_FRIENDLY_START): TimeSelector(),
            vol.Required(CONF_FRIENDLY_END): TimeSelector(),
            vol.Required(CONF_FRIENDLY_WEEKENDS): BooleanSelector(),
            vol.Optional(CONF_HOLIDAYS, default=list): TextSelector(
                TextSelectorConfig(type=TextSelectorType.DATE, multiple=True)
            ),
            vol.Required(CONF_RECLOSE_THRESHOLD): _amount_selector(currency, minimum=-100000),
            vol.Required(CONF_AUTO_RESTORE): BooleanSelector(),
            vol.Optional(CONF_WORKDAYS, default=list): TextSelector(
                TextSelectorConfig(type=TextSelectorType.DATE, multiple=True)
            ),
            vol.Optional(CONF_MEASUREMENT_INTERVAL): NumberSelector(
                NumberSelectorConfig(
                    min=0,
                    max=MAX_MEASUREMENT_INTERVAL_S,
                    step=10,
                    unit_of_measurement="s",
                    mode=NumberSelectorMode.BOX,
                )
            ),
            vol.Optional(CONF_METER_ENTITIES): SelectSelector(
                SelectSelectorConfig(
                    options=[METER_ENTITIES_ALL, METER_ENTITIES_ESSENTIAL],
                    mode=SelectSelectorMode.LIST,
                    translation_key=CONF_METER_ENTITIES,
                )
            ),
        }
    )


def _form_number(value: Any) -> int | float:
    """Show a stored decimal string in a number field (the form speaks JSON numbers)."""
    amount = Decimal(str(value))
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def policy_form_values(options: Mapping[str, Any]) -> dict[str, Any]:
    """Return the stored policy (defaults where unset) as the form's suggested values."""
    values = {**PolicyConfig().to_options(), **options}
    for key in (
        CONF_WARN_LEVEL_1,
        CONF_WARN_LEVEL_2,
        CONF_EMERGENCY_CREDIT,
        CONF_RECLOSE_THRESHOLD,
    ):
        values[key] = _form_number(values[key])
    shown = {key: values[key] for key in POLICY_OPTIONS}
    for key in (CONF_MEASUREMENT_INTERVAL, CONF_METER_ENTITIES):
        if (value := options.get(key)) is not None:
            shown[key] = value
    return shown


class PrepaidMeterOptionsFlow(OptionsFlow):
    """Edit the prepaid policy, link residents to their households, or set up payments."""

    _webhook_id: str | None = None

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Offer the prepaid rules, the residents and the payments."""
        return self.async_show_menu(
            step_id="init", menu_options=["policy", "residents", "payments", "safety"]
        )

    async def async_step_residents(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Link a Home Assistant user to a household (or unlink them): an operator's choice.

        Only administrators reach an options flow, so the operator decides; the link is a
        ledger fact (engine CommunityService.link_user). Saving changes no option.
        """
        entry = self.config_entry
        if entry.state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="entry_not_loaded")
        runtime = entry.runtime_data
        errors: dict[str, str] = {}
        if user_input is not None:
            account_id = user_input[CONF_HOUSEHOLD]
            user_id = user_input[CONF_USER]
            service = runtime.service
            request = service.link_user if user_input[CONF_LINK] == "link" else service.unlink_user
            try:
                await request(account_id, user_id, actor=OPTIONS_ACTOR)
            except CommunityError as err:
                errors["base"] = err.key if err.key in RESIDENT_ERRORS else "cannot_link"
            else:
                return self.async_create_entry(data=dict(entry.options))
        households = runtime.community.households
        users = [u for u in await self.hass.auth.async_get_users() if not u.system_generated]
        names = {user.id: user.name or user.id for user in users}
        linked = [
            f"{households[account].label}: {', '.join(sorted(names.get(u, u) for u in people))}"
            for account, people in sorted(runtime.community.links.as_dict().items())
            if account in households
        ]
        schema = vol.Schema(
            {
                vol.Required(CONF_HOUSEHOLD): SelectSelector(
                    SelectSelectorConfig(
                        options=[
                            SelectOptionDict(value=account, label=household.label)
                            for account, household in sorted(households.items())
                        ],
                        mode=SelectSelectorMode.DROPDOWN,
                    )
                ),
                vol.Required(CONF_USER): SelectSelector(
                    SelectSelectorConfig(
                        options=[
                            SelectOptionDict(value=user_id, label=name)
                            for user_id, name in sorted(names.items(), key=lambda kv: kv[1])
                        ],
                        mode=SelectSelectorMode.DROPDOWN,
                    )
                ),
                vol.Required(CONF_LINK, default="link"): SelectSelector(
                    SelectSelectorConfig(
                        options=["link", "unlink"],
                        mode=SelectSelectorMode.LIST,
                        translation_key=CONF_LINK,
                    )
                ),
            }
        )
        return self.async_show_form(
            step_id="residents",
            data_schema=schema,  # type: ignore[arg-type, unused-ignore]
            errors=errors,
            description_placeholders={"linked": "\n".join(linked) or "-"},
        )

    async def async_step_policy(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Show the policy; save it once `PolicyConfig.from_options` accepts it."""
        errors: dict[str, str] = {}
        placeholders: dict[str, str] = {"value": ""}
        if user_input is not None:
            # The number fields send floats: whole amounts are stored as "10", not "10.0".
            values = {
                key: int(value) if isinstance(value, float) and value.is_integer() else value
                for key, value in user_input.items()
            }
            try:
                policy = PolicyConfig.from_options(values)
            except PolicyError as err:
                key = (
                    err.translation_key
                    if err.translation_key in POLICY_ERRORS
                    else "invalid_option"
                )
                errors[err.field if err.field in POLICY_OPTIONS else "base"] = key
                placeholders["value"] = err.placeholders.get("value", "")
            else:
                stored = policy.to_options()
                policy_options = {key: stored[key] for key in POLICY_OPTIONS}
                options = {**self.config_entry.options, **policy_options}
                # Empty: the default by community size (see coordinator.measurement_interval).
                options.pop(CONF_MEASUREMENT_INTERVAL, None)
                if (interval := values.get(CONF_MEASUREMENT_INTERVAL)) is not None:
                    options[CONF_MEASUREMENT_INTERVAL] = int(interval)
                # Empty: by community size (see coordinator.PrepaidRuntime.meter_entities).
                options.pop(CONF_METER_ENTITIES, None)
                if (entities := values.get(CONF_METER_ENTITIES)) is not None:
                    options[CONF_METER_ENTITIES] = entities
                return self.async_create_entry(data=options)
        currency = str(self.config_entry.data.get(CONF_CURRENCY, DEFAULT_CURRENCY))
        return self.async_show_form(
            step_id="policy",
            data_schema=self.add_suggested_values_to_schema(
                options_schema(currency),  # type: ignore[arg-type, unused-ignore]
                user_input or policy_form_values(self.config_entry.options),
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_payments(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """WeChat Pay and Alipay: ids, key files, limits; the keys are loaded before saving.

        The webhook id is made the first time the form is shown and kept in the entry's data
        when the settings are saved, so that the address shown is the one that works.
        """
        entry = self.config_entry
        errors: dict[str, str] = {}
        placeholders = {"setting": "", "error": ""}
        webhook_id = entry.data.get(DATA_WEBHOOK_ID) or self._webhook_id
        if not webhook_id:
            webhook_id = self._webhook_id = webhook.async_generate_id()
        if user_input is not None:
            values = payment_form_input(user_input)
            try:
                stored = await self.hass.async_add_executor_job(
                    validate_payment_options, self.hass.config.path, values
                )
            except PaymentSetupError as err:
                errors["base"] = err.key if err.key in PAYMENT_SETUP_ERRORS else "invalid_option"
                placeholders = key_error_placeholders(err)
            else:
                options = {**entry.options, CONF_PAYMENTS: stored}
                self.hass.config_entries.async_update_entry(
                    entry, data={**entry.data, DATA_WEBHOOK_ID: webhook_id}, options=options
                )
                return self.async_create_entry(data=options)
        stored_values = payment_form_values(entry.options)
        public = (user_input or stored_values).get(CONF_PUBLIC_URL) or ""
        currency = str(entry.data.get(CONF_CURRENCY, DEFAULT_CURRENCY))
        return self.async_show_form(
            step_id="payments",
            data_schema=self.add_suggested_values_to_schema(
                payment_form_schema(currency),  # type: ignore[arg-type, unused-ignore]
                user_input or stored_values,
            ),
            errors=errors,
            description_placeholders={
                **placeholders,
                "url": webhook_url(self.hass, webhook_id, str(public)),
            },
        )

    async def async_step_safety(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The safety and care watch's main thresholds, checked by `SafetyRules`.

        Saved under options["safety"], only those that differ from the defaults; a
        household's own rules are an operator's action (`set_household_safety`).
        """
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        if user_input is not None:
            try:
                rules = SafetyRules.from_options(user_input)
            except SafetyError as err:
                errors["base"] = SAFETY_ERROR
                placeholders["error"] = str(err)
            else:
                options = dict(self.config_entry.options)
                options.pop(CONF_SAFETY, None)
                if changed := rules.to_options(SafetyRules()):
                    options[CONF_SAFETY] = changed
                return self.async_create_entry(data=options)
        current = safety_rules(self.config_entry.options) or SafetyRules()
        shown = {name: getattr(current, name) for name in SAFETY_FORM}
        return self.async_show_form(
            step_id="safety",
            data_schema=self.add_suggested_values_to_schema(
                safety_schema(),  # type: ignore[arg-type, unused-ignore]
                user_input or shown,
            ),
            errors=errors,
            description_placeholders=placeholders,
        )


#: The safety options step's one error (the rules' own sentence in its {error}).
SAFETY_ERROR = "invalid_safety_rule"
#: The safety options form: each rule's unit, its bounds and its step.
SAFETY_FORM: dict[str, tuple[str | None, float, float, float]] = {
    "overload_factor": (None, 0.5, 3, 0.01),
    "overload_s": ("s", 1, 3_600, 1),
    "cut_factor": (None, 0.5, 5, 0.01),
    "cut_s": ("s", 1, 3_600, 1),
    "cut_long_factor": (None, 0.5, 5, 0.01),
    "cut_long_s": ("s", 60, 86_400, 60),
    "surge_fraction": (None, 0.05, 5, 0.05),
    "theft_gap_a": ("A", 0.1, 100, 0.1),
    "clear_s": ("s", 60, 86_400, 60),
    "theft_clear_s": ("s", 60, 604_800, 60),
    "offline_s": ("s", 300, 604_800, 60),
    "care_hours": ("h", 1, 72, 0.5),
}


def safety_schema() -> vol.Schema:
    """Return the safety options form (the main thresholds of engine/safety.py)."""
    return vol.Schema(
        {
            vol.Required(name): NumberSelector(
                NumberSelectorConfig(min=low, max=high, step=step, mode=NumberSelectorMode.BOX)
                | ({"unit_of_measurement": unit} if unit else {})  # a factor has no unit
            )
            for name, (unit, low, high, step) in SAFETY_FORM.items()
        }
    )


class HouseholdOptionsFlow(OptionsFlow):
    """A household's one option: how long without news before its entities go unavailable."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Show the staleness limit."""
        return await self.async_step_household()

    async def async_step_household(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Save the staleness limit in whole minutes."""
        if user_input is not None:
            minutes = int(user_input[CONF_STALE_MINUTES])
            return self.async_create_entry(
                data={**self.config_entry.options, CONF_STALE_MINUTES: minutes}
            )
        schema = vol.Schema(
            {
                vol.Required(CONF_STALE_MINUTES, default=DEFAULT_STALE_MINUTES): vol.All(
                    NumberSelector(
                        NumberSelectorConfig(
                            min=MIN_STALE_MINUTES,
                            max=MAX_STALE_MINUTES,
                            step=1,
                            unit_of_measurement="min",
                            mode=NumberSelectorMode.BOX,
                        )
                    ),
                    vol.Coerce(int),
                    vol.Range(min=MIN_STALE_MINUTES, max=MAX_STALE_MINUTES),
                )
            }
        )
        return self.async_show_form(
            step_id="household",
            data_schema=self.add_suggested_values_to_schema(
                schema,  # type: ignore[arg-type, unused-ignore]
                {CONF_STALE_MINUTES: int(stale_minutes(self.config_entry))},
            ),
        )
