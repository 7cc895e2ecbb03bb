"""Broker users and ACLs per household and per meter, on mosquitto's dynamic security plugin.

Mosquitto 2.x ships a dynamic security plugin administered by JSON commands published to
`$CONTROL/dynamic-security/v1`; it answers on `$CONTROL/dynamic-security/v1/response` with
`{"responses": [{"command": ..., "error": ..., "correlationData": ...}, ...]}` (no `error`
when the command succeeded). `DynSecAdmin` is such an administrator, on aiomqtt:

    async with DynSecAdmin(config) as admin:      # config: an admin user's TransportConfig
        await admin.check()                       # NoDynamicSecurity if the plugin is absent
        details = await admin.ensure_household("oak", "000012345678")
        code = details.code()                     # "pm1:..." for the resident (or a QR)

What each broker user may do (`household_acls`, `meter_acls`, `platform_acls`):

- a household (`hh.<community>.<meter>`): subscribe to and receive only
  `<prefix>/<community>/<meter>/account` and that meter's `telemetry`; publish only
  `<prefix>/<community>/<meter>/request`;
- a meter (`meter.<community>.<meter>`): publish only its own `announce`, `availability`,
  `telemetry` and `ack`; subscribe to and receive only its own `cmd`;
- the community's platform (`platform.<community>`): everything under
  `<prefix>/<community>/#` and nothing else.

Each role ends with `deny #` rules for sending, subscribing and receiving, so it does not
depend on the plugin's default access (which an operator may change), and a receive rule also
holds for subscriptions made before an ACL was narrowed.

Every `ensure_*` is idempotent: it creates the role and the client, or brings existing ones to
exactly these ACLs. The broker keeps only a hash of a password, so an existing client gets the
password passed in or a new one (`secrets.token_urlsafe`); the plugin disconnects a client whose
password or roles change (it reconnects with the new details). `rotate_*` sets a new password
(connected sessions are disconnected), `revoke_*` deletes the client and its role (connected
sessions are disconnected at once, and the user is refused from then on).

The connection code for a resident: `pm1:` + URL-safe base64 (unpadded) of the compact JSON
`{"host", "port", "tls", "username", "password", "prefix", "community", "meter"}`;
`parse_connection_code` reads it back or raises `InvalidConnectionCode` saying what is wrong.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Mapping, Sequence
import contextlib
from dataclasses import dataclass, field
import json
import logging
import re
import secrets
import ssl
from types import TracebackType
from typing import Any, Final, Literal, Self
import uuid

import aiomqtt
from aiomqtt import MqttError

from .protocol import COMMUNITY_RE, DEFAULT_PREFIX, METER_ID_RE
from .transport import (
    CannotConnect,
    InvalidAuth,
    TransportConfig,
    _is_auth_error,
    build_ssl_context,
)

_LOGGER = logging.getLogger(__name__)

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = f"{CONTROL_TOPIC}/response"
CODE_PREFIX: Final = "pm1:"
MAX_CODE_LEN: Final = 4096
# A prefix is one or more topic levels without wildcards; `$` topics belong to the broker.
_PREFIX_RE: Final = re.compile(r"[^+#\x00$][^+#\x00]{0,99}")
_HOST_RE: Final = re.compile(r"[A-Za-z0-9.:_\[\]-]{1,253}")
MAX_PASSWORD_LEN: Final = 256
SECRET_BYTES: Final = 24

type Kind = Literal["household", "meter", "platform"]
type AclType = Literal["publishClientSend", "publishClientReceive", "subscribePattern"]

# Allowed topics are checked before the final `deny #` of each kind.
_ALLOW_PRIORITY: Final = 10
_DENY_PRIORITY: Final = -10


class BrokerAclError(Exception):
    """The broker's dynamic security refused or did not answer an administration command."""


class NoDynamicSecurity(BrokerAclError):
    """This broker has no dynamic security plugin, or this user may not administer it."""


class DynSecCommandError(BrokerAclError):
    """The plugin answered a command with an error."""

    def __init__(self, command: str, error: str) -> None:
        """Keep the command and the plugin's own words."""
        super().__init__(f"{command}: {error}")
        self.command = command
        self.error = error


class NotProvisioned(BrokerAclError):
    """The broker has no such client (rotate before ensure, or after revoke)."""


class InvalidConnectionCode(ValueError):
    """A connection code that cannot be read; the message says why, for a person."""


# -- names and ACLs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AclRule:
    """One ACL of a dynamic security role."""

    acltype: AclType
    topic: str
    allow: bool
    priority: int

    def as_json(self) -> dict[str, Any]:
        """Return the rule as the plugin's JSON."""
        return {
            "acltype": self.acltype,
            "topic": self.topic,
            "allow": self.allow,
            "priority": self.priority,
        }


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix) or "" in prefix.split("/"):
        raise ValueError(
            f"The topic prefix {str(prefix)[:40]!r} is not valid: 1-100 characters, "
            "no + or #, no empty level, not starting with $"
        )
    return prefix


def _check_community(community: str) -> str:
    if not isinstance(community, str) or not COMMUNITY_RE.fullmatch(community):
        raise ValueError(f"The community id {str(community)[:40]!r} is not [a-z0-9_-]{{1,32}}")
    return community


def _check_meter(meter: str) -> str:
    if not isinstance(meter, str) or not METER_ID_RE.fullmatch(meter):
        raise ValueError(f"The meter id {str(meter)[:80]!r} is not [A-Za-z0-9_-]{{1,64}}")
    return meter


def _check_password(password: str | None) -> str:
    if password is None:
        return secrets.token_urlsafe(SECRET_BYTES)
    if (
        not isinstance(password, str)
        or not 0 < len(password) <= MAX_PASSWORD_LEN
        or "\x00" in password
    ):
        raise ValueError(f"A broker password is 1-{MAX_PASSWORD_LEN} characters without NUL")
    return password


def household_username(community: str, meter: str) -> str:
    """Return the broker user (and role) name of a meter's household."""
    return f"hh.{_check_community(community)}.{_check_meter(meter)}"


def meter_username(community: str, meter: str) -> str:
    """Return the broker user (and role) name of a meter."""
    return f"meter.{_check_community(community)}.{_check_meter(meter)}"


def platform_username(community: str) -> str:
    """Return the broker user (and role) name of the community's platform."""
    return f"platform.{_check_community(community)}"


def _base(prefix: str, community: str, meter: str) -> str:
    return f"{_check_prefix(prefix)}/{_check_community(community)}/{_check_meter(meter)}"


def _rules(
    send: Sequence[str], read: Sequence[str], *, deny_rest: bool = True
) -> tuple[AclRule, ...]:
    allowed: list[AclRule] = [
        AclRule(acltype="publishClientSend", topic=t, allow=True, priority=_ALLOW_PRIORITY)
        for t in send
    ]
    for topic in read:
        allowed.append(
            AclRule(acltype="subscribePattern", topic=topic, allow=True, priority=_ALLOW_PRIORITY)
        )
        allowed.append(
            AclRule(
                acltype="publishClientReceive", topic=topic, allow=True, priority=_ALLOW_PRIORITY
            )
        )
    if deny_rest:
        allowed += [
            AclRule(acltype=kind, topic="#", allow=False, priority=_DENY_PRIORITY)
            for kind in ("publishClientSend", "subscribePattern", "publishClientReceive")
        ]
    return tuple(allowed)


def household_acls(prefix: str, community: str, meter: str) -> tuple[AclRule, ...]:
    """Return the household's rules: read its account and telemetry, send its requests."""
    base = _base(prefix, community, meter)
    return _rules(send=[f"{base}/request"], read=[f"{base}/account", f"{base}/telemetry"])


def meter_acls(prefix: str, community: str, meter: str) -> tuple[AclRule, ...]:
    """Return the meter's rules: send its own four channels, read only its own `cmd`."""
    base = _base(prefix, community, meter)
    send = [f"{base}/{channel}" for channel in ("announce", "availability", "telemetry", "ack")]
    return _rules(send=send, read=[f"{base}/cmd"])


def platform_acls(prefix: str, community: str) -> tuple[AclRule, ...]:
    """Return the platform's rules: all of `<prefix>/<community>/#`, nothing else."""
    tree = f"{_check_prefix(prefix)}/{_check_community(community)}/#"
    return _rules(send=[tree], read=[tree])


# -- connection details and the code ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionDetails:
    """What a household (or a meter, or the platform) needs to log in to the broker."""

    host: str
    port: int
    tls: bool
    username: str
    password: str = field(repr=False)
    prefix: str
    community: str
    meter: str | None = None
    kind: Kind = "household"

    def code(self) -> str:
        """Return the one-line connection code (`pm1:...`); needs a meter."""
        if self.meter is None:
            raise ValueError("A connection code names a meter; the platform's details have none")
        body = {
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "username": self.username,
            "password": self.password,
            "prefix": self.prefix,
            "community": self.community,
            "meter": self.meter,
        }
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return CODE_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    def transport_config(self, client_id: str, **options: Any) -> TransportConfig:
        """Return a `TransportConfig` that logs in with these details."""
        return TransportConfig(
            host=self.host,
            port=self.port,
            tls=self.tls,
            username=self.username,
            password=self.password,
            client_id=client_id,
            **options,
        )


def _field(body: Mapping[str, Any], name: str, kind: type) -> Any:
    if name not in body:
        raise InvalidConnectionCode(f"The connection code has no {name}")
    value = body[name]
    if type(value) is not kind:
        raise InvalidConnectionCode(f"The connection code's {name} is not valid")
    return value


def parse_connection_code(text: str) -> ConnectionDetails:
    """Read a `pm1:` connection code; raise `InvalidConnectionCode` with the reason."""
    if not isinstance(text, str):
        raise InvalidConnectionCode("A connection code is text")
    code = "".join(text.split())  # pasted codes may be wrapped over lines
    if not code:
        raise InvalidConnectionCode("The connection code is empty")
    if len(code) > MAX_CODE_LEN:
        raise InvalidConnectionCode("The connection code is too long")
    if not code.startswith(CODE_PREFIX):
        raise InvalidConnectionCode(
            f"This is not a prepaid meter connection code (it starts with {CODE_PREFIX})"
        )
    data = code[len(CODE_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        body = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidConnectionCode(
            "The connection code is damaged (copy all of it, without spaces)"
        ) from None
    if not isinstance(body, dict):
        raise InvalidConnectionCode("The connection code is damaged (copy all of it)")
    host = _field(body, "host", str)
    if not _HOST_RE.fullmatch(host):
        raise InvalidConnectionCode("The connection code's host is not valid")
    port = _field(body, "port", int)
    if not 0 < port < 65536:
        raise InvalidConnectionCode("The connection code's port is not valid")
    tls = _field(body, "tls", bool)
    username = _field(body, "username", str)
    if not 0 < len(username) <= MAX_PASSWORD_LEN:
        raise InvalidConnectionCode("The connection code's username is not valid")
    password = _field(body, "password", str)
    if not 0 < len(password) <= MAX_PASSWORD_LEN or "\x00" in password:
        raise InvalidConnectionCode("The connection code's password is not valid")
    names: dict[str, str] = {}
    for name, check in (
        ("prefix", _check_prefix),
        ("community", _check_community),
        ("meter", _check_meter),
    ):
        value = _field(body, name, str)
        try:
            names[name] = check(value)
        except ValueError:
            raise InvalidConnectionCode(f"The connection code's {name} is not valid") from None
    return ConnectionDetails(
        host=host,
        port=port,
        tls=tls,
        username=username,
        password=password,
        prefix=names["prefix"],
        community=names["community"],
        meter=names["meter"],
    )


# -- the administrator --------------------------------------------------------------------


def _is_failure(granted: Any) -> bool:
    value = getattr(granted, "value", granted)
    return not isinstance(value, int) or value >= 0x80


class DynSecAdmin:
    """An administrator of mosquitto's dynamic security, over one MQTT connection.

    Use it as an async context manager. `config` logs in as a client with the plugin's
    `admin` role (`mosquitto_ctrl dynsec init` makes one); `public_host`, `public_port` and
    `public_tls` are what households and meters should use when that differs from the admin's
    own connection (the admin may run on the broker's machine, residents come over the LAN).
    """

    def __init__(
        self,
        config: TransportConfig,
        *,
        prefix: str = DEFAULT_PREFIX,
        public_host: str | None = None,
        public_port: int | None = None,
        public_tls: bool | None = None,
    ) -> None:
        """Check the names; nothing connects until the context is entered."""
        self.config = config
        self.prefix = _check_prefix(prefix)
        self.public_host = public_host or config.host
        self.public_port = public_port or config.port
        self.public_tls = config.tls if public_tls is None else public_tls
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._session = uuid.uuid4().hex[:12]
        self._counter = 0
        self.ignored_responses = 0

    # -- connection ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Connect, subscribe to the plugin's responses; raise on a refusal."""
        try:
            context = await asyncio.to_thread(build_ssl_context, self.config)
        except (OSError, ssl.SSLError, ValueError) as err:
            raise CannotConnect(f"Cannot load the TLS files: {err}") from err
        client = aiomqtt.Client(
            self.config.host,
            self.config.port,
            username=self.config.username,
            password=self.config.password,
            identifier=f"{self.config.client_id}-dynsec-{self._session}",
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=True,
            keepalive=self.config.keepalive,
            timeout=self.config.timeout,
            tls_context=context,
            logger=_LOGGER,
        )
        try:
            async with asyncio.timeout(self.config.timeout + 5):
                await client.__aenter__()
        except MqttError as err:
            if _is_auth_error(err):
                raise InvalidAuth("The broker refused the admin's user name or password") from err
            raise CannotConnect(
                f"Cannot connect to {self.config.host}:{self.config.port}: {err}"
            ) from err
        except (OSError, ssl.SSLError, TimeoutError) as err:
            raise CannotConnect(
                f"Cannot connect to {self.config.host}:{self.config.port}: {err}"
            ) from err
        self._client = client
        try:
            granted = await client.subscribe(RESPONSE_TOPIC, qos=1, timeout=self.config.timeout)
            if not granted or any(_is_failure(g) for g in granted):
                raise NoDynamicSecurity(
                    "This broker user may not administer dynamic security "
                    f"(subscribing to {RESPONSE_TOPIC} was refused)"
                )
        except MqttError as err:
            await self._close()
            raise CannotConnect(f"Subscribing to {RESPONSE_TOPIC} failed: {err}") from err
        except BaseException:
            await self._close()
            raise
        self._reader = asyncio.create_task(self._read(client), name="prepaid_meter dynsec reader")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Disconnect and fail whatever still waits for an answer."""
        await self._close()

    async def _close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(MqttError, OSError):
                await client.__aexit__(None, None, None)
            task: asyncio.Task[None] | None = getattr(client, "_misc_task", None)
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrokerAclError("The admin connection was closed"))
        self._pending.clear()

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                self._on_response(message.payload)
        except MqttError as err:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BrokerAclError(f"The broker link broke: {err}"))

    def _on_response(self, payload: Any) -> None:
        """Hand each response to its waiting command; anything else is counted and ignored."""
        try:
            body = json.loads(bytes(payload))
            responses = body["responses"]
            if not isinstance(responses, list):
                raise TypeError("responses is not a list")
        except (ValueError, TypeError, KeyError, RecursionError):
            self.ignored_responses += 1
            return
        for response in responses:
            correlation = response.get("correlationData") if isinstance(response, dict) else None
            future = self._pending.get(correlation) if isinstance(correlation, str) else None
            if future is None or future.done():
                # Another administrator's answer, or one that came after its time-out.
                self.ignored_responses += 1
                continue
            future.set_result(response)

    # -- commands ------------------------------------------------------------------------

    async def command(self, commands: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Send commands in one message (the plugin runs them in order); return the answers.

        Each answer is the plugin's response object: `error` is present when that command
        failed. Raises `BrokerAclError` when the plugin does not answer within the timeout.
        """
        client = self._client
        if client is None:
            raise BrokerAclError("Not connected: use DynSecAdmin as `async with`")
        if self._reader is None or self._reader.done():
            raise BrokerAclError("The admin's link to the broker broke; connect again")
        loop = asyncio.get_running_loop()
        ids: list[str] = []
        body: list[dict[str, Any]] = []
        for item in commands:
            self._counter += 1
            correlation = f"{self._session}:{self._counter}"
            ids.append(correlation)
            self._pending[correlation] = loop.create_future()
            body.append({**item, "correlationData": correlation})
        try:
            try:
                await client.publish(
                    CONTROL_TOPIC,
                    json.dumps({"commands": body}, separators=(",", ":")).encode(),
                    qos=1,
                    timeout=self.config.timeout,
                )
            except MqttError as err:
                raise BrokerAclError(f"Publishing to {CONTROL_TOPIC} failed: {err}") from err
            try:
                async with asyncio.timeout(self.config.timeout):
                    return [await self._pending[c] for c in ids]
            except TimeoutError:
                raise NoDynamicSecurity(
                    f"No answer from the dynamic security plugin in {self.config.timeout:g} s "
                    "(is mosquitto's dynamic security plugin loaded?)"
                ) from None
        finally:
            for correlation in ids:
                future = self._pending.pop(correlation, None)
                if future is not None and not future.done():
                    future.cancel()

    async def check(self) -> dict[str, bool]:
        """Ask the plugin for its default access; `NoDynamicSecurity` if it does not answer.

        Returns the default access per ACL type (`{"publishClientSend": False, ...}`).
        """
        (answer,) = await self.command([{"command": "getDefaultACLAccess"}])
        _raise_on_error(answer)
        acls = answer.get("data", {}).get("acls", []) if isinstance(answer, dict) else []
        return {
            str(acl["acltype"]): bool(acl["allow"])
            for acl in acls
            if isinstance(acl, dict) and "acltype" in acl and "allow" in acl
        }

    async def _ensure(
        self,
        *,
        kind: Kind,
        username: str,
        rules: Sequence[AclRule],
        password: str | None,
        community: str,
        meter: str | None,
        client_id: str | None = None,
    ) -> ConnectionDetails:
        secret = _check_password(password)
        acls = [rule.as_json() for rule in rules]
        roles = [{"rolename": username, "priority": _ALLOW_PRIORITY}]
        text = f"prepaid_meter {kind}"
        create_client: dict[str, Any] = {
            "command": "createClient",
            "username": username,
            "password": secret,
            "textname": text,
            "roles": roles,
        }
        modify_client: dict[str, Any] = {
            "command": "modifyClient",
            "username": username,
            "password": secret,
            "textname": text,
            "roles": roles,
        }
        if client_id is not None:
            create_client["clientid"] = client_id
            modify_client["clientid"] = client_id
        # Create (fails harmlessly if it exists), then set exactly: one round trip, and
        # the same result whether or not the role and the client existed.
        role_new, role_set, client_new, client_set = await self.command(
            [
                {"command": "createRole", "rolename": username, "textname": text, "acls": acls},
                {"command": "modifyRole", "rolename": username, "textname": text, "acls": acls},
                create_client,
                modify_client,
            ]
        )
        _raise_on_error(role_set)
        _raise_on_error(client_set)
        if "error" not in role_new:
            _LOGGER.info("Broker role %s created", username)
        if "error" not in client_new:
            _LOGGER.info("Broker user %s created", username)
        return ConnectionDetails(
            host=self.public_host,
            port=self.public_port,
            tls=self.public_tls,
            username=username,
            password=secret,
            prefix=self.prefix,
            community=community,
            meter=meter,
            kind=kind,
        )

    async def _rotate(
        self, *, kind: Kind, username: str, community: str, meter: str | None
    ) -> ConnectionDetails:
        secret = _check_password(None)
        (answer,) = await self.command(
            [{"command": "setClientPassword", "username": username, "password": secret}]
        )
        if _not_found(answer):
            raise NotProvisioned(f"The broker has no user {username}")
        _raise_on_error(answer)
        _LOGGER.info("Broker user %s has a new password", username)
        return ConnectionDetails(
            host=self.public_host,
            port=self.public_port,
            tls=self.public_tls,
            username=username,
            password=secret,
            prefix=self.prefix,
            community=community,
            meter=meter,
            kind=kind,
        )

    async def _revoke(self, username: str) -> bool:
        client, role = await self.command(
            [
                {"command": "deleteClient", "username": username},
                {"command": "deleteRole", "rolename": username},
            ]
        )
        for answer in (client, role):
            if not _not_found(answer):
                _raise_on_error(answer)
        existed = "error" not in client
        if existed:
            _LOGGER.info("Broker user %s deleted", username)
        return existed

    # -- per household, meter, platform --------------------------------------------------

    async def ensure_household(
        self, community: str, meter: str, *, password: str | None = None
    ) -> ConnectionDetails:
        """Create or update the household user of `meter` (see the module docstring)."""
        return await self._ensure(
            kind="household",
            username=household_username(community, meter),
            rules=household_acls(self.prefix, community, meter),
            password=password,
            community=community,
            meter=meter,
        )

    async def rotate_household(self, community: str, meter: str) -> ConnectionDetails:
        """Give the household user a new password; `NotProvisioned` if there is none."""
        return await self._rotate(
            kind="household",
            username=household_username(community, meter),
            community=community,
            meter=meter,
        )

    async def revoke_household(self, community: str, meter: str) -> bool:
        """Delete the household user and role; return whether the user existed."""
        return await self._revoke(household_username(community, meter))

    async def ensure_meter(
        self,
        community: str,
        meter: str,
        *,
        password: str | None = None,
        client_id: str | None = None,
    ) -> ConnectionDetails:
        """Create or update the meter's own user; `client_id` also binds its MQTT client id.

        Without `client_id` any client id may log in with these credentials ("" clears a
        binding made before).
        """
        if client_id is not None and (len(client_id) > 256 or "\x00" in client_id):
            raise ValueError("A client id is at most 256 characters without NUL")
        return await self._ensure(
            kind="meter",
            username=meter_username(community, meter),
            rules=meter_acls(self.prefix, community, meter),
            password=password,
            community=community,
            meter=meter,
            client_id=client_id,
        )

    async def rotate_meter(self, community: str, meter: str) -> ConnectionDetails:
        """Give the meter's user a new password; `NotProvisioned` if there is none."""
        return await self._rotate(
            kind="meter",
            username=meter_username(community, meter),
            community=community,
            meter=meter,
        )

    async def revoke_meter(self, community: str, meter: str) -> bool:
        """Delete the meter's user and role; return whether the user existed."""
        return await self._revoke(meter_username(community, meter))

    async def ensure_platform(
        self, community: str, *, password: str | None = None
    ) -> ConnectionDetails:
        """Create or update the community platform's user (all of its community's topics)."""
        return await self._ensure(
            kind="platform",
            username=platform_username(community),
            rules=platform_acls(self.prefix, community),
            password=password,
            community=community,
            meter=None,
        )

    async def revoke_platform(self, community: str) -> bool:
        """Delete the platform's user and role; return whether the user existed."""
        return await self._revoke(platform_username(community))


def _not_found(answer: Mapping[str, Any]) -> bool:
    error = answer.get("error")
    return isinstance(error, str) and "not found" in error.lower()


def _raise_on_error(answer: Mapping[str, Any]) -> None:
    error = answer.get("error")
    if error is not None:
        raise DynSecCommandError(str(answer.get("command", "?")), str(error))


async def check_dynamic_security(config: TransportConfig) -> None:
    """Connect as `config`'s user and check that it can administer dynamic security.

    Raises `CannotConnect`, `InvalidAuth` or `NoDynamicSecurity` (then the caller says "this
    broker has no dynamic security: write the ACL by hand, see docs/HOUSEHOLD.md").
    """
    async with DynSecAdmin(config) as admin:
        await admin.check()


__all__ = [
    "CODE_PREFIX",
    "CONTROL_TOPIC",
    "RESPONSE_TOPIC",
    "AclRule",
    "BrokerAclError",
    "ConnectionDetails",
    "DynSecAdmin",
    "DynSecCommandError",
    "InvalidConnectionCode",
    "NoDynamicSecurity",
    "NotProvisioned",
    "check_dynamic_security",
    "household_acls",
    "household_username",
    "meter_acls",
    "meter_username",
    "parse_connection_code",
    "platform_acls",
    "platform_username",
]
