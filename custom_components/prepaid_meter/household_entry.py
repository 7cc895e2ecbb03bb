"""A household's own config entry ("My household", resident mode): its link to the community.

A household entry logs in to the community's broker with the household's own broker user
(engine/broker_acl.py: it may read only its meter's account and telemetry, and send only its
requests) and runs one `engine.household.HouseholdClient` while the entry is loaded. Its
entities (household_entities.py) read `HouseholdRuntime`: the account as the community last
published it, the meter's energy register, and whether any of it can be trusted now.

An entity is unavailable while the broker link is down, before the first account, and when
the community has said nothing for longer than the entry's option (`stale_minutes`, default
15): the community republishes the account every few minutes, and its `updated` time is the
community's own clock. The telemetry-backed energy sensor needs only the link: the meter
speaks for itself.

When the broker refuses the household's credentials (its user was revoked, or the password
rotated), the entry starts a reauth flow (a new password or a new code) and stops knocking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
import contextlib
from datetime import timedelta
import logging
from typing import Any, Final

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_HOST, CONF_PASSWORD, CONF_PORT, CONF_USERNAME, Platform
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed, ConfigEntryNotReady
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.util import dt as dt_util

from .const import CONF_COMMUNITY_ID, CONF_CURRENCY, CONF_PREFIX, CONF_TLS, DEFAULT_PREFIX, DOMAIN
from .engine.broker_acl import ConnectionDetails
from .engine.household import (
    AccessRefused,
    HouseholdClient,
    HouseholdView,
    RequestAnswer,
    check_household,
)
from .engine.protocol import Reading
from .engine.transport import CannotConnect, InvalidAuth

_LOGGER = logging.getLogger(__package__)

#: entry.data["kind"] of a household entry; a community entry has no kind (older ones) or this.
CONF_KIND: Final = "kind"
KIND_HOUSEHOLD: Final = "household"
KIND_COMMUNITY: Final = "community"
CONF_METER_ID: Final = "meter_id"
#: Option: minutes without news from the community before the entities go unavailable.
CONF_STALE_MINUTES: Final = "stale_minutes"
DEFAULT_STALE_MINUTES: Final = 15
MIN_STALE_MINUTES: Final = 1
MAX_STALE_MINUTES: Final = 1440
HOUSEHOLD_PLATFORMS: Final = [Platform.BINARY_SENSOR, Platform.BUTTON, Platform.SENSOR]

#: How often availability is checked against the staleness limit.
STALE_CHECK_INTERVAL = timedelta(seconds=30)
#: After the link drops: when to ask the broker why (a refused login means revoked), then how
#: often again while it stays down.
PROBE_FIRST_S = 3.0
PROBE_EVERY_S = 60.0
#: How long the restore button waits for the community's answer.
ANSWER_WAIT_S = 10.0


def is_household(entry: ConfigEntry[Any]) -> bool:
    """Return whether a config entry is a household's (else it is a community's)."""
    return entry.data.get(CONF_KIND) == KIND_HOUSEHOLD


def household_details(data: Mapping[str, Any]) -> ConnectionDetails:
    """Return the household's broker login and topics from its entry data."""
    return ConnectionDetails(
        host=str(data[CONF_HOST]),
        port=int(data[CONF_PORT]),
        tls=bool(data.get(CONF_TLS, False)),
        username=str(data[CONF_USERNAME]),
        password=str(data[CONF_PASSWORD]),
        prefix=str(data.get(CONF_PREFIX, DEFAULT_PREFIX)),
        community=str(data[CONF_COMMUNITY_ID]),
        meter=str(data[CONF_METER_ID]),
    )


def household_data(details: ConnectionDetails, currency: str | None = None) -> dict[str, Any]:
    """Return a household entry's data for connection details (and the currency seen)."""
    data: dict[str, Any] = {
        CONF_KIND: KIND_HOUSEHOLD,
        CONF_HOST: details.host,
        CONF_PORT: details.port,
        CONF_TLS: details.tls,
        CONF_USERNAME: details.username,
        CONF_PASSWORD: details.password,
        CONF_PREFIX: details.prefix,
        CONF_COMMUNITY_ID: details.community,
        CONF_METER_ID: details.meter,
    }
    if currency:
        data[CONF_CURRENCY] = currency
    return data


def household_unique_id(community: str, meter: str) -> str:
    """Return the unique id of a household entry: one per community and meter."""
    return f"household:{community}/{meter}"


def _now() -> float:
    # Home Assistant's clock (tests move it), not the one captured when the engine loaded.
    return dt_util.utcnow().timestamp()


class HouseholdRuntime:
    """A household entry's live state while it is loaded."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: HouseholdConfigEntry,
        details: ConnectionDetails,
        *,
        stale_minutes: float = DEFAULT_STALE_MINUTES,
    ) -> None:
        """Bind to the entry; nothing connects until `async_start`."""
        self.hass = hass
        self.entry = entry
        self.details = details
        self.meter_id = str(details.meter)
        self.community_id = details.community
        self.stale_after_s = float(stale_minutes) * 60
        self.fallback_currency = str(entry.data.get(CONF_CURRENCY) or "")
        self.client = HouseholdClient(
            details,
            self._on_view,
            telemetry=True,
            on_reading=self._on_reading,
            on_connection=self._on_connection,
            client_id=f"ha-prepaid-household-{entry.entry_id}",
            clock=_now,
        )
        self._listeners: list[CALLBACK_TYPE] = []
        self._available: bool | None = None
        self._logged_unavailable = False
        self._probe: asyncio.Task[None] | None = None
        self._unsub_timer: CALLBACK_TYPE | None = None
        self.refused = False
        self.reauth_started = False
        #: How long the restore button waits for the community's answer.
        self.answer_wait_s = ANSWER_WAIT_S

    # -- identity ------------------------------------------------------------------------

    @property
    def identifier(self) -> str:
        """Return the household device's identifier."""
        return f"household/{self.details.prefix}/{self.community_id}/{self.meter_id}"

    # -- state ---------------------------------------------------------------------------

    @property
    def view(self) -> HouseholdView | None:
        """Return the account as last published (None before the first)."""
        return self.client.view

    @property
    def reading(self) -> Reading | None:
        """Return the meter's last reading (None before the first)."""
        return self.client.reading

    @property
    def connected(self) -> bool:
        """Return whether the link to the community's broker is up."""
        return self.client.connected

    @property
    def currency(self) -> str:
        """Return the account's currency (as the community publishes it)."""
        view = self.view
        return view.currency if view is not None else self.fallback_currency

    @property
    def stale(self) -> bool:
        """Return whether the community has said nothing for longer than the limit."""
        return self.client.is_stale(self.stale_after_s)

    @property
    def available(self) -> bool:
        """Return whether the account can be shown: linked, received, and recent."""
        return self.connected and self.view is not None and not self.stale

    # -- life ----------------------------------------------------------------------------

    async def async_start(self) -> None:
        """Connect in the background; check staleness on a timer."""
        await self.client.start()
        self._unsub_timer = async_track_time_interval(
            self.hass,
            self.async_check_availability,
            STALE_CHECK_INTERVAL,
            name="prepaid_meter household",
        )

    async def async_stop(self) -> None:
        """Disconnect; leave nothing running."""
        if self._unsub_timer is not None:
            self._unsub_timer()
            self._unsub_timer = None
        await self._cancel_probe()
        await self.client.stop()

    async def _cancel_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None and probe is not asyncio.current_task():
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe

    # -- listeners -----------------------------------------------------------------------

    @callback
    def async_add_listener(self, listener: CALLBACK_TYPE) -> CALLBACK_TYPE:
        """Call `listener` on every change of what the entities show; return its remover."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    @callback
    def _notify(self) -> None:
        available = self.available
        if available != self._available:
            # Once when it goes (not before it ever came up) and once when it is back.
            if not available and self._available:
                self._logged_unavailable = True
                _LOGGER.info(
                    "Household %s of community %s is unavailable (%s)",
                    self.meter_id,
                    self.community_id,
                    self.why_unavailable(),
                )
            elif available and self._logged_unavailable:
                self._logged_unavailable = False
                _LOGGER.info(
                    "Household %s of community %s is available again",
                    self.meter_id,
                    self.community_id,
                )
            self._available = available
        for listener in list(self._listeners):
            listener()

    def why_unavailable(self) -> str:
        """Say why the entities are unavailable (for the log and diagnostics)."""
        if not self.connected:
            return "no link to the community's broker"
        if self.view is None:
            return "no account received yet"
        if self.stale:
            age = self.client.staleness() or 0
            return f"the community has said nothing for {age / 60:.0f} minutes"
        return "available"

    @callback
    def async_check_availability(self, _now: Any = None) -> None:
        """Tell the entities when availability changed (the clock alone can change it)."""
        if self.available != self._available:
            self._notify()

    def _on_view(self, _view: HouseholdView) -> None:
        self._notify()

    def _on_reading(self, _reading: Reading) -> None:
        self._notify()

    def _on_connection(self, up: bool) -> None:
        if up:
            self.refused = False
            if self._probe is not None:
                self._probe.cancel()
                self._probe = None
        elif self._probe is None and not self.reauth_started:
            self._probe = self.entry.async_create_background_task(
                self.hass, self._async_probe(), "prepaid_meter household probe"
            )
        self._notify()

    async def _async_probe(self) -> None:
        """While the link is down, ask the broker once in a while whether it refuses us."""
        delay = PROBE_FIRST_S
        while True:
            await asyncio.sleep(delay)
            delay = PROBE_EVERY_S
            if self.connected:
                break
            try:
                await check_household(self.details, wait=0, link_timeout=10.0)
            except (InvalidAuth, AccessRefused) as err:
                self._refused(str(err))
                return
            except CannotConnect as err:
                _LOGGER.debug("Household %s: broker still unreachable: %s", self.meter_id, err)
            except Exception:
                _LOGGER.exception("Checking the household's broker login failed")
        self._probe = None

    def _refused(self, why: str) -> None:
        """The broker refused these credentials: stop knocking, ask the resident for new ones."""
        _LOGGER.warning(
            "The community broker refused the household login of %s (%s); "
            "enter a new password or connection code",
            self.meter_id,
            why,
        )
        self.refused = True
        self.reauth_started = True
        self._probe = None
        self.entry.async_start_reauth(self.hass)
        # Stop reconnecting with credentials that cannot work; the reauth reloads the entry.
        self.entry.async_create_background_task(
            self.hass, self.client.stop(), "prepaid_meter household stop"
        )
        self._notify()

    # -- requests ------------------------------------------------------------------------

    async def async_request_restore(self) -> tuple[str, RequestAnswer | None]:
        """Publish a restore request; return its id and the answer (None if none in time).

        Raises `transport.TransportError` when it could not be sent.
        """
        request_id = await self.client.request_restore()
        try:
            async with asyncio.timeout(self.answer_wait_s):
                return request_id, await self.client.wait_answer(request_id)
        except TimeoutError:
            return request_id, None

    # -- diagnostics ---------------------------------------------------------------------

    def diagnostics(self) -> dict[str, Any]:
        """Return what helps to debug a household link (no secrets)."""
        view = self.view
        reading = self.reading
        return {
            "connected": self.connected,
            "available": self.available,
            "why": self.why_unavailable(),
            "stale_after_s": self.stale_after_s,
            "staleness_s": self.client.staleness(),
            "refused": self.refused,
            "account": None
            if view is None
            else {
                "balance": str(view.balance),
                "currency": view.currency,
                "updated": view.updated,
                "low": view.low,
                "relay": view.relay,
                "reason": view.reason,
                "tier": view.tier,
                "price": None if view.price is None else str(view.price),
                "days_left": None if view.days_left is None else str(view.days_left),
                "request": None
                if view.request is None
                else {"id": view.request.id, "ok": view.request.ok, "reason": view.request.reason},
                "ignored": list(view.ignored),
            },
            "reading": None
            if reading is None
            else {"ts": reading.ts, "seq": reading.seq, "energy_kwh": str(reading.energy_kwh)},
            "malformed": dict(self.client.malformed),
            "foreign": self.client.foreign,
            "requests_sent": len(self.client.sent_requests),
        }


type HouseholdConfigEntry = ConfigEntry[HouseholdRuntime]


def stale_minutes(entry: ConfigEntry[Any]) -> float:
    """Return the entry's staleness limit in minutes (the default if unset or not valid)."""
    value = entry.options.get(CONF_STALE_MINUTES, DEFAULT_STALE_MINUTES)
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        return DEFAULT_STALE_MINUTES
    if not MIN_STALE_MINUTES <= minutes <= MAX_STALE_MINUTES:
        return DEFAULT_STALE_MINUTES
    return minutes


async def async_setup_household_entry(hass: HomeAssistant, entry: HouseholdConfigEntry) -> bool:
    """Check the household's login, start its client and its platforms."""
    details = household_details(entry.data)
    try:
        await check_household(details, wait=0)
    except (InvalidAuth, AccessRefused) as err:
        raise ConfigEntryAuthFailed(
            translation_domain=DOMAIN, translation_key="household_login_refused"
        ) from err
    except CannotConnect as err:
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="cannot_connect",
            translation_placeholders={"error": str(err)},
        ) from err
    runtime = HouseholdRuntime(hass, entry, details, stale_minutes=stale_minutes(entry))
    entry.runtime_data = runtime
    await runtime.async_start()
    entry.async_on_unload(entry.add_update_listener(_async_options_updated))
    try:
        await hass.config_entries.async_forward_entry_setups(entry, HOUSEHOLD_PLATFORMS)
    except Exception:
        await runtime.async_stop()
        raise
    return True


async def _async_options_updated(hass: HomeAssistant, entry: HouseholdConfigEntry) -> None:
    """Reload for new connection details (reauth, reconfigure); apply a new limit at once."""
    runtime = entry.runtime_data
    if household_details(entry.data) != runtime.details:
        hass.config_entries.async_schedule_reload(entry.entry_id)
        return
    runtime.stale_after_s = stale_minutes(entry) * 60
    runtime.async_check_availability()


async def async_unload_household_entry(hass: HomeAssistant, entry: HouseholdConfigEntry) -> bool:
    """Unload the platforms, then disconnect."""
    unloaded = await hass.config_entries.async_unload_platforms(entry, HOUSEHOLD_PLATFORMS)
    if unloaded:
        await entry.runtime_data.async_stop()
    return unloaded


__all__ = [
    "CONF_KIND",
    "CONF_METER_ID",
    "CONF_STALE_MINUTES",
    "DEFAULT_STALE_MINUTES",
    "HOUSEHOLD_PLATFORMS",
    "KIND_HOUSEHOLD",
    "HouseholdConfigEntry",
    "HouseholdRuntime",
    "async_setup_household_entry",
    "async_unload_household_entry",
    "household_data",
    "household_details",
    "household_unique_id",
    "is_household",
    "stale_minutes",
]
