"""The engine stands alone: a community runs against a real broker with no Home Assistant.

A fresh interpreter (so nothing this test session imported counts) runs a prepaid/v1
community through `CommunityService`, the engine's one door, on a real mosquitto: a meter
announces itself, is assigned and topped up (the same transaction twice credits once),
sends readings, is billed, and is cut when its credit runs out, the meter told and the
decision in the ledger. Then no `homeassistant` module may be loaded.
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

from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.community import Community
from custom_components.prepaid_meter.engine.ledger import Ledger, SubAccount
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.profiles import make_profile
from custom_components.prepaid_meter.engine.service import CommunityService
from custom_components.prepaid_meter.engine.tariff import load_preset
from custom_components.prepaid_meter.engine.transport import TransportConfig

HOST, PORT, LEDGER = sys.argv[1], int(sys.argv[2]), sys.argv[3]
METER = "000012345678"


class Listener:
    def __init__(self):
        self.kinds, self.discovered, self.changed = [], [], asyncio.Event()

    def events(self, events):
        self.kinds += [e.kind for e in events]

    def meter_changed(self, meter_id):
        self.changed.set()

    def meter_discovered(self, meter_id):
        self.discovered.append(meter_id)

    def connection(self, connected, reason):
        pass


async def main() -> dict:
    policy = PolicyConfig.from_options(
        {"friendly_start": "00:00", "friendly_end": "00:00", "friendly_weekends": False,
         "emergency_credit": "0"}
    )
    listener = Listener()
    service = CommunityService(
        Community(Ledger(LEDGER), load_preset("flat"), policy),
        make_profile("native", community="alone"),
        TransportConfig(host=HOST, port=PORT, client_id="standalone-community"),
        prefix="prepaid", community_id="alone", currency="CNY", listener=listener,
    )
    await service.start()
    async with asyncio.timeout(10):
        await service.transport.wait_connected()
    base = f"prepaid/alone/{METER}"
    async with aiomqtt.Client(HOST, PORT, identifier="standalone-meter") as meter:
        await meter.subscribe(f"{base}/cmd", qos=1)
        await meter.publish(f"{base}/announce", json.dumps({"v": 1, "meter_id": METER}), qos=1)
        async with asyncio.timeout(10):
            while METER not in listener.discovered:
                await asyncio.sleep(0.02)
        await service.assign(METER, "h1", "Household 1")
        cashier = Actor("operator", name="cashier")
        await service.top_up("h1", Decimal("5"), "tx-1", "cash", cashier)
        await service.top_up("h1", Decimal("5"), "tx-1", "cash", cashier)  # once only
        now = int(time.time())
        for seq, (ts, kwh) in enumerate([(now - 120, "100"), (now - 60, "120")], start=1):
            listener.changed.clear()
            body = {"v": 1, "seq": seq, "ts": ts, "energy_kwh": kwh, "relay": "on"}
            await meter.publish(f"{base}/telemetry", json.dumps(body), qos=1)
            async with asyncio.timeout(10):
                await listener.changed.wait()
        async with asyncio.timeout(10):
            async for message in meter.messages:
                command = json.loads(message.payload)
                if command.get("op") == "relay":
                    break
    await service.stop()
    with Ledger(LEDGER) as ledger:
        wanted = ledger.supply_states()[METER]
        balance = ledger.balance("h1", SubAccount.ELECTRICITY)
        paid_by = [entry.meta["actor"] for entry in ledger.entries("h1")
                   if entry.kind == "top_up"]
    return {
        "balance": str(balance),
        "command": command["state"],
        "wanted": [wanted.state, wanted.reason, str(wanted.actor)],
        "paid_by": paid_by,
        "kinds": sorted(set(listener.kinds)),
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
    assert Decimal(result["balance"]) < 0  # 20 kWh at the flat price exceed the 5 paid once
    assert result["command"] == "off"  # the meter was told
    assert result["wanted"] == ["off", "credit_exhausted", "system"]  # the ledger knows why
    assert result["paid_by"] == ["operator||cashier"]
    assert {"top_up", "supply_cut", "relay", "assigned"} <= set(result["kinds"])


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
