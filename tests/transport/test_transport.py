"""MqttTransport against a real mosquitto: restarts, bursts, TLS, credentials, shutdown."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
import contextlib
import datetime as dt
import ipaddress
import logging
from pathlib import Path
import socket
import ssl
import time

import aiomqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import pytest

from custom_components.prepaid_meter.engine.link import LinkSocket
from custom_components.prepaid_meter.engine.profiles import NativeProfile
from custom_components.prepaid_meter.engine.protocol import Accepted, MeterGate, Reading
from custom_components.prepaid_meter.engine.transport import (
    CannotConnect,
    InvalidAuth,
    MqttTransport,
    NotConnected,
    TransportConfig,
    build_ssl_context,
    check_connection,
    exponential_backoff,
    forget_session,
)
from tests.broker import Mosquitto, free_port

pytestmark = pytest.mark.mqtt

FAST = exponential_backoff(base=0.05, cap=0.5)


def telemetry(seq: int, ts: int, kwh: str) -> bytes:
    return (
        b'{"v":1,"seq":%d,"ts":%d,"energy_kwh":"%s","power_w":500.0,"relay":"on","events":[]}'
        % (seq, ts, kwh.encode())
    )


class Sink:
    """Parse with the native profile, pass the gate, count accepted (meter, seq) pairs."""

    def __init__(self, community: str) -> None:
        self.profile = NativeProfile(community)
        self.gate = MeterGate(issues=self.profile.issues)
        self.accepted: Counter[tuple[str, int]] = Counter()
        self.messages = 0

    def __call__(self, topic: str, payload: bytes) -> None:
        self.messages += 1
        parsed = self.profile.parse(topic, payload, time.time())
        if isinstance(parsed, Reading):
            result = self.gate.check(parsed)
            if isinstance(result, Accepted):
                assert parsed.seq is not None
                self.accepted[(parsed.meter_id, parsed.seq)] += 1


async def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    """Poll `condition` every 20 ms; fail after `seconds`."""
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not reached within {seconds} s")


def live_socket(transport: MqttTransport) -> socket.socket:
    """Return the connected transport's socket (paho's, under aiomqtt's client)."""
    client = transport._client
    assert client is not None
    link = client._client.socket()
    assert isinstance(link, LinkSocket)  # engine/link.py wraps paho's socket
    sock = link.inner
    assert isinstance(sock, socket.socket)  # a TLS link gives an ssl.SSLSocket, a subclass
    return sock


def nagle_off(transport: MqttTransport) -> bool:
    """Return whether the transport's socket has TCP_NODELAY set (small packets go at once)."""
    return live_socket(transport).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_broker_restart_mid_stream_loses_nothing_and_bills_nothing_twice(
    persistent_broker: Mosquitto,
) -> None:
    broker = persistent_broker
    sink = Sink("restart")
    events: list[str] = []
    transport = MqttTransport(
        TransportConfig(host=broker.host, port=broker.port, client_id="pm-restart-test"),
        sink,
        sink.profile.subscriptions(),
        on_connected=lambda: events.append("up"),
        on_disconnected=lambda reason: events.append("down"),
        backoff=FAST,
    )
    await transport.start()
    async with asyncio.timeout(10):
        await transport.wait_connected()

    total = 500
    halfway = asyncio.Event()
    base_ts = int(time.time()) - 2 * total
    topic = "prepaid/restart/000000000001/telemetry"
    resent = 0

    async def meter() -> None:
        nonlocal resent
        seq = 1
        while seq <= total:
            try:
                async with aiomqtt.Client(
                    broker.host,
                    broker.port,
                    identifier="meter-000000000001",
                    clean_session=False,
                    timeout=2,
                ) as client:
                    while seq <= total:
                        payload = telemetry(seq, base_ts + seq, f"{seq}.5")
                        await client.publish(topic, payload, qos=1, timeout=1)
                        seq += 1
                        if seq == total // 2:
                            halfway.set()
                            await asyncio.sleep(0.05)  # let the restart begin mid-stream
            except aiomqtt.MqttError:
                resent += 1  # seq was not confirmed: send it again (at least once)
                await asyncio.sleep(0.05)

    publisher = asyncio.create_task(meter())
    await halfway.wait()
    await asyncio.to_thread(broker.restart)
    async with asyncio.timeout(30):
        await publisher
    await wait_for(lambda: len(sink.accepted) >= total, 30)
    await asyncio.sleep(0.3)  # anything redelivered late must still be dropped
    await transport.stop()

    assert set(sink.accepted) == {("000000000001", s) for s in range(1, total + 1)}
    assert max(sink.accepted.values()) == 1  # none twice
    assert transport.connects >= 2
    assert events[:3] == ["up", "down", "up"]
    assert resent >= 1  # the meter really saw the broker go away


async def test_readings_sent_while_the_platform_is_stopped_arrive_at_the_next_start(
    mosquitto: Mosquitto,
) -> None:
    """The broker keeps the persistent session: a Home Assistant restart loses no reading."""
    sink = Sink("offline")
    config = TransportConfig(host=mosquitto.host, port=mosquitto.port, client_id="pm-offline-test")
    first = MqttTransport(config, sink, sink.profile.subscriptions(), backoff=FAST)
    await first.start()
    async with asyncio.timeout(10):
        await first.wait_connected()
    await first.stop()
    base_ts = int(time.time()) - 100
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as meter:
        for seq in range(1, 51):
            payload = telemetry(seq, base_ts + seq, f"{seq}.0")
            await meter.publish("prepaid/offline/000000000002/telemetry", payload, qos=1)
    assert sink.messages == 0
    second = MqttTransport(config, sink, sink.profile.subscriptions(), backoff=FAST)
    await second.start()
    await wait_for(lambda: len(sink.accepted) == 50, 10)
    await second.stop()
    # Once the session is forgotten, nothing is kept for the stopped platform any more.
    await forget_session(config)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as meter:
        payload = telemetry(51, base_ts + 51, "51.0")
        await meter.publish("prepaid/offline/000000000002/telemetry", payload, qos=1)
    # No subscriptions of its own: only a session kept by the broker could deliver anything.
    third = MqttTransport(config, sink, [], backoff=FAST)
    await third.start()
    async with asyncio.timeout(10):
        await third.wait_connected()
    await asyncio.sleep(0.3)
    await third.stop()
    assert len(sink.accepted) == 50


async def test_burst_of_ten_thousand_messages_is_all_processed(mosquitto: Mosquitto) -> None:
    sink = Sink("burst")
    transport = MqttTransport(
        TransportConfig(host=mosquitto.host, port=mosquitto.port, client_id="pm-burst-test"),
        sink,
        sink.profile.subscriptions(),
        backoff=FAST,
    )
    await transport.start()
    async with asyncio.timeout(10):
        await transport.wait_connected()
    meters, per_meter = 10, 1000
    base_ts = int(time.time()) - 2 * per_meter
    started = time.perf_counter()
    async with aiomqtt.Client(
        mosquitto.host, mosquitto.port, max_inflight_messages=1000, timeout=30
    ) as client:
        client.pending_calls_threshold = 100_000
        chunk = 100  # seqs per round: 1,000 publishes in flight, in seq order per meter
        for first in range(1, per_meter + 1, chunk):
            await asyncio.gather(
                *(
                    client.publish(
                        f"prepaid/burst/{m:012d}/telemetry",
                        telemetry(seq, base_ts + seq, f"{seq}.25"),
                        qos=1,
                    )
                    for seq in range(first, first + chunk)
                    for m in range(meters)
                )
            )
    await wait_for(lambda: len(sink.accepted) >= meters * per_meter, 40)
    elapsed = time.perf_counter() - started
    await transport.stop()
    assert len(sink.accepted) == meters * per_meter
    assert max(sink.accepted.values()) == 1
    assert sink.profile.issues.total() == 0
    logging.getLogger(__name__).info("10,000 messages through the broker in %.2f s", elapsed)


async def test_handler_errors_are_logged_and_never_stop_the_loop(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[bytes] = []

    async def handler(topic: str, payload: bytes) -> None:
        await asyncio.sleep(0)
        if payload.startswith(b"boom"):
            raise ValueError("a bug in the handler")
        seen.append(payload)

    transport = MqttTransport(
        TransportConfig(host=mosquitto.host, port=mosquitto.port, client_id="pm-handler-test"),
        handler,
        ["handler-test/#"],
        backoff=FAST,
    )
    await transport.start()
    async with asyncio.timeout(10):
        await transport.wait_connected()
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        for n in range(30):
            await client.publish("handler-test/x", b"boom %d" % n, qos=1)
        await client.publish("handler-test/x", b"still alive", qos=1)
    await wait_for(lambda: seen == [b"still alive"], 10)
    await transport.stop()
    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert 1 <= len(failures) <= 10  # logged, but not once per message


async def test_publish_subscribe_and_clean_stop(mosquitto: Mosquitto) -> None:
    received: list[tuple[str, bytes]] = []
    config = TransportConfig(host=mosquitto.host, port=mosquitto.port, client_id="pm-pub-test")
    transport = MqttTransport(config, lambda t, p: received.append((t, p)), backoff=FAST)
    with pytest.raises(NotConnected):
        await transport.publish("pub-test/a", b"x")
    before = asyncio.all_tasks()
    await transport.start()
    async with asyncio.timeout(10):
        await transport.wait_connected()
    await transport.subscribe("pub-test/#")
    assert transport.subscriptions == ["pub-test/#"]
    await transport.publish("pub-test/a", b"hello", qos=1)
    await transport.publish("pub-test/r", b"kept", qos=1, retain=True)
    await wait_for(lambda: len(received) == 2, 10)
    assert received == [("pub-test/a", b"hello"), ("pub-test/r", b"kept")]
    await transport.stop()
    assert not transport.connected
    assert asyncio.all_tasks() == before  # nothing left behind
    with pytest.raises(NotConnected):
        await transport.publish("pub-test/a", b"x")
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.publish("pub-test/r", b"", qos=1, retain=True)  # clear the retained message


async def test_the_socket_sends_small_packets_at_once(mosquitto: Mosquitto) -> None:
    """TCP_NODELAY: a relay command is not held back ~40 ms by Nagle's algorithm.

    With Nagle on, a small write waits for the ACK of the previous one, which the other side
    may delay by 40 ms: commands on a quiet link took ~45 ms instead of ~1 ms.
    """
    config = TransportConfig(host=mosquitto.host, port=mosquitto.port, client_id="pm-nodelay")
    transport = MqttTransport(config, lambda t, p: None, ["nodelay-test/#"], backoff=FAST)
    await transport.start()
    async with asyncio.timeout(10):
        await transport.wait_connected()
    try:
        assert nagle_off(transport)
    finally:
        await transport.stop()


async def test_reconnect_loop_keeps_trying_while_the_broker_is_down(
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    broker = mosquitto_factory(persistence=False)
    downs: list[str] = []
    transport = MqttTransport(
        TransportConfig(host=broker.host, port=broker.port, client_id="pm-down-test"),
        lambda t, p: None,
        ["down-test/#"],
        on_disconnected=downs.append,
        backoff=FAST,
    )
    await transport.start()
    async with asyncio.timeout(10):
        await transport.wait_connected()
    await asyncio.to_thread(broker.stop)
    await wait_for(lambda: not transport.connected, 10)
    await asyncio.sleep(0.5)  # several failed attempts, logged as one disconnection
    assert len(downs) == 1
    with pytest.raises(NotConnected):
        await transport.publish("down-test/x", b"1")
    await asyncio.to_thread(broker.start)
    async with asyncio.timeout(10):
        await transport.wait_connected()
    reconnected_nagle_off = nagle_off(transport)  # the new socket of a reconnect too
    await transport.stop()
    assert transport.connects == 2
    assert reconnected_nagle_off


def test_backoff_is_capped_exponential_with_jitter() -> None:
    top = exponential_backoff(base=1.0, cap=30.0, rand=lambda: 1.0)
    bottom = exponential_backoff(base=1.0, cap=30.0, rand=lambda: 0.0)
    assert [top(n) for n in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert [bottom(n) for n in range(3)] == [0.5, 1.0, 2.0]
    assert top(10_000) == 30.0


async def test_check_connection_good_bad_and_refused(password_broker: Mosquitto) -> None:
    broker = password_broker
    good = TransportConfig(
        host=broker.host,
        port=broker.port,
        client_id="pm-check",
        username="meterbox",
        password="s3cret",
    )
    await check_connection(good)
    wrong = TransportConfig(
        host=broker.host, port=broker.port, client_id="pm-check", username="meterbox", password="no"
    )
    with pytest.raises(InvalidAuth):
        await check_connection(wrong)
    closed = TransportConfig(host="127.0.0.1", port=free_port(), client_id="pm-check", timeout=2)
    with pytest.raises(CannotConnect):
        await check_connection(closed)


# -- TLS ---------------------------------------------------------------------------------


def _write_pki(folder: Path) -> dict[str, Path]:
    """Write a CA, a server certificate for 127.0.0.1 and a client certificate."""
    now = dt.datetime.now(dt.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test ca"))
        .issuer_name(name("test ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    files: dict[str, Path] = {}

    def issue(label: str, san: list[x509.GeneralName] | None) -> None:
        leaf_key = key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(label))
            .issuer_name(ca.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        files[f"{label}_cert"] = folder / f"{label}.crt"
        files[f"{label}_key"] = folder / f"{label}.key"
        files[f"{label}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{label}_key"].write_bytes(
            leaf_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    files["ca"] = folder / "ca.crt"
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    issue("server", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    issue("client", None)
    return files


async def test_tls_with_a_private_ca_and_a_client_certificate(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    pki = _write_pki(tmp_path)
    broker = mosquitto_factory(persistence=False)
    broker.config.write_text(
        broker.config.read_text()
        + f"cafile {pki['ca']}\ncertfile {pki['server_cert']}\nkeyfile {pki['server_key']}\n"
        + "require_certificate true\n"
    )
    await asyncio.to_thread(broker.restart)
    config = TransportConfig(
        host=broker.host,
        port=broker.port,
        client_id="pm-tls",
        tls=True,
        ca_file=str(pki["ca"]),
        client_cert=str(pki["client_cert"]),
        client_key=str(pki["client_key"]),
    )
    context = await asyncio.to_thread(build_ssl_context, config)
    assert context is not None
    assert build_ssl_context(TransportConfig(host="h", client_id="c")) is None
    await check_connection(config)
    received: list[bytes] = []
    transport = MqttTransport(config, lambda t, p: received.append(p), ["tls-test/#"], backoff=FAST)
    await transport.start()
    async with asyncio.timeout(10):
        await transport.wait_connected()
    tls_socket, tls_nagle_off = live_socket(transport), nagle_off(transport)
    await transport.publish("tls-test/a", b"over tls")
    await wait_for(lambda: received == [b"over tls"], 10)
    await transport.stop()
    assert isinstance(tls_socket, ssl.SSLSocket)
    assert tls_nagle_off
    # Without the client certificate, or trusting another CA, the broker cannot be used.
    no_client_cert = TransportConfig(
        host=broker.host,
        port=broker.port,
        client_id="pm-tls",
        tls=True,
        ca_file=str(pki["ca"]),
        timeout=1,  # TLS 1.3 refuses the missing certificate after the handshake: no CONNACK
    )
    with pytest.raises(CannotConnect):
        await check_connection(no_client_cert)
    (tmp_path / "other").mkdir()
    other = _write_pki(tmp_path / "other")
    wrong_ca = TransportConfig(
        host=broker.host,
        port=broker.port,
        client_id="pm-tls",
        tls=True,
        ca_file=str(other["ca"]),
        client_cert=str(pki["client_cert"]),
        client_key=str(pki["client_key"]),
    )
    with pytest.raises(CannotConnect):
        await check_connection(wrong_ca)
    missing = TransportConfig(
        host=broker.host, port=broker.port, client_id="x", tls=True, ca_file="/nonexistent/ca.crt"
    )
    with pytest.raises(CannotConnect):
        await check_connection(missing)


async def test_a_backlog_is_handled_in_chunks_that_give_the_event_loop_back() -> None:
    """Messages waiting after a pause are not handled in one go: others get the loop too."""
    handled = 0

    def slow_handler(_topic: str, _payload: bytes) -> None:
        nonlocal handled
        handled += 1
        time.sleep(0.002)  # a slow message: 100 of them would hold the loop for 0.2 s

    transport = MqttTransport(
        TransportConfig(host="127.0.0.1", port=free_port(), client_id="pm-yield-test"),
        slow_handler,
        [],
    )
    for mid in range(100):
        transport._inbox.put_nowait(
            aiomqtt.Message(
                "prepaid/y/m/telemetry", b"{}", qos=1, retain=False, mid=mid, properties=None
            )
        )
    consume = asyncio.create_task(transport._consume())
    seen: list[int] = []
    async with asyncio.timeout(10):
        while handled < 100:
            await asyncio.sleep(0)
            seen.append(handled)
    await asyncio.wait_for(transport._inbox.join(), 1)  # each message done exactly once
    consume.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consume
    assert handled == 100
    assert seen[0] <= 20  # the first chunk: about 10 ms of messages, not all 100
    assert len(set(seen)) >= 5  # and the loop came back between the following chunks
