"""CommandTracker: retries, acks, reconciliation, and an offline meter on a real broker."""

from __future__ import annotations

import asyncio
from decimal import Decimal
import json
import time

import aiomqtt
import pytest

from custom_components.prepaid_meter.engine.commands import (
    CommandOutcome,
    CommandTracker,
    profile_sender,
)
from custom_components.prepaid_meter.engine.profiles import NativeProfile, TasmotaProfile
from custom_components.prepaid_meter.engine.protocol import (
    Ack,
    Availability,
    Reading,
    Rejected,
    RelayCommand,
    RelayReport,
    RelayState,
    parse_command,
)
from custom_components.prepaid_meter.engine.transport import MqttTransport, TransportConfig
from tests.broker import Mosquitto
from tests.transport.test_transport import FAST, wait_for

M = "000012345678"


class Harness:
    """A tracker with a recording sender, a hand-moved clock and fast retries."""

    def __init__(self, *, fail_sends: int = 0, max_tries: int = 3) -> None:
        self.now = 1000.0
        self.sent: list[tuple[str, RelayState, str, str]] = []
        self.outcomes: list[CommandOutcome] = []
        self.fail_sends = fail_sends
        self.tracker = CommandTracker(
            self.send,
            clock=lambda: self.now,
            on_outcome=self.outcomes.append,
            max_tries=max_tries,
            base_delay=0.02,
            max_delay=0.05,
            reconcile_interval=30.0,
        )

    async def send(self, meter_id: str, state: RelayState, command_id: str, reason: str) -> None:
        if self.fail_sends > 0:
            self.fail_sends -= 1
            raise ConnectionError("not connected")
        self.sent.append((meter_id, state, command_id, reason))

    def ids(self) -> list[str]:
        return [s[2] for s in self.sent]


async def test_unacknowledged_command_is_retried_with_its_id_then_expires() -> None:
    h = Harness(max_tries=3)
    command_id = h.tracker.set_desired(M, "off", "credit_exhausted", "system")
    assert command_id is not None
    assert [p.id for p in h.tracker.pending()] == [command_id]
    await wait_for(lambda: bool(h.outcomes), 5)
    assert h.ids() == [command_id] * 3
    [outcome] = h.outcomes
    assert (outcome.status, outcome.tries, outcome.state, outcome.reason, outcome.actor) == (
        "expired",
        3,
        "off",
        "credit_exhausted",
        "system",
    )
    assert h.tracker.pending() == []
    await h.tracker.stop()


async def test_expired_is_reported_once_and_a_late_ack_confirms_it_once() -> None:
    h = Harness(max_tries=3)
    command_id = h.tracker.set_desired(M, "off", "credit_exhausted", "system")
    assert command_id is not None
    await wait_for(lambda: bool(h.outcomes), 5)
    await asyncio.sleep(0.2)  # longer than every retry delay: no second outcome, no send
    assert [o.status for o in h.outcomes] == ["expired"]
    assert h.ids() == [command_id] * 3
    h.tracker.ack(Ack(M, "someone-else", True, "off"))  # not its ack: nothing
    h.tracker.ack(Ack(M, command_id, True, "off"))  # the meter answers after all
    h.tracker.ack(Ack(M, command_id, True, "off"))  # the same ack again: nothing
    assert [(o.status, o.id, o.state, o.reason) for o in h.outcomes] == [
        ("expired", command_id, "off", "credit_exhausted"),
        ("confirmed", command_id, "off", "credit_exhausted"),
    ]
    status = h.tracker.status(M)
    assert status is not None
    assert (status.reported, status.pending_id, status.last_outcome) == (
        "off",
        None,
        "confirmed",
    )
    h.tracker.reported(M, "off")  # readings that agree change nothing more
    assert h.tracker.reconcile() == []  # in force: nothing is sent again
    await asyncio.sleep(0.05)
    assert len(h.outcomes) == 2
    assert h.ids() == [command_id] * 3
    await h.tracker.stop()


async def test_late_ack_that_disagrees_confirms_nothing() -> None:
    h = Harness(max_tries=1)
    command_id = h.tracker.set_desired(M, "off", "credit_exhausted", "system")
    assert command_id is not None
    await wait_for(lambda: bool(h.outcomes), 5)
    h.tracker.ack(Ack(M, command_id, True, "on"))  # answered, but the relay is still on
    h.tracker.ack(Ack(M, command_id, False, "off", "relay_fault"))
    assert [o.status for o in h.outcomes] == ["expired"]
    status = h.tracker.status(M)
    assert status is not None and status.last_outcome == "expired"
    h.tracker.reported(M, "off")  # then a reading shows the cut done
    assert [o.status for o in h.outcomes] == ["expired", "confirmed"]
    await h.tracker.stop()


async def test_a_reading_with_the_wanted_state_confirms_an_expired_command() -> None:
    h = Harness(max_tries=2)
    command_id = h.tracker.set_desired(M, "off", "credit_exhausted", "system")
    await wait_for(lambda: bool(h.outcomes), 5)
    h.tracker.observe(Reading(M, 10, 1_764_300_000, Decimal(5), relay="off"))
    h.tracker.observe(Reading(M, 11, 1_764_300_060, Decimal(5), relay="off"))
    assert [(o.status, o.id) for o in h.outcomes] == [
        ("expired", command_id),
        ("confirmed", command_id),
    ]
    await h.tracker.stop()


async def test_a_refused_command_is_confirmed_by_a_later_report_and_a_new_one_replaces_it() -> None:
    h = Harness(max_tries=10)
    first = h.tracker.set_desired(M, "off", "credit_exhausted", "system")
    assert first is not None
    await wait_for(lambda: len(h.sent) == 1, 5)
    h.tracker.ack(Ack(M, first, False, "on", "relay_fault"))
    h.tracker.ack(Ack(M, first, True, "off"))  # an ack of a finished command: nothing
    assert [o.status for o in h.outcomes] == ["failed"]
    h.tracker.reported(M, "off")  # the relay did open in the end
    assert [o.status for o in h.outcomes] == ["failed", "confirmed"]
    # A failed command replaced by a newer one is not confirmed by a report of its state.
    second = h.tracker.set_desired(M, "on", "top_up", "operator:1")
    assert second is not None
    await wait_for(lambda: len(h.sent) == 2, 5)
    h.tracker.ack(Ack(M, second, False, "off", "relay_fault"))
    third = h.tracker.set_desired(M, "off", "manual", "operator:1")
    assert third is not None
    h.tracker.reported(M, "on")  # the old command's state: not a confirmation of anything
    assert [(o.status, o.id) for o in h.outcomes][2:] == [("failed", second)]
    await h.tracker.stop()


async def test_ack_ends_the_command_and_the_same_ack_twice_changes_nothing() -> None:
    h = Harness()
    command_id = h.tracker.set_desired(M, "off", "credit_exhausted", "system")
    assert command_id is not None
    await wait_for(lambda: len(h.sent) == 1, 5)
    h.tracker.ack(Ack(M, command_id, True, "off"))
    h.tracker.ack(Ack(M, command_id, True, "off"))
    h.tracker.ack(Ack(M, "someone-else", True, "on"))
    await asyncio.sleep(0.15)  # longer than every retry delay
    assert [o.status for o in h.outcomes] == ["acked"]
    assert len(h.sent) == 1
    status = h.tracker.status(M)
    assert status is not None
    assert (status.desired, status.reported, status.pending_id) == ("off", "off", None)
    await h.tracker.stop()


async def test_refused_command_is_reported_not_retried() -> None:
    h = Harness()
    command_id = h.tracker.set_desired(M, "off", "credit_exhausted", "system")
    assert command_id is not None
    await wait_for(lambda: len(h.sent) == 1, 5)
    h.tracker.observe(Ack(M, command_id, False, None, "relay_fault"))
    await asyncio.sleep(0.15)
    [outcome] = h.outcomes
    assert (outcome.status, outcome.error) == ("failed", "relay_fault")
    assert len(h.sent) == 1
    await h.tracker.stop()


async def test_meter_reporting_the_other_state_gets_the_command_again() -> None:
    h = Harness()
    first = h.tracker.set_desired(M, "off", "credit_exhausted", "system")
    assert first is not None
    await wait_for(lambda: len(h.sent) == 1, 5)
    h.tracker.ack(Ack(M, first, True, "off"))
    reading_on = Reading(M, 10, 1_764_300_000, Decimal(5), relay="on")
    h.tracker.observe(reading_on)  # within reconcile_interval of the last command: wait
    assert len(h.sent) == 1
    h.now += 31
    h.tracker.observe(reading_on)  # someone bypassed the relay: send again, fresh id
    await wait_for(lambda: len(h.sent) == 2, 5)
    assert h.sent[1][1] == "off"
    assert h.sent[1][2] != first
    h.tracker.observe(reading_on)  # in flight already: no third command
    h.tracker.reported(M, "off")  # the meter now reports off: confirmed
    assert [o.status for o in h.outcomes] == ["acked", "confirmed"]
    await asyncio.sleep(0.1)
    assert len(h.sent) == 2
    await h.tracker.stop()


async def test_meter_coming_back_online_gets_the_desired_state() -> None:
    h = Harness(max_tries=10)
    command_id = h.tracker.set_desired(M, "off", "credit_exhausted", "system")
    await wait_for(lambda: len(h.sent) >= 1, 5)
    h.tracker.observe(Availability(M, False))
    h.tracker.observe(Availability(M, True))  # in flight: sent again at once, same id
    await wait_for(lambda: len(h.sent) >= 2, 5)
    assert set(h.ids()) == {command_id}
    h.tracker.ack(Ack(M, str(command_id), True, "off"))
    sent = len(h.sent)
    h.tracker.online(M)  # repeated "online" (retained) while nothing changed: nothing sent
    await asyncio.sleep(0.05)
    assert len(h.sent) == sent
    h.tracker.offline(M)
    h.tracker.online(M)  # came back (maybe restarted): a new command with a fresh id
    await wait_for(lambda: len(h.sent) == sent + 1, 5)
    assert h.sent[-1][2] != command_id
    await h.tracker.stop()


async def test_device_without_ids_is_confirmed_by_its_reported_state() -> None:
    h = Harness()
    h.tracker.set_desired("plug1", "off", "credit_exhausted", "system")
    await wait_for(lambda: len(h.sent) == 1, 5)
    h.tracker.observe(RelayReport("plug1", "off"))
    assert [o.status for o in h.outcomes] == ["confirmed"]
    await h.tracker.stop()


async def test_new_state_supersedes_and_same_state_is_not_resent() -> None:
    h = Harness(max_tries=10)
    first = h.tracker.set_desired(M, "off", "credit_exhausted", "system")
    assert h.tracker.set_desired(M, "off", "credit_exhausted", "system") is None
    second = h.tracker.set_desired(M, "on", "top_up", "operator:1")
    assert second is not None
    assert second != first
    assert [(o.status, o.id) for o in h.outcomes] == [("superseded", first)]
    [pending] = h.tracker.pending()
    assert (pending.id, pending.state, pending.actor) == (second, "on", "operator:1")
    await h.tracker.stop()
    assert h.tracker.set_desired(M, "off", "x", "y") is None  # stopped: nothing new starts


async def test_failed_sends_count_as_tries_and_reconcile_resends() -> None:
    h = Harness(fail_sends=100, max_tries=3)
    h.tracker.set_desired(M, "off", "credit_exhausted", "system")
    await wait_for(lambda: bool(h.outcomes), 5)
    assert h.outcomes[0].status == "expired"
    assert h.sent == []
    h.fail_sends = 0  # the transport is back
    [new_id] = h.tracker.reconcile()
    await wait_for(lambda: len(h.sent) == 1, 5)
    assert h.sent[0][2] == new_id
    h.tracker.ack(Ack(M, new_id, True, "off"))
    assert h.tracker.reconcile() == []  # in force: nothing to do
    await h.tracker.stop()


async def test_stop_cancels_every_command_in_flight() -> None:
    h = Harness(max_tries=1000)
    before = asyncio.all_tasks()
    for n in range(20):
        h.tracker.set_desired(f"m{n}", "off", "credit_exhausted", "system")
    await asyncio.sleep(0.05)
    assert len(h.tracker.pending()) == 20
    await h.tracker.stop()
    assert asyncio.all_tasks() == before


# -- on a real broker --------------------------------------------------------------------


async def run_meter(
    broker: Mosquitto,
    profile: NativeProfile,
    meter_id: str,
    applied: list[tuple[str, RelayState]],
    *,
    stop: asyncio.Event,
) -> None:
    """A meter: clean session, announces itself online, applies each command id once, acks."""
    seen: set[str] = set()
    will = aiomqtt.Will(profile.topic(meter_id, "availability"), b"offline", qos=1, retain=True)
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=f"meter-{meter_id}", will=will
    ) as client:
        await client.subscribe(profile.topic(meter_id, "cmd"), qos=1)
        await client.publish(profile.topic(meter_id, "availability"), b"online", qos=1, retain=True)

        async def serve() -> None:
            async for message in client.messages:
                command = parse_command(message.payload)
                assert not isinstance(command, Rejected)
                assert isinstance(command, RelayCommand)
                if command.id not in seen:  # the same id applied twice changes nothing
                    seen.add(command.id)
                    applied.append((command.id, command.state))
                ack = {"v": 1, "id": command.id, "ok": True, "relay": command.state}
                await client.publish(
                    profile.topic(meter_id, "ack"), json.dumps(ack).encode(), qos=1
                )

        server = asyncio.create_task(serve())
        await stop.wait()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        await client.publish(
            profile.topic(meter_id, "availability"), b"offline", qos=1, retain=True
        )


async def test_command_to_an_offline_meter_is_delivered_when_it_comes_back(
    mosquitto: Mosquitto,
) -> None:
    profile = NativeProfile("cmdtest")
    meter_id = "000000000777"
    outcomes: list[CommandOutcome] = []
    transport: MqttTransport

    def handle(topic: str, payload: bytes) -> None:
        parsed = profile.parse(topic, payload, time.time())
        if parsed is not None and not isinstance(parsed, Rejected):
            tracker.observe(parsed)

    transport = MqttTransport(
        TransportConfig(host=mosquitto.host, port=mosquitto.port, client_id="pm-cmd-test"),
        handle,
        profile.subscriptions(),
        backoff=FAST,
    )
    tracker = CommandTracker(
        profile_sender(profile, transport.publish),
        on_outcome=outcomes.append,
        max_tries=3,
        base_delay=0.05,
        max_delay=0.1,
    )
    await transport.start()
    async with asyncio.timeout(10):
        await transport.wait_connected()

    applied: list[tuple[str, RelayState]] = []
    # The meter is online once, then goes offline.
    first_stop = asyncio.Event()
    first_stop.set()
    await run_meter(mosquitto, profile, meter_id, applied, stop=first_stop)
    await wait_for(lambda: (s := tracker.status(meter_id)) is not None and s.online is False, 10)

    # The balance runs out while the meter is offline: nobody answers, the tries run out.
    tracker.set_desired(meter_id, "off", "credit_exhausted", "system")
    await wait_for(lambda: [o.status for o in outcomes] == ["expired"], 10)
    assert applied == []

    # The meter comes back (a fresh session: the broker kept nothing for it).
    stop = asyncio.Event()
    meter = asyncio.create_task(run_meter(mosquitto, profile, meter_id, applied, stop=stop))
    await wait_for(lambda: len(outcomes) == 2, 10)
    assert outcomes[1].status == "acked"
    assert applied == [(outcomes[1].id, "off")]
    status = tracker.status(meter_id)
    assert status is not None
    assert (status.desired, status.reported, status.online) == ("off", "off", True)
    stop.set()
    await meter
    await tracker.stop()
    await transport.stop()
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.publish(profile.topic(meter_id, "availability"), b"", qos=1, retain=True)


@pytest.mark.parametrize("state", ["on", "off"])
async def test_tasmota_profile_sender_publishes_power(
    mosquitto: Mosquitto, state: RelayState
) -> None:
    profile = TasmotaProfile(["plug7"])
    received: list[tuple[str, bytes]] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as listener:
        await listener.subscribe("cmnd/plug7/POWER", qos=1)
        transport = MqttTransport(
            TransportConfig(host=mosquitto.host, port=mosquitto.port, client_id="pm-tas-test"),
            lambda t, p: None,
            profile.subscriptions(),
            backoff=FAST,
        )
        await transport.start()
        async with asyncio.timeout(10):
            await transport.wait_connected()
        tracker = CommandTracker(profile_sender(profile, transport.publish), base_delay=5)
        tracker.set_desired("plug7", state, "test", "system")
        async with asyncio.timeout(10):
            async for message in listener.messages:
                received.append((message.topic.value, message.payload))
                break
        tracker.reported("plug7", state)
        assert tracker.pending() == []
        await tracker.stop()
        await transport.stop()
    assert received == [("cmnd/plug7/POWER", state.upper().encode())]
