"""One simulated meter: its register, sequence number, relay, events and backlog.

Nothing here touches the network: `SimMeter.take_reading(ts)` returns the messages a reading
produces and `SimMeter.handle(topic, payload, now)` returns the answers to a command, so tests
can drive a meter without a broker. A meter speaks through a `Profile`, the interface defined
here; the wire formats that implement it live in `simulator.profiles`, which imports this module
(never the other way round).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
import random
from typing import Final, NamedTuple, Protocol

from simulator.household import Household, power_factor

JOULES_PER_KWH: Final = 3_600_000
_MILLI: Final = Decimal("0.001")
_RECENT_COMMANDS: Final = 64


class Publish(NamedTuple):
    """One MQTT message a meter sends."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading, as the meter measured it (before any wire format)."""

    seq: int
    ts: int
    energy_kwh: Decimal
    power_w: float
    voltage_v: float
    current_a: float
    neutral_current_a: float
    pf: float
    relay_on: bool
    events: tuple[str, ...]


class Profile(Protocol):
    """What a wire format must provide to a meter."""

    @property
    def name(self) -> str:
        """Return the profile's name: native, tasmota or shelly."""
        ...

    def on_connect(self, meter: SimMeter) -> list[Publish]:
        """Return what the meter publishes when it (re)connects."""
        ...

    def will(self, meter: SimMeter) -> Publish:
        """Return the meter's last will."""
        ...

    def telemetry(self, meter: SimMeter, sample: Sample) -> list[Publish]:
        """Return the messages of one reading."""
        ...

    def telemetry_topic(self, device_id: str) -> str:
        """Return the topic a device with this id sends its readings on."""
        ...

    def command_topics(self, meter: SimMeter) -> list[str]:
        """Return the topics the meter listens to."""
        ...

    def handle(self, meter: SimMeter, topic: str, payload: bytes, now: int) -> list[Publish]:
        """Apply one command; return the answers."""
        ...

    def garbage(self, meter: SimMeter, rng: random.Random) -> Publish:
        """Return one malformed message, the kind chosen by `rng`."""
        ...


def kwh(joules: int) -> Decimal:
    """Return a register in kWh with 3 decimals, truncated (a meter never rounds up)."""
    return (Decimal(joules) / JOULES_PER_KWH).quantize(_MILLI, rounding=ROUND_DOWN)


@dataclass(slots=True)
class SimMeter:
    """A meter: build with `SimMeter.create`, then `take_reading` at increasing times."""

    index: int
    meter_id: str
    #: The device's own name on the wire: the meter id (native), the Tasmota topic or the
    #: Shelly device id.
    device_id: str
    profile: Profile
    household: Household
    scenario: str
    register_j: int
    seq: int
    relay_on: bool
    last_t: int | None
    #: Readings taken so far (the offline and reset schedules count these).
    readings: int = 0
    reset_after: int | None = None
    offline_after: int = 30
    offline_for: int = 18
    garbage_rate: float = 0.25
    rng: random.Random = field(default_factory=random.Random, repr=False)
    outbox: deque[Publish] = field(default_factory=lambda: deque(maxlen=100_000), repr=False)
    pending_events: list[str] = field(default_factory=list)
    recent_commands: OrderedDict[str, list[Publish]] = field(
        default_factory=OrderedDict, repr=False
    )
    resets: int = 0
    dropped: int = 0
    _theft_carry: int = 0
    #: Register at the start of the local day, and the total of the day before (Tasmota).
    day_index: int | None = None
    today_start_j: int = 0
    yesterday_j: int = 0

    @classmethod
    def create(
        cls,
        index: int,
        meter_id: str,
        profile: Profile,
        household: Household,
        *,
        scenario: str = "ordinary",
        device_id: str | None = None,
        offline_after: int = 30,
        offline_for: int = 18,
        reset_after: int | None = None,
        garbage_rate: float = 0.25,
    ) -> SimMeter:
        """Return a new meter whose register starts at a plausible reading for its seed."""
        rng = random.Random(f"meter:{household.seed}")
        register_wh = rng.randint(500_000, 9_000_000)
        if scenario != "reset":
            reset_after = None
        elif reset_after is None:
            reset_after = rng.randint(20, 60)
        return cls(
            index=index,
            meter_id=meter_id,
            device_id=device_id or meter_id,
            profile=profile,
            household=household,
            scenario=scenario,
            register_j=register_wh * 3_600,
            seq=rng.randint(1, 5_000),
            relay_on=True,
            last_t=None,
            reset_after=reset_after,
            offline_after=max(1, offline_after),
            offline_for=max(1, offline_for),
            garbage_rate=garbage_rate,
            rng=rng,
        )

    # -- state ---------------------------------------------------------------------------

    @property
    def energy_kwh(self) -> Decimal:
        """Return the register as the meter shows it."""
        return kwh(self.register_j)

    @property
    def rated_current_a(self) -> int:
        """Return the meter's rated current."""
        return self.household.rated_current_a

    def settle(self, t: int) -> None:
        """Add the energy used up to second `t` to the register (nothing while the relay is off)."""
        if self.last_t is None:
            self.last_t = t
            return
        if t <= self.last_t:
            return
        t0, self.last_t = self.last_t, t
        house = self.household
        for event in house.tamper_between(t0, t):
            self._event(event)
        if not self.relay_on:
            return
        used = house.energy_j(t0, t)
        if house.metered_permille != 1_000:
            # A bypass: only part of the load flows through the meter's live element.
            used, self._theft_carry = divmod(
                used * house.metered_permille + self._theft_carry, 1_000
            )
        self.register_j += used
        if house.overcurrent_between(t0, t):
            self._event("overcurrent")

    def _event(self, name: str) -> None:
        if name not in self.pending_events:
            self.pending_events.append(name)

    def set_relay(self, on: bool, now: int) -> bool:
        """Switch the relay at simulated second `now`; return the state it was in before."""
        self.settle(now)
        was_on, self.relay_on = self.relay_on, on
        return was_on

    def offline_now(self) -> bool:
        """Return whether the `offline` scenario has this meter off the network right now.

        The schedule counts readings: `offline_after` online, then `offline_for` offline, again.
        """
        if self.scenario != "offline":
            return False
        cycle = self.offline_after + self.offline_for
        return self.readings % cycle >= self.offline_after

    # -- readings ------------------------------------------------------------------------

    def measure(self, ts: int) -> Sample:
        """Take a reading at simulated second `ts`: settle, bump seq, latch and clear events."""
        self.readings += 1
        if self.reset_after is not None and self.readings == self.reset_after:
            self.settle(ts)
            self.register_j = 0
            self.resets += 1
        self.settle(ts)
        self._roll_day(ts)
        house = self.household
        true_w = house.power_at(ts) if self.relay_on else 0
        metered_w = true_w * house.metered_permille // 1_000
        # A live-terminal bypass keeps drawing through the neutral even with the relay open.
        neutral_w = house.power_at(ts) if house.metered_permille != 1_000 else true_w
        voltage = house.voltage_at(ts, true_w)
        pf = power_factor(max(true_w, neutral_w))
        current = round(metered_w / (voltage * pf), 2) if metered_w else 0.0
        neutral = round(neutral_w / (voltage * pf), 2) if neutral_w else 0.0
        if current > self.rated_current_a:
            self._event("overcurrent")
        self.seq += 1
        events = tuple(self.pending_events)
        self.pending_events.clear()
        return Sample(
            seq=self.seq,
            ts=ts,
            energy_kwh=self.energy_kwh,
            power_w=float(metered_w),
            voltage_v=voltage,
            current_a=current,
            neutral_current_a=neutral,
            pf=pf,
            relay_on=self.relay_on,
            events=events,
        )

    def _roll_day(self, ts: int) -> None:
        day = self.household.day_index(ts)
        if self.day_index is None:
            self.day_index, self.today_start_j = day, self.register_j
        elif day != self.day_index:
            self.yesterday_j = max(0, self.register_j - self.today_start_j)
            self.day_index, self.today_start_j = day, self.register_j
        elif self.register_j < self.today_start_j:
            self.today_start_j = self.register_j

    def take_reading(self, ts: int) -> list[Publish]:
        """Measure at `ts` and return the messages to send (telemetry, maybe some garbage)."""
        sample = self.measure(ts)
        messages = self.profile.telemetry(self, sample)
        if self.scenario == "garbage" and self.rng.random() < self.garbage_rate:
            messages.append(self.profile.garbage(self, self.rng))
        return messages

    def queue_reading(self, ts: int) -> None:
        """Take a reading and keep its messages in the backlog until they are sent."""
        for message in self.take_reading(ts):
            if len(self.outbox) == self.outbox.maxlen:
                self.dropped += 1
            self.outbox.append(message)

    # -- commands ------------------------------------------------------------------------

    def command_topics(self) -> list[str]:
        """Return the topics this meter subscribes to."""
        return self.profile.command_topics(self)

    def handle(self, topic: str, payload: bytes, now: int) -> list[Publish]:
        """Apply a command that arrived at simulated second `now`; return the answers."""
        return self.profile.handle(self, topic, payload, now)

    def remember(self, command_id: str, answers: list[Publish]) -> None:
        """Keep the answers to a command id, so a repeated id is answered the same way."""
        self.recent_commands[command_id] = answers
        while len(self.recent_commands) > _RECENT_COMMANDS:
            self.recent_commands.popitem(last=False)

    # -- presence ------------------------------------------------------------------------

    def announce(self) -> list[Publish]:
        """Return what the meter publishes each time it connects (announce and online)."""
        return self.profile.on_connect(self)

    def will(self) -> Publish:
        """Return the meter's last will (its offline availability)."""
        return self.profile.will(self)
