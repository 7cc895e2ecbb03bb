"""The demo's command line: `python -m demo run` and `python -m demo setup`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import dataclasses
from datetime import datetime, timedelta, timezone
import json
from pathlib import Path
import shutil
import signal
import sys
import time
from types import FrameType

from homeassistant.const import __version__ as HA_VERSION

from custom_components.prepaid_meter.engine.broker_acl import BrokerAclError
from custom_components.prepaid_meter.engine.transport import CannotConnect, InvalidAuth
from demo.config import (
    COMMUNITY,
    DEMO_OPTIONS,
    DEMO_SCENARIOS,
    HOUSEHOLD_PASSWORD,
    HOUSEHOLD_USERNAME,
    METERS,
    PASSWORD,
    PREFIX,
    ROOT,
    SEED,
    USERNAME,
    DemoSettings,
    Prepared,
    PreparedHousehold,
    payment_options,
    prepare,
    prepare_household,
)
from demo.household import (
    BROKER_ADMIN,
    add_household_entry,
    community_username,
    household_code,
    new_password,
    provision_broker,
    simulator_username,
    wait_for_household_entry,
)
from demo.people import setup_people
from demo.processes import (
    Child,
    amqtt_binary,
    api_get,
    free_port,
    mosquitto_binary,
    port_free,
    start_amqtt,
    start_hass,
    start_mosquitto,
    start_simulator,
    wait_for_config_api,
    wait_for_hass,
)

DEMO_DIR = ROOT / ".demo"
CST = timezone(timedelta(hours=8))


def _start(text: str) -> int:
    """Read --start: UNIX seconds, or an ISO date-time (no zone: UTC+8)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not UNIX seconds or ISO") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=CST)
    return int(when.timestamp())


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of `python -m demo`."""
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    setup = sub.add_parser("setup", help="write a ready Home Assistant config folder")
    setup.add_argument("--config-dir", type=Path, required=True)
    setup.add_argument("--http-port", type=int, default=8123)
    setup.add_argument("--http-host", default="127.0.0.1")
    setup.add_argument("--broker-host", default="127.0.0.1")
    setup.add_argument("--broker-port", type=int, default=1883)
    setup.add_argument("--community", default=COMMUNITY)
    setup.add_argument("--prefix", default=PREFIX)
    setup.add_argument("--meters", type=int, default=METERS)
    setup.add_argument("--seed", type=int, default=SEED)
    setup.add_argument(
        "--start",
        type=_start,
        default=None,
        help="the simulator's --start (UNIX seconds or ISO; default 7 days ago)",
    )
    setup.add_argument("--no-scenarios", action="store_true", help="only ordinary homes")
    setup.add_argument(
        "--options", type=json.loads, default=None, help="the entry's policy options as JSON"
    )
    setup.add_argument("--minimal", action="store_true", help="only http and api (tests)")
    setup.add_argument("--recorder", action="store_true", help="with --minimal: keep a recorder")

    run = sub.add_parser("run", help="start broker, Home Assistant and the simulator")
    run.add_argument("--dir", type=Path, default=DEMO_DIR, help="state folder (default .demo)")
    run.add_argument("--http-port", type=int, default=8123)
    run.add_argument(
        "--http-host", default="127.0.0.1", help="0.0.0.0 to reach the demo from other machines"
    )
    run.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "amqtt"),
        default="auto",
        help="the MQTT broker to start (auto: mosquitto if installed, else amqtt)",
    )
    run.add_argument(
        "--broker-port", type=int, default=None, help="default 1883 if free, else a free port"
    )
    run.add_argument("--speed", type=float, default=60.0, help="simulated seconds per second")
    run.add_argument("--interval", type=float, default=10.0, help="real seconds between readings")
    run.add_argument("--fresh", action="store_true", help="delete the state folder first")
    run.add_argument(
        "--start-timeout", type=float, default=900.0, help="seconds to wait for Home Assistant"
    )
    run.add_argument(
        "--payments",
        type=Path,
        default=None,
        help="the local payment providers' key folder (in the state folder's config/): the "
        "community's payments are set up with them (scripts/demo does this)",
    )
    run.add_argument(
        "--language",
        choices=("en", "zh-Hans"),
        default="en",
        help="Home Assistant's language (entity names, logbook, errors); a new language "
        "names new entities only: use it with --fresh",
    )
    run.add_argument(
        "--household",
        action="store_true",
        help="also start the resident household's own Home Assistant (household mode; "
        "mosquitto with its dynamic security plugin)",
    )
    run.add_argument(
        "--household-port",
        type=int,
        default=None,
        help="its HTTP port (default: --http-port + 1 if free, else a free port)",
    )
    return parser


def _settings_from_setup(args: argparse.Namespace) -> DemoSettings:
    extra = {}
    if args.start is not None:
        extra["start"] = args.start
    return DemoSettings(
        config_dir=args.config_dir.resolve(),
        http_port=args.http_port,
        http_host=args.http_host,
        broker_host=args.broker_host,
        broker_port=args.broker_port,
        community=args.community,
        prefix=args.prefix,
        meters=args.meters,
        seed=args.seed,
        scenarios=() if args.no_scenarios else DEMO_SCENARIOS,
        options=dict(DEMO_OPTIONS) if args.options is None else args.options,
        minimal=args.minimal,
        recorder=args.recorder,
        **extra,
    )


def cmd_setup(args: argparse.Namespace) -> int:
    """Write the config folder and print a JSON summary."""
    prepared = prepare(_settings_from_setup(args))
    print(
        json.dumps({**prepared.to_json(), "token_file": str(prepared.config_dir / ".demo_token")})
    )
    return 0


class _Stop(Exception):
    """SIGTERM or SIGHUP: stop like Ctrl-C."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _banner(
    prepared: Prepared,
    broker_port: int,
    state: Path,
    speed: float,
    behind_s: float,
    *,
    dashboards: Sequence[str],
    resident_password: str,
    household: PreparedHousehold | None = None,
) -> str:
    cut = sum(1 for m in prepared.meters if m.top_up < 10 and not m.supply_protected)
    # Simulated time starts in the past and runs `speed` times faster than the clock; the
    # platform rejects readings more than 10 minutes ahead of its clock (PROTOCOL.md).
    lasts_h = (behind_s + 600) / max(speed - 1, 1e-9) / 3600
    return "\n".join(
        [
            "",
            "  Prepaid meter demo is running",
            f"    Home Assistant   {prepared.url}  (homeassistant=={HA_VERSION}, "
            f"Python {sys.version.split()[0]})",
            f"    operator login   {prepared.username} / {prepared.password}  "
            f"(dashboard {prepared.url}/{dashboards[0]})",
            f"    resident login   {prepared.resident.username} / {resident_password}  "
            f"({prepared.resident.label}: {prepared.url}/{dashboards[1]})",
            "    energy           the Energy dashboard follows "
            f"{prepared.resident.label}'s meter and price",
            *(
                []
                if household is None
                else [
                    f"    household HA     {household.url}  login {household.username} / "
                    f"{household.password}",
                    f"                     {prepared.resident.label}'s own Home Assistant "
                    "(household mode): its balance, supply and Restore supply only",
                ]
            ),
            f"    MQTT broker      mqtt://127.0.0.1:{broker_port}  (topics prepaid/demo/#"
            + (
                "; dynamic security: a broker user per household, no anonymous logins)"
                if household is not None
                else ")"
            ),
            f"    community        {len(prepared.meters)} simulated meters, each assigned to a "
            f"household; {cut} start with little or no credit",
            f"    simulated time   {speed:g}x: a reading every 10 s covers "
            f"{10 * speed / 60:g} minutes",
            f"                     it starts {behind_s / 86_400:.0f} days ago and reaches "
            f"the present after about {lasts_h:.1f} h (then restart the demo)",
            "    policy           1 CNY emergency credit, no friendly hours (entry options)",
            f"    logs             {state}/hass.log, {state}/simulator.log"
            + ("" if household is None else f", {state}/household.log"),
            f"    API token        {prepared.config_dir}/.demo_token",
            "",
            "  Press Ctrl-C to stop everything.",
            "",
        ]
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Run broker, Home Assistant and simulator until Ctrl-C; stop them in order."""
    state: Path = args.dir.resolve()
    if args.fresh and state.exists():
        shutil.rmtree(state)
    broker = args.broker
    if broker == "auto":
        broker = "mosquitto" if mosquitto_binary() is not None else "amqtt"
    if (mosquitto_binary() if broker == "mosquitto" else amqtt_binary()) is None:
        print(f"demo: {broker} is not installed (scripts/demo installs it)", file=sys.stderr)
        return 1
    if args.household and broker != "mosquitto":
        print(
            "demo: --household needs mosquitto (its dynamic security plugin keeps households "
            "apart); amqtt has none",
            file=sys.stderr,
        )
        return 1
    if not port_free(args.http_port, args.http_host):
        print(
            f"demo: port {args.http_port} is in use (is another Home Assistant running?); "
            "choose another with --http-port",
            file=sys.stderr,
        )
        return 1
    broker_port = args.broker_port
    if broker_port is None:
        broker_port = 1883 if port_free(1883) else free_port()
    elif not port_free(broker_port):
        print(f"demo: port {broker_port} is in use; choose another", file=sys.stderr)
        return 1
    household_port = args.household_port if args.household else None
    if args.household:
        if household_port is None:
            household_port = (
                args.http_port + 1
                if port_free(args.http_port + 1, args.http_host)
                else free_port(args.http_host)
            )
        elif household_port == args.http_port or not port_free(household_port, args.http_host):
            print(f"demo: port {household_port} is in use; choose another", file=sys.stderr)
            return 1
    # With --household: the broker's administrator, the community's login and the
    # simulator's, with fresh passwords each run (the plugin's file is made afresh).
    admin_password = new_password() if args.household else None
    community_password = new_password()
    sim_password = new_password()

    children: list[Child] = []
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started in background
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    status = 0
    try:
        print(f"==> MQTT broker ({broker}) on 127.0.0.1:{broker_port}", flush=True)
        if broker == "mosquitto":
            dynsec = None if admin_password is None else (BROKER_ADMIN, admin_password)
            children.append(start_mosquitto(state / broker, broker_port, dynamic_security=dynsec))
        else:
            children.append(start_amqtt(state / broker, broker_port))
        settings = DemoSettings(
            config_dir=state / "config",
            http_port=args.http_port,
            http_host=args.http_host,
            broker_port=broker_port,
            language=args.language,
        )
        if args.payments is not None:
            public = f"http://127.0.0.1:{args.http_port}"
            payments = payment_options(args.payments, settings.config_dir, public)
            settings = dataclasses.replace(settings, payments=payments)
        if admin_password is not None:
            print("==> broker users: the community (administrator), the simulator", flush=True)
            provision_broker(
                settings.broker_host,
                broker_port,
                admin_password,
                settings.prefix,
                settings.community,
                community_password=community_password,
                sim_password=sim_password,
            )
            settings = dataclasses.replace(
                settings,
                broker_username=community_username(settings.community),
                broker_password=community_password,
                simulator_username=simulator_username(settings.community),
                simulator_password=sim_password,
            )
        print(f"==> preparing {state / 'config'}", flush=True)
        prepared = prepare(settings)
        print("==> starting Home Assistant", flush=True)
        hass = start_hass(settings.config_dir, state / "hass.log")
        children.append(hass)
        took = wait_for_hass(hass, prepared.url, prepared.token, args.start_timeout, progress=True)
        print(f"    Home Assistant is up ({took:.0f} s)", flush=True)
        print("==> starting the simulator", flush=True)
        children.append(
            start_simulator(
                settings.simulator_args(speed=args.speed, interval=args.interval),
                state / "simulator.log",
            )
        )
        print("==> linking the resident, making the dashboards", flush=True)
        made = setup_people(prepared.url, prepared.token, prepared.to_json()["resident"])
        household = None
        if household_port is not None:
            household = _start_household(
                prepared, settings, state, household_port, args.start_timeout, children
            )
        behind = time.time() - settings.start
        banner = _banner(
            prepared,
            broker_port,
            state,
            args.speed,
            behind,
            dashboards=[str(d["url_path"]) for d in made],
            resident_password=settings.resident_password,
            household=household,
        )
        print(banner, flush=True)
        while True:
            for child in children:
                if not child.running():
                    print(
                        f"demo: {child.name} stopped unexpectedly (exit "
                        f"{child.proc.returncode}); its log:\n{child.tail(1500)}",
                        file=sys.stderr,
                    )
                    status = 1
                    raise _Stop(child.name)
            time.sleep(1)
    except (KeyboardInterrupt, _Stop):
        pass
    except (RuntimeError, BrokerAclError, CannotConnect, InvalidAuth) as err:
        print(f"demo: {err}", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        if children:
            print("\n==> stopping", flush=True)
        for child in reversed(children):
            code = child.stop()
            print(f"    {child.name} stopped (exit {code})", flush=True)
    return status


def _start_household(
    prepared: Prepared,
    settings: DemoSettings,
    state: Path,
    port: int,
    timeout: float,
    children: list[Child],
) -> PreparedHousehold:
    """Start the resident household's own Home Assistant and add its entry with the code."""
    meter_id = prepared.resident.meter_id
    print(f"==> household access for {prepared.resident.label} (meter {meter_id})", flush=True)
    code = household_code(prepared.url, prepared.token, meter_id)
    home = DemoSettings(
        config_dir=state / "household" / "config",
        http_port=port,
        http_host=settings.http_host,
        username=HOUSEHOLD_USERNAME,
        password=HOUSEHOLD_PASSWORD,
        language=settings.language,
    )
    print(f"==> preparing {home.config_dir}", flush=True)
    household = prepare_household(home)
    print("==> starting the household's Home Assistant", flush=True)
    hass = start_hass(home.config_dir, state / "household.log", "household's Home Assistant")
    children.append(hass)
    took = wait_for_config_api(hass, household.url, household.token, timeout)
    print(f"    it is up ({took:.0f} s); adding My household with the code", flush=True)
    entries = api_get(
        household.url, household.token, "/api/config/config_entries/entry?domain=prepaid_meter"
    )
    if not entries:  # a second run keeps the entry of the first (the code is the same)
        add_household_entry(household.url, household.token, code)
    wait_for_household_entry(household.url, household.token)
    return household


def main(argv: Sequence[str] | None = None) -> int:
    """Run `python -m demo`."""
    args = build_parser().parse_args(argv)
    if args.command == "setup":
        return cmd_setup(args)
    return cmd_run(args)


__all__ = ["PASSWORD", "USERNAME", "main"]
