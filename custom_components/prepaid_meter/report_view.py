"""The monthly report as a CSV download: an authenticated, administrators-only HTTP view.

`GET /api/prepaid_meter/report/<config entry id>/<YYYY-MM>.csv` answers the report of that
community and month (payment_actions.month_report, checked against the ledger) as a CSV
attachment. Home Assistant's HTTP server authenticates the request (`requires_auth`: a
logged-in session or a long-lived access token); a user who is not an administrator gets
403, an unknown or unloaded community or a month of the wrong form 404, a report that
disagrees with the ledger 500 (and the error is logged). `payment_report`'s response names
this path (`download`). The view is registered once per Home Assistant, with the actions.
"""

from __future__ import annotations

from http import HTTPStatus
import logging
import re
from typing import Final

from aiohttp import web
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.http import KEY_HASS, HomeAssistantView

from .const import DOMAIN
from .household_entry import is_household
from .payment_actions import async_month_report, report_csv

__all__ = ["ReportView", "async_register_report_view"]

_MONTH: Final = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
_REGISTERED: Final = f"{DOMAIN}_report_view"
_LOGGER = logging.getLogger(__package__)


class ReportView(HomeAssistantView):
    """A community's monthly report as CSV, for administrators."""

    url = "/api/prepaid_meter/report/{entry_id}/{month}.csv"
    name = "api:prepaid_meter:report"
    requires_auth = True

    async def get(self, request: web.Request, entry_id: str, month: str) -> web.StreamResponse:
        """Answer the report of one community and month as a CSV attachment."""
        hass = request.app[KEY_HASS]
        if not request["hass_user"].is_admin:
            return self.json_message("Administrators only", HTTPStatus.FORBIDDEN)
        entry = hass.config_entries.async_get_entry(entry_id)
        if (
            entry is None
            or entry.domain != DOMAIN
            or entry.state is not ConfigEntryState.LOADED
            or is_household(entry)
        ):
            return self.json_message("No such community", HTTPStatus.NOT_FOUND)
        if not _MONTH.fullmatch(month):
            return self.json_message("No such month", HTTPStatus.NOT_FOUND)
        runtime = entry.runtime_data
        try:
            report = await async_month_report(hass, runtime, month)
        except HomeAssistantError as err:
            # A month out of range, a ledger that cannot commit, or a broken invariant (logged).
            status = (
                HTTPStatus.NOT_FOUND
                if err.translation_key == "invalid_month"
                else HTTPStatus.INTERNAL_SERVER_ERROR
            )
            return self.json_message(str(err), status)
        filename = f"{runtime.community_id}_{month}.csv"
        return web.Response(
            body=report_csv(report).encode(),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


@callback
def async_register_report_view(hass: HomeAssistant) -> None:
    """Register the view once per Home Assistant (its HTTP server must be set up)."""
    if hass.data.get(_REGISTERED) or getattr(hass, "http", None) is None:
        return
    try:
        hass.http.register_view(ReportView())
    except RuntimeError as err:  # a test server started before the integration: frozen
        _LOGGER.warning("The report download is not available: %s", err)
        return
    hass.data[_REGISTERED] = True
