"""Payments in Home Assistant: the providers' webhook, orders with their QR code, repairs.

One `CommunityPayments` per community entry whose options configure payments (the options
flow's "Payments" step stores them under `entry.options["payments"]`):

- a `PaymentDesk` (engine/orders.py) on the community's ledger, its blocking calls in the
  executor;
- the merchant keys, read from files in the configuration folder (in the executor). A key that
  is missing or wrong refuses the options form (`validate_payment_options`) and, at setup,
  leaves that provider off with a repair saying which file and why;
- ONE webhook (`/api/webhook/<id>`, POST, reachable from the internet: the providers post
  from their servers), its id generated once and kept in the entry's data. The handler tells
  WeChat Pay (`Wechatpay-*` headers, JSON) from Alipay (a form), verifies the message with
  engine/payments.py, hands the notice to the desk and posts what it decides with
  `post_outcome`, then answers as each provider expects (WeChat Pay: 204 without a body or an
  error JSON; Alipay: `success` or `fail`). A refused message (bad signature, stale, unknown
  merchant, amount mismatch...) writes nothing to a balance, is logged without any secret,
  counted (the desk keeps the counts in the ledger: diagnostics) and, repeated
  `REJECT_REPAIR_AFTER` times within `REJECT_WINDOW_S`, raised as a repair. An unmatched
  payment (an expired or unknown order...) is a repair naming it until an operator resolves
  it (`resolve_unmatched_payment`).
- At start, what a crash left due (`pending_credits`) is posted before anything else.
- Each credited payment or refund fires `prepaid_meter_payment` on the bus (household,
  amount to the cent, provider, order, purpose, kind) for the logbook and automations.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
import hashlib
import io
import logging
from pathlib import Path
import time
from typing import TYPE_CHECKING, Any, Final, Literal

from aiohttp import ClientError, ClientTimeout, web
from homeassistant.components import webhook
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.data_entry_flow import section
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.network import NoURLAvailableError, get_url
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from homeassistant.setup import async_setup_component
from homeassistant.util.hass_dict import HassKey
import voluptuous as vol

from .const import DOMAIN
from .engine.actor import Actor
from .engine.community import CommunityError
from .engine.ledger import PayNotice
from .engine.orders import (
    Credit,
    Order,
    OrderRefused,
    PaymentDesk,
    Retry,
    Reverse,
    Unmatched,
    post_outcome,
)
from .engine.payments import (
    ALIPAY_GATEWAY,
    WECHAT_API,
    AlipayMerchant,
    KeyProblem,
    PaymentNotice,
    PaymentRejected,
    Provider,
    WechatMerchant,
    alipay_answer,
    alipay_notification,
    alipay_precreate_request,
    alipay_precreate_response,
    certificate_serial,
    load_apiv3_key,
    load_private_key,
    load_public_key,
    parse_alipay_form,
    wechat_answer,
    wechat_native_request,
    wechat_native_response,
    wechat_notification,
)
from .texts import translated_error

if TYPE_CHECKING:
    from .coordinator import PrepaidConfigEntry, PrepaidRuntime

_LOGGER = logging.getLogger(__package__)

__all__ = [
    "CONF_PAYMENTS",
    "DATA_WEBHOOK_ID",
    "EVENT_PAYMENT",
    "PAYMENTS",
    "CommunityPayments",
    "PaymentSettings",
    "PaymentSetupError",
    "async_setup_payments",
    "async_unload_payments",
    "ensure_webhook_id",
    "load_merchants",
    "payment_form_input",
    "payment_form_schema",
    "payment_form_values",
    "payments_of",
    "qr_svg",
    "validate_payment_options",
    "webhook_url",
]

#: The entry option holding the payment settings (a mapping; see `PaymentSettings`).
CONF_PAYMENTS: Final = "payments"
#: The entry data key of the webhook id (generated once, kept).
DATA_WEBHOOK_ID: Final = "payment_webhook_id"
EVENT_PAYMENT: Final = f"{DOMAIN}_payment"


def signal_order(entry_id: str) -> str:
    """Return the dispatcher signal sent with the household when one of its orders got its
    payment code (the household's payment code image shows it: payment_panel.py)."""
    return f"{DOMAIN}_{entry_id}_order"


# The payment settings' keys (inside options["payments"]).
CONF_WECHAT: Final = "wechat"  # on/off
CONF_WECHAT_MCHID: Final = "wechat_mchid"
CONF_WECHAT_APPID: Final = "wechat_appid"
CONF_WECHAT_SERIAL: Final = "wechat_serial_no"  # our merchant certificate's serial
CONF_WECHAT_KEY: Final = "wechat_private_key"  # file: our merchant private key
CONF_WECHAT_APIV3: Final = "wechat_apiv3_key"  # file: the APIv3 key
CONF_WECHAT_PLATFORM: Final = "wechat_platform_cert"  # file: platform certificate or key
CONF_WECHAT_PLATFORM_SERIAL: Final = "wechat_platform_serial"  # needed with a bare public key
CONF_WECHAT_URL: Final = "wechat_url"
CONF_ALIPAY: Final = "alipay"  # on/off
CONF_ALIPAY_APP_ID: Final = "alipay_app_id"
CONF_ALIPAY_SELLER_ID: Final = "alipay_seller_id"
CONF_ALIPAY_KEY: Final = "alipay_private_key"  # file: our application private key
CONF_ALIPAY_PUBLIC: Final = "alipay_public_key"  # file: Alipay's public key
CONF_ALIPAY_URL: Final = "alipay_url"
CONF_PUBLIC_URL: Final = "public_url"  # the address the providers post to (else HA's own)
CONF_MAX_PAYMENT: Final = "max_payment"
CONF_MAX_PER_DAY: Final = "max_per_day"
CONF_ORDER_MINUTES: Final = "order_minutes"

#: Which file setting each provider's key problems name.
WECHAT_FILES: Final = (CONF_WECHAT_KEY, CONF_WECHAT_APIV3, CONF_WECHAT_PLATFORM)
ALIPAY_FILES: Final = (CONF_ALIPAY_KEY, CONF_ALIPAY_PUBLIC)
DEFAULT_MAX_PAYMENT: Final = Decimal(2000)
DEFAULT_MAX_PER_DAY: Final = Decimal(5000)
DEFAULT_ORDER_MINUTES: Final = 15
#: A refused message repeated this often within REJECT_WINDOW_S is raised as a repair.
REJECT_REPAIR_AFTER: Final = 5
REJECT_WINDOW_S: Final = 3600.0
PROVIDER_TIMEOUT_S: Final = 15.0
_CENT: Final = Decimal("0.01")
#: What the payer's phone shows the order is for (the providers' own apps are Chinese).
_SUBJECTS: Final = {
    "zh": {"electricity": "电费", "property_fee": "物业费", "parking_fee": "停车费"},
    "en": {
        "electricity": "Electricity credit",
        "property_fee": "Property fee",
        "parking_fee": "Parking fee",
    },
}

PAYMENTS: HassKey[dict[str, CommunityPayments]] = HassKey(f"{DOMAIN}_payments")


# ---------------------------------------------------------------------------- settings


class PaymentSetupError(Exception):
    """A payment setting that cannot be used: the form field, a translation key, a sentence."""

    def __init__(self, field_name: str, key: str, message: str) -> None:
        """Keep which field, why (a translation key) and the sentence (no secret in it)."""
        super().__init__(message)
        self.field = field_name
        self.key = key
        self.message = message


def _decimal(value: object, default: Decimal) -> Decimal:
    if value in (None, ""):
        return default
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return default
    return amount if amount.is_finite() else default


@dataclass(frozen=True, slots=True)
class PaymentSettings:
    """The payment options of a community (all strings as stored)."""

    wechat: bool = False
    alipay: bool = False
    values: Mapping[str, Any] = field(default_factory=dict)
    max_payment: Decimal = DEFAULT_MAX_PAYMENT
    max_per_day: Decimal = DEFAULT_MAX_PER_DAY
    order_minutes: int = DEFAULT_ORDER_MINUTES

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PaymentSettings:
        """Read the entry's options (`options["payments"]`); nothing configured: both off."""
        raw = options.get(CONF_PAYMENTS)
        values: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        try:
            minutes = int(values.get(CONF_ORDER_MINUTES, DEFAULT_ORDER_MINUTES))
        except (TypeError, ValueError):
            minutes = DEFAULT_ORDER_MINUTES
        return cls(
            wechat=bool(values.get(CONF_WECHAT, False)),
            alipay=bool(values.get(CONF_ALIPAY, False)),
            values=dict(values),
            max_payment=_decimal(values.get(CONF_MAX_PAYMENT), DEFAULT_MAX_PAYMENT),
            max_per_day=_decimal(values.get(CONF_MAX_PER_DAY), DEFAULT_MAX_PER_DAY),
            order_minutes=max(1, minutes),
        )

    @property
    def enabled(self) -> bool:
        """Return whether any provider is on."""
        return self.wechat or self.alipay

    def text(self, key: str) -> str:
        """Return a setting as stripped text ("" when unset)."""
        value = self.values.get(key)
        return "" if value is None else str(value).strip()

    @property
    def wechat_url(self) -> str:
        """Return WeChat Pay's API base URL (the real one unless set)."""
        return self.text(CONF_WECHAT_URL) or WECHAT_API

    @property
    def alipay_url(self) -> str:
        """Return Alipay's gateway URL (the real one unless set)."""
        return self.text(CONF_ALIPAY_URL) or ALIPAY_GATEWAY


@dataclass(frozen=True, slots=True)
class Merchants:
    """The merchants whose keys loaded; the problems of those that did not."""

    wechat: WechatMerchant | None = None
    alipay: AlipayMerchant | None = None
    problems: Mapping[str, PaymentSetupError] = field(default_factory=dict)


def _read(resolve: Callable[[str], str], settings: PaymentSettings, key: str) -> bytes:
    """Read one key file named by a setting (a path in the configuration folder)."""
    name = settings.text(key)
    if not name:
        raise PaymentSetupError(key, "key_missing", "No file is named.")
    path = Path(resolve(name))
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PaymentSetupError(key, "key_missing", f"The file {name} does not exist.") from None
    except OSError as err:
        raise PaymentSetupError(
            key, "key_unreadable", f"The file {name} cannot be read ({err.strerror})."
        ) from None


def _required(settings: PaymentSettings, key: str) -> str:
    value = settings.text(key)
    if not value or len(value) > 64:
        raise PaymentSetupError(key, "payment_id_missing", "This id is required.")
    return value


def _wechat(resolve: Callable[[str], str], settings: PaymentSettings) -> WechatMerchant:
    mchid = _required(settings, CONF_WECHAT_MCHID)
    appid = _required(settings, CONF_WECHAT_APPID)
    serial = _required(settings, CONF_WECHAT_SERIAL)
    keys: dict[str, Any] = {}
    for key, load in (
        (CONF_WECHAT_KEY, lambda data: load_private_key(data, "The merchant private key")),
        (CONF_WECHAT_APIV3, load_apiv3_key),
        (CONF_WECHAT_PLATFORM, lambda data: load_public_key(data, "The platform certificate")),
    ):
        data = _read(resolve, settings, key)
        try:
            keys[key] = load(data)
        except KeyProblem as err:
            raise PaymentSetupError(key, err.key, err.message) from None
        if key == CONF_WECHAT_PLATFORM:
            platform_serial = settings.text(CONF_WECHAT_PLATFORM_SERIAL)
            if b"-----BEGIN CERTIFICATE-----" in data:
                platform_serial = platform_serial or certificate_serial(data)
            if not platform_serial:
                raise PaymentSetupError(
                    CONF_WECHAT_PLATFORM_SERIAL,
                    "platform_serial_missing",
                    "A platform public key (not a certificate) needs its serial or key id.",
                )
    return WechatMerchant(
        mchid=mchid,
        appid=appid,
        serial_no=serial,
        private_key=keys[CONF_WECHAT_KEY],
        apiv3_key=keys[CONF_WECHAT_APIV3],
        platform_keys={platform_serial: keys[CONF_WECHAT_PLATFORM]},
    )


def _alipay(resolve: Callable[[str], str], settings: PaymentSettings) -> AlipayMerchant:
    app_id = _required(settings, CONF_ALIPAY_APP_ID)
    seller_id = _required(settings, CONF_ALIPAY_SELLER_ID)
    try:
        private = load_private_key(
            _read(resolve, settings, CONF_ALIPAY_KEY), "The application private key"
        )
    except KeyProblem as err:
        raise PaymentSetupError(CONF_ALIPAY_KEY, err.key, err.message) from None
    try:
        public = load_public_key(
            _read(resolve, settings, CONF_ALIPAY_PUBLIC), "Alipay's public key"
        )
    except KeyProblem as err:
        raise PaymentSetupError(CONF_ALIPAY_PUBLIC, err.key, err.message) from None
    return AlipayMerchant(
        app_id=app_id, seller_id=seller_id, private_key=private, alipay_public_key=public
    )


def load_merchants(resolve: Callable[[str], str], settings: PaymentSettings) -> Merchants:
    """Load the keys of each provider that is on (blocking: reads files).

    `resolve` turns a name into a path in the configuration folder (`hass.config.path`). A
    provider whose keys cannot be used is left out, its problem kept under its name.
    """
    wechat: WechatMerchant | None = None
    alipay: AlipayMerchant | None = None
    problems: dict[str, PaymentSetupError] = {}
    if settings.wechat:
        try:
            wechat = _wechat(resolve, settings)
        except PaymentSetupError as err:
            problems["wechat"] = err
    if settings.alipay:
        try:
            alipay = _alipay(resolve, settings)
        except PaymentSetupError as err:
            problems["alipay"] = err
    return Merchants(wechat, alipay, problems)


def _check_limits(settings: PaymentSettings) -> None:
    for key, value in (
        (CONF_MAX_PAYMENT, settings.max_payment),
        (CONF_MAX_PER_DAY, settings.max_per_day),
    ):
        if value <= 0 or value != value.quantize(_CENT):
            raise PaymentSetupError(key, "invalid_limit", f"{value} is not a positive amount.")
    if settings.max_per_day < settings.max_payment:
        raise PaymentSetupError(
            CONF_MAX_PER_DAY, "daily_below_payment", "The daily limit is below one payment's."
        )
    if settings.order_minutes > 120:
        raise PaymentSetupError(
            CONF_ORDER_MINUTES, "invalid_limit", "An order lives at most 120 minutes."
        )
    for key in (CONF_WECHAT_URL, CONF_ALIPAY_URL, CONF_PUBLIC_URL):
        url = settings.text(key)
        if url and not url.startswith(("https://", "http://")):
            raise PaymentSetupError(key, "invalid_url", f"{url[:80]} is not an http(s) address.")


def validate_payment_options(
    resolve: Callable[[str], str], values: Mapping[str, Any]
) -> dict[str, Any]:
    """Check the payment settings as the form gives them (blocking: reads the key files).

    Return them as stored (amounts as decimal strings, minutes whole), or raise
    `PaymentSetupError` naming the first field that cannot be used.
    """
    stored: dict[str, Any] = {}
    for key, raw in values.items():
        value = raw.strip() if isinstance(raw, str) else raw
        if value not in ("", None):
            stored[key] = value
    for key in (CONF_MAX_PAYMENT, CONF_MAX_PER_DAY):
        if key in stored:
            amount = _decimal(stored[key], Decimal(0))
            if amount <= 0 or amount != amount.quantize(_CENT):
                raise PaymentSetupError(key, "invalid_limit", f"{amount} is not an amount.")
            stored[key] = str(amount.quantize(_CENT))
    if CONF_ORDER_MINUTES in stored:
        stored[CONF_ORDER_MINUTES] = int(stored[CONF_ORDER_MINUTES])
    settings = PaymentSettings.from_options({CONF_PAYMENTS: stored})
    _check_limits(settings)
    merchants = load_merchants(resolve, settings)
    for problem in merchants.problems.values():
        raise problem
    return stored


# ---------------------------------------------------------------------------- the options form

#: The form's two collapsible sections; the options store their fields flat.
SECTION_WECHAT: Final = "wechat_settings"
SECTION_ALIPAY: Final = "alipay_settings"
_WECHAT_FIELDS: Final = (
    CONF_WECHAT_MCHID,
    CONF_WECHAT_APPID,
    CONF_WECHAT_SERIAL,
    CONF_WECHAT_KEY,
    CONF_WECHAT_APIV3,
    CONF_WECHAT_PLATFORM,
    CONF_WECHAT_PLATFORM_SERIAL,
    CONF_WECHAT_URL,
)
_ALIPAY_FIELDS: Final = (
    CONF_ALIPAY_APP_ID,
    CONF_ALIPAY_SELLER_ID,
    CONF_ALIPAY_KEY,
    CONF_ALIPAY_PUBLIC,
    CONF_ALIPAY_URL,
)
_URL_FIELDS: Final = (CONF_WECHAT_URL, CONF_ALIPAY_URL, CONF_PUBLIC_URL)
#: Every key `PaymentSetupError.key` may be (the options form's error keys).
SETUP_ERRORS: Final = frozenset(
    {
        "key_missing",
        "key_unreadable",
        "key_not_rsa",
        "key_too_short",
        "apiv3_key_invalid",
        "key_pair_mismatch",
        "payment_id_missing",
        "platform_serial_missing",
        "invalid_limit",
        "daily_below_payment",
        "invalid_url",
    }
)


def payment_form_schema(currency: str) -> vol.Schema:
    """Return the options flow's payments form (built anew: suggested values go into it)."""
    text = TextSelector()
    url = TextSelector(TextSelectorConfig(type=TextSelectorType.URL))

    def amount() -> NumberSelector:
        return NumberSelector(
            NumberSelectorConfig(
                min=0.01,
                max=100000,
                step=0.01,
                unit_of_measurement=currency,
                mode=NumberSelectorMode.BOX,
            )
        )

    def fields(names: tuple[str, ...]) -> vol.Schema:
        return vol.Schema(
            {vol.Optional(name): url if name in _URL_FIELDS else text for name in names}
        )

    return vol.Schema(
        {
            vol.Required(CONF_WECHAT, default=False): BooleanSelector(),
            vol.Required(SECTION_WECHAT): section(
                fields(_WECHAT_FIELDS),  # type: ignore[arg-type, unused-ignore]
                {"collapsed": True},
            ),
            vol.Required(CONF_ALIPAY, default=False): BooleanSelector(),
            vol.Required(SECTION_ALIPAY): section(
                fields(_ALIPAY_FIELDS),  # type: ignore[arg-type, unused-ignore]
                {"collapsed": True},
            ),
            vol.Optional(CONF_PUBLIC_URL): url,
            vol.Required(CONF_MAX_PAYMENT, default=int(DEFAULT_MAX_PAYMENT)): amount(),
            vol.Required(CONF_MAX_PER_DAY, default=int(DEFAULT_MAX_PER_DAY)): amount(),
            vol.Required(CONF_ORDER_MINUTES, default=DEFAULT_ORDER_MINUTES): NumberSelector(
                NumberSelectorConfig(
                    min=1, max=120, step=1, unit_of_measurement="min", mode=NumberSelectorMode.BOX
                )
            ),
        }
    )


def payment_form_values(options: Mapping[str, Any]) -> dict[str, Any]:
    """Return the stored payment settings shaped like the form (fields in their sections)."""
    raw = options.get(CONF_PAYMENTS)
    stored: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    values: dict[str, Any] = {
        key: value for key, value in stored.items() if key not in (*_WECHAT_FIELDS, *_ALIPAY_FIELDS)
    }
    for key in (CONF_MAX_PAYMENT, CONF_MAX_PER_DAY):
        if key in values:
            amount = _decimal(values[key], DEFAULT_MAX_PAYMENT)
            values[key] = int(amount) if amount == amount.to_integral_value() else float(amount)
    values[SECTION_WECHAT] = {key: stored[key] for key in _WECHAT_FIELDS if key in stored}
    values[SECTION_ALIPAY] = {key: stored[key] for key in _ALIPAY_FIELDS if key in stored}
    return values


def payment_form_input(user_input: Mapping[str, Any]) -> dict[str, Any]:
    """Return the form's input flat, as `validate_payment_options` takes it.

    The number fields send floats: amounts are read through their shortest repr (exact).
    """
    values: dict[str, Any] = {}
    for key, value in user_input.items():
        if key in (SECTION_WECHAT, SECTION_ALIPAY) and isinstance(value, Mapping):
            values.update(value)
        elif key in (CONF_MAX_PAYMENT, CONF_MAX_PER_DAY) and isinstance(value, float):
            values[key] = repr(value)
        elif key == CONF_ORDER_MINUTES and isinstance(value, float):
            values[key] = int(value)
        else:
            values[key] = value
    return values


# ---------------------------------------------------------------------------- webhook and QR


@callback
def ensure_webhook_id(hass: HomeAssistant, entry: PrepaidConfigEntry) -> str:
    """Return the entry's webhook id, generating and keeping it the first time."""
    webhook_id = entry.data.get(DATA_WEBHOOK_ID)
    if isinstance(webhook_id, str) and webhook_id:
        return webhook_id
    webhook_id = webhook.async_generate_id()
    hass.config_entries.async_update_entry(entry, data={**entry.data, DATA_WEBHOOK_ID: webhook_id})
    return webhook_id


def webhook_url(hass: HomeAssistant, webhook_id: str, public_url: str = "") -> str:
    """Return the address the providers post to: the public URL set, or Home Assistant's."""
    path = webhook.async_generate_path(webhook_id)
    if public_url:
        return public_url.rstrip("/") + path
    try:
        return get_url(hass, allow_internal=False, prefer_external=True) + path
    except NoURLAvailableError:
        try:
            return get_url(hass) + path
        except NoURLAvailableError:
            return path


def qr_svg(text: str) -> str | None:
    """Return a QR code of `text` as SVG (CPU only); None without PyQRCode.

    Home Assistant installs PyQRCode (for its own two-factor setup); imported only when asked.
    """
    try:
        import pyqrcode  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415
    except ImportError:
        return None
    buffer = io.BytesIO()
    pyqrcode.create(text, error="M").svg(buffer, scale=4, xmldecl=False, svgns=True)
    return buffer.getvalue().decode()


def _notice_issue_id(entry_id: str, notice_key: str) -> str:
    digest = hashlib.sha256(notice_key.encode()).hexdigest()[:16]
    return f"payment_unmatched_{entry_id}_{digest}"


def _money(amount: Decimal) -> str:
    return str(amount.quantize(_CENT))


# ---------------------------------------------------------------------------- the community's


class CommunityPayments:
    """A community's payments while its entry is loaded (see the module docstring)."""

    def __init__(
        self,
        hass: HomeAssistant,
        runtime: PrepaidRuntime,
        settings: PaymentSettings,
        merchants: Merchants,
        webhook_id: str,
        desk: PaymentDesk,
    ) -> None:
        """Bind the parts; `async_start` registers the webhook."""
        self.hass = hass
        self.runtime = runtime
        self.settings = settings
        self.merchants = merchants
        self.webhook_id = webhook_id
        self.desk = desk
        self.entry_id = runtime.entry.entry_id
        #: Refusals seen since start, by provider and key (what the ledger counts is in stats).
        self.refused: dict[str, int] = {}
        self._recent: dict[str, deque[float]] = {}
        self._registered = False
        self._unsubs: list[CALLBACK_TYPE] = []

    @property
    def url(self) -> str:
        """Return the webhook's address to give the providers."""
        return webhook_url(self.hass, self.webhook_id, self.settings.text(CONF_PUBLIC_URL))

    def provider_on(self, provider: str) -> bool:
        """Return whether a provider is configured and its keys loaded."""
        if provider == "wechat":
            return self.merchants.wechat is not None
        return provider == "alipay" and self.merchants.alipay is not None

    async def _run[T](self, func: Callable[..., T], *args: Any) -> T:
        return await self.hass.async_add_executor_job(func, *args)

    # ------------------------------------------------------------------ life cycle

    async def async_start(self) -> None:
        """Post what a crash left due, name the unmatched payments, then listen."""
        for provider, problem in self.merchants.problems.items():
            self._key_issue(provider, problem)
        for provider in ("wechat", "alipay"):
            if provider not in self.merchants.problems:
                ir.async_delete_issue(self.hass, DOMAIN, f"payment_keys_{self.entry_id}_{provider}")
        for outcome in await self._run(self.desk.pending_credits):
            _LOGGER.info(
                "Posting a %s payment of order %s recorded before a restart", *_what(outcome)
            )
            try:
                await self._post(outcome)
            except Exception:
                # Still due: the provider's next delivery, or the next start, posts it.
                _LOGGER.exception(
                    "A %s payment of order %s could not be posted yet", *_what(outcome)
                )
        for stored in await self._run(self.desk.unmatched):
            self._unmatched_issue(stored.notice_key, stored)
        webhook.async_register(
            self.hass,
            DOMAIN,
            f"Payments of {self.runtime.community_name}",
            self.webhook_id,
            self._async_handle_webhook,
            local_only=False,
            allowed_methods=["POST"],
        )
        self._registered = True

    @callback
    def async_stop(self) -> None:
        """Stop listening (the ledger closes with the community)."""
        if self._registered:
            webhook.async_unregister(self.hass, self.webhook_id)
            self._registered = False
        for unsub in self._unsubs:
            unsub()
        self._unsubs.clear()

    # ------------------------------------------------------------------ repairs

    @callback
    def _key_issue(self, provider: str, problem: PaymentSetupError) -> None:
        _LOGGER.error(
            "Payments by %s of community %s are off: %s (%s)",
            provider,
            self.runtime.community_name,
            problem.message,
            problem.field,
        )
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            f"payment_keys_{self.entry_id}_{provider}",
            is_fixable=False,
            severity=ir.IssueSeverity.ERROR,
            translation_key="payment_keys",
            translation_placeholders={
                "community": self.runtime.community_name,
                "provider": provider,
                "setting": problem.field,
                "error": problem.message,
            },
        )

    @callback
    def _unmatched_issue(self, notice_key: str, stored: PayNotice | Unmatched) -> None:
        provider: str = stored.provider
        order_id, amount, reason = stored.order_id, stored.amount, stored.reason
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            _notice_issue_id(self.entry_id, notice_key),
            is_fixable=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key="payment_unmatched",
            translation_placeholders={
                "community": self.runtime.community_name,
                "provider": provider,
                "order": order_id[:64],
                "amount": _money(amount),
                "reason": reason,
                "notice": notice_key,
            },
        )

    @callback
    def _rejected(self, provider: str, err: PaymentRejected) -> None:
        name = f"{provider}:{err.key}"
        self.refused[name] = self.refused.get(name, 0) + 1
        now = time.monotonic()
        recent = self._recent.setdefault(name, deque())
        recent.append(now)
        while recent and now - recent[0] > REJECT_WINDOW_S:
            recent.popleft()
        _LOGGER.warning(
            "Refused a %s notification to community %s (%s): %s",
            provider,
            self.runtime.community_name,
            err.key,
            err.message,
        )
        if len(recent) >= REJECT_REPAIR_AFTER:
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                f"payment_rejected_{self.entry_id}_{provider}_{err.key}",
                is_fixable=False,
                severity=ir.IssueSeverity.WARNING,
                translation_key="payment_rejected",
                translation_placeholders={
                    "community": self.runtime.community_name,
                    "provider": provider,
                    "reason": err.key,
                    "count": str(len(recent)),
                    "minutes": str(int(REJECT_WINDOW_S // 60)),
                },
            )

    # ------------------------------------------------------------------ the webhook

    async def _async_handle_webhook(
        self, hass: HomeAssistant, webhook_id: str, request: web.Request
    ) -> web.Response:
        """Take a provider's notification: verify, decide, post, answer as it expects."""
        body = await request.content.read(65_537)
        headers = request.headers
        if any(name.lower().startswith("wechatpay-") for name in headers):
            ok, message = await self._receive("wechat", lambda: self._read_wechat(headers, body))
            status, answer = wechat_answer(ok, message)
            return web.Response(
                status=status,
                body=answer or None,
                content_type="application/json" if answer else None,
            )
        ok, _ = await self._receive("alipay", lambda: self._read_alipay(body))
        status, answer = alipay_answer(ok)
        return web.Response(status=status, body=answer, content_type="text/plain")

    def _read_wechat(self, headers: Mapping[str, str], body: bytes) -> PaymentNotice | object:
        if self.merchants.wechat is None:
            raise PaymentRejected("unknown_merchant", "WeChat Pay is not set up here.")
        return wechat_notification(self.merchants.wechat, headers, body, time.time())

    def _read_alipay(self, body: bytes) -> PaymentNotice | object:
        if self.merchants.alipay is None:
            raise PaymentRejected("unknown_merchant", "Alipay is not set up here.")
        return alipay_notification(self.merchants.alipay, parse_alipay_form(body))

    async def _receive(
        self, provider: Provider, read: Callable[[], PaymentNotice | object]
    ) -> tuple[bool, str]:
        """Return whether to acknowledge, and why not."""
        try:
            notice = read()
        except PaymentRejected as err:
            self._rejected(provider, err)
            try:
                await self._run(self.desk.reject, provider, err.key)
            except Exception:  # a count that cannot be kept changes no answer
                _LOGGER.warning("Could not count a refused %s notification", provider)
            return False, err.key
        except Exception:
            # Nothing a remote party sends may crash us: refuse it, say so once in the log.
            _LOGGER.exception("A %s notification could not be read", provider)
            return False, "malformed"
        if not isinstance(notice, PaymentNotice):
            return True, ""  # authentic, nothing to do (a trade still waiting, closed unpaid)
        try:
            outcome = await self._run(self.desk.handle, notice)
            if isinstance(outcome, Unmatched):
                self._on_unmatched(outcome)
            if isinstance(outcome, Credit | Reverse):
                await self._post(outcome)
        except Exception:
            # The notice is recorded as due (or nothing is): its next delivery, or the next
            # start, posts it once. Refuse it so that the provider delivers it again.
            _LOGGER.exception(
                "A %s notification of order %s could not be posted yet; the provider will "
                "deliver it again",
                provider,
                notice.order_id,
            )
            return False, "retry"
        if isinstance(outcome, Retry):
            return False, outcome.reason
        return True, ""

    @callback
    def _on_unmatched(self, outcome: Unmatched) -> None:
        _LOGGER.warning(
            "A %s payment of %s for order %s of community %s is unmatched (%s): kept for an "
            "operator (resolve_unmatched_payment)",
            outcome.provider,
            _money(outcome.amount),
            outcome.order_id,
            self.runtime.community_name,
            outcome.reason,
        )
        self._unmatched_issue(outcome.notice_key, outcome)

    async def _post(self, outcome: Credit | Reverse, actor: Actor = Actor.SYSTEM) -> None:
        """Post a credit or a refund once and tell the bus."""
        result = await post_outcome(self.runtime.service, self.desk, outcome, actor=actor)
        posted = result.results[0] if result.results else None
        if posted is not None and posted.duplicate:
            return
        self.hass.bus.async_fire(
            EVENT_PAYMENT,
            {
                "community": self.runtime.community_id,
                "household": outcome.account_id,
                "amount": _money(outcome.amount),
                "kind": "payment" if isinstance(outcome, Credit) else "refund",
                "provider": outcome.provider,
                "order": outcome.order_id,
                "purpose": outcome.purpose,
                "transaction_id": outcome.transaction_id,
                "balance": None if posted is None else _money(posted.balance_after),
            },
        )

    # ------------------------------------------------------------------ orders

    async def async_create_order(
        self, account_id: str, amount: Decimal, purpose: str, provider: str, actor: Actor
    ) -> dict[str, Any]:
        """Make an order, ask the provider for its code; return id, code, expiry and QR."""
        if not self.provider_on(provider):
            raise translated_error("payment_provider_off", provider=provider)
        try:
            order: Order = await self._run(
                self.desk.create_order, account_id, amount, purpose, provider, actor
            )
        except OrderRefused as err:
            raise translated_error(f"payment_{err.key}", **err.placeholders) from err
        try:
            code = await self._ask_code(order)
        except PaymentRejected as err:
            await self._run(self.desk.close_order, order.order_id)
            _LOGGER.warning("%s refused order %s: %s", provider, order.order_id, err.message)
            raise translated_error("payment_provider_error", error=err.message) from err
        except (ClientError, TimeoutError) as err:
            await self._run(self.desk.close_order, order.order_id)
            raise translated_error(
                "payment_provider_unreachable", provider=provider, error=str(err) or "timeout"
            ) from err
        await self._run(self.desk.set_code, order.order_id, code)
        async_dispatcher_send(self.hass, signal_order(self.entry_id), order.account_id)
        svg = await self._run(qr_svg, code)
        return {
            "order_id": order.order_id,
            "household": order.account_id,
            "purpose": order.purpose,
            "provider": order.provider,
            "amount": _money(order.amount),
            "code": code,
            "expires_at": order.expires_at,
            "qr_svg": svg,
        }

    async def _ask_code(self, order: Order) -> str:
        session = async_get_clientsession(self.hass)
        timeout = ClientTimeout(total=PROVIDER_TIMEOUT_S)
        words = _SUBJECTS["en" if self.hass.config.language.startswith("en") else "zh"]
        subject = f"{words[order.purpose]} {order.account_id}"
        notify_url = self.url
        if order.provider == "wechat":
            wechat = self.merchants.wechat
            assert wechat is not None
            request = wechat_native_request(
                wechat,
                order_id=order.order_id,
                amount=order.amount,
                description=subject,
                notify_url=notify_url,
                expires_at=order.expires_at,
                now=time.time(),
                base_url=self.settings.wechat_url,
            )
            async with session.post(
                request.url, data=request.body, headers=dict(request.headers), timeout=timeout
            ) as response:
                body = await response.content.read(65_537)
                return wechat_native_response(
                    wechat, response.status, response.headers, body, time.time()
                )
        alipay = self.merchants.alipay
        assert alipay is not None
        request = alipay_precreate_request(
            alipay,
            order_id=order.order_id,
            amount=order.amount,
            subject=subject,
            notify_url=notify_url,
            now=time.time(),
            timeout_minutes=max(1, (order.expires_at - order.created_at) // 60),
            gateway=self.settings.alipay_url,
        )
        async with session.post(
            request.url, data=request.body, headers=dict(request.headers), timeout=timeout
        ) as response:
            body = await response.content.read(65_537)
            if not 200 <= response.status < 300:
                raise PaymentRejected("provider_error", f"Alipay answered HTTP {response.status}.")
            return alipay_precreate_response(alipay, order.order_id, body)

    # ------------------------------------------------------------------ the operator's

    async def async_resolve(
        self,
        notice_key: str,
        action: Literal["credit", "dismiss"],
        actor: Actor,
        *,
        account_id: str | None = None,
        purpose: str | None = None,
    ) -> dict[str, Any]:
        """Credit an unmatched payment to a household, or dismiss it; clear its repair."""
        try:
            credit = await self._run(
                lambda: self.desk.resolve(
                    notice_key, action, actor, account_id=account_id, purpose=purpose
                )
            )
        except OrderRefused as err:
            raise translated_error(f"payment_{err.key}", **err.placeholders) from err
        if credit is not None:
            try:
                await self._post(credit, actor)
            except CommunityError as err:
                raise translated_error(
                    "ledger_error", error=err.args[0] if err.args else err.key
                ) from err
        ir.async_delete_issue(self.hass, DOMAIN, _notice_issue_id(self.entry_id, notice_key))
        return {
            "notice": notice_key,
            "action": action,
            "household": None if credit is None else credit.account_id,
            "purpose": None if credit is None else credit.purpose,
            "amount": None if credit is None else _money(credit.amount),
        }

    async def async_diagnostics(self) -> dict[str, Any]:
        """Return counts (orders, notices, refusals, statement discrepancies by state and
        class), the providers and what failed to load."""
        stats = await self._run(self.desk.stats)
        items = await self._run(self.runtime.community.ledger.recon_items)
        reconciliation: dict[str, dict[str, int]] = {}
        for item in items:
            by_class = reconciliation.setdefault(item.state, {})
            by_class[item.cls] = by_class.get(item.cls, 0) + 1
        return {
            "providers": {
                "wechat": self.provider_on("wechat"),
                "alipay": self.provider_on("alipay"),
            },
            "key_problems": {
                provider: {"setting": problem.field, "key": problem.key}
                for provider, problem in self.merchants.problems.items()
            },
            "refused_since_start": dict(self.refused),
            "reconciliation": reconciliation,
            **stats,
        }


def _what(outcome: Credit | Reverse) -> tuple[str, str]:
    return outcome.provider, outcome.order_id


# ---------------------------------------------------------------------------- setup


def payments_of(hass: HomeAssistant, entry_id: str) -> CommunityPayments | None:
    """Return a loaded community's payments, or None when it has none."""
    return hass.data.get(PAYMENTS, {}).get(entry_id)


async def async_setup_payments(
    hass: HomeAssistant, entry: PrepaidConfigEntry
) -> CommunityPayments | None:
    """Start a community's payments if its options configure any (after the runtime).

    Keys that cannot be used leave their provider off with a repair; setup goes on.
    """
    settings = PaymentSettings.from_options(entry.options)
    if not settings.enabled:
        for provider in ("wechat", "alipay"):
            ir.async_delete_issue(hass, DOMAIN, f"payment_keys_{entry.entry_id}_{provider}")
        return None
    if "webhook" not in hass.config.components:  # loaded by default_config, else here
        await async_setup_component(hass, "webhook", {})
    merchants = await hass.async_add_executor_job(load_merchants, hass.config.path, settings)
    webhook_id = ensure_webhook_id(hass, entry)
    runtime = entry.runtime_data
    desk = PaymentDesk(
        runtime.community.ledger,
        max_payment=settings.max_payment,
        max_per_day=settings.max_per_day,
        order_ttl_s=settings.order_minutes * 60,
        zone=runtime.community.tariff.tz,
    )
    payments = CommunityPayments(hass, runtime, settings, merchants, webhook_id, desk)
    await payments.async_start()
    hass.data.setdefault(PAYMENTS, {})[entry.entry_id] = payments
    return payments


async def async_unload_payments(hass: HomeAssistant, entry: PrepaidConfigEntry) -> None:
    """Stop listening for a community's payments (before its ledger closes)."""
    payments = hass.data.get(PAYMENTS, {}).pop(entry.entry_id, None)
    if payments is not None:
        payments.async_stop()


def key_error_placeholders(err: PaymentSetupError) -> dict[str, str]:
    """Return what the options form says about a setting that cannot be used."""
    return {"setting": err.field, "error": err.message}
