"""The engine stands alone: a community runs against a real broker with no Home Assistant.

A fresh interpreter (so nothing this test session imported counts) runs a prepaid/v1
community through the engine's own parts, transport included, on a real mosquitto: a meter
announces itself, is assigned and topped up, sends readings, is billed, and is cut when its
credit runs out. Then no `homeassistant` module may be loaded.
"""

from __future__ import annotations

from decimal import Decimal
import json
from pathlib import Path
import subprocess
import sys

import pytest

from tests.broker import Mosquitto

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import asyncio, json, sys, time
from decimal import Decimal

import aiomqtt

from custom_components.prepaid_meter.engine.community import Community
from custom_components.prepaid_meter.engine.ledger import Ledger
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.profiles import make_profile
from custom_components.prepaid_meter.engine.protocol import Announce, Reading
from custom_components.prepaid_meter.engine.tariff import load_preset
from custom_components.prepaid_meter.engine.transport import MqttTransport, TransportConfig

HOST, PORT, LEDGER = sys.argv[1], int(sys.argv[2]), sys.argv[3]
METER = "000012345678"


async def main() -> dict:
    profile = make_profile("native", community="alone")
    policy = PolicyConfig.from_options(
        {"friendly_start": "00:00", "friendly_end": "00:00", "friendly_weekends": False,
         "emergency_credit": "0"}
    )
    community = Community(Ledger(LEDGER), load_preset("flat"), policy)
    community.load()
    commands: list[dict] = []
    heard = asyncio.Event()

    def handle(topic: str, payload: bytes) -> None:
        parsed = profile.parse(topic, payload, time.time())
        if isinstance(parsed, Announce):
            community.handle_announce(METER, model=parsed.model, firmware=parsed.fw,
                                      rated_current_a=parsed.rated_current_a)
            heard.set()
        elif isinstance(parsed, Reading):
            for event in community.handle_reading(parsed):
                if event.kind == "supply_cut":
                    commands.append(event.data)
            heard.set()

    transport = MqttTransport(
        TransportConfig(host=HOST, port=PORT, client_id="standalone-community"),
        handle, profile.subscriptions(),
    )
    await transport.start()
    async with asyncio.timeout(10):
        await transport.wait_connected()
    base = f"prepaid/alone/{METER}"
    async with aiomqtt.Client(HOST, PORT, identifier="standalone-meter") as meter:
        await meter.publish(f"{base}/announce", json.dumps({"v": 1, "meter_id": METER}), qos=1)
        async with asyncio.timeout(10):
            await heard.wait()
        community.apply_assignment(METER, community.assign_meter(METER, "h1", "Household 1"))
        community.apply_top_up(
            community.top_up("h1", Decimal("5"), "tx-1", "cash", actor="operator")
        )
        now = int(time.time())
        for seq, (ts, kwh) in enumerate([(now - 120, "100"), (now - 60, "120")], start=1):
            heard.clear()
            body = {"v": 1, "seq": seq, "ts": ts, "energy_kwh": kwh, "relay": "on"}
            await meter.publish(f"{base}/telemetry", json.dumps(body), qos=1)
            async with asyncio.timeout(10):
                await heard.wait()
    community.apply_results(community.commit(community.take_batch()))
    await transport.stop()
    household = community.households["h1"]
    return {
        "balance": str(household.electricity),
        "cuts": [c["reason"] for c in commands],
        "homeassistant": sorted(m for m in sys.modules if m.split(".")[0] == "homeassistant"),
    }


print(json.dumps(asyncio.run(main())))
"""


@pytest.mark.mqtt
def test_a_community_runs_without_home_assistant(
    mosquitto_session: Mosquitto, tmp_path: Path
) -> None:
    """Announce, assign, top up, bill and cut through the engine alone; no Home Assistant."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            mosquitto_session.host,
            str(mosquitto_session.port),
            str(tmp_path / "alone.sqlite3"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["homeassistant"] == []
    assert Decimal(result["balance"]) < 0  # 20 kWh of the flat price exceeds the 5 paid
    assert result["cuts"] == ["credit_exhausted"]


def test_the_bill_command_loads_no_home_assistant() -> None:
    """`python -m custom_components.prepaid_meter.engine` (the bill command) stays HA-free."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, sys; sys.argv = ['bill', '--help']\n"
            "try:\n    runpy.run_module('custom_components.prepaid_meter.engine', "
            "run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'homeassistant'))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
