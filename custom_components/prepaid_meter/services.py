"""Actions: money movements (admin only), meter assignment, supply restore, statements.

`household_access` and `revoke_household_access` (operators only) provision and remove a
household's own broker user on the community's broker (mosquitto's dynamic security, with
the community entry's own login as its administrator): the resident gets the connection
details, a one-line code and its QR for the "My household" entry (docs/HOUSEHOLD.md). The
password given out is kept in Home Assistant's storage (`.storage`, private), so asking again
hands out the same code (and sets the user's ACL back to exactly the household's; the broker
drops a connected household for a moment, and it reconnects); `rotate` makes a new password,
and the old code stops working.

The safety watch's actions (operators only): `acknowledge_alarm` (an open episode of a meter,
journaled with who), `set_household_safety` (a household's care opt-in, vacant mark and rule
overrides) and `set_master_meter` (an area's master meter and its households' meters, for the
line loss; without a master meter the area is removed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import dataclasses
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.storage import Store
import voluptuous as vol

from .actions import (
    ATTR_CONFIG_ENTRY_ID,
    ATTR_HOUSEHOLD,
    ATTR_METER_ID,
    account_of,
    async_operator,
    call_runtime,
)
from .const import DOMAIN
from .coordinator import PrepaidRuntime, async_actor, money, refusal
from .dashboard import async_create_dashboards
from .engine.broker_acl import (
    BrokerAclError,
    ConnectionDetails,
    DynSecAdmin,
    NoDynamicSecurity,
)
from .engine.community import CommunityError
from .engine.ledger import EntryKind, SubAccount
from .engine.protocol import METER_ID_RE
from .engine.safety import ALARM_KINDS
from .engine.transport import CannotConnect, InvalidAuth
from .payment_actions import PAYMENT_SERVICES
from .payments import qr_svg
from .reconcile_actions import RECONCILE_SERVICES
from .report_view import async_register_report_view
from .texts import translated_error as _error

ATTR_AMOUNT = "amount"
ATTR_TRANSACTION_ID = "transaction_id"
ATTR_CHANNEL = "channel"
ATTR_SUB_ACCOUNT = "sub_account"
ATTR_REASON = "reason"
ATTR_PERIOD = "period"
ATTR_LABEL = "label"
ATTR_SUPPLY_PROTECTED = "supply_protected"
ATTR_OPERATOR_OVERRIDE = "operator_override"
ATTR_CYCLE = "cycle"
ATTR_USER_ID = "user_id"
ATTR_HOUSEHOLDS = "households"
ATTR_OPERATOR = "operator"
ATTR_OVERWRITE = "overwrite"
ATTR_ROTATE = "rotate"
ATTR_PUBLIC_HOST = "public_host"
ATTR_PUBLIC_PORT = "public_port"
ATTR_PUBLIC_TLS = "public_tls"
ATTR_ALARM = "alarm"
ATTR_CARE = "care"
ATTR_VACANT = "vacant"
ATTR_RULES = "rules"
ATTR_AREA = "area"
ATTR_METERS = "meters"
#: How long the dynamic security plugin may take to answer (a broker without it never does).
ADMIN_TIMEOUT_S: Final = 5.0
ACCESS_STORE_VERSION: Final = 1
CHANNELS = ["wechat", "alipay", "app", "cash", "bank"]
FEE_SUBS = [SubAccount.PROPERTY_FEE.value, SubAccount.PARKING_FEE.value]


def _amount(value: Any) -> Decimal:
    """Read an amount exactly: strings and ints as written, floats through their repr."""
    if isinstance(value, bool):
        raise vol.Invalid("amount")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise vol.Invalid("amount") from None
    if not amount.is_finite():
        raise vol.Invalid("amount")
    return amount


_ENTRY: dict[vol.Marker, Any] = {vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string}
_TXN: dict[vol.Marker, Any] = {
    vol.Required(ATTR_TRANSACTION_ID): vol.All(cv.string, vol.Length(min=1, max=128))
}
TOP_UP_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        vol.Exclusive(ATTR_HOUSEHOLD, "target"): cv.string,
        vol.Exclusive(ATTR_METER_ID, "target"): cv.string,
        vol.Required(ATTR_AMOUNT): _amount,
        **_TXN,
        vol.Optional(ATTR_CHANNEL, default="app"): vol.In(CHANNELS),
    }
)
ADJUST_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        vol.Required(ATTR_HOUSEHOLD): cv.string,
        vol.Optional(ATTR_SUB_ACCOUNT, default=SubAccount.ELECTRICITY.value): vol.In(
            [s.value for s in SubAccount]
        ),
        vol.Required(ATTR_AMOUNT): _amount,
        vol.Required(ATTR_REASON): vol.All(cv.string, vol.Length(min=1, max=200)),
        **_TXN,
    }
)
FEE_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        vol.Required(ATTR_HOUSEHOLD): cv.string,
        vol.Required(ATTR_SUB_ACCOUNT): vol.In(FEE_SUBS),
        vol.Required(ATTR_AMOUNT): _amount,
        vol.Optional(ATTR_PERIOD, default=""): cv.string,
        **_TXN,
    }
)
ASSIGN_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        vol.Required(ATTR_METER_ID): cv.string,
        vol.Required(ATTR_HOUSEHOLD): vol.All(cv.string, vol.Length(min=1, max=64)),
        vol.Optional(ATTR_LABEL): vol.All(cv.string, vol.Length(max=100)),
        vol.Optional(ATTR_SUPPLY_PROTECTED): cv.boolean,
    }
)
RESTORE_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        vol.Required(ATTR_METER_ID): cv.string,
        vol.Optional(ATTR_OPERATOR_OVERRIDE, default=False): cv.boolean,
    }
)
LINK_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        vol.Required(ATTR_HOUSEHOLD): cv.string,
        vol.Required(ATTR_USER_ID): vol.All(cv.string, vol.Length(min=1, max=64)),
    }
)
STATEMENT_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        vol.Required(ATTR_HOUSEHOLD): cv.string,
        vol.Required(ATTR_CYCLE): vol.Match(r"^\d{4}(-\d{2})?$"),
    }
)
DASHBOARDS_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        vol.Optional(ATTR_HOUSEHOLDS): vol.All(cv.ensure_list, [cv.string]),
        vol.Optional(ATTR_OPERATOR, default=True): cv.boolean,
        vol.Optional(ATTR_OVERWRITE, default=False): cv.boolean,
    }
)
HOUSEHOLD_ACCESS_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        vol.Required(ATTR_METER_ID): cv.string,
        vol.Optional(ATTR_ROTATE, default=False): cv.boolean,
        vol.Optional(ATTR_PUBLIC_HOST): vol.All(cv.string, vol.Length(min=1, max=253)),
        vol.Optional(ATTR_PUBLIC_PORT): cv.port,
        vol.Optional(ATTR_PUBLIC_TLS): cv.boolean,
    }
)
REVOKE_ACCESS_SCHEMA = vol.Schema({**_ENTRY, vol.Required(ATTR_METER_ID): cv.string})
ACKNOWLEDGE_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        vol.Required(ATTR_METER_ID): cv.string,
        vol.Required(ATTR_ALARM): vol.In(ALARM_KINDS),
    }
)
HOUSEHOLD_SAFETY_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        vol.Required(ATTR_HOUSEHOLD): cv.string,
        vol.Optional(ATTR_CARE): cv.boolean,
        vol.Optional(ATTR_VACANT): cv.boolean,
        # The engine checks each rule's name and value (SafetyRules.from_options).
        vol.Optional(ATTR_RULES): vol.All(dict, vol.Length(max=50)),
    }
)
MASTER_METER_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        vol.Required(ATTR_AREA): vol.All(cv.string, vol.Length(min=1, max=64)),
        vol.Optional(ATTR_METER_ID): cv.string,
        vol.Optional(ATTR_METERS, default=[]): vol.All(
            cv.ensure_list, [cv.string], vol.Length(max=1000)
        ),
    }
)


async def _top_up(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    actor = await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    account_id = account_of(runtime, call)
    result = await runtime.async_call(
        runtime.service.top_up,
        account_id,
        call.data[ATTR_AMOUNT],
        call.data[ATTR_TRANSACTION_ID],
        call.data[ATTR_CHANNEL],
        actor,
    )
    post = result.results[0]
    return {
        "household": account_id,
        "balance": money(post.balance_after),
        "duplicate": post.duplicate,
    }


def _post_money(
    kind: EntryKind, meta_field: str
) -> Callable[[HomeAssistant, ServiceCall], Awaitable[ServiceResponse]]:
    """Return the handler of an action that posts one money entry of `kind` to a household."""

    async def handle(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
        actor = await async_operator(hass, call)
        runtime = call_runtime(hass, call)
        account_id = account_of(runtime, call)
        result = await runtime.async_call(
            runtime.service.post_money,
            account_id,
            SubAccount(call.data[ATTR_SUB_ACCOUNT]),
            kind,
            call.data[ATTR_AMOUNT],
            call.data[ATTR_TRANSACTION_ID],
            actor=actor,
            meta={meta_field: call.data[meta_field]},
        )
        return {"household": account_id, "balance": money(result.results[0].balance_after)}

    return handle


async def _assign_meter(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    actor = await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    meter_id = call.data[ATTR_METER_ID]
    community = runtime.community
    # A meter heard but never announced (counted, see the unknown-meter repair) is adopted.
    if meter_id not in community.meters and meter_id not in community.unknown_meters:
        raise _error("unknown_meter", meter_id=meter_id)
    household = call.data[ATTR_HOUSEHOLD]
    label = call.data.get(ATTR_LABEL) or household
    info = await runtime.async_call(
        runtime.service.assign,
        meter_id,
        household,
        label,
        supply_protected=call.data.get(ATTR_SUPPLY_PROTECTED),
        actor=actor,
    )
    return {"household": household, "meter_id": meter_id, "label": str(info["label"])}


async def _restore_supply(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    runtime = call_runtime(hass, call)
    meter_id = call.data[ATTR_METER_ID]
    if meter_id not in runtime.community.meters:
        raise _error("unknown_meter", meter_id=meter_id)
    await runtime.async_request_relay(
        meter_id, "on", call.context, operator_override=call.data[ATTR_OPERATOR_OVERRIDE]
    )
    return None


async def _get_statement(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    actor = await async_actor(hass, call.context)
    runtime = call_runtime(hass, call)
    # Who asks comes first: a resident learns nothing of a household that is not theirs,
    # not even whether it exists.
    runtime.community.authorize(actor, "statement", account_id=call.data[ATTR_HOUSEHOLD])
    account_id = account_of(runtime, call)
    statement: dict[str, Any] = await runtime.async_call(
        runtime.service.statement, account_id, call.data[ATTR_CYCLE], actor=actor
    )
    return statement


def _link(linked: bool) -> Callable[[HomeAssistant, ServiceCall], Awaitable[ServiceResponse]]:
    """Return the handler that links (or unlinks) a Home Assistant user to a household."""

    async def handle(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
        actor = await async_operator(hass, call)
        runtime = call_runtime(hass, call)
        account_id = account_of(runtime, call)
        user_id = call.data[ATTR_USER_ID]
        if linked and await hass.auth.async_get_user(user_id) is None:
            raise _error("unknown_user", user_id=user_id)
        request = runtime.service.link_user if linked else runtime.service.unlink_user
        changed = await runtime.async_call(request, account_id, user_id, actor=actor)
        return {"household": account_id, "user_id": user_id, "linked": linked, "changed": changed}

    return handle


async def _create_dashboards(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    done = await async_create_dashboards(
        hass,
        runtime.entry,
        operator=call.data[ATTR_OPERATOR],
        households=call.data.get(ATTR_HOUSEHOLDS),
        overwrite=call.data[ATTR_OVERWRITE],
    )
    return {"dashboards": done}


def _access_store(hass: HomeAssistant, runtime: PrepaidRuntime) -> Store[dict[str, str]]:
    """Return the store of the household passwords given out for a community (meter -> it)."""
    return Store(
        hass,
        ACCESS_STORE_VERSION,
        f"{DOMAIN}.{runtime.community_id}.household_access",
        private=True,
    )


def _admin(runtime: PrepaidRuntime, call: ServiceCall | None = None) -> DynSecAdmin:
    """Return a dynamic security administrator on the community's own broker login."""
    config = dataclasses.replace(runtime.transport.config, timeout=ADMIN_TIMEOUT_S)
    data = call.data if call is not None else {}
    return DynSecAdmin(
        config,
        prefix=runtime.prefix,
        public_host=data.get(ATTR_PUBLIC_HOST),
        public_port=data.get(ATTR_PUBLIC_PORT),
        public_tls=data.get(ATTR_PUBLIC_TLS),
    )


def _broker_error(err: Exception) -> Exception:
    """Return the translated error of a broker administration failure."""
    if isinstance(err, NoDynamicSecurity):
        return _error("no_dynamic_security")
    if isinstance(err, InvalidAuth):
        return _error("broker_admin_refused")
    if isinstance(err, CannotConnect):
        return _error("cannot_connect", error=str(err))
    return _error("broker_acl_error", error=str(err))


def _meter_of(runtime: PrepaidRuntime, call: ServiceCall, *, known: bool) -> str:
    meter_id = str(call.data[ATTR_METER_ID])
    if not METER_ID_RE.fullmatch(meter_id):
        raise _error("unknown_meter", meter_id=meter_id[:80])
    if known and meter_id not in runtime.community.meters:
        raise _error("unknown_meter", meter_id=meter_id)
    return meter_id


async def _household_access(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    """Provision a household's broker user; return its details, code and QR."""
    await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    meter_id = _meter_of(runtime, call, known=True)
    store = _access_store(hass, runtime)
    given: dict[str, str] = await store.async_load() or {}
    password = None if call.data[ATTR_ROTATE] else given.get(meter_id)
    try:
        async with _admin(runtime, call) as admin:
            await admin.check()
            details: ConnectionDetails = await admin.ensure_household(
                runtime.community_id, meter_id, password=password
            )
    except (BrokerAclError, CannotConnect, InvalidAuth) as err:
        raise _broker_error(err) from err
    given[meter_id] = details.password
    await store.async_save(given)
    code = details.code()
    svg = await asyncio.get_running_loop().run_in_executor(None, qr_svg, code)
    return {
        "meter_id": meter_id,
        "host": details.host,
        "port": details.port,
        "tls": details.tls,
        "username": details.username,
        "password": details.password,
        "prefix": details.prefix,
        "community": details.community,
        "code": code,
        "qr_svg": svg,
        "rotated": password is None,
    }


async def _async_revoke(
    hass: HomeAssistant, runtime: PrepaidRuntime, meter_id: str, *, meter: bool
) -> bool:
    """Delete the household's (or, with `meter`, the meter's) broker user of a meter and forget
    the password handed out for it; return whether the user existed.

    Raises the translated error of a broker that could not be reached or refused (then the
    password stays remembered).
    """
    try:
        async with _admin(runtime) as admin:
            await admin.check()
            revoke = admin.revoke_meter if meter else admin.revoke_household
            existed = await revoke(runtime.community_id, meter_id)
    except (BrokerAclError, CannotConnect, InvalidAuth) as err:
        raise _broker_error(err) from err
    store = _access_store(hass, runtime)
    given: dict[str, str] = await store.async_load() or {}
    if given.pop(f"meter:{meter_id}" if meter else meter_id, None) is not None:
        await store.async_save(given)
    return existed


async def async_revoke_given_access(
    hass: HomeAssistant, runtime: PrepaidRuntime, meter_id: str
) -> bool | None:
    """Revoke the household access handed out for a meter (move-out); None if none was.

    Only access this integration handed out (`household_access`) is looked for, so a
    community without dynamic security is not asked at all. Raises the translated error of a
    broker that could not be reached or refused.
    """
    given: dict[str, str] = await _access_store(hass, runtime).async_load() or {}
    if meter_id not in given:
        return None
    return await _async_revoke(hass, runtime, meter_id, meter=False)


async def _revoke_household_access(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    """Delete a household's broker user: its sessions end at once, its code stops working."""
    await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    meter_id = _meter_of(runtime, call, known=False)
    existed = await _async_revoke(hass, runtime, meter_id, meter=False)
    return {"meter_id": meter_id, "revoked": existed}


async def _meter_access(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    """Provision a meter's own broker user; return what the installer sets in the meter.

    It may publish only its own announce, availability, telemetry and ack topics and read
    only its own `cmd`: a meter cannot bill or cut a neighbour. Asking again gives the same
    password (`rotate` a new one: the meter must then be set up again).
    """
    await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    meter_id = _meter_of(runtime, call, known=False)
    store = _access_store(hass, runtime)
    given: dict[str, str] = await store.async_load() or {}
    key = f"meter:{meter_id}"
    password = None if call.data[ATTR_ROTATE] else given.get(key)
    try:
        async with _admin(runtime, call) as admin:
            await admin.check()
            details: ConnectionDetails = await admin.ensure_meter(
                runtime.community_id, meter_id, password=password
            )
    except (BrokerAclError, CannotConnect, InvalidAuth) as err:
        raise _broker_error(err) from err
    given[key] = details.password
    await store.async_save(given)
    return {
        "meter_id": meter_id,
        "host": details.host,
        "port": details.port,
        "tls": details.tls,
        "username": details.username,
        "password": details.password,
        "topic_prefix": f"{details.prefix}/{details.community}/{meter_id}",
        "rotated": password is None,
    }


async def _revoke_meter_access(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    """Delete a meter's broker user (a meter taken out): it is disconnected at once."""
    await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    meter_id = _meter_of(runtime, call, known=False)
    existed = await _async_revoke(hass, runtime, meter_id, meter=True)
    return {"meter_id": meter_id, "revoked": existed}


async def _acknowledge_alarm(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    actor = await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    meter_id = call.data[ATTR_METER_ID]
    kind = call.data[ATTR_ALARM]
    await runtime.async_call(runtime.service.acknowledge_alarm, meter_id, kind, actor=actor)
    return {"meter_id": meter_id, "alarm": kind}


async def _set_household_safety(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    actor = await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    account_id = account_of(runtime, call)
    changed = await runtime.async_call(
        runtime.service.set_household_safety,
        account_id,
        care=call.data.get(ATTR_CARE),
        vacant=call.data.get(ATTR_VACANT),
        rules=call.data.get(ATTR_RULES),
        actor=actor,
    )
    household = runtime.community.households[account_id]
    return {
        "household": account_id,
        "care": household.care,
        "vacant": household.vacant,
        "rules": dict(household.safety_rules),
        "changed": changed,
    }


async def _set_master_meter(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    actor = await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    area = call.data[ATTR_AREA]
    master = call.data.get(ATTR_METER_ID)
    members = list(call.data[ATTR_METERS])
    changed = await runtime.async_call(
        runtime.service.set_master_meter, area, master, members, actor=actor
    )
    return {"area": area, "meter_id": master, "meters": sorted(set(members)), "changed": changed}


SERVICES: dict[
    str,
    tuple[
        vol.Schema,
        Callable[[HomeAssistant, ServiceCall], Awaitable[ServiceResponse]],
        SupportsResponse,
    ],
] = {
    "top_up": (TOP_UP_SCHEMA, _top_up, SupportsResponse.OPTIONAL),
    "adjust": (
        ADJUST_SCHEMA,
        _post_money(EntryKind.ADJUSTMENT, ATTR_REASON),
        SupportsResponse.OPTIONAL,
    ),
    "charge_fee": (FEE_SCHEMA, _post_money(EntryKind.FEE, ATTR_PERIOD), SupportsResponse.OPTIONAL),
    "pay_fee": (FEE_SCHEMA, _post_money(EntryKind.PAYMENT, ATTR_PERIOD), SupportsResponse.OPTIONAL),
    "assign_meter": (ASSIGN_SCHEMA, _assign_meter, SupportsResponse.OPTIONAL),
    "restore_supply": (RESTORE_SCHEMA, _restore_supply, SupportsResponse.NONE),
    "get_statement": (STATEMENT_SCHEMA, _get_statement, SupportsResponse.ONLY),
    "link_user": (LINK_SCHEMA, _link(True), SupportsResponse.OPTIONAL),
    "unlink_user": (LINK_SCHEMA, _link(False), SupportsResponse.OPTIONAL),
    "create_dashboards": (DASHBOARDS_SCHEMA, _create_dashboards, SupportsResponse.OPTIONAL),
    "household_access": (HOUSEHOLD_ACCESS_SCHEMA, _household_access, SupportsResponse.ONLY),
    "meter_access": (HOUSEHOLD_ACCESS_SCHEMA, _meter_access, SupportsResponse.ONLY),
    "revoke_meter_access": (REVOKE_ACCESS_SCHEMA, _revoke_meter_access, SupportsResponse.ONLY),
    "revoke_household_access": (
        REVOKE_ACCESS_SCHEMA,
        _revoke_household_access,
        SupportsResponse.OPTIONAL,
    ),
    "acknowledge_alarm": (ACKNOWLEDGE_SCHEMA, _acknowledge_alarm, SupportsResponse.OPTIONAL),
    "set_household_safety": (
        HOUSEHOLD_SAFETY_SCHEMA,
        _set_household_safety,
        SupportsResponse.OPTIONAL,
    ),
    "set_master_meter": (MASTER_METER_SCHEMA, _set_master_meter, SupportsResponse.OPTIONAL),
    # Orders, unmatched payments, move-out and the monthly report: payment_actions.py.
    **PAYMENT_SERVICES,
    # Statements of the providers against the ledger: reconcile_actions.py.
    **RECONCILE_SERVICES,
}


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register every action of the integration, and the report's download view."""
    async_register_report_view(hass)
    for name, (schema, handler, supports) in SERVICES.items():

        async def run(
            call: ServiceCall,
            handler: Callable[[HomeAssistant, ServiceCall], Awaitable[ServiceResponse]] = handler,
        ) -> ServiceResponse:
            try:
                return await handler(hass, call)
            except CommunityError as err:
                raise refusal(hass, err) from err

        # Home Assistant 2026 types `schema` as a probatio schema, what `voluptuous` is there.
        hass.services.async_register(
            DOMAIN,
            name,
            run,
            schema=schema,  # type: ignore[arg-type, unused-ignore]
            supports_response=supports,
        )
