"""prepaid/v1 parsing, validation, commands and the per-meter gate."""

from __future__ import annotations

from decimal import Decimal
import json
import logging

import pytest

from custom_components.prepaid_meter.engine.protocol import (
    MAX_PAYLOAD_BYTES,
    Accepted,
    Ack,
    Announce,
    Availability,
    DisplayCommand,
    Issues,
    MeterGate,
    Reading,
    Rejected,
    RelayCommand,
    account_payload,
    parse_ack,
    parse_announce,
    parse_availability,
    parse_command,
    parse_telemetry,
    parse_topic,
    topic_for,
)

METER = "000012345678"
EXAMPLE = (
    b'{"v": 1, "seq": 1842, "ts": 1764300000, "energy_kwh": "1234.567",'
    b' "power_w": 850.0, "voltage_v": 229.8, "current_a": 3.9, "neutral_current_a": 3.9,'
    b' "pf": 0.97, "relay": "on", "events": []}'
)


def body(**changes: object) -> bytes:
    base = json.loads(EXAMPLE)
    for key, value in changes.items():
        if value is ...:
            base.pop(key, None)
        else:
            base[key] = value
    return json.dumps(base).encode()


def test_example_reading_from_protocol_md() -> None:
    reading = parse_telemetry(METER, EXAMPLE)
    assert reading == Reading(
        METER, 1842, 1764300000, Decimal("1234.567"), 850.0, 229.8, 3.9, 3.9, 0.97, "on", ()
    )
    assert isinstance(reading, Reading)
    assert isinstance(reading.energy_kwh, Decimal)


def test_energy_as_json_number_is_parsed_from_its_text() -> None:
    reading = parse_telemetry(METER, b'{"v":1,"seq":1,"ts":1764300000,"energy_kwh":0.1}')
    assert isinstance(reading, Reading)
    assert reading.energy_kwh == Decimal("0.1")  # not 0.1000000000000000055...
    assert str(reading.energy_kwh) == "0.1"
    integer = parse_telemetry(METER, b'{"v":1,"seq":1,"ts":1764300000,"energy_kwh":12}')
    assert isinstance(integer, Reading)
    assert integer.energy_kwh == Decimal(12)


def test_optional_fields_and_unknown_extra_fields() -> None:
    payload = b'{"v":1,"seq":2,"ts":1764300000,"energy_kwh":"5","firmware_extra":{"x":[1]}}'
    reading = parse_telemetry(METER, payload)
    assert reading == Reading(METER, 2, 1764300000, Decimal(5))


def test_unknown_events_are_dropped_known_ones_kept_and_counted() -> None:
    unknown: list[tuple[str, str]] = []
    payload = body(events=["cover_open", "zap", "arc_fault", "cover_open", "boom"])
    reading = parse_telemetry(METER, payload, lambda m, e: unknown.append((m, e)))
    assert isinstance(reading, Reading)
    assert reading.events == ("cover_open", "arc_fault")
    assert unknown == [(METER, "zap"), (METER, "boom")]


BAD_TELEMETRY = [
    (b'{"v":1,"seq":', "malformed_json"),
    (b"\xff\xfe not utf-8", "not_utf8"),
    (b"[1,2,3]", "not_object"),
    (b"null", "not_object"),
    (b"", "malformed_json"),
    (body(energy_kwh=...), "invalid"),
    (body(ts=...), "invalid"),
    (body(ts="yesterday"), "invalid"),
    (body(ts=1764300000000), "invalid"),  # milliseconds
    (body(seq=-5), "invalid"),
    (body(seq=1.5), "invalid"),
    (body(seq=True), "invalid"),
    (body(energy_kwh={"a": 1}), "invalid"),
    (body(energy_kwh="12,5"), "invalid"),
    (body(energy_kwh="1_000"), "invalid"),
    (body(energy_kwh="NaN"), "non_finite"),
    (body(energy_kwh="-Infinity"), "non_finite"),
    (body(energy_kwh="-1.5"), "negative_energy"),
    (body(energy_kwh=-2), "negative_energy"),
    (body(energy_kwh="1e999"), "invalid"),
    (b'{"v":1,"seq":1,"ts":1764300000,"energy_kwh":NaN}', "non_finite"),
    (b'{"v":1,"seq":1,"ts":1764300000,"energy_kwh":"1","power_w":Infinity}', "non_finite"),
    (body(power_w="lots"), "invalid"),
    (body(power_w=1e400), "non_finite"),
    (body(pf=1.5), "invalid"),
    (body(relay="maybe"), "invalid"),
    (body(relay=3), "invalid"),
    (body(events="cover_open"), "invalid"),
    (body(events=["kaboom", 7]), "invalid"),
    (body(v="one"), "invalid"),
    (body(v=2), "unsupported_version"),
    (body(padding="x" * MAX_PAYLOAD_BYTES), "oversized"),
    (b"[" * 2000 + b"]" * 2000, "not_object"),  # deep nesting is parsed without harm
    (b'{"a":' * 600 + b"1" + b"}" * 600, "invalid"),
]


@pytest.mark.parametrize(
    ("payload", "kind"),
    BAD_TELEMETRY,
    ids=[f"{n}-{kind}" for n, (_, kind) in enumerate(BAD_TELEMETRY)],
)
def test_bad_telemetry_is_rejected_with_its_kind(payload: bytes, kind: str) -> None:
    result = parse_telemetry(METER, payload)
    assert isinstance(result, Rejected), result
    assert result.kind == kind, result
    assert result.meter_id == METER


def test_topics() -> None:
    assert topic_for("prepaid", "sunny", METER, "telemetry") == f"prepaid/sunny/{METER}/telemetry"
    parts = parse_topic(f"prepaid/sunny/{METER}/telemetry", "prepaid", "sunny")
    assert not isinstance(parts, Rejected)
    assert (parts.prefix, parts.community, parts.meter_id, parts.channel) == (
        "prepaid",
        "sunny",
        METER,
        "telemetry",
    )
    nested = parse_topic(f"home/prepaid/sunny/{METER}/ack", "home/prepaid")
    assert not isinstance(nested, Rejected)
    assert nested.meter_id == METER


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        ("prepaid/sunny/bad meter!/telemetry", "bad_meter_id"),
        ("prepaid/sunny/" + "x" * 65 + "/telemetry", "bad_meter_id"),
        ("prepaid/sunny/meter.with.dots/telemetry", "bad_meter_id"),
        ("prepaid/sunny/电表一号/telemetry", "bad_meter_id"),
        ("prepaid/sunny//telemetry", "bad_meter_id"),
        ("prepaid/Sunny/m1/telemetry", "bad_topic"),
        ("prepaid/other/m1/telemetry", "bad_topic"),
        ("other/sunny/m1/telemetry", "bad_topic"),
        ("prepaid/sunny/m1/gossip", "bad_topic"),
        ("sunny/m1/telemetry", "bad_topic"),
    ],
)
def test_bad_topics(topic: str, kind: str) -> None:
    result = parse_topic(topic, "prepaid", "sunny")
    assert isinstance(result, Rejected)
    assert result.kind == kind


def test_announce_availability_ack() -> None:
    announce = parse_announce(
        METER,
        b'{"v": 1, "meter_id": "000012345678", "model": "DDZY-60", "fw": "1.4.2",'
        b' "phases": 1, "rated_current_a": 60, "relay": true,'
        b' "caps": ["neutral_current", "events"],'
        b' "future_field": 1}',
    )
    assert announce == Announce(
        METER, "DDZY-60", "1.4.2", 1, 60.0, True, ("neutral_current", "events")
    )
    mismatch = parse_announce(METER, b'{"v":1,"meter_id":"999999999999"}')
    assert isinstance(mismatch, Rejected)
    assert mismatch.kind == "meter_id_mismatch"
    assert parse_availability(METER, b"online") == Availability(METER, True)
    assert parse_availability(METER, b"offline\n") == Availability(METER, False)
    maybe = parse_availability(METER, b"maybe")
    assert isinstance(maybe, Rejected)
    assert parse_ack(METER, b'{"v": 1, "id": "5f0c", "ok": true, "relay": "off"}') == Ack(
        METER, "5f0c", True, "off", None
    )
    assert parse_ack(METER, b'{"v": 1, "id": "5f0c", "ok": false, "error": "relay_fault"}') == Ack(
        METER, "5f0c", False, None, "relay_fault"
    )
    no_ok = parse_ack(METER, b'{"v": 1, "id": "5f0c"}')
    assert isinstance(no_ok, Rejected)
    assert no_ok.kind == "invalid"


def test_commands_round_trip() -> None:
    relay = RelayCommand("5f0c9c1e", "off", "credit_exhausted")
    assert json.loads(relay.to_payload()) == {
        "v": 1,
        "id": "5f0c9c1e",
        "op": "relay",
        "state": "off",
        "reason": "credit_exhausted",
    }
    assert parse_command(relay.to_payload()) == relay
    display = DisplayCommand("7a1d", Decimal("12.34"), "CNY", True)
    assert json.loads(display.to_payload()) == {
        "v": 1,
        "id": "7a1d",
        "op": "display",
        "balance": "12.34",
        "currency": "CNY",
        "low": True,
    }
    assert parse_command(display.to_payload()) == display
    negative = DisplayCommand("7a1e", Decimal("-3.50"), "CNY", True)
    assert parse_command(negative.to_payload()) == negative
    bad = parse_command(b'{"v":1,"id":"x","op":"explode"}')
    assert isinstance(bad, Rejected)


def test_account_payload_is_exact_text() -> None:
    payload = account_payload(
        balance=Decimal("12.34"),
        currency="CNY",
        low=True,
        relay="on",
        cycle="2026-11",
        cycle_kwh=Decimal("250.100"),
        tier=2,
        price=Decimal("0.5383"),
        updated=1764300000,
    )
    assert json.loads(payload) == {
        "v": 1,
        "balance": "12.34",
        "currency": "CNY",
        "low": True,
        "relay": "on",
        "cycle": "2026-11",
        "cycle_kwh": "250.100",
        "tier": 2,
        "price": "0.5383",
        "updated": 1764300000,
    }
    big = account_payload(
        balance=Decimal("1E+3"),
        currency="CNY",
        low=False,
        relay=None,
        cycle=None,
        cycle_kwh=Decimal(0),
        tier=None,
        price=None,
        updated=1,
    )
    assert json.loads(big)["balance"] == "1000"


# -- the gate ---------------------------------------------------------------------------

NOW = 1_764_300_000


def reading(seq: int | None, ts: int, kwh: str, meter: str = METER) -> Reading:
    return Reading(meter, seq, ts, Decimal(kwh))


def make_gate() -> MeterGate:
    return MeterGate(clock=lambda: float(NOW))


def test_gate_accepts_in_order_and_drops_repeats_and_older_seq() -> None:
    gate = make_gate()
    first = gate.check(reading(1, NOW - 100, "10.0"))
    assert first == Accepted(reading(1, NOW - 100, "10.0"), False, None)
    second = gate.check(reading(2, NOW - 50, "10.5"))
    assert isinstance(second, Accepted)
    assert second.previous is not None
    assert second.previous.energy_kwh == Decimal("10.0")
    for again in (reading(2, NOW - 50, "10.5"), reading(1, NOW - 100, "10.0")):
        result = gate.check(again)
        assert isinstance(result, Rejected)
        assert result.kind == "duplicate"
    assert gate.rejections[(METER, "duplicate")] == 2
    cursor = gate.cursor(METER)
    assert cursor is not None
    assert (cursor.seq, cursor.ts, cursor.energy_kwh) == (2, NOW - 50, Decimal("10.5"))


def test_gate_rejects_future_and_old_readings() -> None:
    gate = make_gate()
    assert isinstance(gate.check(reading(5, NOW, "1")), Accepted)
    future = gate.check(reading(6, NOW + 601, "2"))
    assert isinstance(future, Rejected)
    assert future.kind == "future_ts"
    assert isinstance(gate.check(reading(6, NOW + 600, "2")), Accepted)  # 10 minutes is allowed
    old = gate.check(reading(7, NOW + 599, "3"))  # newer seq, older ts
    assert isinstance(old, Rejected)
    assert old.kind == "old_ts"
    assert gate.rejections[(METER, "future_ts")] == 1
    assert gate.rejections[(METER, "old_ts")] == 1


def test_gate_flags_a_register_reset_as_a_new_baseline() -> None:
    gate = make_gate()
    gate.check(reading(1, NOW - 20, "500.0"))
    reset = gate.check(reading(2, NOW - 10, "0.3"))
    assert isinstance(reset, Accepted)
    assert reset.reset
    assert reset.previous is not None
    assert reset.previous.energy_kwh == Decimal("500.0")
    after = gate.check(reading(3, NOW, "0.8"))
    assert isinstance(after, Accepted)
    assert not after.reset
    assert gate.rejections[(METER, "reset")] == 1


def test_gate_accepts_a_restarted_counter_when_the_clock_moves_on() -> None:
    gate = make_gate()
    gate.check(reading(900, NOW - 100, "7"))
    restarted = gate.check(reading(1, NOW - 10, "7.2"))
    assert isinstance(restarted, Accepted)
    assert restarted.seq_restart
    assert not restarted.reset


def test_gate_without_seq_dedups_on_time_and_register() -> None:
    gate = make_gate()
    assert isinstance(gate.check(reading(None, NOW - 5, "3")), Accepted)
    dup = gate.check(reading(None, NOW - 5, "3"))
    assert isinstance(dup, Rejected)
    assert dup.kind == "duplicate"
    assert isinstance(gate.check(reading(None, NOW - 5, "3.1")), Accepted)


def test_gate_seeded_from_persisted_cursors() -> None:
    class Cursor:
        def __init__(self, meter_id: str, seq: int, ts: int, energy_kwh: Decimal) -> None:
            self.meter_id, self.seq, self.ts, self.energy_kwh = meter_id, seq, ts, energy_kwh

    gate = make_gate()
    gate.seed_cursors(
        [Cursor(METER, 41, NOW - 60, Decimal("99.9")), Cursor("m2", 3, NOW, Decimal(1))]
    )
    dup = gate.check(reading(41, NOW - 60, "99.9"))
    assert isinstance(dup, Rejected)
    assert dup.kind == "duplicate"
    nxt = gate.check(reading(42, NOW - 30, "100.1"))
    assert isinstance(nxt, Accepted)
    assert nxt.previous is not None
    assert nxt.previous.seq == 41
    assert isinstance(gate.check(reading(3, NOW, "1", meter="m2")), Rejected)


def test_rejections_are_logged_once_per_meter_and_kind(caplog: pytest.LogCaptureFixture) -> None:
    gate = make_gate()
    caplog.set_level(logging.DEBUG)
    for _ in range(50):
        gate.check(reading(1, NOW + 5000, "1"))
        gate.check(reading(1, NOW + 5000, "1", meter="other"))
    future_logs = [r for r in caplog.records if "future" in r.getMessage()]
    assert len(future_logs) == 2
    assert gate.rejections[(METER, "future_ts")] == 50
    assert gate.rejections[("other", "future_ts")] == 50
    assert gate.issues.total("future_ts") == 100


def test_issues_counts_without_meter() -> None:
    issues = Issues()
    issues.reject(Rejected("bad_meter_id", "x"))
    issues.reject(Rejected("bad_meter_id", "y"))
    assert issues.counts[("?", "bad_meter_id")] == 2
