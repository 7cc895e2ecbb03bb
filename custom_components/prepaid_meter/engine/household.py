"""A household's own view of its account, over the community broker (resident mode).

A household logs in with its own broker user (engine/broker_acl.py: it may read only its
meter's `account` and `telemetry` topics and publish only its `request` topic) and:

- reads the retained `account` topic: the state is there at once on connect, then follows
  every change (`HouseholdView`, frozen; money and energy as `Decimal`);
- optionally reads its meter's `telemetry` (`protocol.Reading`);
- asks for a restore: `{"v": 1, "id": ..., "op": "restore", "ts": ...}` on
  `<prefix>/<community>/<meter>/request` (QoS 1, not retained); the community answers in the
  account's `request` member, `{"id": ..., "ok": true}` or `{"id": ..., "ok": false,
  "reason": "<reason key>"}`, for the last request it answered.

`HouseholdClient(details, listener)` runs on `transport.MqttTransport` (reconnects with
backoff; subscriptions kept across reconnects). `listener(view)` is called once per change of
the account state. Nothing the broker delivers can crash it: a payload that is not an account
is counted in `malformed` and ignored (the last good state stays); an optional field that is
not valid reads as absent and is named in `HouseholdView.ignored`; a topic that is not the
household's own is counted in `foreign` and ignored.

`staleness()` is the number of seconds since the community last said anything: now minus the
account's `updated` time, which the community stamps with its own clock on every publish (a
retained message delivered at connect is not news; its `updated` says how old it is).

For the community side: `parse_request(payload)` reads a request (or returns `Rejected`),
`request_answer(...)` builds the account's `request` member.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
import contextlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
import json
import logging
import re
import ssl
import time
from typing import Any, Final, Literal, Self
import uuid

import aiomqtt
from aiomqtt import MqttError

from .broker_acl import ConnectionDetails, _is_failure
from .protocol import (
    MAX_PAYLOAD_BYTES,
    MAX_TS,
    PROTOCOL_VERSION,
    Reading,
    Rejected,
    RelayState,
    load_json,
    parse_telemetry,
    topic_for,
)
from .transport import (
    Backoff,
    CannotConnect,
    InvalidAuth,
    MqttTransport,
    TransportConfig,
    _is_auth_error,
    build_ssl_context,
)

_LOGGER = logging.getLogger(__name__)

REQUEST_CHANNEL: Final = "request"
REQUEST_OPS: Final = frozenset({"restore"})
REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
REASON_RE: Final = re.compile(r"[a-z0-9_]{1,64}")
# Amounts and energy beyond this are garbage, not an account.
MAX_MAGNITUDE: Final = Decimal("1e12")
_DECIMAL_RE: Final = re.compile(r"-?[0-9]{1,13}(\.[0-9]{1,12})?")
_DECIMAL_FIELDS: Final = (
    "cycle_kwh",
    "price",
    "days_left",
    "today_kwh",
    "today_cost",
    "month_kwh",
    "month_cost",
)


class AccessRefused(Exception):
    """The broker refused the household's subscription (wrong meter or community, or ACL)."""


class _Bad(Exception):
    """A field that is not valid (internal)."""


# -- payloads -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestAnswer:
    """The community's answer to the last request it handled."""

    id: str
    ok: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HouseholdView:
    """The household's account as the community last published it."""

    balance: Decimal
    currency: str
    updated: int
    low: bool | None = None
    relay: RelayState | None = None
    cycle: str | None = None
    cycle_kwh: Decimal | None = None
    tier: int | None = None
    price: Decimal | None = None
    reason: str | None = None
    days_left: Decimal | None = None
    today_kwh: Decimal | None = None
    today_cost: Decimal | None = None
    month_kwh: Decimal | None = None
    month_cost: Decimal | None = None
    request: RequestAnswer | None = None
    #: Optional fields that were present but not valid (read as absent).
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreRequest:
    """A household's request, as the community reads it from the `request` topic."""

    id: str
    op: Literal["restore"]
    ts: int


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise _Bad("a boolean, not a number")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str) and _DECIMAL_RE.fullmatch(value.strip()):
        try:
            number = Decimal(value.strip())
        except InvalidOperation as err:  # pragma: no cover - the pattern admits only numbers
            raise _Bad("not a number") from err
    else:
        raise _Bad("not a number")
    if not number.is_finite() or abs(number) > MAX_MAGNITUDE:
        raise _Bad("out of range")
    return number


def _text(value: Any, max_len: int, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise _Bad("not a short text")
    if pattern is not None and not pattern.fullmatch(value):
        raise _Bad("not a key")
    return value


def _int(value: Any, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise _Bad("not an integer in range")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("not true or false")
    return value


def _relay(value: Any) -> RelayState:
    if value == "on":
        return "on"
    if value == "off":
        return "off"
    raise _Bad("not on or off")


def _answer(value: Any) -> RequestAnswer:
    if not isinstance(value, dict):
        raise _Bad("not an object")
    reason = value.get("reason")
    return RequestAnswer(
        id=_text(value.get("id"), 128, REQUEST_ID_RE),
        ok=_bool(value.get("ok")),
        reason=None if reason is None else _text(reason, 64, REASON_RE),
    )


_OPTIONAL: Final[dict[str, Callable[[Any], Any]]] = {
    "low": _bool,
    "relay": _relay,
    "cycle": lambda v: _text(v, 32),
    "tier": lambda v: _int(v, 0, 1000),
    "reason": lambda v: _text(v, 64, REASON_RE),
    "request": _answer,
    **dict.fromkeys(_DECIMAL_FIELDS, _decimal),
}


def parse_account(payload: bytes | bytearray | str) -> HouseholdView | Rejected:
    """Parse an `account` payload; never raises.

    `balance`, `currency` and `updated` are required (else `Rejected`); each optional field
    that is present but not valid reads as absent (named in `ignored`); unknown fields are
    ignored.
    """
    try:
        body = load_json(payload, MAX_PAYLOAD_BYTES)
    except Exception as err:  # protocol.load_json's decoding errors
        return Rejected(getattr(err, "kind", "malformed_json"), str(err)[:200])
    if not isinstance(body, dict):
        return Rejected("not_object", f"a JSON {type(body).__name__}, not an object")
    version = body.get("v", PROTOCOL_VERSION)
    if type(version) is not int or version != PROTOCOL_VERSION:
        return Rejected("unsupported_version", f"v={str(version)[:20]}")
    try:
        balance = _decimal(body.get("balance"))
        currency = _text(body.get("currency"), 8)
        updated = _int(body.get("updated"), 0, MAX_TS)
    except _Bad as err:
        return Rejected("invalid", f"balance, currency or updated: {err}")
    fields: dict[str, Any] = {}
    ignored: list[str] = []
    for name, parse in _OPTIONAL.items():
        value = body.get(name)
        if value is None:
            continue
        try:
            fields[name] = parse(value)
        except _Bad:
            ignored.append(name)
    return HouseholdView(
        balance=balance, currency=currency, updated=updated, ignored=tuple(ignored), **fields
    )


def check_request_id(request_id: str) -> str:
    """Return the request id if it is 1-128 of `[A-Za-z0-9_.:-]`; raise `ValueError` if not."""
    if not isinstance(request_id, str) or not REQUEST_ID_RE.fullmatch(request_id):
        raise ValueError("A request id is 1-128 characters of A-Z a-z 0-9 _ . : -")
    return request_id


def request_payload(request_id: str, ts: int, op: str = "restore") -> bytes:
    """Return a request's payload: `{"v": 1, "id": ..., "op": "restore", "ts": ...}`."""
    check_request_id(request_id)
    if op not in REQUEST_OPS:
        raise ValueError(f"Unknown request {op!r}")
    if type(ts) is not int or not 0 <= ts <= MAX_TS:
        raise ValueError("ts is UNIX seconds")
    body = {"v": PROTOCOL_VERSION, "id": request_id, "op": op, "ts": ts}
    return json.dumps(body, separators=(",", ":")).encode()


def parse_request(payload: bytes | bytearray | str) -> RestoreRequest | Rejected:
    """Parse a household's request (for the community); never raises."""
    try:
        body = load_json(payload, 1024)
    except Exception as err:  # protocol.load_json's decoding errors
        return Rejected(getattr(err, "kind", "malformed_json"), str(err)[:200])
    if not isinstance(body, dict):
        return Rejected("not_object", f"a JSON {type(body).__name__}, not an object")
    version = body.get("v", PROTOCOL_VERSION)
    if type(version) is not int or version != PROTOCOL_VERSION:
        return Rejected("unsupported_version", f"v={str(version)[:20]}")
    request_id = body.get("id")
    if not isinstance(request_id, str) or not REQUEST_ID_RE.fullmatch(request_id):
        return Rejected("invalid", "id is not 1-128 characters of [A-Za-z0-9_.:-]")
    if body.get("op") != "restore":
        return Rejected("invalid", f"unknown op {str(body.get('op'))[:20]!r}")
    ts = body.get("ts")
    if type(ts) is not int or not 0 <= ts <= MAX_TS:
        return Rejected("invalid", "ts is not UNIX seconds")
    return RestoreRequest(id=request_id, op="restore", ts=ts)


def request_answer(request_id: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
    """Return the account's `request` member for an answered request."""
    check_request_id(request_id)
    if ok:
        return {"id": request_id, "ok": True}
    if reason is None or not REASON_RE.fullmatch(reason):
        raise ValueError("A refusal has a reason key of [a-z0-9_]{1,64}")
    return {"id": request_id, "ok": False, "reason": reason}


# -- the client ---------------------------------------------------------------------------


def _details_config(
    details: ConnectionDetails, client_id: str, **options: Any
) -> tuple[TransportConfig, str]:
    if details.meter is None:
        raise ValueError("A household's connection details name its meter")
    return details.transport_config(client_id, **options), details.meter


async def check_household(
    details: ConnectionDetails,
    *,
    wait: float = 2.0,
    link_timeout: float = 10.0,
    ca_file: str | None = None,
) -> HouseholdView | None:
    """Log in once and read the retained account (for a config flow).

    Returns the account state, or None when the community has published none within `wait`
    seconds. Raises `CannotConnect`, `InvalidAuth`, or `AccessRefused` when the broker
    refuses the subscription (these credentials are not this meter's).
    """
    config, meter = _details_config(
        details,
        f"prepaid-household-check-{uuid.uuid4().hex[:8]}",
        clean_session=True,
        timeout=link_timeout,
        ca_file=ca_file,
    )
    topic = topic_for(details.prefix, details.community, meter, "account")
    try:
        context = await asyncio.to_thread(build_ssl_context, config)
    except (OSError, ssl.SSLError, ValueError) as err:
        raise CannotConnect(f"Cannot load the TLS files: {err}") from err
    client = aiomqtt.Client(
        config.host,
        config.port,
        username=config.username,
        password=config.password,
        identifier=config.client_id,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=True,
        timeout=link_timeout,
        tls_context=context,
        logger=_LOGGER,
    )
    try:
        async with asyncio.timeout(link_timeout + wait + 5), client:
            granted = await client.subscribe(topic, qos=1, timeout=link_timeout)
            if not granted or any(_is_failure(g) for g in granted):
                raise AccessRefused(f"The broker refused the subscription to {topic}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    async for message in client.messages:
                        view = parse_account(message.payload)
                        if isinstance(view, HouseholdView):
                            return view
    except MqttError as err:
        if _is_auth_error(err):
            raise InvalidAuth("The broker refused the user name or password") from err
        raise CannotConnect(f"Cannot connect to {config.host}:{config.port}: {err}") from err
    except (OSError, ssl.SSLError, TimeoutError) as err:
        raise CannotConnect(f"Cannot connect to {config.host}:{config.port}: {err}") from err
    return None


class HouseholdClient:
    """One household's link to its community (see the module docstring)."""

    def __init__(
        self,
        details: ConnectionDetails,
        listener: Callable[[HouseholdView], None] | None = None,
        *,
        telemetry: bool = False,
        on_reading: Callable[[Reading], None] | None = None,
        on_connection: Callable[[bool], None] | None = None,
        client_id: str | None = None,
        ca_file: str | None = None,
        timeout: float = 10.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Prepare the client; nothing connects until `start()`."""
        config, meter = _details_config(
            details,
            client_id or f"prepaid-household-{details.community}-{uuid.uuid4().hex[:12]}",
            clean_session=True,
            ca_file=ca_file,
            timeout=timeout,
        )
        self.details = details
        self.meter = meter
        self.account_topic = topic_for(details.prefix, details.community, meter, "account")
        self.telemetry_topic = topic_for(details.prefix, details.community, meter, "telemetry")
        self.request_topic = topic_for(details.prefix, details.community, meter, REQUEST_CHANNEL)
        topics = [self.account_topic] + ([self.telemetry_topic] if telemetry else [])
        self._listener = listener
        self._on_reading = on_reading
        self._on_connection = on_connection
        self._clock = clock
        self._transport = MqttTransport(
            config,
            self._handle,
            topics,
            on_connected=lambda: self._connection(True),
            on_disconnected=lambda _reason: self._connection(False),
            backoff=backoff,
        )
        self._view: HouseholdView | None = None
        self._reading: Reading | None = None
        self._changed = asyncio.Event()
        self.malformed: Counter[str] = Counter()
        self.foreign = 0
        self.sent_requests: list[str] = []

    # -- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background (reconnects with backoff until `stop()`)."""
        await self._transport.start()

    async def wait_connected(self) -> None:
        """Wait until connected and subscribed (wrap it in `asyncio.timeout`)."""
        await self._transport.wait_connected()

    async def stop(self) -> None:
        """Disconnect; leaves no task behind."""
        await self._transport.stop()

    async def __aenter__(self) -> Self:
        """Start; the connection comes up in the background."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop."""
        await self.stop()

    # -- state ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Return whether the link to the broker is up."""
        return self._transport.connected

    @property
    def view(self) -> HouseholdView | None:
        """Return the account state last received (None before the first)."""
        return self._view

    @property
    def reading(self) -> Reading | None:
        """Return the meter's last reading (only with `telemetry=True`)."""
        return self._reading

    @property
    def last_answer(self) -> RequestAnswer | None:
        """Return the community's answer to the last request it handled."""
        return None if self._view is None else self._view.request

    def staleness(self, now: float | None = None) -> float | None:
        """Return seconds since the community last published (None before any account)."""
        if self._view is None:
            return None
        now = self._clock() if now is None else now
        return max(0.0, now - self._view.updated)

    def is_stale(self, limit_s: float, now: float | None = None) -> bool:
        """Return whether the community has said nothing for more than `limit_s` seconds."""
        age = self.staleness(now)
        return age is None or age > limit_s

    # -- requests ------------------------------------------------------------------------

    async def request_restore(self, request_id: str | None = None) -> str:
        """Publish a restore request; return its id.

        Raises `ValueError` for an id that is not valid (nothing is sent), and
        `transport.NotConnected` / `TransportError` when it could not be delivered.
        """
        request_id = check_request_id(request_id) if request_id else uuid.uuid4().hex
        payload = request_payload(request_id, int(self._clock()))
        await self._transport.publish(self.request_topic, payload, qos=1, retain=False)
        self.sent_requests.append(request_id)
        return request_id

    async def wait_answer(self, request_id: str) -> RequestAnswer:
        """Wait until the community answers `request_id` (wrap it in `asyncio.timeout`)."""
        while True:
            answer = self.last_answer
            if answer is not None and answer.id == request_id:
                return answer
            event = self._changed
            await event.wait()

    # -- messages ------------------------------------------------------------------------

    def _connection(self, up: bool) -> None:
        if up:
            _LOGGER.debug("Household %s connected to the community broker", self.meter)
        if self._on_connection is not None:
            self._on_connection(up)

    def _handle(self, topic: str, payload: bytes) -> None:
        if topic == self.account_topic:
            self._account(payload)
        elif topic == self.telemetry_topic:
            self._telemetry(payload)
        else:
            self.foreign += 1

    def _account(self, payload: bytes) -> None:
        view = parse_account(payload)
        if isinstance(view, Rejected):
            self.malformed["account"] += 1
            total = sum(self.malformed.values())
            if total <= 10 or total % 1000 == 0:
                _LOGGER.warning(
                    "Ignored an account message for %s that is not valid (%s: %s); "
                    "%d ignored so far",
                    self.meter,
                    view.kind,
                    view.detail,
                    total,
                )
            return
        if view == self._view:
            return
        self._view = view
        self._changed.set()
        self._changed = asyncio.Event()
        if self._listener is not None:
            self._notify(self._listener, view)

    def _telemetry(self, payload: bytes) -> None:
        reading = parse_telemetry(self.meter, payload)
        if isinstance(reading, Rejected):
            self.malformed["telemetry"] += 1
            return
        self._reading = reading
        if self._on_reading is not None:
            self._notify(self._on_reading, reading)

    @staticmethod
    def _notify[T](callback: Callable[[T], None], value: T) -> None:
        try:
            callback(value)
        except Exception:
            _LOGGER.exception("A household listener failed")


__all__ = [
    "REQUEST_CHANNEL",
    "AccessRefused",
    "HouseholdClient",
    "HouseholdView",
    "RequestAnswer",
    "RestoreRequest",
    "check_household",
    "check_request_id",
    "parse_account",
    "parse_request",
    "request_answer",
    "request_payload",
]
