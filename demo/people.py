"""After Home Assistant is up: link the resident login to its household, make the dashboards.

Both through Home Assistant's REST API with the operator's token, the way a person (or an
automation) would call the actions: `prepaid_meter.link_user` and
`prepaid_meter.create_dashboards` (the operator dashboard, the resident's household's and a
neighbour's). Safe to run on every start: a link is recorded once, a dashboard a person
edited is kept.
"""

from __future__ import annotations

import json
import time
from typing import Any
import urllib.error
import urllib.request

from demo.processes import api_get

DOMAIN = "prepaid_meter"


def api_post(url: str, token: str, path: str, body: dict[str, Any], timeout: float = 30) -> Any:
    """POST JSON to a Home Assistant REST API path with the token; return the decoded JSON."""
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL we built
        url + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as err:  # say what Home Assistant answered, not only the code
        answer = err.read().decode(errors="replace")[:500]
        raise RuntimeError(f"POST {path}: HTTP {err.code}: {answer}") from err


#: The balance sensor's name in each language the demo runs in (translations/*.json).
BALANCE_NAMES = ("Balance", "余额")


def _balance_entity(states: list[dict[str, Any]], label: str) -> str | None:
    names = {f"{label} {word}" for word in BALANCE_NAMES}
    for found in states:
        name = str(found["attributes"].get("friendly_name", ""))
        if name in names and str(found["entity_id"]).startswith("sensor."):
            return str(found["entity_id"])
    return None


def setup_people(
    url: str, token: str, resident: dict[str, Any], timeout: float = 60
) -> list[dict[str, Any]]:
    """Link the resident, make the dashboards; return the action's list of dashboards."""
    deadline = time.monotonic() + timeout
    while True:  # the households' entities exist once the entry has added them
        try:
            states = api_get(url, token, "/api/states")
        except (urllib.error.URLError, OSError):
            states = []
        if all(_balance_entity(states, resident[k]) for k in ("label", "neighbour_label")):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the demo households' balance sensors did not appear")
        time.sleep(0.5)
    api_post(
        url,
        token,
        f"/api/services/{DOMAIN}/link_user",
        {"household": resident["household"], "user_id": resident["user_id"]},
    )
    made = api_post(
        url,
        token,
        f"/api/services/{DOMAIN}/create_dashboards?return_response",
        {"households": [resident["household"], resident["neighbour"]]},
    )
    dashboards: list[dict[str, Any]] = made["service_response"]["dashboards"]
    dismiss_stale_discovery_notice(url, token)
    return dashboards


def dismiss_stale_discovery_notice(url: str, token: str) -> None:
    """Dismiss "New devices discovered": the demo has nothing to discover.

    On a fresh configuration Home Assistant itself creates its `analytics` and `backup`
    entries through system flows at start; those flows finish at once, but the notice their
    start schedules (a debounced call) comes after the finish that would have dismissed it, so
    a new demo showed "New devices discovered" with nothing to discover. The demo loads no
    integration that discovers devices (see demo.config), so the notice is always this one.
    """
    api_post(
        url,
        token,
        "/api/services/persistent_notification/dismiss",
        {"notification_id": "config_entry_discovery"},
    )
