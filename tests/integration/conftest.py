"""Fixtures for the setup surface: form input for a broker, a stand-in for entry setup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, patch
import uuid

from homeassistant.const import CONF_HOST, CONF_PASSWORD, CONF_PORT, CONF_USERNAME
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prepaid_meter.const import (
    CONF_COMMUNITY_ID,
    CONF_COMMUNITY_NAME,
    CONF_CURRENCY,
    CONF_PREFIX,
    CONF_TARIFF,
    CONF_TLS,
    DOMAIN,
    SECTION_TLS,
)


@pytest.fixture
def mock_setup_entry() -> Iterator[AsyncMock]:
    """Stand in for entry setup: these tests are about the flow, not the runtime."""
    with patch(
        "custom_components.prepaid_meter.async_setup_entry", return_value=True
    ) as setup_entry:
        yield setup_entry


@pytest.fixture
def config_dir(hass: HomeAssistant, tmp_path: Path) -> Path:
    """Give Home Assistant a config folder of this test's own (tariff and TLS files)."""
    hass.config.config_dir = str(tmp_path)
    return tmp_path


@pytest.fixture
def community_id() -> str:
    """Return a community id of this test alone."""
    return f"c{uuid.uuid4().hex[:10]}"


def form_input(host: str, port: int, community_id: str, /, **changes: Any) -> dict[str, Any]:
    """Return what the user form sends for a community on a broker (TLS section included)."""
    data: dict[str, Any] = {
        CONF_HOST: host,
        CONF_PORT: port,
        CONF_PREFIX: "prepaid",
        CONF_COMMUNITY_ID: community_id,
        CONF_COMMUNITY_NAME: "Lotus Garden",
        CONF_CURRENCY: "CNY",
        CONF_TARIFF: "beijing_monthly",
        SECTION_TLS: {CONF_TLS: False},
    }
    data.update(changes)
    return data


def entry_for(
    host: str,
    port: int,
    community_id: str,
    /,
    *,
    username: str | None = None,
    password: str | None = None,
    **data: Any,
) -> MockConfigEntry:
    """Return a stored entry as the flow would have created it."""
    stored: dict[str, Any] = {
        CONF_HOST: host,
        CONF_PORT: port,
        CONF_PREFIX: "prepaid",
        CONF_COMMUNITY_ID: community_id,
        CONF_COMMUNITY_NAME: "Lotus Garden",
        CONF_CURRENCY: "CNY",
        CONF_TARIFF: "beijing_monthly",
        CONF_TLS: False,
        **data,
    }
    if username is not None:
        stored[CONF_USERNAME] = username
    if password is not None:
        stored[CONF_PASSWORD] = password
    return MockConfigEntry(
        domain=DOMAIN,
        title="Lotus Garden",
        unique_id=f"{host}:{port}/{community_id}",
        data=stored,
    )
