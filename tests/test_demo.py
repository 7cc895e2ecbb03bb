"""The demo end to end: `python -m demo setup`, a real Home Assistant, the simulator, MQTT.

Runs in about 15-25 s here: Home Assistant starts in a few seconds once its frontend package is
installed (the very first start anywhere installs it from PyPI).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
import contextlib
from decimal import Decimal, InvalidOperation
import importlib.util
import json
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any
import urllib.error
import urllib.request

import aiomqtt
from homeassistant.const import __version__ as HA_VERSION
import pytest

from demo.config import ROOT, environment, read_token
from demo.processes import (
    Child,
    amqtt_binary,
    api_get,
    free_port,
    start_hass,
    start_simulator,
    wait_for_hass,
)
from tests.broker import Mosquitto

METERS = 4
PREFIX = "demotest"  # the session broker is shared: keep to our own topics
HASS_START_TIMEOUT = 75.0
STATES_TIMEOUT = 45.0


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Child processes to stop at the end of the test, last started first."""
    started: list[Child] = []
    yield started
    for child in reversed(started):
        child.stop(timeout=20)


def test_demo_setup_runs_home_assistant_with_live_balances(
    tmp_path: Path, mosquitto: Mosquitto, children: list[Child]
) -> None:
    """The setup script's config folder starts, logs in, and shows billed balances."""
    config_dir = tmp_path / "config"
    http_port = free_port()
    setup = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo",
            "setup",
            "--config-dir",
            str(config_dir),
            "--http-port",
            str(http_port),
            "--broker-host",
            mosquitto.host,
            "--broker-port",
            str(mosquitto.port),
            "--prefix",
            PREFIX,
            "--meters",
            str(METERS),
            "--no-scenarios",
            "--minimal",
        ],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert setup.returncode == 0, setup.stderr
    summary = json.loads(setup.stdout)
    meters = summary["meters"]
    assert len(meters) == METERS
    # Home Assistant 2026 keeps the HTTP settings in storage, and YAML ones only as a pending
    # trial that reverts (and restarts) after 5 minutes: the demo stores them as confirmed.
    if importlib.util.find_spec("homeassistant.components.http.config") is not None:
        http = json.loads((config_dir / ".storage" / "http").read_text())["data"]
        assert http["pending"] is None and http["yaml_migration_done"] is True
        assert http["stable"]["server_port"] == http_port
    # A second setup on the same folder keeps the user, token and entry.
    token = read_token(config_dir)
    again = subprocess.run(
        [sys.executable, "-m", "demo", *setup.args[3:]],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert read_token(config_dir) == token
    assert json.loads(again.stdout)["entry_id"] == summary["entry_id"]

    url = summary["url"]
    hass = start_hass(config_dir, tmp_path / "hass.log")
    children.append(hass)
    wait_for_hass(hass, url, token, HASS_START_TIMEOUT)

    # The demo login works through Home Assistant's own login flow.
    flow = _post(
        f"{url}/auth/login_flow",
        {"client_id": f"{url}/", "handler": ["homeassistant", None], "redirect_uri": f"{url}/"},
    )
    login = _post(
        f"{url}/auth/login_flow/{flow['flow_id']}",
        {"client_id": f"{url}/", "username": "demo", "password": "demo-prepaid"},
    )
    assert login["type"] == "create_entry"

    start = int(time.time()) - 86_400
    sim_args = [
        "--broker",
        mosquitto.url,
        "--community",
        "demo",
        "--prefix",
        PREFIX,
        "--meters",
        str(METERS),
        "--seed",
        "7",
        "--interval",
        "1",
        "--speed",
        "600",
        "--start",
        str(time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start))),
        "--quiet",
    ]
    children.append(start_simulator(sim_args, tmp_path / "simulator.log"))

    labels = {m["label"]: Decimal(m["top_up"]) for m in meters}
    balances: dict[str, Decimal] = {}
    deadline = time.monotonic() + STATES_TIMEOUT
    while time.monotonic() < deadline:
        try:
            states = api_get(url, token, "/api/states")
        except (urllib.error.URLError, OSError):
            states = []
        balances = {}
        for state in states:
            entity_id = str(state["entity_id"])
            name = str(state["attributes"].get("friendly_name", ""))
            label = next((lb for lb in labels if name.startswith(lb)), None)
            value = _decimal(str(state["state"]))
            if (
                label is not None
                and entity_id.startswith("sensor.")
                and entity_id.endswith("_balance")
                and value is not None
            ):
                balances[label] = value
        moved = [lb for lb, value in balances.items() if value < labels[lb]]
        if len(balances) == METERS and moved:
            break
        time.sleep(1)
    assert set(balances) == set(labels), (
        f"balance sensors seen: {balances}\n{hass.tail()}\n"
        f"{(tmp_path / 'simulator.log').read_text()[-1500:]}"
    )
    # Readings were billed: some household's balance is below its opening top-up.
    assert any(value < labels[label] for label, value in balances.items()), balances


def _processes_mentioning(text: str) -> list[int]:
    """Return the pids whose command line mentions `text` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if text in cmdline and ") Z" not in stat:  # zombies have exited already
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def _running_demo(
    tmp_path: Path, args: list[str], start_timeout: float
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Run `python -m demo run --dir <tmp>/demo ARGS` until its banner, yield it and its
    output file; stop it with Ctrl-C afterwards (killed if it does not stop in 90 s)."""
    out_file = tmp_path / "demo.out"
    with out_file.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "demo", "run", "--dir", str(tmp_path / "demo"), *args],
            cwd=ROOT,
            env=environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + start_timeout
        while "Press Ctrl-C" not in out_file.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, out_file.read_text()
            time.sleep(0.5)
        assert "Press Ctrl-C" in out_file.read_text(), out_file.read_text()
        yield proc, out_file
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_demo_run_starts_everything_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path, socket_enabled: None, broker: str
) -> None:
    """`python -m demo run` (what scripts/demo starts): banner, live balances, clean Ctrl-C.

    On mosquitto, and on the embedded pure-Python broker amqtt that the demo falls back to.
    """
    if broker == "amqtt" and amqtt_binary() is None:
        pytest.skip("amqtt is not installed (scripts/test installs it into .venv-broker)")
    state = tmp_path / "demo"
    http_port, broker_port = free_port(), free_port()
    args = ["--http-port", str(http_port), "--broker", broker, "--broker-port", str(broker_port)]
    args += ["--speed", "600", "--interval", "1"]
    with _running_demo(tmp_path, args, HASS_START_TIMEOUT) as (proc, out_file):
        banner = out_file.read_text()
        url = f"http://127.0.0.1:{http_port}"
        assert url in banner and "demo / demo-prepaid" in banner
        assert f"homeassistant=={HA_VERSION}" in banner, banner
        token = read_token(state / "config")
        summary = json.loads((state / "config" / "demo.json").read_text())
        assert len(summary["meters"]) == 30
        assert {m["scenario"] for m in summary["meters"]} >= {"theft", "offline", "vacant"}
        labels = {m["label"] for m in summary["meters"]}
        numeric: set[str] = set()
        deadline = time.monotonic() + STATES_TIMEOUT
        while time.monotonic() < deadline:
            states = api_get(url, token, "/api/states")
            numeric = {
                str(s["attributes"].get("friendly_name", "")).removesuffix(" Balance")
                for s in states
                if str(s["entity_id"]).endswith("_balance")
                and _decimal(str(s["state"])) is not None
            } & labels
            if len(numeric) >= 25:  # garbage and offline meters may lag behind
                break
            time.sleep(1)
        assert len(numeric) >= 25, (numeric, (state / "hass.log").read_text()[-2000:])
    output = out_file.read_text()
    assert proc.returncode == 0, output
    assert f"MQTT broker ({broker})" in output, output
    for name in ("simulator", "Home Assistant", broker):
        assert f"{name} stopped" in output, output
    assert _processes_mentioning(str(state)) == []


async def _anonymous_login(port: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="demo-test-anonymous", timeout=5):
        pass


def test_demo_household_runs_the_residents_own_home_assistant(
    tmp_path: Path, socket_enabled: None
) -> None:
    """`--household`: a second Home Assistant, household mode, fed by the community's broker.

    The broker runs with dynamic security (no anonymous logins); the household's entry is
    added through that instance's config flow with the code `household_access` handed out,
    and its balance comes from the community (the resident's household, not another).
    """
    state = tmp_path / "demo"
    http_port, household_port, broker_port = free_port(), free_port(), free_port()
    args = ["--http-port", str(http_port), "--household", "--household-port", str(household_port)]
    args += ["--broker", "mosquitto", "--broker-port", str(broker_port)]
    args += ["--speed", "600", "--interval", "1"]
    with _running_demo(tmp_path, args, 2 * HASS_START_TIMEOUT) as (proc, out_file):
        banner = out_file.read_text()
        url = f"http://127.0.0.1:{household_port}"
        assert f"household HA     {url}  login household / household-prepaid" in banner, banner
        summary = json.loads((state / "config" / "demo.json").read_text())
        resident = summary["resident"]
        token = read_token(state / "household" / "config")

        # The household's login works through its own Home Assistant's login flow.
        flow = _post(
            f"{url}/auth/login_flow",
            {"client_id": f"{url}/", "handler": ["homeassistant", None], "redirect_uri": f"{url}/"},
        )
        login = _post(
            f"{url}/auth/login_flow/{flow['flow_id']}",
            {"client_id": f"{url}/", "username": "household", "password": "household-prepaid"},
        )
        assert login["type"] == "create_entry", login

        (entry,) = api_get(url, token, "/api/config/config_entries/entry?domain=prepaid_meter")
        assert entry["state"] == "loaded"
        assert entry["title"] == f"demo {resident['meter_id']}"

        # Anonymous logins are refused: the simulator and the community have their own users.
        with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori"):
            asyncio.run(_anonymous_login(broker_port))

        balances: dict[str, Decimal] = {}
        deadline = time.monotonic() + STATES_TIMEOUT
        while time.monotonic() < deadline and not balances:
            balances = {
                str(s["entity_id"]): value
                for s in api_get(url, token, "/api/states")
                if str(s["entity_id"]).startswith("sensor.")
                and "balance" in str(s["entity_id"])
                and (value := _decimal(str(s["state"]))) is not None
            }
            time.sleep(1)
        assert len(balances) == 1, (balances, (state / "household.log").read_text()[-2000:])
        # It is the resident household's balance, as the community reckons it.
        community_token = read_token(state / "config")
        community_states = api_get(f"http://127.0.0.1:{http_port}", community_token, "/api/states")
        (community_balance,) = [
            Decimal(s["state"])
            for s in community_states
            if s["attributes"].get("friendly_name") == f"{resident['label']} Balance"
        ]
        (household_balance,) = balances.values()
        assert abs(household_balance - community_balance) < 5, (balances, community_balance)
    output = out_file.read_text()
    assert proc.returncode == 0, output
    assert "household's Home Assistant stopped" in output, output
    assert output.count("Home Assistant stopped") == 2, output
    for name in ("simulator", "mosquitto"):
        assert f"{name} stopped" in output, output
    assert _processes_mentioning(str(state)) == []
