"""`python -m simulator` as a user runs it (a subprocess; its sockets are not blocked)."""

from __future__ import annotations

import asyncio
from pathlib import Path
import signal
import subprocess
import sys

import pytest

from simulator import SimConfig, parse_args
from tests.broker import Mosquitto, free_port
from tests.simulator import wire

ROOT = Path(__file__).resolve().parents[2]


def simulator(*args: str) -> list[str]:
    return [sys.executable, "-m", "simulator", *args]


def await_forget(broker: Mosquitto, args: list[str]) -> None:
    """Clear the retained messages a CLI run left on the shared broker."""
    asyncio.run(wire.forget_retained(broker.host, broker.port, parse_args(args)))


@pytest.mark.mqtt
def test_cli_runs_for_duration_and_exits_zero(mosquitto: Mosquitto) -> None:
    """--duration 2: status lines on stderr, exit 0."""
    args = (
        "--community cli --meters 5 --interval 0.5 --speed 60 --duration 2 --status-every 0.5"
        " --scenario theft:1 --scenario offline:1 --profile mix --seed 4"
    )
    done = subprocess.run(
        simulator("--broker", mosquitto.url, *args.split()),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    await_forget(mosquitto, ["--broker", mosquitto.url, *args.split()])
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "5 meters" in lines[0] and "seed 4" in lines[0]
    assert any("online 5/5" in line and "msg/s" in line for line in lines)
    assert lines[-1].endswith("stopped")


@pytest.mark.mqtt
async def test_sigterm_says_offline_and_exits_zero(mosquitto: Mosquitto) -> None:
    """SIGTERM: meters publish availability offline, disconnect, exit status 0."""
    async with wire.record(mosquitto.host, mosquitto.port, "prepaid/term/+/availability") as rec:
        args = ["--broker", mosquitto.url, "--community", "term", "--meters", "3", "--quiet"]
        proc = await asyncio.create_subprocess_exec(
            *simulator(*args),
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await rec.wait_for(
                lambda: len(rec.messages) == 3 and all(p == b"online" for _, p, _ in rec.messages)
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, stderr
        await rec.wait_for(lambda: [p for _, p, _ in rec.messages].count(b"offline") == 3)
    await wire.forget_retained(mosquitto.host, mosquitto.port, parse_args(args))


def test_bad_arguments_are_one_clear_message() -> None:
    """A typo in a scenario or a bad community id: exit 2 with one line saying what is wrong."""
    for args, message in (
        (("--scenario", "theif:2"), "unknown scenario 'theif'"),
        (("--community", "Bad Name"), "--community 'Bad Name' must match"),
        (
            ("--meters", "2", "--scenario", "vacant:3"),
            "the scenarios need 3 meters but --meters is 2",
        ),
        (("--broker", "http://x"), "is not mqtt://host[:port]"),
    ):
        done = subprocess.run(
            simulator(*args), cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 2
        assert message in done.stderr.splitlines()[-1]


def test_unreachable_broker_exits_one(socket_enabled: None) -> None:
    """Nothing listening on the port: exit 1 with a message naming the broker."""
    url = f"mqtt://127.0.0.1:{free_port()}"
    done = subprocess.run(
        simulator("--broker", url, "--meters", "1", "--duration", "5"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert f"simulator: cannot connect to the MQTT broker at {url}" in done.stderr


def test_parse_args_fills_the_config() -> None:
    """Every option lands in SimConfig; credentials come from --username/--password or the URL."""
    config = parse_args(
        ["--broker", "mqtt://u:p%40ss@broker.lan:1884", "--community", "c1", "--meters", "9",
         "--prefix", "pp", "--interval", "5", "--speed", "3600", "--start", "2026-11-01",
         "--duration", "7", "--seed", "3", "--profile", "shelly", "--scenario", "reset:2",
         "--scenario", "garbage", "--quiet", "--pool-size", "4", "--connection-per-meter"]
    )  # fmt: skip
    assert isinstance(config, SimConfig)
    assert (config.broker.host, config.broker.port) == ("broker.lan", 1884)
    assert (config.broker.username, config.broker.password) == ("u", "p@ss")
    assert config.start == 1_793_462_400  # 2026-11-01 00:00 UTC+8
    assert config.scenarios == (("reset", 2), ("garbage", 1))
    assert (config.speed, config.interval, config.duration, config.seed) == (3600, 5, 7, 3)
    assert config.quiet and config.connection_per_meter and config.pool_size == 4
    other = parse_args(["--username", "a", "--password", "b"])
    assert (other.broker.username, other.broker.password) == ("a", "b")
