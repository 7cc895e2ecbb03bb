"""The operator's household access actions on a real mosquitto with dynamic security.

The community entry logs in as the broker's dynamic security administrator (as an operator
whose community provisions household users does); the actions make, hand out again, rotate
and revoke a household's broker user, and each result is checked by logging in as it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
from homeassistant.const import CONF_HOST, CONF_PASSWORD, CONF_PORT, CONF_USERNAME
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import ServiceValidationError, Unauthorized
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prepaid_meter.const import (
    CONF_COMMUNITY_ID,
    CONF_COMMUNITY_NAME,
    CONF_CURRENCY,
    CONF_PREFIX,
    CONF_TARIFF,
    DOMAIN,
)
from custom_components.prepaid_meter.engine.broker_acl import (
    ConnectionDetails,
    DynSecAdmin,
    parse_connection_code,
)
from custom_components.prepaid_meter.engine.household import check_household
from custom_components.prepaid_meter.engine.transport import InvalidAuth
from custom_components.prepaid_meter.household_entry import is_household
from tests.broker import DYNSEC_ADMIN, DYNSEC_ADMIN_PASSWORD, Mosquitto
from tests.engine.test_broker_acl import admin_config, login
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter
from tests.ha.test_init import wait_until

COMMUNITY = "elm"


async def respond(
    hass: HomeAssistant, service: str, context: Context | None = None, **data: Any
) -> Any:
    """Call an action and return its response data."""
    return await hass.services.async_call(
        DOMAIN, service, data, blocking=True, return_response=True, context=context
    )


@pytest.fixture
async def community(
    hass: HomeAssistant, mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> AsyncIterator[tuple[MockConfigEntry, Mosquitto]]:
    """Set up a community whose broker login administers dynamic security; a meter announced."""
    broker = mosquitto_factory(dynamic_security=True, persistence=False)
    hass.config.config_dir = str(tmp_path)
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Elm court",
        unique_id=f"{broker.host}:{broker.port}/{COMMUNITY}",
        data={
            CONF_HOST: broker.host,
            CONF_PORT: broker.port,
            CONF_USERNAME: DYNSEC_ADMIN,
            CONF_PASSWORD: DYNSEC_ADMIN_PASSWORD,
            CONF_PREFIX: "prepaid",
            CONF_COMMUNITY_ID: COMMUNITY,
            CONF_COMMUNITY_NAME: "Elm court",
            CONF_CURRENCY: "CNY",
            CONF_TARIFF: "flat",
        },
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    runtime = entry.runtime_data
    async with asyncio.timeout(10):
        await runtime.transport.wait_connected()
    # The meter announces as its own broker user (the administrator may not publish there).
    async with DynSecAdmin(admin_config(broker)) as admin:
        meter = await admin.ensure_meter(COMMUNITY, METER_ID)
    async with login(meter, broker, name="meter") as client:
        await client.publish(
            f"prepaid/{COMMUNITY}/{METER_ID}/announce",
            b'{"v": 1, "meter_id": "' + METER_ID.encode() + b'"}',
            qos=1,
        )
        await wait_until(hass, lambda: METER_ID in runtime.community.meters)
    yield entry, broker
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


def details_of(response: dict[str, Any]) -> ConnectionDetails:
    """Return the connection details an action answered, read back from its code."""
    details = parse_connection_code(response["code"])
    assert details.username == response["username"]
    assert details.password == response["password"]
    assert (details.host, details.port, details.tls) == (
        response["host"],
        response["port"],
        response["tls"],
    )
    assert (details.prefix, details.community, details.meter) == ("prepaid", COMMUNITY, METER_ID)
    return details


async def test_household_access_hands_out_a_working_code(
    hass: HomeAssistant, community: tuple[MockConfigEntry, Mosquitto]
) -> None:
    """The code logs in as the household; asked again it is the same; rotated it is new."""
    _entry, broker = community
    first = await respond(hass, "household_access", meter_id=METER_ID)
    details = details_of(first)
    assert details.username == f"hh.{COMMUNITY}.{METER_ID}"
    assert (details.host, details.port) == (broker.host, broker.port)
    assert first["qr_svg"].lstrip().startswith("<svg")
    assert first["rotated"] is True
    assert await check_household(details, wait=0) is None  # logs in, may read its account

    again = await respond(hass, "household_access", meter_id=METER_ID)
    assert again["code"] == first["code"]
    assert again["rotated"] is False
    assert await check_household(details, wait=0) is None

    rotated = await respond(hass, "household_access", meter_id=METER_ID, rotate=True)
    new = details_of(rotated)
    assert new.password != details.password
    assert await check_household(new, wait=0) is None
    with pytest.raises(InvalidAuth):
        await check_household(details, wait=0)

    # What residents use may differ from the community's own connection.
    public = await respond(
        hass,
        "household_access",
        meter_id=METER_ID,
        public_host="broker.example.org",
        public_port=8883,
        public_tls=True,
    )
    shown = details_of(public)
    assert (shown.host, shown.port, shown.tls) == ("broker.example.org", 8883, True)
    assert shown.password == new.password  # the same user, only what the code says differs


async def test_revoke_household_access(
    hass: HomeAssistant, community: tuple[MockConfigEntry, Mosquitto]
) -> None:
    """Revoked, the household's code is refused; revoking again says it was not there."""
    details = details_of(await respond(hass, "household_access", meter_id=METER_ID))
    assert await respond(hass, "revoke_household_access", meter_id=METER_ID) == {
        "meter_id": METER_ID,
        "revoked": True,
    }
    with pytest.raises(InvalidAuth):
        await check_household(details, wait=0)
    assert await respond(hass, "revoke_household_access", meter_id=METER_ID) == {
        "meter_id": METER_ID,
        "revoked": False,
    }
    # Handed out again after a revocation: a new password (the old one is gone).
    fresh = details_of(await respond(hass, "household_access", meter_id=METER_ID))
    assert await check_household(fresh, wait=0) is None


async def test_household_access_is_for_operators(
    hass: HomeAssistant, community: tuple[MockConfigEntry, Mosquitto]
) -> None:
    """A resident may not hand out access; unknown or bad meter ids change nothing."""
    await hass.auth.async_create_user("Owner", group_ids=["system-admin"])
    resident = await hass.auth.async_create_user("resident", group_ids=["system-users"])
    for action in ("household_access", "revoke_household_access"):
        with pytest.raises(Unauthorized):
            await respond(hass, action, Context(user_id=resident.id), meter_id=METER_ID)
    with pytest.raises(ServiceValidationError) as unknown:
        await respond(hass, "household_access", meter_id="999999999999")
    assert unknown.value.translation_key == "unknown_meter"
    with pytest.raises(ServiceValidationError) as bad:
        await respond(hass, "revoke_household_access", meter_id="../#")
    assert bad.value.translation_key == "unknown_meter"
    async with DynSecAdmin(admin_config(community[1])) as admin:
        clients = await admin.command([{"command": "listClients"}])
    names = clients[0]["data"]["clients"]
    assert f"hh.{COMMUNITY}.{METER_ID}" not in names


async def test_household_entries_are_not_communities(
    hass: HomeAssistant, community: tuple[MockConfigEntry, Mosquitto]
) -> None:
    """With a household entry loaded too, the actions still find the one community."""
    details = details_of(await respond(hass, "household_access", meter_id=METER_ID))
    household = MockConfigEntry(
        domain=DOMAIN,
        title="elm household",
        unique_id=f"household:{COMMUNITY}/{METER_ID}",
        data={
            "kind": "household",
            CONF_HOST: details.host,
            CONF_PORT: details.port,
            "tls": False,
            CONF_USERNAME: details.username,
            CONF_PASSWORD: details.password,
            CONF_PREFIX: "prepaid",
            CONF_COMMUNITY_ID: COMMUNITY,
            "meter_id": METER_ID,
        },
    )
    household.add_to_hass(hass)
    assert await hass.config_entries.async_setup(household.entry_id)
    await hass.async_block_till_done()
    assert is_household(household)
    assert household.runtime_data.meter_id == METER_ID
    # Through the community, not the household: an id never provisioned was not there.
    assert await respond(hass, "revoke_household_access", meter_id="000000000001") == {
        "meter_id": "000000000001",
        "revoked": False,
    }
    await hass.config_entries.async_unload(household.entry_id)
    await hass.async_block_till_done()


async def test_without_dynamic_security_it_says_how_to_do_it_by_hand(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A broker without the plugin: a translated error that points to the ACL by hand."""
    runtime = init_integration.runtime_data
    await wait_until(hass, lambda: METER_ID in runtime.community.meters)
    with pytest.raises(ServiceValidationError) as refused:
        await respond(hass, "household_access", meter_id=METER_ID)
    assert refused.value.translation_key == "no_dynamic_security"


async def test_meter_access_lets_a_meter_speak_only_for_itself(
    hass: HomeAssistant, community: tuple[MockConfigEntry, Mosquitto]
) -> None:
    """The meter's own login bills its own readings; a neighbour's id from it never arrives."""
    entry, broker = community
    runtime = entry.runtime_data
    answer = await respond(hass, "meter_access", meter_id=METER_ID)
    assert answer["username"] == f"meter.{COMMUNITY}.{METER_ID}"
    assert answer["topic_prefix"] == f"prepaid/{COMMUNITY}/{METER_ID}"
    meter = ConnectionDetails(
        host=answer["host"],
        port=answer["port"],
        tls=answer["tls"],
        username=answer["username"],
        password=answer["password"],
        prefix="prepaid",
        community=COMMUNITY,
        meter=METER_ID,
        kind="meter",
    )
    neighbour = "000000000999"
    reading = b'{"v": 1, "seq": 1, "ts": 1764300000, "energy_kwh": "10.000"}'
    async with login(meter, broker, name="meter-access") as client:
        await client.publish(f"prepaid/{COMMUNITY}/{neighbour}/telemetry", reading, qos=1)
        await client.publish(f"prepaid/{COMMUNITY}/{METER_ID}/telemetry", reading, qos=1)
        await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 1)
    # Mosquitto keeps one client's messages in order: the neighbour's came first, if at all.
    assert neighbour not in runtime.community.unknown_meters
    assert neighbour not in runtime.community.meters

    again = await respond(hass, "meter_access", meter_id=METER_ID)
    assert (again["password"], again["rotated"]) == (answer["password"], False)
    assert await respond(hass, "revoke_meter_access", meter_id=METER_ID) == {
        "meter_id": METER_ID,
        "revoked": True,
    }
    with pytest.raises(aiomqtt.MqttError):
        async with login(meter, broker, name="meter-revoked"):
            pass
    await hass.auth.async_create_user("Owner", group_ids=["system-admin"])
    resident = await hass.auth.async_create_user("Resident", group_ids=["system-users"])
    for action in ("meter_access", "revoke_meter_access"):
        with pytest.raises(Unauthorized):
            await respond(hass, action, Context(user_id=resident.id), meter_id=METER_ID)


async def test_move_out_revokes_the_household_access_handed_out(
    hass: HomeAssistant, community: tuple[MockConfigEntry, Mosquitto]
) -> None:
    """A household that moves out loses its broker user with the meter; its code is refused."""
    await hass.services.async_call(
        DOMAIN,
        "assign_meter",
        {"meter_id": METER_ID, "household": "elm-1", "label": "Elm 1"},
        blocking=True,
    )
    details = details_of(await respond(hass, "household_access", meter_id=METER_ID))
    assert await check_household(details, wait=0) is None
    settled = await respond(hass, "move_out", household="elm-1")
    assert settled["broker_access_revoked"] == {METER_ID: True}
    with pytest.raises(InvalidAuth):
        await check_household(details, wait=0)
    # The next tenant gets a new user: the old code stays refused.
    await hass.services.async_call(
        DOMAIN,
        "assign_meter",
        {"meter_id": METER_ID, "household": "elm-2", "label": "Elm 2"},
        blocking=True,
    )
    fresh = details_of(await respond(hass, "household_access", meter_id=METER_ID))
    assert fresh.password != details.password
    assert await check_household(fresh, wait=0) is None
    with pytest.raises(InvalidAuth):
        await check_household(details, wait=0)
