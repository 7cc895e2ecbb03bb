"""The config flow on real brokers: create, every error, reconfigure, reauth and the policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal
import json
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, patch

import aiomqtt
from homeassistant.config_entries import SOURCE_USER, ConfigFlowResult
from homeassistant.const import CONF_HOST, CONF_PASSWORD, CONF_PORT, CONF_USERNAME
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType, InvalidData
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prepaid_meter.config_flow import (
    SAFETY_ERROR,
    SAFETY_FORM,
    SECTION_DETAILS,
    policy_form_values,
)
from custom_components.prepaid_meter.const import (
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
    DOMAIN,
    POLICY_OPTIONS,
    PRESET_TARIFFS,
    SECTION_TLS,
)
from custom_components.prepaid_meter.coordinator import safety_rules
from custom_components.prepaid_meter.engine.broker_acl import ConnectionDetails, DynSecAdmin
from custom_components.prepaid_meter.engine.policy import PolicyConfig, PolicyError
from custom_components.prepaid_meter.engine.safety import SafetyRules
from custom_components.prepaid_meter.engine.tariff import preset_names
from custom_components.prepaid_meter.household_entry import (
    CONF_METER_ID,
    CONF_STALE_MINUTES,
    household_data,
    household_unique_id,
)
from tests.broker import Mosquitto, free_port
from tests.engine.test_broker_acl import admin_config
from tests.integration.conftest import TlsBroker, entry_for, form_input

pytestmark = pytest.mark.usefixtures("mock_setup_entry")

EUR_TARIFF = """
name: A euro tariff
currency: EUR
timezone: Europe/Berlin
cycle: {period: month, starts: "01 00:00"}
tiers:
  - {price: "0.30"}
"""


async def start(hass: HomeAssistant, kind: str = "community") -> str:
    """Open the first step (a menu), choose `kind` and return the flow id of its form."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU
    assert result["step_id"] == "user"
    assert result["menu_options"] == ["community", "household"]
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": kind}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == kind
    assert result["errors"] == {}
    return str(result["flow_id"])


async def submit(hass: HomeAssistant, flow_id: str, user_input: dict[str, Any]) -> Any:
    """Send one form."""
    return await hass.config_entries.flow.async_configure(flow_id, user_input)


def test_presets_are_the_shipped_files() -> None:
    """The tariff selector lists exactly the preset files that ship."""
    assert sorted(PRESET_TARIFFS) == sorted(preset_names())


async def test_user_creates_entry_after_connecting(
    hass: HomeAssistant, mosquitto: Mosquitto, community_id: str, mock_setup_entry: AsyncMock
) -> None:
    """A reachable broker and a valid community make one entry, stored flat and trimmed."""
    flow_id = await start(hass)
    result = await submit(
        hass,
        flow_id,
        form_input(
            f" {mosquitto.host} ",
            mosquitto.port,
            community_id,
            **{CONF_USERNAME: "  ", CONF_PASSWORD: "", CONF_CURRENCY: "cny"},
        ),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Lotus Garden"
    assert result["data"] == {
        CONF_HOST: mosquitto.host,
        CONF_PORT: mosquitto.port,
        CONF_PREFIX: "prepaid",
        CONF_COMMUNITY_ID: community_id,
        CONF_COMMUNITY_NAME: "Lotus Garden",
        CONF_CURRENCY: "CNY",
        CONF_TARIFF: "beijing_monthly",
        CONF_PROFILE: "native",
        CONF_TLS: False,
    }
    assert isinstance(result["data"][CONF_PORT], int)
    assert result["result"].unique_id == f"{mosquitto.host}:{mosquitto.port}/{community_id}"
    assert len(mock_setup_entry.mock_calls) == 1


async def test_user_picks_the_meter_type(
    hass: HomeAssistant, mosquitto: Mosquitto, community_id: str
) -> None:
    """The meter type is stored; a type the selector does not offer is refused by the form."""
    flow_id = await start(hass)
    with pytest.raises(InvalidData):
        await submit(
            hass,
            flow_id,
            form_input(mosquitto.host, mosquitto.port, community_id, **{CONF_PROFILE: "zigbee"}),
        )
    result = await submit(
        hass,
        flow_id,
        form_input(mosquitto.host, mosquitto.port, community_id, **{CONF_PROFILE: "tasmota"}),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_PROFILE] == "tasmota"


async def test_same_device_type_twice_on_one_broker_login_is_refused(
    hass: HomeAssistant, mosquitto: Mosquitto, mosquitto_factory: Any, community_id: str
) -> None:
    """Two Tasmota communities on one broker login would both hear every device: refused.

    prepaid/v1 communities (under their own topics) and another login are fine.
    """
    entry_for(mosquitto.host, mosquitto.port, "tasmota-a", **{CONF_PROFILE: "tasmota"}).add_to_hass(
        hass
    )
    entry_for(mosquitto.host, mosquitto.port, "native-a").add_to_hass(hass)
    flow_id = await start(hass)
    here = (mosquitto.host, mosquitto.port, community_id)
    result = await submit(hass, flow_id, form_input(*here, **{CONF_PROFILE: "tasmota"}))
    assert result["errors"] == {CONF_PROFILE: "devices_in_use"}
    result = await submit(hass, flow_id, form_input(*here, **{CONF_PROFILE: "shelly"}))
    assert result["type"] is FlowResultType.CREATE_ENTRY

    # Moving a Tasmota community onto that broker login is refused too.
    other = mosquitto_factory(persistence=False)
    moved = entry_for(other.host, other.port, "tasmota-b", **{CONF_PROFILE: "tasmota"})
    moved.add_to_hass(hass)
    result = await moved.start_reconfigure_flow(hass)
    target = {
        CONF_HOST: mosquitto.host,
        CONF_PORT: mosquitto.port,
        CONF_COMMUNITY_ID: "tasmota-b",
        CONF_TARIFF: "beijing_monthly",
        SECTION_TLS: {CONF_TLS: False},
    }
    result = await submit(hass, result["flow_id"], target)
    assert result["errors"] == {"base": "devices_in_use"}
    assert moved.data[CONF_HOST] == other.host


async def test_user_with_a_tariff_file(
    hass: HomeAssistant, mosquitto: Mosquitto, community_id: str, config_dir: Path
) -> None:
    """A tariff typed as a path is loaded from the config folder before the entry is saved."""
    (config_dir / "tariffs").mkdir()
    (config_dir / "tariffs" / "eur.yaml").write_text(EUR_TARIFF)
    flow_id = await start(hass)
    result = await submit(
        hass,
        flow_id,
        form_input(
            mosquitto.host,
            mosquitto.port,
            community_id,
            **{CONF_TARIFF: "tariffs/eur.yaml", CONF_CURRENCY: "EUR"},
        ),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_TARIFF] == "tariffs/eur.yaml"


async def test_user_cannot_connect_then_recovers(
    hass: HomeAssistant, mosquitto: Mosquitto, community_id: str
) -> None:
    """A closed port shows cannot_connect with the reason; the right port then works."""
    flow_id = await start(hass)
    result = await submit(hass, flow_id, form_input(mosquitto.host, free_port(), community_id))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}
    assert "Cannot connect to" in result["description_placeholders"]["error"]
    result = await submit(hass, flow_id, form_input(mosquitto.host, mosquitto.port, community_id))
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_invalid_auth_then_recovers(
    hass: HomeAssistant, mosquitto_factory: Any, community_id: str
) -> None:
    """A broker with passwords refuses a wrong one (invalid_auth) and accepts the right one."""
    broker = mosquitto_factory(persistence=False, passwords={"user": "pw"})
    flow_id = await start(hass)
    for credentials in ({}, {CONF_USERNAME: "user", CONF_PASSWORD: "wrong"}):
        result = await submit(
            hass, flow_id, form_input(broker.host, broker.port, community_id, **credentials)
        )
        assert result["type"] is FlowResultType.FORM
        assert result["errors"] == {"base": "invalid_auth"}
    result = await submit(
        hass,
        flow_id,
        form_input(
            broker.host,
            broker.port,
            community_id,
            **{CONF_USERNAME: "user", CONF_PASSWORD: " pw"[1:]},
        ),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_USERNAME] == "user"
    assert result["data"][CONF_PASSWORD] == "pw"


async def test_user_tls_with_client_certificate(
    hass: HomeAssistant, tls_broker: TlsBroker, community_id: str
) -> None:
    """TLS files are found relative to the config folder; the broker needs all three."""
    broker, files = tls_broker.broker, tls_broker.config_files
    flow_id = await start(hass)
    # Without its CA file the broker's certificate is not trusted. (Leaving the client
    # certificate out is refused too, but only after the 10 s connect timeout.)
    result = await submit(
        hass,
        flow_id,
        form_input(broker.host, broker.port, community_id, tls_settings={CONF_TLS: True}),
    )
    assert result["errors"] == {"base": "cannot_connect"}
    assert "CERTIFICATE_VERIFY_FAILED" in result["description_placeholders"]["error"]
    result = await submit(
        hass,
        flow_id,
        form_input(broker.host, broker.port, community_id, tls_settings={CONF_TLS: True, **files}),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_TLS] is True
    assert {key: result["data"][key] for key in files} == files


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({CONF_COMMUNITY_ID: "Lotus Garden"}, {CONF_COMMUNITY_ID: "invalid_community_id"}),
        ({CONF_COMMUNITY_ID: "x" * 33}, {CONF_COMMUNITY_ID: "invalid_community_id"}),
        ({CONF_PREFIX: "a/+/b"}, {CONF_PREFIX: "invalid_prefix"}),
        ({CONF_PREFIX: "prepaid/"}, {CONF_PREFIX: "invalid_prefix"}),
        ({CONF_PREFIX: "a//b"}, {CONF_PREFIX: "invalid_prefix"}),
        ({CONF_PREFIX: " "}, {CONF_PREFIX: "invalid_prefix"}),
        ({CONF_PREFIX: "p" * 101}, {CONF_PREFIX: "invalid_prefix"}),
        ({CONF_CURRENCY: "yuan"}, {CONF_CURRENCY: "invalid_currency"}),
        (
            {CONF_COMMUNITY_ID: "Bad", CONF_CURRENCY: "RMB1"},
            {CONF_COMMUNITY_ID: "invalid_community_id", CONF_CURRENCY: "invalid_currency"},
        ),
        (
            {SECTION_TLS: {CONF_TLS: False, CONF_CA_FILE: "ca.pem"}},
            {"base": "tls_files_without_tls"},
        ),
        (
            {SECTION_TLS: {CONF_TLS: True, CONF_CLIENT_KEY: "client.key"}},
            {"base": "client_key_without_cert"},
        ),
    ],
)
async def test_user_field_errors(
    hass: HomeAssistant, community_id: str, changes: dict[str, Any], errors: dict[str, str]
) -> None:
    """Fields that cannot work are named before anything is read or connected."""
    flow_id = await start(hass)
    result = await submit(hass, flow_id, form_input("127.0.0.1", 1883, community_id, **changes))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors


@pytest.mark.parametrize(
    ("files", "changes", "errors", "placeholder"),
    [
        ({}, {CONF_TARIFF: "tariffs/missing.yaml"}, {CONF_TARIFF: "invalid_tariff"}, "error"),
        (
            {"bad.yaml": "name: [unclosed"},
            {CONF_TARIFF: "bad.yaml"},
            {CONF_TARIFF: "invalid_tariff"},
            "error",
        ),
        (
            {"eur.yaml": EUR_TARIFF},
            {CONF_TARIFF: "eur.yaml"},
            {CONF_TARIFF: "currency_mismatch"},
            "tariff_currency",
        ),
        (
            {},
            {SECTION_TLS: {CONF_TLS: True, CONF_CA_FILE: "certs/ca.pem"}},
            {"base": "file_not_found"},
            "path",
        ),
        (
            {"client.pem": "not a certificate"},
            {SECTION_TLS: {CONF_TLS: True, CONF_CLIENT_CERT: "client.pem"}},
            {"base": "cannot_connect"},
            "error",
        ),
    ],
)
async def test_user_file_errors(
    hass: HomeAssistant,
    config_dir: Path,
    community_id: str,
    files: dict[str, str],
    changes: dict[str, Any],
    errors: dict[str, str],
    placeholder: str,
) -> None:
    """Missing or unusable tariff and TLS files are reported with what was wrong."""
    for name, text in files.items():
        (config_dir / name).write_text(text)
    flow_id = await start(hass)
    result = await submit(hass, flow_id, form_input("127.0.0.1", 1883, community_id, **changes))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors
    assert result["description_placeholders"][placeholder]


async def test_user_unexpected_error(
    hass: HomeAssistant, mosquitto: Mosquitto, community_id: str
) -> None:
    """An error nobody foresaw is logged and shown as unknown; the form stays usable."""
    flow_id = await start(hass)
    with patch(
        "custom_components.prepaid_meter.config_flow.check_connection",
        side_effect=RuntimeError("boom"),
    ):
        result = await submit(
            hass, flow_id, form_input(mosquitto.host, mosquitto.port, community_id)
        )
    assert result["errors"] == {"base": "unknown"}
    result = await submit(hass, flow_id, form_input(mosquitto.host, mosquitto.port, community_id))
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_already_configured(hass: HomeAssistant, community_id: str) -> None:
    """The same community on the same broker is set up once."""
    entry_for("127.0.0.1", 1883, community_id).add_to_hass(hass)
    flow_id = await start(hass)
    result = await submit(hass, flow_id, form_input("127.0.0.1", 1883, community_id))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_user_community_on_another_broker(hass: HomeAssistant, community_id: str) -> None:
    """A community id set up on another broker is refused: both would write one ledger."""
    entry_for("10.0.0.1", 1883, community_id).add_to_hass(hass)
    flow_id = await start(hass)
    result = await submit(hass, flow_id, form_input("127.0.0.1", 1883, community_id))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_COMMUNITY_ID: "community_in_use"}


# ------------------------------------------------------------------ reconfigure


async def test_reconfigure_moves_broker_and_changes_tariff(
    hass: HomeAssistant, mosquitto: Mosquitto, mosquitto_factory: Any, community_id: str
) -> None:
    """Moving to another broker with credentials and TLS off updates data and unique id."""
    entry = entry_for(mosquitto.host, mosquitto.port, community_id, username="old", password="x")
    entry.add_to_hass(hass)
    broker = mosquitto_factory(persistence=False, passwords={"user": "pw"})
    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    assert result["description_placeholders"]["community"] == "Lotus Garden"
    new = {
        CONF_HOST: broker.host,
        CONF_PORT: broker.port,
        CONF_USERNAME: "user",
        CONF_PASSWORD: "wrong",
        CONF_COMMUNITY_ID: community_id,
        CONF_TARIFF: "shanghai_yearly_tou",
        SECTION_TLS: {CONF_TLS: False},
    }
    result = await submit(hass, result["flow_id"], new)
    assert result["errors"] == {"base": "invalid_auth"}
    result = await submit(hass, result["flow_id"], {**new, CONF_PASSWORD: "pw"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.unique_id == f"{broker.host}:{broker.port}/{community_id}"
    assert entry.data == {
        CONF_HOST: broker.host,
        CONF_PORT: broker.port,
        CONF_USERNAME: "user",
        CONF_PASSWORD: "pw",
        CONF_PREFIX: "prepaid",
        CONF_COMMUNITY_ID: community_id,
        CONF_COMMUNITY_NAME: "Lotus Garden",
        CONF_CURRENCY: "CNY",
        CONF_TARIFF: "shanghai_yearly_tou",
        CONF_TLS: False,
    }


async def test_reconfigure_clears_credentials_and_tls_files(
    hass: HomeAssistant, mosquitto: Mosquitto, community_id: str, config_dir: Path
) -> None:
    """What the form leaves empty is no longer stored (credentials, TLS files)."""
    (config_dir / "ca.pem").write_text("")
    entry = entry_for(
        mosquitto.host,
        mosquitto.port,
        community_id,
        username="user",
        password="pw",
        **{CONF_TLS: True, CONF_CA_FILE: "ca.pem"},
    )
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    result = await submit(
        hass,
        result["flow_id"],
        {
            CONF_HOST: mosquitto.host,
            CONF_PORT: mosquitto.port,
            CONF_COMMUNITY_ID: community_id,
            CONF_TARIFF: "beijing_monthly",
            SECTION_TLS: {CONF_TLS: False},
        },
    )
    assert result["reason"] == "reconfigure_successful"
    assert entry.unique_id == f"{mosquitto.host}:{mosquitto.port}/{community_id}"
    assert CONF_USERNAME not in entry.data
    assert CONF_PASSWORD not in entry.data
    assert CONF_CA_FILE not in entry.data
    assert entry.data[CONF_TLS] is False


async def test_reconfigure_errors(
    hass: HomeAssistant, mosquitto: Mosquitto, community_id: str
) -> None:
    """A broker that is down or a bad tariff keeps the form open with the error."""
    entry = entry_for(mosquitto.host, mosquitto.port, community_id)
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    base = {
        CONF_HOST: mosquitto.host,
        CONF_PORT: mosquitto.port,
        CONF_COMMUNITY_ID: community_id,
        CONF_TARIFF: "beijing_monthly",
        SECTION_TLS: {CONF_TLS: False},
    }
    result = await submit(hass, result["flow_id"], {**base, CONF_PORT: free_port()})
    assert result["errors"] == {"base": "cannot_connect"}
    result = await submit(hass, result["flow_id"], {**base, CONF_TARIFF: "nowhere.yaml"})
    assert result["errors"] == {CONF_TARIFF: "invalid_tariff"}
    result = await submit(
        hass, result["flow_id"], {**base, SECTION_TLS: {CONF_TLS: False, CONF_CA_FILE: "a"}}
    )
    assert result["errors"] == {"base": "tls_files_without_tls"}
    assert entry.data[CONF_TARIFF] == "beijing_monthly"


async def test_reconfigure_refuses_another_community(
    hass: HomeAssistant, community_id: str
) -> None:
    """The community id is the entry's identity: changing it aborts."""
    entry = entry_for("127.0.0.1", 1883, community_id)
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    result = await submit(
        hass,
        result["flow_id"],
        {
            CONF_HOST: "127.0.0.1",
            CONF_PORT: 1883,
            CONF_COMMUNITY_ID: "another",
            CONF_TARIFF: "beijing_monthly",
            SECTION_TLS: {CONF_TLS: False},
        },
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unique_id_mismatch"
    assert entry.unique_id == f"127.0.0.1:1883/{community_id}"


async def test_reconfigure_onto_an_existing_entry(hass: HomeAssistant, community_id: str) -> None:
    """Moving onto a broker where this community already has an entry aborts."""
    entry = entry_for("127.0.0.1", 1883, community_id)
    entry.add_to_hass(hass)
    entry_for("127.0.0.1", 1884, community_id).add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    result = await submit(
        hass,
        result["flow_id"],
        {
            CONF_HOST: "127.0.0.1",
            CONF_PORT: 1884,
            CONF_COMMUNITY_ID: community_id,
            CONF_TARIFF: "beijing_monthly",
            SECTION_TLS: {CONF_TLS: False},
        },
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data[CONF_PORT] == 1883


# ------------------------------------------------------------------ reauth


async def test_reauth(hass: HomeAssistant, mosquitto_factory: Any, community_id: str) -> None:
    """New credentials are tried on the broker; only accepted ones are stored."""
    broker = mosquitto_factory(persistence=False, passwords={"user": "pw"})
    entry = entry_for(broker.host, broker.port, community_id, username="user", password="old")
    entry.add_to_hass(hass)
    result = await entry.start_reauth_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reauth_confirm"
    assert result["description_placeholders"]["broker"] == f"{broker.host}:{broker.port}"
    result = await submit(
        hass, result["flow_id"], {CONF_USERNAME: "user", CONF_PASSWORD: "still wrong"}
    )
    assert result["errors"] == {"base": "invalid_auth"}
    result = await submit(hass, result["flow_id"], {CONF_USERNAME: "user", CONF_PASSWORD: "pw"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert entry.data[CONF_PASSWORD] == "pw"
    assert entry.data[CONF_TARIFF] == "beijing_monthly"


async def test_reauth_errors(
    hass: HomeAssistant, mosquitto_factory: Any, community_id: str
) -> None:
    """A broker that went away, or an unforeseen error, keeps the form open."""
    broker = mosquitto_factory(persistence=False, passwords={"user": "pw"})
    entry = entry_for(broker.host, broker.port, community_id, username="user", password="old")
    entry.add_to_hass(hass)
    result = await entry.start_reauth_flow(hass)
    flow_id = result["flow_id"]
    broker.stop()
    result = await submit(hass, flow_id, {CONF_USERNAME: "user", CONF_PASSWORD: "pw"})
    assert result["errors"] == {"base": "cannot_connect"}
    assert result["description_placeholders"]["error"]
    with patch(
        "custom_components.prepaid_meter.config_flow.check_connection",
        side_effect=RuntimeError("boom"),
    ):
        result = await submit(hass, flow_id, {CONF_USERNAME: "user", CONF_PASSWORD: "pw"})
    assert result["errors"] == {"base": "unknown"}
    assert entry.data[CONF_PASSWORD] == "old"


# ------------------------------------------------------------------ options


def policy_input(**changes: Any) -> dict[str, Any]:
    """Return what the policy form sends."""
    data: dict[str, Any] = {
        CONF_WARN_LEVEL_1: 30,
        CONF_WARN_LEVEL_2: 5.5,
        CONF_EMERGENCY_CREDIT: 10,
        CONF_FRIENDLY_START: "18:00:00",
        CONF_FRIENDLY_END: "09:30:00",
        CONF_FRIENDLY_WEEKENDS: False,
        CONF_HOLIDAYS: ["2025-10-01", "2025-10-02"],
        CONF_RECLOSE_THRESHOLD: -2.5,
        CONF_AUTO_RESTORE: True,
        CONF_WORKDAYS: ["2026-10-03"],
    }
    data.update(changes)
    return data


async def open_policy(hass: HomeAssistant, entry: MockConfigEntry) -> ConfigFlowResult:
    """Open the options and choose the prepaid rules from the menu."""
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == ["policy", "residents", "payments", "safety"]
    return await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "policy"}
    )


async def test_options_store_the_policy_exactly(hass: HomeAssistant, community_id: str) -> None:
    """The policy is stored as exact decimal strings that PolicyConfig reads back."""
    entry = entry_for("127.0.0.1", 1883, community_id)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, options={"unrelated": "kept"})
    result = await open_policy(hass, entry)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "policy"
    result = await hass.config_entries.options.async_configure(result["flow_id"], policy_input())
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {
        "unrelated": "kept",
        CONF_WARN_LEVEL_1: "30",
        CONF_WARN_LEVEL_2: "5.5",
        CONF_EMERGENCY_CREDIT: "10",
        CONF_FRIENDLY_START: "18:00:00",
        CONF_FRIENDLY_END: "09:30:00",
        CONF_FRIENDLY_WEEKENDS: False,
        CONF_HOLIDAYS: ["2025-10-01", "2025-10-02"],
        CONF_RECLOSE_THRESHOLD: "-2.5",
        CONF_AUTO_RESTORE: True,
        CONF_WORKDAYS: ["2026-10-03"],
    }
    assert "timezone" not in entry.options
    policy = PolicyConfig.from_options(entry.options)
    assert policy.warn_level_2 == Decimal("5.5")
    assert policy.reclose_threshold == Decimal("-2.5")
    assert policy.friendly_end == time(9, 30)
    assert policy.holidays == {date(2025, 10, 1), date(2025, 10, 2)}
    assert policy.workdays == {date(2026, 10, 3)}


async def test_options_measurement_interval_is_kept_or_left_to_the_default(
    hass: HomeAssistant, community_id: str
) -> None:
    """The measurement interval is stored in whole seconds; empty means the default by size."""
    entry = entry_for("127.0.0.1", 1883, community_id)
    entry.add_to_hass(hass)
    result = await open_policy(hass, entry)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], policy_input(**{CONF_MEASUREMENT_INTERVAL: 120.0})
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options[CONF_MEASUREMENT_INTERVAL] == 120
    assert policy_form_values(entry.options)[CONF_MEASUREMENT_INTERVAL] == 120
    result = await open_policy(hass, entry)
    result = await hass.config_entries.options.async_configure(result["flow_id"], policy_input())
    assert CONF_MEASUREMENT_INTERVAL not in entry.options


async def test_options_meter_entities_is_kept_or_left_to_the_default(
    hass: HomeAssistant, community_id: str
) -> None:
    """The entities of each meter: "essential" is stored; empty means the default by size."""
    entry = entry_for("127.0.0.1", 1883, community_id)
    entry.add_to_hass(hass)
    result = await open_policy(hass, entry)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], policy_input(**{CONF_METER_ENTITIES: "essential"})
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options[CONF_METER_ENTITIES] == "essential"
    assert policy_form_values(entry.options)[CONF_METER_ENTITIES] == "essential"
    result = await open_policy(hass, entry)
    with pytest.raises(InvalidData):
        await hass.config_entries.options.async_configure(
            result["flow_id"], policy_input(**{CONF_METER_ENTITIES: "some"})
        )
    result = await open_policy(hass, entry)
    result = await hass.config_entries.options.async_configure(result["flow_id"], policy_input())
    assert CONF_METER_ENTITIES not in entry.options


async def test_options_form_shows_stored_policy(hass: HomeAssistant, community_id: str) -> None:
    """The form suggests what is stored, defaults where nothing is, numbers as numbers."""
    assert policy_form_values({}) == {
        CONF_WARN_LEVEL_1: 20,
        CONF_WARN_LEVEL_2: 5,
        CONF_EMERGENCY_CREDIT: 10,
        CONF_FRIENDLY_START: "18:00:00",
        CONF_FRIENDLY_END: "10:00:00",
        CONF_FRIENDLY_WEEKENDS: True,
        CONF_HOLIDAYS: [],
        CONF_RECLOSE_THRESHOLD: 0,
        CONF_AUTO_RESTORE: False,
        CONF_WORKDAYS: [],
    }
    values = policy_form_values({CONF_WARN_LEVEL_2: "5.50", "other": 1})
    assert values[CONF_WARN_LEVEL_2] == 5.5
    assert set(values) == set(POLICY_OPTIONS)
    entry = entry_for("127.0.0.1", 1883, community_id)
    entry.add_to_hass(hass)
    result = await open_policy(hass, entry)
    assert result["data_schema"] is not None
    schema = result["data_schema"].schema
    suggested = {
        str(key): key.description["suggested_value"]
        for key in schema
        if key.description and "suggested_value" in key.description
    }
    assert suggested == policy_form_values({})


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({CONF_WARN_LEVEL_2: 40}, {CONF_WARN_LEVEL_2: "warn_levels_order"}),
        ({CONF_RECLOSE_THRESHOLD: -11}, {CONF_RECLOSE_THRESHOLD: "reclose_below_cut"}),
        ({CONF_HOLIDAYS: ["2025-10-01", "1 October"]}, {CONF_HOLIDAYS: "invalid_date"}),
    ],
)
async def test_options_errors(
    hass: HomeAssistant, community_id: str, changes: dict[str, Any], errors: dict[str, str]
) -> None:
    """Rules that contradict each other are shown under the field; nothing is stored."""
    entry = entry_for("127.0.0.1", 1883, community_id)
    entry.add_to_hass(hass)
    result = await open_policy(hass, entry)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], policy_input(**changes)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors
    assert entry.options == {}
    result = await hass.config_entries.options.async_configure(result["flow_id"], policy_input())
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_options_error_the_form_does_not_know(hass: HomeAssistant, community_id: str) -> None:
    """A policy error without a field, or with a key the form lacks, is a generic one."""
    entry = entry_for("127.0.0.1", 1883, community_id)
    entry.add_to_hass(hass)
    result = await open_policy(hass, entry)
    error = PolicyError("new rule broken", translation_key="some_new_rule", field="timezone")
    with patch.object(PolicyConfig, "from_options", side_effect=error):
        result = await hass.config_entries.options.async_configure(
            result["flow_id"], policy_input()
        )
    assert result["errors"] == {"base": "invalid_option"}


# ------------------------------------------------------------------ safety and care


async def open_safety(hass: HomeAssistant, entry: MockConfigEntry) -> ConfigFlowResult:
    """Open the options and choose safety and care from the menu."""
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.MENU
    return await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "safety"}
    )


def _shown(result: ConfigFlowResult) -> dict[str, Any]:
    """Return the values a form shows (its suggested values)."""
    schema = result["data_schema"]
    assert schema is not None
    return {
        str(key): key.description["suggested_value"]
        for key in schema.schema
        if key.description and "suggested_value" in key.description
    }


def _placeholder(result: ConfigFlowResult, name: str) -> str:
    placeholders = result["description_placeholders"]
    assert placeholders is not None
    return str(placeholders[name])


def safety_input(**changes: Any) -> dict[str, Any]:
    """Return the safety form as sent with the defaults (numbers as the form sends them)."""
    defaults = SafetyRules()
    data: dict[str, Any] = {name: float(getattr(defaults, name)) for name in SAFETY_FORM}
    data.update(changes)
    return data


async def test_options_safety_stores_what_differs_from_the_defaults(
    hass: HomeAssistant, community_id: str
) -> None:
    """The form shows the rules in force; only those changed are stored, as the watch reads
    them; the defaults again store nothing."""
    entry = entry_for("127.0.0.1", 1883, community_id)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, options={"unrelated": "kept"})
    result = await open_safety(hass, entry)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "safety"
    assert _shown(result) == {name: getattr(SafetyRules(), name) for name in SAFETY_FORM}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], safety_input(care_hours=8.0, overload_s=60.0)
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {"unrelated": "kept", "safety": {"care_hours": 8.0, "overload_s": 60}}
    rules = safety_rules(entry.options)
    assert rules is not None
    assert (rules.care_hours, rules.overload_s, rules.cut_s) == (8.0, 60, SafetyRules().cut_s)
    result = await open_safety(hass, entry)
    assert _shown(result)["care_hours"] == 8.0
    result = await hass.config_entries.options.async_configure(result["flow_id"], safety_input())
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {"unrelated": "kept"}


async def test_options_safety_rules_that_cannot_work_are_refused(
    hass: HomeAssistant, community_id: str
) -> None:
    """A cut level below the overload level: one error naming it; nothing is stored."""
    entry = entry_for("127.0.0.1", 1883, community_id)
    entry.add_to_hass(hass)
    result = await open_safety(hass, entry)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], safety_input(overload_factor=1.5, cut_factor=1.2)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": SAFETY_ERROR}
    assert "cut_factor" in _placeholder(result, "error")
    assert entry.options == {}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], safety_input(overload_s=30.5)
    )
    assert result["errors"] == {"base": SAFETY_ERROR}  # a whole number of seconds
    assert "whole number" in _placeholder(result, "error")
    result = await hass.config_entries.options.async_configure(result["flow_id"], safety_input())
    assert result["type"] is FlowResultType.CREATE_ENTRY


def test_stored_safety_rules_that_cannot_be_take_the_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Options edited by hand (or a later version's): logged, and the defaults apply."""
    assert safety_rules({}) is None
    assert safety_rules({"safety": {"no_such_rule": 1}}) is None
    assert safety_rules({"safety": "overload"}) is None
    assert "default rules" in caplog.text
    rules = safety_rules({"safety": {"surge_fraction": 0.8}})
    assert rules is not None and rules.surge_fraction == 0.8


# ------------------------------------------------------------------ my household

HH_COMMUNITY = "oak"
HH_METER = "000012345678"
HH_NEIGHBOUR = "000087654321"


@dataclass(frozen=True)
class Households:
    """A broker with dynamic security and two households' users on it."""

    broker: Mosquitto
    mine: ConnectionDetails
    neighbour: ConnectionDetails


@pytest.fixture
async def households(mosquitto_factory: Any) -> Households:
    """Start a broker with dynamic security; provision two households of one community."""
    broker = mosquitto_factory(dynamic_security=True, persistence=False)
    async with DynSecAdmin(admin_config(broker)) as admin:
        return Households(
            broker,
            await admin.ensure_household(HH_COMMUNITY, HH_METER),
            await admin.ensure_household(HH_COMMUNITY, HH_NEIGHBOUR),
        )


def by_hand(details: ConnectionDetails, **changes: Any) -> dict[str, Any]:
    """Return the household form filled in by hand (the details section)."""
    fields: dict[str, Any] = {
        CONF_HOST: details.host,
        CONF_PORT: details.port,
        CONF_TLS: details.tls,
        CONF_USERNAME: details.username,
        CONF_PASSWORD: details.password,
        CONF_PREFIX: details.prefix,
        CONF_COMMUNITY_ID: details.community,
        CONF_METER_ID: details.meter,
    }
    fields.update(changes)
    return {SECTION_DETAILS: fields}


def household_entry_for(details: ConnectionDetails, **data: Any) -> MockConfigEntry:
    """Return a household entry as the flow makes it."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"{details.community} {details.meter}",
        unique_id=household_unique_id(details.community, str(details.meter)),
        data={**household_data(details), **data},
    )


async def publish_account(households: Households, currency: str = "CNY") -> None:
    """Publish the household's retained account as its community (the platform user) does."""
    async with DynSecAdmin(admin_config(households.broker)) as admin:
        platform = await admin.ensure_platform(HH_COMMUNITY)
    async with aiomqtt.Client(
        platform.host,
        platform.port,
        username=platform.username,
        password=platform.password,
        identifier="test-platform",
    ) as client:
        body = {
            "v": 1,
            "balance": "12.34",
            "currency": currency,
            "updated": int(dt_util.utcnow().timestamp()),
        }
        await client.publish(
            f"prepaid/{HH_COMMUNITY}/{HH_METER}/account",
            json.dumps(body).encode(),
            qos=1,
            retain=True,
        )


async def test_household_by_code(hass: HomeAssistant, households: Households) -> None:
    """The operator's one-line code (pasted wrapped over lines) makes the household's entry."""
    await publish_account(households, currency="EUR")
    flow_id = await start(hass, "household")
    code = households.mine.code()
    pasted = f"  {code[:30]}\n{code[30:]}  "
    result = await submit(hass, flow_id, {"code": pasted})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result.get("errors")
    assert result["title"] == f"{HH_COMMUNITY} {HH_METER}"
    assert result["data"] == household_data(households.mine, "EUR")
    assert result["data"]["kind"] == "household"
    assert result["result"].unique_id == household_unique_id(HH_COMMUNITY, HH_METER)


async def test_household_by_hand(hass: HomeAssistant, households: Households) -> None:
    """The same details typed by hand; without an account yet the currency is not stored."""
    flow_id = await start(hass, "household")
    result = await submit(hass, flow_id, by_hand(households.mine))
    assert result["type"] is FlowResultType.CREATE_ENTRY, result.get("errors")
    assert result["data"] == household_data(households.mine)
    assert CONF_CURRENCY not in result["data"]


async def test_household_errors(hass: HomeAssistant, households: Households) -> None:
    """Each mistake is one clear error and saves nothing; then the right details work."""
    mine, neighbour = households.mine, households.neighbour
    flow_id = await start(hass, "household")
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({}, {"base": "code_or_details"}),
        ({"code": "pm1:!!!"}, {"code": "invalid_code"}),
        ({"code": "hello"}, {"code": "invalid_code"}),
        (by_hand(mine, **{CONF_PASSWORD: ""}), {"base": "code_or_details"}),
        (by_hand(mine, **{CONF_COMMUNITY_ID: "Oak Court"}), {"base": "invalid_community_id"}),
        (by_hand(mine, **{CONF_METER_ID: "0000/#"}), {"base": "invalid_meter_id"}),
        (by_hand(mine, **{CONF_PREFIX: "pre/+/paid"}), {"base": "invalid_prefix"}),
        (by_hand(mine, **{CONF_PASSWORD: "wrong"}), {"base": "invalid_auth"}),
        # The neighbour's login asking for my meter: the broker refuses the subscription.
        (
            by_hand(
                mine,
                **{CONF_USERNAME: neighbour.username, CONF_PASSWORD: neighbour.password},
            ),
            {"base": "access_refused"},
        ),
        (by_hand(mine, **{CONF_PORT: free_port()}), {"base": "cannot_connect"}),
    ]
    for user_input, errors in cases:
        result = await submit(hass, flow_id, user_input)
        assert result["type"] is FlowResultType.FORM, user_input
        assert result["errors"] == errors, user_input
    assert "Cannot connect" in result["description_placeholders"]["error"]
    assert not hass.config_entries.async_entries(DOMAIN)
    with patch(
        "custom_components.prepaid_meter.config_flow.check_household",
        side_effect=RuntimeError("boom"),
    ):
        result = await submit(hass, flow_id, {"code": mine.code()})
    assert result["errors"] == {"base": "unknown"}
    result = await submit(hass, flow_id, {"code": mine.code()})
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_household_already_configured(hass: HomeAssistant, households: Households) -> None:
    """One entry per community and meter."""
    household_entry_for(households.mine).add_to_hass(hass)
    flow_id = await start(hass, "household")
    result = await submit(hass, flow_id, {"code": households.mine.code()})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "household_configured"


async def test_household_does_not_hold_its_community_id(
    hass: HomeAssistant, mosquitto: Mosquitto, households: Households
) -> None:
    """A household entry of community oak does not keep the community oak from being added."""
    household_entry_for(households.mine).add_to_hass(hass)
    flow_id = await start(hass)
    result = await submit(hass, flow_id, form_input(mosquitto.host, mosquitto.port, HH_COMMUNITY))
    assert result["type"] is FlowResultType.CREATE_ENTRY, result.get("errors")


async def test_household_reauth(hass: HomeAssistant, households: Households) -> None:
    """A new password or a new code for this household; another household's code is refused."""
    mine = households.mine
    entry = household_entry_for(mine, **{CONF_PASSWORD: "revoked"})
    entry.add_to_hass(hass)
    result = await entry.start_reauth_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "household_reauth"
    assert result["description_placeholders"]["broker"] == f"{mine.host}:{mine.port}"
    flow_id = result["flow_id"]
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({}, {"base": "code_or_password"}),
        ({"code": "pm1:x"}, {"code": "invalid_code"}),
        ({"code": households.neighbour.code()}, {"code": "wrong_household"}),
        ({CONF_PASSWORD: "still wrong"}, {"base": "invalid_auth"}),
    ]
    for user_input, errors in cases:
        result = await submit(hass, flow_id, user_input)
        assert result["errors"] == errors, user_input
    assert entry.data[CONF_PASSWORD] == "revoked"
    result = await submit(hass, flow_id, {CONF_PASSWORD: mine.password})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert entry.data[CONF_PASSWORD] == mine.password

    # Rotated by the operator: the new code.
    async with DynSecAdmin(admin_config(households.broker)) as admin:
        rotated = await admin.rotate_household(HH_COMMUNITY, HH_METER)
    result = await entry.start_reauth_flow(hass)
    result = await submit(hass, result["flow_id"], {"code": rotated.code()})
    assert result["reason"] == "reauth_successful"
    assert entry.data == household_data(rotated)


async def test_household_reconfigure(hass: HomeAssistant, households: Households) -> None:
    """The form shows the stored details; another household is refused; a new code is saved."""
    mine = households.mine
    entry = household_entry_for(mine)
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "household_reconfigure"
    assert result["description_placeholders"]["household"] == entry.title
    flow_id = result["flow_id"]
    result = await submit(hass, flow_id, by_hand(mine, **{CONF_PASSWORD: "nope"}))
    assert result["errors"] == {"base": "invalid_auth"}
    result = await submit(hass, flow_id, {"code": households.neighbour.code()})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "household_mismatch"
    assert entry.data == household_data(mine)

    async with DynSecAdmin(admin_config(households.broker)) as admin:
        rotated = await admin.rotate_household(HH_COMMUNITY, HH_METER)
    result = await entry.start_reconfigure_flow(hass)
    result = await submit(hass, result["flow_id"], {"code": rotated.code()})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data == household_data(rotated)


async def test_household_options(hass: HomeAssistant, households: Households) -> None:
    """A household's option is how long without news before its entities go unavailable."""
    entry = household_entry_for(households.mine)
    entry.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "household"
    with pytest.raises(InvalidData):
        await hass.config_entries.options.async_configure(
            result["flow_id"], {CONF_STALE_MINUTES: 0}
        )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_STALE_MINUTES: 45}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {CONF_STALE_MINUTES: 45}
