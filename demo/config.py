"""Write a ready-to-run Home Assistant configuration folder for the demo, tests and benchmarks.

Everything Home Assistant owns is written through Home Assistant's own code: the owner user,
its password and a long-lived access token through `homeassistant.auth` (the same calls the
onboarding view and `hass --script auth` make), onboarding and the config entry through
`homeassistant.helpers.storage.Store`. The community's ledger is seeded through the engine's
`Community.assign_meter` / `Community.top_up`, the same calls the integration's actions make.

Running `prepare` again on the same folder is safe: the user, token, config entry, dashboards
and automations are kept (the entry's broker address is updated), while the ledger and the
recorder's history start from scratch, because the simulator starts its meters' registers and
sequence numbers afresh on every run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
import importlib
import json
import os
from pathlib import Path
import time
from types import MappingProxyType
from typing import Any, Final

from homeassistant.auth import auth_manager_from_config
from homeassistant.auth.const import GROUP_ID_ADMIN, GROUP_ID_USER
from homeassistant.auth.models import TOKEN_TYPE_LONG_LIVED_ACCESS_TOKEN, User
from homeassistant.auth.providers import homeassistant as hass_auth
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_HOST, CONF_PASSWORD, CONF_PORT, CONF_USERNAME
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.storage import Store
from homeassistant.util import slugify, ulid as ulid_util

from custom_components.prepaid_meter.config_flow import PrepaidMeterConfigFlow
from custom_components.prepaid_meter.const import (
    CONF_COMMUNITY_ID,
    CONF_COMMUNITY_NAME,
    CONF_CURRENCY,
    CONF_PREFIX,
    CONF_TARIFF,
    DOMAIN,
)
from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.community import Community
from custom_components.prepaid_meter.engine.ledger import Ledger
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.tariff import load_preset
from simulator import SimConfig, build_meters

ROOT: Final = Path(__file__).resolve().parent.parent
COMMUNITY: Final = "demo"
COMMUNITY_NAME: Final = "Demo community"
TARIFF: Final = "beijing_monthly"
CURRENCY: Final = "CNY"
PREFIX: Final = "prepaid"
SEED: Final = 7
METERS: Final = 30
USERNAME: Final = "demo"
PASSWORD: Final = "demo-prepaid"  # noqa: S105 - the demo's published login
#: A resident's login (not an administrator), linked to one household once Home Assistant runs.
RESIDENT_USERNAME: Final = "resident"
RESIDENT_PASSWORD: Final = "resident-prepaid"  # noqa: S105 - the demo's published login
#: The owner of the household's own Home Assistant (`scripts/demo --household`).
HOUSEHOLD_USERNAME: Final = "household"
HOUSEHOLD_PASSWORD: Final = "household-prepaid"  # noqa: S105 - the demo's published login
DEMO_SCENARIOS: Final = (
    ("elderly-inactive", 2),
    ("overload", 2),
    ("theft", 2),
    ("offline", 2),
    ("reset", 1),
    ("garbage", 1),
    ("vacant", 2),
)
#: The demo's prepaid policy: no friendly hours (start == end is an empty window, weekends are
#: not friendly), so the demo shows a cut whatever the time in Shanghai; 1 CNY of emergency
#: credit. Change it in Home Assistant under the entry's options.
DEMO_OPTIONS: Final[Mapping[str, Any]] = {
    "warn_level_1": "20",
    "warn_level_2": "5",
    "emergency_credit": "1",
    "friendly_start": "00:00:00",
    "friendly_end": "00:00:00",
    "friendly_weekends": False,
}
#: Opening top-ups of the ordinary households, by meter index: some run out within minutes
#: at the demo's speed, others last the whole demo.
DEMO_TOP_UPS: Final = (0, 1, 3, 8, 15, 30, 50, 80, 120, 200, 300)
TOKEN_FILE: Final = ".demo_token"  # noqa: S105 - a file name
SUMMARY_FILE: Final = "demo.json"
CLIENT_NAME: Final = "prepaid_meter demo"


@dataclass(frozen=True)
class DemoMeter:
    """One simulated meter and the household it is assigned to."""

    meter_id: str
    scenario: str
    account_id: str
    label: str
    top_up: Decimal
    supply_protected: bool


@dataclass(frozen=True)
class DemoSettings:
    """What `prepare` writes. The defaults are the demo's."""

    config_dir: Path
    http_port: int = 8123
    http_host: str = "127.0.0.1"
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    #: The community entry's broker login (None: anonymous). With `--household` it is the
    #: dynamic security administrator, so `prepaid_meter.household_access` can provision.
    broker_username: str | None = None
    broker_password: str | None = None
    #: The simulator's broker login (None: anonymous).
    simulator_username: str | None = None
    simulator_password: str | None = None
    community: str = COMMUNITY
    prefix: str = PREFIX
    meters: int = METERS
    seed: int = SEED
    scenarios: tuple[tuple[str, int], ...] = DEMO_SCENARIOS
    #: The simulator's `--start` (UNIX seconds): households are opened and topped up just
    #: before it, so the first readings are billed.
    start: int = field(default_factory=lambda: int(time.time()) - 7 * 86_400)
    options: Mapping[str, Any] = field(default_factory=lambda: dict(DEMO_OPTIONS))
    #: The community's payment settings as the options flow stores them (None: no payments;
    #: see `payment_options`).
    payments: Mapping[str, Any] | None = None
    #: Opening top-up per meter id; meters not listed get the demo's plan.
    top_ups: Mapping[str, Decimal] = field(default_factory=dict)
    #: Only `http:` and `api:` (plus what Home Assistant always loads): no recorder, history,
    #: logbook or energy. For tests and benchmarks.
    minimal: bool = False
    #: With `minimal`, still keep a recorder (the benchmark measures both ways).
    recorder: bool = False
    #: With `minimal`, also load `config:` (its REST API adds config entries through flows).
    config_api: bool = False
    #: Entity globs the recorder leaves out (with `recorder`).
    recorder_exclude: tuple[str, ...] = ()
    seed_ledger: bool = True
    username: str = USERNAME
    password: str = PASSWORD
    resident_username: str = RESIDENT_USERNAME
    resident_password: str = RESIDENT_PASSWORD
    log_level: str = "warning"
    #: Home Assistant's language: entity names, logbook lines and errors are written in it
    #: (`en` or `zh-Hans`; a person's own profile language changes only the frontend's words).
    language: str = "en"

    def sim_config(self) -> SimConfig:
        """Return the simulator settings whose meter ids this configuration expects."""
        return SimConfig(
            community=self.community,
            meters=self.meters,
            prefix=self.prefix,
            seed=self.seed,
            scenarios=self.scenarios,
        )

    def simulator_args(self, *, speed: float = 60.0, interval: float = 10.0) -> list[str]:
        """Return the simulator's command line arguments (after `python -m simulator`)."""
        args = [
            "--broker",
            f"mqtt://{self.broker_host}:{self.broker_port}",
            "--community",
            self.community,
            "--prefix",
            self.prefix,
            "--meters",
            str(self.meters),
            "--seed",
            str(self.seed),
            "--interval",
            str(interval),
            "--speed",
            str(speed),
            "--start",
            datetime.fromtimestamp(self.start, UTC).isoformat(),
        ]
        for name, count in self.scenarios:
            args += ["--scenario", f"{name}:{count}"]
        if self.simulator_username is not None:
            # One argument each: a generated password may start with "-".
            args.append(f"--username={self.simulator_username}")
            args.append(f"--password={self.simulator_password or ''}")
        return args


@dataclass(frozen=True)
class Resident:
    """The demo's resident login, their household, and a neighbour's (for the dashboards)."""

    username: str
    user_id: str
    household: str
    label: str
    meter_id: str
    neighbour: str
    neighbour_label: str


def choose_households(meters: Sequence[DemoMeter]) -> tuple[DemoMeter, DemoMeter]:
    """Return the resident's household (ordinary, well in credit) and a neighbour's.

    The neighbour starts without credit, so the demo soon cuts its supply: the operator's
    list shows it, and the resident's restore of it is refused.
    """
    ordinary = [m for m in meters if m.scenario == "ordinary" and not m.supply_protected]
    pool = ordinary or list(meters)
    home = max(pool, key=lambda m: (m.top_up >= 100, -pool.index(m)))
    others = [m for m in pool if m is not home] or [home]
    neighbour = min(others, key=lambda m: (m.top_up, others.index(m)))
    return home, neighbour


@dataclass(frozen=True)
class Prepared:
    """What `prepare` made: where Home Assistant listens, how to log in, which meters."""

    config_dir: Path
    url: str
    token: str
    entry_id: str
    username: str
    password: str
    meters: tuple[DemoMeter, ...]
    resident: Resident

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-friendly summary (without the token)."""
        return {
            "config_dir": str(self.config_dir),
            "url": self.url,
            "entry_id": self.entry_id,
            "username": self.username,
            "resident": dataclasses.asdict(self.resident),
            "meters": [
                {
                    "meter_id": m.meter_id,
                    "scenario": m.scenario,
                    "account_id": m.account_id,
                    "label": m.label,
                    "top_up": str(m.top_up),
                    "supply_protected": m.supply_protected,
                }
                for m in self.meters
            ],
        }


def plan_meters(settings: DemoSettings) -> list[DemoMeter]:
    """Return the simulator's meters (same ids for the same seed) and their households."""
    planned = []
    for meter in build_meters(settings.sim_config()):
        index = meter.index
        building, room = divmod(index, 12)
        label = f"Block {building + 1} Room {(room // 4 + 1) * 100 + room % 4 + 1}"
        protected = meter.scenario == "elderly-inactive"
        default = Decimal(50) if protected else Decimal(DEMO_TOP_UPS[index % len(DEMO_TOP_UPS)])
        planned.append(
            DemoMeter(
                meter_id=meter.meter_id,
                scenario=meter.scenario,
                account_id=f"{settings.community}-{index + 1:04d}",
                label=label,
                top_up=settings.top_ups.get(meter.meter_id, default),
                supply_protected=protected,
            )
        )
    return planned


def ledger_file(config_dir: Path, community: str = COMMUNITY) -> Path:
    """Return the community's ledger in the config folder (as the integration names it)."""
    return config_dir / f"{DOMAIN}_{community}.sqlite3"


def configuration_yaml(settings: DemoSettings) -> str:
    """Return `configuration.yaml`: core settings, the HTTP port and a small component set."""
    lines = [
        "# Written by `python -m demo setup` (scripts/demo); safe to edit, rewritten on setup.",
        "homeassistant:",
        "  name: Prepaid meter demo",
        "  latitude: 39.9042",
        "  longitude: 116.4074",
        "  elevation: 44",
        "  unit_system: metric",
        "  time_zone: Asia/Shanghai",
        f"  currency: {CURRENCY}",
        "  country: CN",
        f"  language: {settings.language}",
        "",
        "http:",
        f"  server_host: {settings.http_host}",
        f"  server_port: {settings.http_port}",
        "",
        "api:",
        "",
        "logger:",
        f"  default: {settings.log_level}",
        "  logs:",
        "    custom_components.prepaid_meter: info",
        "    homeassistant.components.http.ban: warning",
        "",
    ]
    if settings.minimal:
        if settings.config_api:
            lines += ["config:", ""]
        if settings.recorder:
            lines += ["recorder:", "  commit_interval: 5"]
            if settings.recorder_exclude:
                lines += ["  exclude:", "    entity_globs:"]
                lines += [f'      - "{glob}"' for glob in settings.recorder_exclude]
            lines += [""]
        return "\n".join(lines)
    lines += [
        "frontend:",
        "config:",
        "recorder:",
        "  purge_keep_days: 3",
        "  commit_interval: 5",
        "history:",
        "logbook:",
        "energy:",
        "blueprint:",
        "automation: !include automations.yaml",
        "script: !include scripts.yaml",
        "person:",
        "repairs:",
        "search:",
        "",
    ]
    return "\n".join(lines)


def _link(link: Path, target: Path) -> None:
    """Make `link` a symlink to `target` (replacing an older link, never a real folder)."""
    if link.is_symlink():
        if link.resolve() == target.resolve():
            return
        link.unlink()
    elif link.exists():
        return  # a real folder the user made: leave it alone
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=target.is_dir())


def write_files(settings: DemoSettings) -> None:
    """Write configuration.yaml and link the integration and the repository's blueprints."""
    config_dir = settings.config_dir
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(configuration_yaml(settings))
    for name in ("automations.yaml", "scripts.yaml"):
        path = config_dir / name
        if not path.exists():
            path.write_text("[]\n" if name == "automations.yaml" else "{}\n")
    _link(config_dir / "custom_components", ROOT / "custom_components")
    # Link each blueprint namespace, never the whole folder: Home Assistant copies its own
    # blueprints into blueprints/<domain>/homeassistant/, which must not land in the repository.
    blueprints = ROOT / "blueprints"
    if blueprints.is_dir():
        for domain in sorted(p for p in blueprints.iterdir() if p.is_dir()):
            for namespace in sorted(p for p in domain.iterdir() if p.is_dir()):
                _link(config_dir / "blueprints" / domain.name / namespace.name, namespace)


def seed_ledger(settings: DemoSettings, meters: Sequence[DemoMeter]) -> None:
    """Create the ledger afresh: one household per meter, assigned, with its opening top-up."""
    path = ledger_file(settings.config_dir, settings.community)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    tariff = load_preset(TARIFF)
    policy = PolicyConfig.from_options({"timezone": str(tariff.tz), **settings.options})
    opened = float(settings.start - 60)
    ledger = Ledger(path)
    try:
        community = Community(ledger, tariff, policy, clock=lambda: opened)
        for meter in meters:
            community.assign_meter(
                meter.meter_id,
                meter.account_id,
                meter.label,
                supply_protected=meter.supply_protected or None,
            )
            if meter.top_up > 0:
                community.top_up(
                    meter.account_id,
                    meter.top_up,
                    f"opening-{meter.account_id}",
                    "demo",
                    actor=Actor("operator", name="demo"),
                )
    finally:
        ledger.close()


def payment_options(keys: Path, config_dir: Path, public_url: str) -> dict[str, Any]:
    """Return the payment settings for the local providers whose keys are in `keys`.

    `keys` is the folder `python -m simulator pay --keys` wrote (its `merchant.json` names the
    files), inside `config_dir`: the options name the files relative to it, as an operator
    would. WeChat Pay on port 8580 and Alipay on 8581 (scripts/demo starts them there).
    """
    ids = json.loads((keys / "merchant.json").read_text(encoding="utf-8"))
    wechat, alipay = ids["wechat"], ids["alipay"]
    folder = keys.resolve().relative_to(config_dir.resolve()).as_posix()
    return {
        "wechat": True,
        "wechat_mchid": wechat["mchid"],
        "wechat_appid": wechat["appid"],
        "wechat_serial_no": wechat["serial_no"],
        "wechat_private_key": f"{folder}/{wechat['private_key']}",
        "wechat_apiv3_key": f"{folder}/{wechat['apiv3_key']}",
        "wechat_platform_cert": f"{folder}/{wechat['platform_public_key']}",
        "wechat_platform_serial": wechat["platform_serial"],
        "wechat_url": "http://127.0.0.1:8580",
        "alipay": True,
        "alipay_app_id": alipay["app_id"],
        "alipay_seller_id": alipay["seller_id"],
        "alipay_private_key": f"{folder}/{alipay['private_key']}",
        "alipay_public_key": f"{folder}/{alipay['alipay_public_key']}",
        "alipay_url": "http://127.0.0.1:8581/gateway.do",
        "public_url": public_url,
        "max_payment": "2000.00",
        "max_per_day": "5000.00",
        "order_minutes": 15,
    }


def stored_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Return policy options as the options flow stores them (normalised by `PolicyConfig`)."""
    stored = PolicyConfig.from_options(options).to_options()
    stored.pop("timezone", None)  # the tariff's zone applies; the flow does not store one
    stored.pop("country", None)  # Home Assistant's country applies unless an operator sets one
    return stored


async def _async_stable_http_config(hass: HomeAssistant, settings: DemoSettings) -> None:
    """Store the demo's HTTP settings as Home Assistant 2026's confirmed (stable) config.

    From 2026, the `http:` section of configuration.yaml is migrated into storage as a
    *pending* config that must be confirmed within 5 minutes, else Home Assistant reverts it
    and restarts (measured: the demo and bench_ha died 5 minutes in). 2025.4 has no such
    store and reads the YAML, which stays for it; where the store exists it is written here
    as stable with the YAML migration done, and the YAML section is then ignored.
    """
    try:  # by name: the module exists only from 2026 (mypy checks both versions)
        http_config: Any = importlib.import_module("homeassistant.components.http.config")
    except ModuleNotFoundError:  # 2025.4: the YAML is the configuration
        return
    stable = dict(
        http_config.HTTP_STORAGE_SCHEMA(
            {"server_host": [settings.http_host], "server_port": settings.http_port}
        )
    )
    stable.update(created_at=datetime.now(UTC).isoformat(), error=None, error_message=None)
    store: Store[dict[str, Any]] = Store(
        hass,
        http_config.STORAGE_VERSION,
        http_config.STORAGE_KEY,
        minor_version=http_config.STORAGE_MINOR_VERSION,
        private=True,
    )
    await store.async_save({"stable": stable, "pending": None, "yaml_migration_done": True})


async def _async_prepare_storage(
    settings: DemoSettings, stored_token: str | None
) -> tuple[str, str, str]:
    """Write auth, onboarding and the config entry with Home Assistant's code.

    Returns (entry_id, token, the resident's user id).
    """
    hass, provider = await _async_open(settings.config_dir)
    user = await _async_owner(hass, provider, settings.username, settings.password)
    resident = await _async_owner(
        hass,
        provider,
        settings.resident_username,
        settings.resident_password,
        name="Demo resident",
        group_id=GROUP_ID_USER,
    )
    token = await _async_token(hass, user, stored_token)
    await _async_onboarded(hass, settings)

    entries_store: Store[dict[str, Any]] = Store(hass, 1, "core.config_entries", minor_version=5)
    stored = await entries_store.async_load() or {"entries": []}
    entries: list[dict[str, Any]] = list(stored.get("entries", []))
    data = {
        CONF_HOST: settings.broker_host,
        CONF_PORT: settings.broker_port,
        CONF_PREFIX: settings.prefix,
        CONF_COMMUNITY_ID: settings.community,
        CONF_COMMUNITY_NAME: COMMUNITY_NAME,
        CONF_CURRENCY: CURRENCY,
        CONF_TARIFF: TARIFF,
    }
    login = {CONF_USERNAME: settings.broker_username, CONF_PASSWORD: settings.broker_password}
    data.update({key: value for key, value in login.items() if value is not None})
    options = stored_options(settings.options)
    if settings.payments is not None:
        options["payments"] = dict(settings.payments)
    unique_id = (
        f"{settings.broker_host}:{settings.broker_port}/{settings.community}"  # as the flow does
    )
    existing = next((e for e in entries if e.get("domain") == DOMAIN), None)
    if existing is None:
        entry = ConfigEntry(
            data=data,
            discovery_keys=MappingProxyType({}),
            domain=DOMAIN,
            minor_version=PrepaidMeterConfigFlow.MINOR_VERSION,
            options=options,
            source="user",
            subentries_data=None,
            title=COMMUNITY_NAME,
            unique_id=unique_id,
            version=PrepaidMeterConfigFlow.VERSION,
        )
        entries.append(entry.as_dict())
        entry_id = entry.entry_id
    else:
        kept = {k: v for k, v in existing.get("data", {}).items() if k not in login}
        existing["data"] = {**kept, **data}  # an earlier run's broker login goes
        existing["options"] = options
        existing["unique_id"] = unique_id
        existing["modified_at"] = datetime.now(UTC).isoformat()
        entry_id = str(existing["entry_id"])
    await entries_store.async_save({"entries": entries})
    # Stopping runs the final write, which saves the stores that save with a delay (auth).
    await hass.async_stop(force=True)
    if not settings.minimal:
        await _async_energy_preferences(hass, settings)
    return entry_id, token, resident.id


async def _async_open(config_dir: Path) -> tuple[HomeAssistant, hass_auth.HassAuthProvider]:
    """Return a stopped-state Home Assistant on `config_dir` with its auth loaded."""
    hass = HomeAssistant(str(config_dir))
    # Home Assistant 2026's auth store reads the device and entity registries as it loads.
    if (setup_registry := getattr(dr, "async_setup", None)) is not None:
        setup_registry(hass)
    await dr.async_load(hass)
    await er.async_load(hass)
    hass.auth = await auth_manager_from_config(hass, [{"type": "homeassistant"}], [])
    provider = hass.auth.auth_providers[0]
    assert isinstance(provider, hass_auth.HassAuthProvider)
    await provider.async_initialize()
    return hass, provider


async def _async_onboarded(hass: HomeAssistant, settings: DemoSettings) -> None:
    """Store the HTTP settings and a finished onboarding."""
    await _async_stable_http_config(hass, settings)
    onboarding: Store[dict[str, Any]] = Store(hass, 4, "onboarding", private=True)
    await onboarding.async_save({"done": ["user", "core_config", "analytics", "integration"]})


async def _async_prepare_household_storage(settings: DemoSettings, stored_token: str | None) -> str:
    """Write the owner, its token and onboarding of a household's own Home Assistant.

    No config entry: the household's is added through the config flow once it runs, as a
    resident would. Returns the token.
    """
    hass, provider = await _async_open(settings.config_dir)
    user = await _async_owner(
        hass, provider, settings.username, settings.password, name="Demo household"
    )
    token = await _async_token(hass, user, stored_token)
    await _async_onboarded(hass, settings)
    await hass.async_stop(force=True)
    return token


async def _async_owner(
    hass: HomeAssistant,
    provider: hass_auth.HassAuthProvider,
    username: str,
    password: str,
    *,
    name: str = "Demo operator",
    group_id: str = GROUP_ID_ADMIN,
) -> User:
    """Return a demo login's user (the owner by default), creating it the first time."""
    assert provider.data is not None
    credentials = await provider.async_get_or_create_credentials({"username": username})
    if not credentials.is_new:
        user = await hass.auth.async_get_user_by_credentials(credentials)
        if user is not None:
            provider.data.change_password(username, password)
            await provider.data.async_save()
            return user
    user = await hass.auth.async_create_user(name, group_ids=[group_id])
    try:
        await provider.async_add_auth(username, password)
    except hass_auth.InvalidUser:  # a login without a user: give it its password again
        provider.data.change_password(username, password)
        await provider.data.async_save()
    credentials = await provider.async_get_or_create_credentials({"username": username})
    await hass.auth.async_link_user(user, credentials)
    return user


async def _async_token(hass: HomeAssistant, user: User, stored: str | None) -> str:
    """Return the demo's long-lived access token: the stored one if valid, else a new one."""
    if stored and hass.auth.async_validate_access_token(stored) is not None:
        return stored
    refresh = await hass.auth.async_create_refresh_token(
        user,
        client_name=f"{CLIENT_NAME} {ulid_util.ulid_now()[-6:]}",
        token_type=TOKEN_TYPE_LONG_LIVED_ACCESS_TOKEN,
        access_token_expiration=timedelta(days=3650),
    )
    return hass.auth.async_create_access_token(refresh)


def meter_entity_id(config_dir: Path, settings: DemoSettings, meter_id: str, key: str) -> str:
    """Return the entity id a meter's sensor has (or will get at its first registration).

    The registry of an earlier run knows it; otherwise Home Assistant derives it from the
    device name (the household's label) and the entity's English name ("Energy", "Price").
    """
    unique_id = f"{settings.prefix}/{settings.community}_{meter_id}_{key}"
    registry = config_dir / ".storage" / "core.entity_registry"
    if registry.is_file():
        for entity in json.loads(registry.read_text())["data"]["entities"]:
            if entity.get("platform") == DOMAIN and entity.get("unique_id") == unique_id:
                return str(entity["entity_id"])
    label = next(m.label for m in plan_meters(settings) if m.meter_id == meter_id)
    return f"sensor.{slugify(label)}_{key}"


async def _async_energy_preferences(hass: HomeAssistant, settings: DemoSettings) -> None:
    """Set the Energy dashboard to the resident's household: its energy sensor and price.

    Written in the grid format both versions read (2026 migrates it to its own on load), and
    only when no preferences exist (a person's later choices stay).
    """
    store: Store[dict[str, Any]] = Store(hass, 1, "energy")
    if await store.async_load():
        return
    home, _neighbour = choose_households(plan_meters(settings))
    config_dir = settings.config_dir
    grid = {
        "type": "grid",
        "flow_from": [
            {
                "stat_energy_from": meter_entity_id(config_dir, settings, home.meter_id, "energy"),
                "stat_cost": None,
                "entity_energy_price": meter_entity_id(
                    config_dir, settings, home.meter_id, "price"
                ),
                "number_energy_price": None,
            }
        ],
        "flow_to": [],
        "cost_adjustment_day": 0.0,
    }
    await store.async_save({"energy_sources": [grid], "device_consumption": []})


def prepare(settings: DemoSettings) -> Prepared:
    """Write (or refresh) the configuration folder; return how to reach it."""
    settings.config_dir.mkdir(parents=True, exist_ok=True)
    write_files(settings)
    meters = plan_meters(settings)
    home, neighbour = choose_households(meters)
    if settings.seed_ledger:
        seed_ledger(settings, meters)
    token_file = settings.config_dir / TOKEN_FILE
    stored_token = token_file.read_text().strip() if token_file.exists() else None
    entry_id, token, resident_id = asyncio.run(_async_prepare_storage(settings, stored_token))
    if token != stored_token:
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
    if settings.seed_ledger:
        # The recorder's history of an earlier run would show every energy register going
        # back (the simulator starts its registers afresh): start the history afresh too.
        for database in settings.config_dir.glob("home-assistant_v2.db*"):
            database.unlink()
        # The relay wishes of an earlier run belong to the ledger that was just replaced.
        relays = settings.config_dir / ".storage" / f"{DOMAIN}.{entry_id}.relays"
        relays.unlink(missing_ok=True)
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host  # noqa: S104
    prepared = Prepared(
        config_dir=settings.config_dir,
        url=f"http://{host}:{settings.http_port}",
        token=token,
        entry_id=entry_id,
        username=settings.username,
        password=settings.password,
        meters=tuple(meters),
        resident=Resident(
            username=settings.resident_username,
            user_id=resident_id,
            household=home.account_id,
            label=home.label,
            meter_id=home.meter_id,
            neighbour=neighbour.account_id,
            neighbour_label=neighbour.label,
        ),
    )
    summary = settings.config_dir / SUMMARY_FILE
    summary.write_text(json.dumps(prepared.to_json(), indent=2) + "\n")
    return prepared


@dataclass(frozen=True)
class PreparedHousehold:
    """What `prepare_household` made: a household's own Home Assistant, before its entry."""

    config_dir: Path
    url: str
    token: str
    username: str
    password: str


def prepare_household(settings: DemoSettings) -> PreparedHousehold:
    """Write (or refresh) the config folder of a household's own Home Assistant.

    The same files, owner login, token and onboarding as `prepare`, with no community entry,
    ledger or energy preferences; `settings.username` and `password` are the owner's login.
    """
    settings.config_dir.mkdir(parents=True, exist_ok=True)
    write_files(settings)
    token_file = settings.config_dir / TOKEN_FILE
    stored_token = token_file.read_text().strip() if token_file.exists() else None
    token = asyncio.run(_async_prepare_household_storage(settings, stored_token))
    if token != stored_token:
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host  # noqa: S104
    return PreparedHousehold(
        config_dir=settings.config_dir,
        url=f"http://{host}:{settings.http_port}",
        token=token,
        username=settings.username,
        password=settings.password,
    )


def read_token(config_dir: Path) -> str:
    """Return the token `prepare` stored in a config folder."""
    return (config_dir / TOKEN_FILE).read_text().strip()


def environment() -> dict[str, str]:
    """Return the environment for child processes: the repository importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env
