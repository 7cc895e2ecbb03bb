"""`scripts/demo --household`: a resident's own Home Assistant beside the community's.

The demo's mosquitto then runs with its dynamic security plugin (no anonymous logins):

- the administrator `demo-admin` (`mosquitto_ctrl dynsec init` makes it) only sets up:
- the community entry logs in as `community.<community>`, with the plugin's `admin` role (so
  `prepaid_meter.household_access` can provision households) and the community platform's
  role (`platform_acls`: all of `<prefix>/<community>/#`), since the `admin` role may read
  everything but publish only to the plugin;
- the simulator logs in as `simulator.<community>`, whose role may publish the meters' own
  channels (announce, availability, telemetry, ack) and read their `cmd`, in this community
  only (one user for all its simulated meters);

and once the community's Home Assistant runs, the operator's token calls `household_access`
for the resident's household, and a second Home Assistant (its own config folder, port and
owner login) adds the household entry through its config flow with the code, as a resident
would in the UI (Settings > Devices & services > Add > Prepaid Meter > My household).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
import secrets
import time
from typing import Any, Final
import urllib.error

from custom_components.prepaid_meter.const import DOMAIN
from custom_components.prepaid_meter.engine.broker_acl import (
    DynSecAdmin,
    DynSecCommandError,
    platform_acls,
    platform_username,
)
from custom_components.prepaid_meter.engine.transport import TransportConfig
from demo.people import api_post
from demo.processes import api_get

BROKER_ADMIN: Final = "demo-admin"
#: The plugin's administrator role, which `mosquitto_ctrl dynsec init` makes.
ADMIN_ROLE: Final = "admin"
#: The community's roles: the administrator's rules are checked before the platform's.
ADMIN_ROLE_PRIORITY: Final = 0
PLATFORM_ROLE_PRIORITY: Final = -10
METER_CHANNELS: Final = ("announce", "availability", "telemetry", "ack")


def new_password() -> str:
    """Return a fresh broker password (each run writes a new dynamic security file)."""
    return secrets.token_urlsafe(18)


def community_username(community: str) -> str:
    """Return the community entry's broker user name."""
    return f"community.{community}"


def simulator_username(community: str) -> str:
    """Return the simulator's broker user (and role) name."""
    return f"simulator.{community}"


def simulator_acls(prefix: str, community: str) -> list[dict[str, Any]]:
    """Return the simulator's rules: every meter's own channels of this community only."""
    base = f"{prefix}/{community}/+"
    acls: list[dict[str, Any]] = [
        {"acltype": "publishClientSend", "topic": f"{base}/{ch}", "allow": True, "priority": 10}
        for ch in METER_CHANNELS
    ]
    acls += [
        {"acltype": kind, "topic": f"{base}/cmd", "allow": True, "priority": 10}
        for kind in ("subscribePattern", "publishClientReceive")
    ]
    acls += [
        {"acltype": kind, "topic": "#", "allow": False, "priority": -10}
        for kind in ("publishClientSend", "subscribePattern", "publishClientReceive")
    ]
    return acls


def _check(answers: Sequence[dict[str, Any]]) -> None:
    for answer in answers:
        if "error" in answer:
            raise DynSecCommandError(str(answer.get("command", "?")), str(answer["error"]))


async def _async_provision(
    admin_config: TransportConfig,
    prefix: str,
    community: str,
    community_password: str,
    sim_password: str,
) -> None:
    platform = platform_username(community)
    simulator = simulator_username(community)
    async with DynSecAdmin(admin_config, prefix=prefix) as admin:
        await admin.check()
        _check(
            await admin.command(
                [
                    {
                        "command": "createRole",
                        "rolename": platform,
                        "textname": "prepaid_meter platform (demo)",
                        "acls": [rule.as_json() for rule in platform_acls(prefix, community)],
                    },
                    {
                        "command": "createClient",
                        "username": community_username(community),
                        "password": community_password,
                        "textname": "prepaid_meter community (demo)",
                        "roles": [
                            {"rolename": ADMIN_ROLE, "priority": ADMIN_ROLE_PRIORITY},
                            {"rolename": platform, "priority": PLATFORM_ROLE_PRIORITY},
                        ],
                    },
                    {
                        "command": "createRole",
                        "rolename": simulator,
                        "textname": "prepaid_meter demo simulator",
                        "acls": simulator_acls(prefix, community),
                    },
                    {
                        "command": "createClient",
                        "username": simulator,
                        "password": sim_password,
                        "textname": "prepaid_meter demo simulator",
                        "roles": [{"rolename": simulator}],
                    },
                ]
            )
        )


def provision_broker(
    host: str,
    port: int,
    admin_password: str,
    prefix: str,
    community: str,
    *,
    community_password: str,
    sim_password: str,
) -> None:
    """Create the community's user (administrator and platform) and the simulator's.

    On a freshly initialised dynamic security file (every demo run makes one): a command
    that fails (the role exists already, ...) raises `DynSecCommandError`.
    """
    config = TransportConfig(
        host=host,
        port=port,
        client_id="prepaid-demo-setup",
        username=BROKER_ADMIN,
        password=admin_password,
        clean_session=True,
    )
    asyncio.run(_async_provision(config, prefix, community, community_password, sim_password))


def household_code(url: str, token: str, meter_id: str) -> str:
    """Call `prepaid_meter.household_access` on the community; return the household's code."""
    answer = api_post(
        url,
        token,
        f"/api/services/{DOMAIN}/household_access?return_response",
        {"meter_id": meter_id},
    )
    code: str = answer["service_response"]["code"]
    return code


def add_household_entry(url: str, token: str, code: str) -> dict[str, Any]:
    """Add the household entry through the config flow (menu `household`, then the code)."""
    flow = api_post(url, token, "/api/config/config_entries/flow", {"handler": DOMAIN})
    path = f"/api/config/config_entries/flow/{flow['flow_id']}"
    if flow.get("type") == "menu":
        flow = api_post(url, token, path, {"next_step_id": "household"})
    done: dict[str, Any] = api_post(url, token, path, {"code": code})
    if done.get("type") != "create_entry":
        raise RuntimeError(
            f"the household's config flow did not create the entry: {done.get('errors') or done}"
        )
    return done


def wait_for_household_entry(url: str, token: str, timeout: float = 60.0) -> None:
    """Wait until the household entry is loaded (its client logged in)."""
    deadline = time.monotonic() + timeout
    entries: Any = None
    while time.monotonic() < deadline:
        try:
            entries = api_get(url, token, f"/api/config/config_entries/entry?domain={DOMAIN}")
        except (urllib.error.URLError, OSError, ValueError):
            entries = None
        if entries and {str(e.get("state")) for e in entries} == {"loaded"}:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the household entry did not load within {timeout:.0f} s: {entries}")
