"""Broker users and ACLs on a real mosquitto with the dynamic security plugin (issue 12).

What a household's, a meter's and the platform's broker users may do is checked by doing it:
refused subscriptions, publishes that never arrive (proved by a marker that the same client
sends afterwards, on a topic it may use: mosquitto keeps one client's QoS 1 messages in
order, so once the marker arrived, anything sent before it would have too), revoked users
disconnected at once and refused from then on.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
import contextlib
import json
from typing import Any

import aiomqtt
from aiomqtt import MqttError
import pytest

from custom_components.prepaid_meter.engine.broker_acl import (
    CODE_PREFIX,
    ConnectionDetails,
    DynSecAdmin,
    InvalidConnectionCode,
    NoDynamicSecurity,
    NotProvisioned,
    check_dynamic_security,
    household_acls,
    parse_connection_code,
)
from custom_components.prepaid_meter.engine.transport import (
    InvalidAuth,
    TransportConfig,
    _is_auth_error,
)
from tests.broker import DYNSEC_ADMIN, DYNSEC_ADMIN_PASSWORD, Mosquitto

C = "oak"
A = "000000000001"
B = "000000000002"


@pytest.fixture(scope="module")
def dynsec_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """Return one broker with the dynamic security plugin for this module."""
    broker = Mosquitto(tmp_path_factory.mktemp("dynsec"), persistence=False, dynamic_security=True)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def dynsec(dynsec_module: Mosquitto, socket_enabled: None) -> Mosquitto:
    """Return the module's broker, with sockets enabled for this test."""
    return dynsec_module


def admin_config(broker: Mosquitto, *, timeout: float = 5.0, **kwargs: Any) -> TransportConfig:
    """Return the broker's dynamic security administrator's login."""
    options: dict[str, Any] = {
        "username": DYNSEC_ADMIN,
        "password": DYNSEC_ADMIN_PASSWORD,
        **kwargs,
    }
    return TransportConfig(
        host=broker.host, port=broker.port, client_id="test-admin", timeout=timeout, **options
    )


@contextlib.asynccontextmanager
async def login(
    details: ConnectionDetails | None, broker: Mosquitto, *, name: str, client_id: str = ""
) -> AsyncIterator[aiomqtt.Client]:
    """Connect as the user of `details` (None: the dynamic security administrator)."""
    username = DYNSEC_ADMIN if details is None else details.username
    password = DYNSEC_ADMIN_PASSWORD if details is None else details.password
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        username=username,
        password=password,
        identifier=client_id or f"test-{name}",
        timeout=5,
    ) as client:
        yield client


def refused(granted: Any) -> bool:
    """Return whether a SUBACK refused the (single) subscription."""
    (code,) = granted
    return int(getattr(code, "value", code)) >= 0x80


async def collect_until(
    client: aiomqtt.Client,
    marker_topic: str,
    marker: bytes,
    *,
    retained: bool = True,
    seconds: float = 5.0,
) -> list[tuple[str, bytes]]:
    """Return every message `client` receives up to and including the marker.

    `retained=False` skips what the broker kept from earlier tests.
    """
    seen: list[tuple[str, bytes]] = []
    async with asyncio.timeout(seconds):
        async for message in client.messages:
            if message.retain and not retained:
                continue
            payload = bytes(message.payload)
            seen.append((message.topic.value, payload))
            if message.topic.value == marker_topic and payload == marker:
                return seen
    raise AssertionError("unreachable")  # pragma: no cover


async def until_disconnected(client: aiomqtt.Client, seconds: float = 3.0) -> None:
    """Return never: read until the broker closes the connection (MqttError) or time out."""
    async with asyncio.timeout(seconds):
        async for _ in client.messages:
            pass


async def auth_refused(details: ConnectionDetails, broker: Mosquitto) -> bool:
    """Return whether the broker refuses these credentials."""
    try:
        async with login(details, broker, name="probe"):
            return False
    except MqttError as err:
        return _is_auth_error(err)


# -- the plugin -----------------------------------------------------------------------------


async def test_plugin_answers_with_its_default_access(dynsec: Mosquitto) -> None:
    """The admin reads the plugin's default access (sending and subscribing denied)."""
    async with DynSecAdmin(admin_config(dynsec)) as admin:
        defaults = await admin.check()
    assert defaults["publishClientSend"] is False
    assert defaults["subscribe"] is False
    await check_dynamic_security(admin_config(dynsec))


async def test_a_broker_without_the_plugin_says_so(mosquitto: Mosquitto) -> None:
    """A plain mosquitto never answers on $CONTROL: NoDynamicSecurity, not a hang."""
    config = TransportConfig(host=mosquitto.host, port=mosquitto.port, client_id="t", timeout=1)
    with pytest.raises(NoDynamicSecurity, match="No answer"):
        await check_dynamic_security(config)


async def test_only_an_administrator_may_administer(dynsec: Mosquitto) -> None:
    """A household's login cannot read the plugin's answers; a wrong password is refused."""
    async with DynSecAdmin(admin_config(dynsec)) as admin:
        household = await admin.ensure_household(C, "0000000000aa")
    as_household = admin_config(
        dynsec, username=household.username, password=household.password, timeout=1
    )
    with pytest.raises(NoDynamicSecurity, match="may not administer"):
        await check_dynamic_security(as_household)
    with pytest.raises(InvalidAuth):
        await check_dynamic_security(admin_config(dynsec, password="wrong"))


# -- households -----------------------------------------------------------------------------


async def test_household_reads_only_its_own_topics_and_sends_only_its_request(
    dynsec: Mosquitto,
) -> None:
    """Household A sees nothing of B, cannot command any meter, can only send its request."""
    async with DynSecAdmin(admin_config(dynsec)) as admin:
        hh_a = await admin.ensure_household(C, A)
        hh_b = await admin.ensure_household(C, B)
        platform = await admin.ensure_platform(C)
    assert (hh_a.kind, hh_a.meter, hh_a.username) == ("household", A, f"hh.{C}.{A}")

    def topic(meter: str, channel: str) -> str:
        return f"prepaid/{C}/{meter}/{channel}"

    async with login(platform, dynsec, name="platform") as community:
        assert not refused(await community.subscribe(f"prepaid/{C}/#", qos=1))
        for meter in (A, B):
            await community.publish(topic(meter, "account"), meter.encode(), qos=1, retain=True)

        async with login(hh_a, dynsec, name="hh-a") as resident:
            # Its own account and telemetry: allowed; the retained state arrives at once.
            assert not refused(await resident.subscribe(topic(A, "account"), qos=1))
            assert not refused(await resident.subscribe(topic(A, "telemetry"), qos=1))
            # B's topics, wildcards over the community, everything: refused.
            for other in (
                topic(B, "account"),
                topic(B, "telemetry"),
                topic(A, "cmd"),
                f"prepaid/{C}/+/account",
                f"prepaid/{C}/#",
                "#",
                "$CONTROL/dynamic-security/v1/response",
            ):
                assert refused(await resident.subscribe(other, qos=1)), other

            # Everything the community sends now; A hears only its own.
            for meter in (A, B):
                await community.publish(topic(meter, "telemetry"), meter.encode(), qos=1)
                await community.publish(topic(meter, "cmd"), meter.encode(), qos=1)
            await community.publish(topic(A, "account"), b"marker", qos=1, retain=True)
            heard = await collect_until(resident, topic(A, "account"), b"marker")
            assert {t for t, _ in heard} == {topic(A, "account"), topic(A, "telemetry")}
            assert all(payload in (A.encode(), b"marker") for _, payload in heard)

            # A tries to command meters, answer for the community, ask for B: never arrives.
            for forbidden in (
                topic(A, "cmd"),
                topic(B, "cmd"),
                topic(A, "account"),
                topic(B, "request"),
                topic(A, "telemetry"),
                "$CONTROL/dynamic-security/v1",
            ):
                await resident.publish(forbidden, b"forged", qos=1)
            await resident.publish(topic(A, "request"), b"mine", qos=1)
            got = await collect_until(community, topic(A, "request"), b"mine")
            assert [(t, p) for t, p in got if p == b"forged"] == []

        # B's household is kept apart the same way: it never saw A's retained account.
        async with login(hh_b, dynsec, name="hh-b") as other_resident:
            assert refused(await other_resident.subscribe(topic(A, "account"), qos=1))


async def test_ensure_is_idempotent_and_sets_exactly_the_acls(dynsec: Mosquitto) -> None:
    """Ensuring twice keeps one user and role with exactly the household's ACLs."""
    meter = "0000000000bb"
    async with DynSecAdmin(admin_config(dynsec)) as admin:
        first = await admin.ensure_household(C, meter)
        # Someone widened the role by hand: ensuring again puts it back.
        (widened,) = await admin.command(
            [
                {
                    "command": "addRoleACL",
                    "rolename": first.username,
                    "acltype": "subscribePattern",
                    "topic": f"prepaid/{C}/#",
                    "allow": True,
                    "priority": 100,
                }
            ]
        )
        assert "error" not in widened
        second = await admin.ensure_household(C, meter, password="chosen-by-the-operator")
        (role,) = await admin.command([{"command": "getRole", "rolename": first.username}])
        (client,) = await admin.command([{"command": "getClient", "username": first.username}])
        (listed,) = await admin.command([{"command": "listClients", "verbose": False}])

    assert second.username == first.username
    assert second.password == "chosen-by-the-operator"
    expected = {
        json.dumps(r.as_json(), sort_keys=True) for r in household_acls("prepaid", C, meter)
    }
    got = {json.dumps(acl, sort_keys=True) for acl in role["data"]["role"]["acls"]}
    assert got == expected
    assert [r["rolename"] for r in client["data"]["client"]["roles"]] == [first.username]
    assert listed["data"]["clients"].count(first.username) == 1
    # The broker keeps only the last password.
    assert await auth_refused(first, dynsec)
    assert not await auth_refused(second, dynsec)


async def test_bad_names_change_nothing(dynsec: Mosquitto) -> None:
    """A bad community, meter, prefix or password is one clear error, and nothing is sent."""
    async with DynSecAdmin(admin_config(dynsec)) as admin:
        (before,) = await admin.command([{"command": "listClients"}])
        with pytest.raises(ValueError, match="meter id"):
            await admin.ensure_household(C, "a/#")
        with pytest.raises(ValueError, match="community id"):
            await admin.ensure_meter("Oak Street", A)
        with pytest.raises(ValueError, match="password"):
            await admin.ensure_household(C, A, password="")
        (after,) = await admin.command([{"command": "listClients"}])
    assert after["data"]["clients"] == before["data"]["clients"]
    with pytest.raises(ValueError, match="prefix"):
        DynSecAdmin(admin_config(dynsec), prefix="prepaid/+")
    with pytest.raises(ValueError, match="prefix"):
        DynSecAdmin(admin_config(dynsec), prefix="$SYS")


async def test_revoked_household_is_disconnected_and_refused(dynsec: Mosquitto) -> None:
    """Revoking disconnects a connected household at once; it cannot log in again."""
    meter = "0000000000cc"
    async with DynSecAdmin(admin_config(dynsec)) as admin:
        household = await admin.ensure_household(C, meter)
        async with login(household, dynsec, name="revoked") as resident:
            await resident.subscribe(f"prepaid/{C}/{meter}/account", qos=1)
            assert await admin.revoke_household(C, meter) is True
            with pytest.raises(MqttError):
                await until_disconnected(resident)
        assert await auth_refused(household, dynsec)
        # Revoking again finds nothing; rotating a revoked user is an error, not a new user.
        assert await admin.revoke_household(C, meter) is False
        with pytest.raises(NotProvisioned):
            await admin.rotate_household(C, meter)


async def test_rotated_password_replaces_the_old_one(dynsec: Mosquitto) -> None:
    """After a rotation only the new password logs in, and the old session is closed."""
    meter = "0000000000dd"
    async with DynSecAdmin(admin_config(dynsec)) as admin:
        old = await admin.ensure_household(C, meter)
        async with login(old, dynsec, name="rotated") as resident:
            new = await admin.rotate_household(C, meter)
            with pytest.raises(MqttError):
                await until_disconnected(resident)
    assert new.password != old.password
    assert await auth_refused(old, dynsec)
    assert not await auth_refused(new, dynsec)


# -- meters ---------------------------------------------------------------------------------


async def test_meter_cannot_publish_a_neighbours_telemetry(dynsec: Mosquitto) -> None:
    """Meter A's user publishes only its own channels; an admin subscriber never sees B's."""
    async with DynSecAdmin(admin_config(dynsec)) as admin:
        meter_a = await admin.ensure_meter(C, A)
        platform = await admin.ensure_platform(C)
    assert meter_a.kind == "meter"
    own = f"prepaid/{C}/{A}"
    neighbour = f"prepaid/{C}/{B}"
    async with (
        login(None, dynsec, name="watch") as watcher,
        login(meter_a, dynsec, name="meter-a") as meter,
        login(platform, dynsec, name="platform-m") as community,
    ):
        assert not refused(await watcher.subscribe(f"prepaid/{C}/#", qos=1))
        # Its own cmd only.
        assert not refused(await meter.subscribe(f"{own}/cmd", qos=1))
        assert refused(await meter.subscribe(f"{neighbour}/cmd", qos=1))
        assert refused(await meter.subscribe(f"{own}/account", qos=1))
        for channel in ("telemetry", "ack", "announce", "availability"):
            await meter.publish(f"{neighbour}/{channel}", b"forged", qos=1)
        for channel in ("cmd", "account", "request"):
            await meter.publish(f"{own}/{channel}", b"forged", qos=1)
        for channel in ("announce", "availability", "ack"):
            await meter.publish(f"{own}/{channel}", channel.encode(), qos=1)
        await meter.publish(f"{own}/telemetry", b"reading", qos=1)
        seen = await collect_until(watcher, f"{own}/telemetry", b"reading", retained=False)
        assert [t for t, p in seen if p == b"forged"] == []
        assert [t for t, _ in seen] == [
            f"{own}/announce",
            f"{own}/availability",
            f"{own}/ack",
            f"{own}/telemetry",
        ]
        # The community's command reaches the meter.
        await community.publish(f"{own}/cmd", b"relay-off", qos=1)
        heard = await collect_until(meter, f"{own}/cmd", b"relay-off")
        assert heard == [(f"{own}/cmd", b"relay-off")]


async def test_meter_bound_to_its_client_id(dynsec: Mosquitto) -> None:
    """With a client id bound, the meter's credentials work only with that client id."""
    meter = "0000000000ee"
    async with DynSecAdmin(admin_config(dynsec)) as admin:
        details = await admin.ensure_meter(C, meter, client_id=f"meter-{meter}")
    async with login(details, dynsec, name="bound", client_id=f"meter-{meter}"):
        pass
    with pytest.raises(MqttError):
        async with login(details, dynsec, name="bound", client_id="someone-else"):
            pass


async def test_plugin_errors_come_back_in_its_words(dynsec: Mosquitto) -> None:
    """A command the plugin refuses comes back with its error; nothing is raised for it."""
    async with DynSecAdmin(admin_config(dynsec)) as admin:
        (answer,) = await admin.command([{"command": "deleteRole", "rolename": "no-such-role"}])
        assert answer == {
            "command": "deleteRole",
            "error": "Role not found",
            "correlationData": answer["correlationData"],
        }


# -- the connection code --------------------------------------------------------------------


def _details(**changes: Any) -> ConnectionDetails:
    base: dict[str, Any] = {
        "host": "broker.example.org",
        "port": 8883,
        "tls": True,
        "username": f"hh.{C}.{A}",
        "password": "s3cret-Ünïcode",
        "prefix": "prepaid",
        "community": C,
        "meter": A,
    }
    base.update(changes)
    return ConnectionDetails(**base)


def test_connection_code_round_trip() -> None:
    """A code reads back to the same details, also when wrapped over lines."""
    details = _details()
    code = details.code()
    assert code.startswith(CODE_PREFIX)
    assert "=" not in code
    assert parse_connection_code(code) == details
    wrapped = "\n ".join(code[i : i + 20] for i in range(0, len(code), 20))
    assert parse_connection_code(f"  {wrapped}\n") == details
    assert details.password not in repr(details)
    with pytest.raises(ValueError, match="names a meter"):
        _details(meter=None, kind="platform").code()


def _encoded(body: Any) -> str:
    raw = json.dumps(body).encode()
    return CODE_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("", "empty"),
        ("mqtt://broker:1883", "not a prepaid meter connection code"),
        ("pm1:%%%%", "damaged"),
        ("pm1:" + "A" * 5000, "too long"),
        (_encoded([1, 2]), "damaged"),
        (_encoded({"host": "h"}), "has no port"),
        ("pm1:bm90IGpzb24", "damaged"),
    ],
)
def test_connection_code_errors(code: str, message: str) -> None:
    """Each broken code is refused with one clear reason."""
    with pytest.raises(InvalidConnectionCode, match=message):
        parse_connection_code(code)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 0),
        ("port", "1883"),
        ("port", True),
        ("tls", "yes"),
        ("host", "bad host/name"),
        ("username", ""),
        ("password", ""),
        ("prefix", "a/#"),
        ("community", "Oak"),
        ("meter", "../x"),
    ],
)
def test_connection_code_field_errors(field: str, value: Any) -> None:
    """A code whose field is not valid names that field."""
    body = json.loads(base64.urlsafe_b64decode(_details().code()[4:] + "==").decode())
    body[field] = value
    with pytest.raises(InvalidConnectionCode, match=f"{field} is not valid"):
        parse_connection_code(_encoded(body))
