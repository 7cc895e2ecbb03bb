"""Fixtures for the integration: a config entry on the real broker, set up in a real hass."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import PropertyMock, patch
import uuid

from homeassistant.const import CONF_HOST, CONF_PORT, __version__ as HA_VERSION
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.syrupy import HomeAssistantSnapshotExtension
from syrupy.assertion import SnapshotAssertion

from custom_components.prepaid_meter.const import (
    CONF_COMMUNITY_ID,
    CONF_COMMUNITY_NAME,
    CONF_CURRENCY,
    CONF_PREFIX,
    CONF_TARIFF,
    DOMAIN,
)
from tests.broker import Mosquitto
from tests.ha.meter import TestMeter

METER_ID = "000012345678"
HA_SERIES = ".".join(HA_VERSION.split(".")[:2])


@pytest.fixture
def community_id() -> str:
    """Return a community id of this test alone (the session broker is shared)."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def config_entry(mosquitto: Mosquitto, community_id: str) -> MockConfigEntry:
    """Return a config entry for the broker of this session and Beijing's tariff."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="Test community",
        unique_id=f"{mosquitto.host}:{mosquitto.port}/{community_id}",
        data={
            CONF_HOST: mosquitto.host,
            CONF_PORT: mosquitto.port,
            CONF_PREFIX: "prepaid",
            CONF_COMMUNITY_ID: community_id,
            CONF_COMMUNITY_NAME: "Test community",
            CONF_CURRENCY: "CNY",
            CONF_TARIFF: "flat",  # one price: amounts do not depend on the day tests run
        },
        options={"friendly_start": "00:00", "friendly_end": "00:00", "friendly_weekends": False},
    )


@pytest.fixture
async def init_integration(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> AsyncIterator[MockConfigEntry]:
    """Set the entry up with its ledger in a temporary config folder; unload at the end."""
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    async with asyncio.timeout(10):
        await config_entry.runtime_data.transport.wait_connected()
    yield config_entry
    if config_entry.state.recoverable:
        await hass.config_entries.async_unload(config_entry.entry_id)
        await hass.async_block_till_done()


@pytest.fixture
async def meter(mosquitto: Mosquitto, community_id: str) -> AsyncIterator[TestMeter]:
    """Return a connected test meter of this community."""
    async with TestMeter(mosquitto.host, mosquitto.port, community_id, METER_ID) as test_meter:
        yield test_meter


@pytest.fixture
def entity_registry_enabled_by_default() -> Iterator[None]:
    """Enable every entity, including those disabled by default (for snapshots)."""
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        return_value=True,
        new_callable=PropertyMock,
    ):
        yield


class VersionSnapshotExtension(HomeAssistantSnapshotExtension):  # type: ignore[misc]
    """Core's serializer, one folder of snapshots per Home Assistant version (major.minor).

    The registry entries it records change shape between releases (2026.x adds fields and
    keeps aliases as a list), so each tested version has its own set, generated with
    `scripts/test --ha VERSION tests/ha/test_platforms.py --snapshot-update`, never edited.
    """

    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        """Return snapshots/<major.minor>/ beside the test file."""
        return str(Path(test_location.filepath).parent / "snapshots" / HA_SERIES)


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Serialize Home Assistant objects the way core's snapshots do (no volatile fields)."""
    return snapshot.use_extension(VersionSnapshotExtension)


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: Any) -> None:
    """Let Home Assistant load custom_components/prepaid_meter in every test here.

    Only the Home Assistant test folders take this (and so a `hass`): the engine, transport
    and simulator tests run on plain pytest-asyncio, without Home Assistant's loop checks.
    """


@pytest.fixture(autouse=True)
def nothing_deprecated(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail any test in which Home Assistant's frame helper reports one of our calls.

    It logs "Detected that custom integration ..." for an API that a later release removes;
    each version is tested, so what the current one deprecates is found here.
    """
    yield
    found = [
        record.getMessage()
        for record in caplog.get_records("call")
        if "Detected that custom integration" in record.getMessage()
    ]
    assert not found, found
