"""Set up and unload a config entry (re-exported by the package's `__init__`).

A community's entry is set up here; a household's ("My household", `entry.data["kind"]`)
by household_entry.py. An entry without a kind is a community's (entries made before
households existed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from homeassistant.const import CONF_HOST, CONF_PASSWORD, CONF_PORT, CONF_USERNAME, Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import (
    ConfigEntryAuthFailed,
    ConfigEntryError,
    ConfigEntryNotReady,
)
from homeassistant.helpers import config_validation as cv, device_registry as dr
from homeassistant.helpers.device_registry import DeviceEntry
from homeassistant.helpers.typing import ConfigType

from .const import (
    CONF_CA_FILE,
    CONF_CLIENT_CERT,
    CONF_CLIENT_KEY,
    CONF_COMMUNITY_ID,
    CONF_COMMUNITY_NAME,
    CONF_CURRENCY,
    CONF_PREFIX,
    CONF_PROFILE,
    CONF_TARIFF,
    CONF_TLS,
    DEFAULT_PROFILE,
    DOMAIN,
)
from .coordinator import (
    PrepaidConfigEntry,
    PrepaidRuntime,
    ledger_path,
    open_ledger,
    safety_rules,
)
from .dashboard import async_setup_dashboards
from .engine.community import Community
from .engine.ledger import LedgerError
from .engine.policy import PolicyConfig, PolicyError, library_country
from .engine.profiles import PROFILE_NAMES, make_profile
from .engine.tariff import Tariff, TariffError, load_preset, load_tariff, preset_names
from .engine.transport import (
    CannotConnect,
    InvalidAuth,
    TransportConfig,
    TransportError,
    check_connection,
    forget_session,
)
from .entity import hub_device_info
from .household_entry import (
    HouseholdConfigEntry,
    async_setup_household_entry,
    async_unload_household_entry,
    is_household,
)
from .payments import async_setup_payments, async_unload_payments
from .services import async_setup_services
from .texts import async_load_texts

_LOGGER = logging.getLogger(__name__)
PLATFORMS: list[Platform] = [
    Platform.BINARY_SENSOR,
    Platform.BUTTON,
    Platform.IMAGE,
    Platform.NUMBER,
    Platform.SELECT,
    Platform.SENSOR,
    Platform.SWITCH,
]
CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the integration's actions (once, for every community)."""
    async_setup_services(hass)
    return True


def transport_config(
    hass: HomeAssistant, data: dict[str, object], entry_id: str
) -> TransportConfig:
    """Return the broker settings of a config entry (stable client id per entry)."""

    def path(key: str) -> str | None:
        value = data.get(key)
        return hass.config.path(str(value)) if value else None

    return TransportConfig(
        host=str(data[CONF_HOST]),
        port=int(str(data.get(CONF_PORT, 1883))),
        username=str(data[CONF_USERNAME]) if data.get(CONF_USERNAME) else None,
        password=str(data[CONF_PASSWORD]) if data.get(CONF_PASSWORD) else None,
        tls=bool(data.get(CONF_TLS, False)),
        ca_file=path(CONF_CA_FILE),
        client_cert=path(CONF_CLIENT_CERT),
        client_key=path(CONF_CLIENT_KEY),
        client_id=f"ha-prepaid-meter-{entry_id}",
    )


def resolve_tariff(hass: HomeAssistant, tariff: str) -> Tariff:
    """Load a shipped preset by id or a YAML file from the config folder (blocking)."""
    if tariff in preset_names():
        return load_preset(tariff)
    return load_tariff(Path(hass.config.path(tariff)))


def load_tariff_and_policy(
    hass: HomeAssistant, tariff_name: str, options: dict[str, Any]
) -> tuple[Tariff, PolicyConfig]:
    """Load the tariff and build the policy; blocking (the holiday library reads files).

    Public holidays come from the country Home Assistant is configured for, unless the
    options name another (or "" for none).
    """
    tariff = resolve_tariff(hass, tariff_name)
    policy = PolicyConfig.from_options(
        {"timezone": str(tariff.tz), "country": library_country(hass.config.country), **options}
    )
    return tariff, policy


async def async_setup_entry(hass: HomeAssistant, entry: PrepaidConfigEntry) -> bool:
    """Open the ledger, connect to the broker and start the community (or the household)."""
    if is_household(entry):
        return await async_setup_household_entry(hass, cast("HouseholdConfigEntry", entry))
    data = dict(entry.data)
    config = transport_config(hass, data, entry.entry_id)
    try:
        await check_connection(config)
    except InvalidAuth as err:
        raise ConfigEntryAuthFailed(
            translation_domain=DOMAIN, translation_key="invalid_auth"
        ) from err
    except CannotConnect as err:
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="cannot_connect",
            translation_placeholders={"error": str(err)},
        ) from err
    try:
        tariff, policy = await hass.async_add_executor_job(
            load_tariff_and_policy, hass, str(data[CONF_TARIFF]), dict(entry.options)
        )
    except (TariffError, PolicyError) as err:
        raise ConfigEntryError(
            translation_domain=DOMAIN,
            translation_key="invalid_tariff",
            translation_placeholders={"error": str(err)},
        ) from err
    community_id = str(data[CONF_COMMUNITY_ID])
    profile_name = str(data.get(CONF_PROFILE, DEFAULT_PROFILE))
    if profile_name not in PROFILE_NAMES:
        raise ConfigEntryError(
            translation_domain=DOMAIN,
            translation_key="invalid_profile",
            translation_placeholders={"profile": profile_name},
        )
    try:
        ledger = await hass.async_add_executor_job(open_ledger, ledger_path(hass, community_id))
    except LedgerError as err:
        raise ConfigEntryError(
            translation_domain=DOMAIN,
            translation_key="ledger_error",
            translation_placeholders={"error": str(err)},
        ) from err
    prefix = str(data.get(CONF_PREFIX, "prepaid"))
    # Tasmota's `Time` has no zone: it is read in the tariff's (the community's) zone.
    profile = make_profile(profile_name, community=community_id, prefix=prefix, tz=tariff.tz)
    runtime = PrepaidRuntime(
        hass,
        entry,
        community=Community(
            ledger,
            tariff,
            policy,
            birth_announces=not profile.announces,
            issues=profile.issues,  # one counter of what the profile and the gate refuse
            enforce_permissions=True,  # who may do what: engine/permissions.py
            safety_rules=safety_rules(entry.options),  # the options' Safety and care
        ),
        transport_config=config,
        profile=profile,
        prefix=prefix,
        community_id=community_id,
        community_name=str(data.get(CONF_COMMUNITY_NAME, community_id)),
        currency=str(data.get(CONF_CURRENCY, tariff.currency)),
    )
    entry.runtime_data = runtime
    # The hub first: meter devices name it as their parent by its registry id.
    runtime.hub_device_id = (
        dr.async_get(hass)
        .async_get_or_create(config_entry_id=entry.entry_id, **hub_device_info(runtime))
        .id
    )
    try:
        await runtime.async_start()
    except Exception:
        await runtime.async_stop()
        raise
    await async_load_texts(hass)  # the logbook's, in Home Assistant's language
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    await async_setup_dashboards(hass, entry)  # the dashboards it made earlier, if any
    # Payments last: what a crash left due is posted through the running service. Before the
    # update listener: the first start keeps a new webhook id in the entry's data.
    await async_setup_payments(hass, entry)
    entry.async_on_unload(entry.add_update_listener(_async_options_updated))
    runtime.async_check_size()
    return True


async def _async_options_updated(hass: HomeAssistant, entry: PrepaidConfigEntry) -> None:
    """Reload so the new policy applies everywhere at once."""
    await hass.config_entries.async_reload(entry.entry_id)


async def async_unload_entry(hass: HomeAssistant, entry: PrepaidConfigEntry) -> bool:
    """Stop the community: commit pending charges, disconnect, close the ledger."""
    if is_household(entry):
        return await async_unload_household_entry(hass, cast("HouseholdConfigEntry", entry))
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        await async_unload_payments(hass, entry)  # no notification while the ledger closes
        await entry.runtime_data.async_stop()
    return unloaded


async def async_remove_entry(hass: HomeAssistant, entry: PrepaidConfigEntry) -> None:
    """Ask the broker to drop the entry's persistent session (its ledger file stays)."""
    if is_household(entry):
        return  # a household's link keeps no session on the broker (clean session)
    try:
        await forget_session(transport_config(hass, dict(entry.data), entry.entry_id))
    except TransportError:
        _LOGGER.info("The broker was not reachable to drop the session of %s", entry.title)


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: PrepaidConfigEntry, device: DeviceEntry
) -> bool:
    """Allow removing a meter's device; the ledger keeps its money history."""
    if is_household(entry):
        return False  # a household's one device lives as long as its entry
    runtime = entry.runtime_data
    for domain, identifier in device.identifiers:
        if domain == DOMAIN and identifier == runtime.community_identifier:
            return False
    return True
