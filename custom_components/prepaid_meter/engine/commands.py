"""Relay commands: desired versus reported state per meter, retries, reconciliation.

`CommandTracker(sender, ...)` keeps for every meter the relay state the platform wants (with
its reason and actor) and the state the meter last reported. `sender(meter_id, state,
command_id, reason)` is awaited to send one command; it typically publishes, at QoS 1, what
`profile.relay_command(meter_id, state, command_id, reason)` returns (`profile_sender` builds
one from a profile and a publish function). It may raise (e.g. not connected): a failed send
counts as a try.

- `set_desired(meter_id, state, reason, actor)` sends a command with a fresh uuid and retries
  it, with the same id, with exponential backoff (`max_tries`, default 5) until the meter
  acknowledges it; then it is reported as `expired`. An ack with `ok=false` is reported as
  `failed` and not retried. A device without command ids (Tasmota) confirms a command by
  reporting the desired state (`confirmed`).
- A command that expired or failed stays unresolved until something else happens: its ack
  arriving late (ok, relay as wanted), or the meter reporting the state it asked for, reports
  it `confirmed` (once; the command is not sent again). A new command (another state, a
  reconciliation) replaces it.
- Feed what meters say: `reported(meter_id, state)` (a reading's `relay`, a `RelayReport`),
  `online(meter_id)` / `offline(meter_id)` (availability, announce), `ack(ack)`; or
  `observe(parsed)` with any parsed message.
- Reconciliation: when a meter reports the other state while no command is in flight, or
  comes back (availability online, announce), the desired state is sent again with a fresh
  id (at most once per `reconcile_interval` for reports); a command still in flight is re-sent
  at once with its id and its tries counted from zero.
- The same ack applied twice changes nothing; acks for unknown ids are ignored.
- Outcomes go to `on_outcome(CommandOutcome)`; `pending()` lists commands in flight;
  `status(meter_id)` gives the desired/reported view; `reconcile()` re-sends wherever the
  desired state is not known to be in force (call it after the transport reconnects);
  `await stop()` cancels every task.

Everything runs in one event loop.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
import contextlib
from dataclasses import dataclass, field
import logging
import time
from typing import Literal
import uuid

from .profiles import Profile
from .protocol import Ack, Announce, Availability, Parsed, Reading, RelayReport, RelayState

_LOGGER = logging.getLogger(__name__)

type Sender = Callable[[str, RelayState, str, str], Awaitable[None]]
type Publish = Callable[[str, bytes], Awaitable[None]]
type OutcomeStatus = Literal["acked", "confirmed", "failed", "expired", "superseded"]


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """How one command ended."""

    meter_id: str
    id: str
    state: RelayState
    status: OutcomeStatus
    tries: int
    reason: str
    actor: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PendingCommand:
    """A command in flight, for diagnostics (times from the tracker's clock)."""

    meter_id: str
    id: str
    state: RelayState
    reason: str
    actor: str
    tries: int
    first_sent: float
    last_sent: float | None


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """What the tracker knows about one meter's relay."""

    meter_id: str
    desired: RelayState | None
    reason: str
    actor: str
    reported: RelayState | None
    online: bool | None
    pending_id: str | None
    last_outcome: OutcomeStatus | None


@dataclass(slots=True)
class _Command:
    meter_id: str
    id: str
    state: RelayState
    reason: str
    actor: str
    first_sent: float
    tries: int = 0
    last_sent: float | None = None
    finished: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def _finished(command: _Command) -> bool:
    # A function, so that type checkers do not assume the flag stays as last tested.
    return command.finished


@dataclass(slots=True)
class _Meter:
    desired: RelayState | None = None
    reason: str = ""
    actor: str = ""
    reported: RelayState | None = None
    online: bool | None = None
    command: _Command | None = None
    last_outcome: OutcomeStatus | None = None
    last_command_at: float | None = None
    # The last command, if it expired or failed and nothing has replaced or confirmed it yet.
    unresolved: _Command | None = None


class CommandTracker:
    """Desired versus reported relay state, with retried, acknowledged commands."""

    def __init__(
        self,
        sender: Sender,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_outcome: Callable[[CommandOutcome], None] | None = None,
        max_tries: int = 5,
        base_delay: float = 2.0,
        max_delay: float = 60.0,
        reconcile_interval: float = 30.0,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        """Send with `sender`; report outcomes to `on_outcome`; delays in seconds."""
        self._send = sender
        self._clock = clock
        self._on_outcome = on_outcome
        self.max_tries = max_tries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.reconcile_interval = reconcile_interval
        self._new_id = new_id
        self._meters: dict[str, _Meter] = {}
        self._finished_ids: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        self.sent = 0

    # -- what the integration calls ----------------------------------------------------

    def set_desired(self, meter_id: str, state: RelayState, reason: str, actor: str) -> str | None:
        """Want `state` for a meter; return the id of the command sent, or None if none was.

        Nothing is sent when the same state is already wanted and either in flight or
        reported by the meter. A different state supersedes a command in flight.
        """
        meter = self._meters.setdefault(meter_id, _Meter())
        same = meter.desired == state
        meter.desired, meter.reason, meter.actor = state, reason, actor
        if same and (meter.command is not None or meter.reported == state):
            return None
        return self._new_command(meter_id, meter)

    def observe(self, message: Parsed) -> None:
        """Feed any parsed message; only relay-related ones matter."""
        if isinstance(message, Reading):
            if message.relay is not None:
                self.reported(message.meter_id, message.relay)
        elif isinstance(message, RelayReport):
            self.reported(message.meter_id, message.relay)
        elif isinstance(message, Ack):
            self.ack(message)
        elif isinstance(message, Availability):
            self._availability(message.meter_id, online=message.online)
        elif isinstance(message, Announce):
            self._availability(message.meter_id, online=True)

    def reported(self, meter_id: str, state: RelayState) -> None:
        """The meter reports its relay state (a reading or a relay report)."""
        meter = self._meters.setdefault(meter_id, _Meter())
        meter.reported = state
        command = meter.command
        if command is not None:
            if state == command.state:
                self._finish(meter_id, meter, "confirmed")
            return
        late = meter.unresolved
        if late is not None and state == late.state:
            self._confirm_late(meter_id, meter, late)
            return
        if meter.desired is None or state == meter.desired:
            return
        last = meter.last_command_at
        if last is not None and self._clock() - last < self.reconcile_interval:
            return
        _LOGGER.info(
            "Meter %s reports relay %s but %s is wanted (%s); sending it again",
            meter_id,
            state,
            meter.desired,
            meter.reason,
        )
        self._new_command(meter_id, meter)

    def online(self, meter_id: str) -> None:
        """The meter came online or announced itself: re-send the desired state."""
        self._availability(meter_id, online=True)

    def offline(self, meter_id: str) -> None:
        """The meter went offline (commands in flight keep being retried)."""
        self._availability(meter_id, online=False)

    def _availability(self, meter_id: str, *, online: bool) -> None:
        meter = self._meters.setdefault(meter_id, _Meter())
        was = meter.online
        meter.online = online
        if not online or meter.desired is None:
            return
        command = meter.command
        if command is not None:
            command.tries = 0  # a fresh round of tries now that the meter is back
            command.wake.set()
            return
        if was is True and meter.reported == meter.desired:
            return  # a repeated "online" (retained message after our reconnect): no change
        self._new_command(meter_id, meter)

    def ack(self, ack: Ack) -> None:
        """The meter answers a command."""
        meter = self._meters.get(ack.meter_id)
        late = None if meter is None else meter.unresolved
        if (
            meter is not None
            and late is not None
            and late.id == ack.id
            and meter.last_outcome == "expired"
        ):
            # The answer to a command whose tries ran out: it did arrive after all.
            if ack.relay is not None:
                meter.reported = ack.relay
            if ack.ok and ack.relay in (None, late.state):
                self._confirm_late(ack.meter_id, meter, late)
            else:
                _LOGGER.debug("Late ack %s from %s does not confirm it", ack.id, ack.meter_id)
            return
        if ack.id in self._finished_ids:
            return  # the same ack again: nothing changes
        command = None if meter is None else meter.command
        if meter is None or command is None or command.id != ack.id:
            _LOGGER.debug("Ack %s from %s matches no command in flight", ack.id, ack.meter_id)
            return
        if ack.relay is not None:
            meter.reported = ack.relay
        if not ack.ok:
            self._finish(ack.meter_id, meter, "failed", ack.error or "refused")
        elif ack.relay is not None and ack.relay != command.state:
            self._finish(ack.meter_id, meter, "failed", f"meter reports relay {ack.relay}")
        else:
            self._finish(ack.meter_id, meter, "acked")

    def reconcile(self, meter_id: str | None = None) -> list[str]:
        """Send the desired state again where it is not known to be in force.

        For a meter (or all) with a desired state: a command in flight is re-sent now; else a
        new command goes out when the reported state differs or the last command did not
        succeed. Call it after the transport reconnects. Returns the new command ids.
        """
        ids: list[str] = []
        targets = [meter_id] if meter_id is not None else list(self._meters)
        for target in targets:
            meter = self._meters.get(target)
            if meter is None or meter.desired is None:
                continue
            if meter.command is not None:
                meter.command.tries = 0
                meter.command.wake.set()
                continue
            if meter.reported != meter.desired or meter.last_outcome not in ("acked", "confirmed"):
                new = self._new_command(target, meter)
                if new is not None:
                    ids.append(new)
        return ids

    def forget(self, meter_id: str) -> None:
        """Stop tracking a meter (cancels its command in flight)."""
        meter = self._meters.pop(meter_id, None)
        if meter is not None and meter.command is not None:
            meter.command.finished = True
            meter.command.wake.set()

    def pending(self) -> list[PendingCommand]:
        """Return the commands in flight."""
        return [
            PendingCommand(
                c.meter_id, c.id, c.state, c.reason, c.actor, c.tries, c.first_sent, c.last_sent
            )
            for m in self._meters.values()
            if (c := m.command) is not None
        ]

    def status(self, meter_id: str) -> RelayStatus | None:
        """Return the desired/reported view of one meter, or None if never seen."""
        meter = self._meters.get(meter_id)
        if meter is None:
            return None
        return RelayStatus(
            meter_id,
            meter.desired,
            meter.reason,
            meter.actor,
            meter.reported,
            meter.online,
            None if meter.command is None else meter.command.id,
            meter.last_outcome,
        )

    async def stop(self) -> None:
        """Cancel every command in flight and wait for the tasks to end."""
        self._stopped = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # -- internals ---------------------------------------------------------------------

    def _new_command(self, meter_id: str, meter: _Meter) -> str | None:
        if self._stopped or meter.desired is None:
            return None
        if meter.command is not None:
            self._finish(meter_id, meter, "superseded")
        meter.unresolved = None
        now = self._clock()
        command = _Command(meter_id, self._new_id(), meter.desired, meter.reason, meter.actor, now)
        meter.command = command
        meter.last_command_at = now
        task = asyncio.get_running_loop().create_task(
            self._drive(command), name=f"prepaid_meter relay {meter_id}"
        )
        command.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return command.id

    async def _drive(self, command: _Command) -> None:
        while not command.finished:
            if command.tries >= self.max_tries:
                meter = self._meters.get(command.meter_id)
                if meter is not None and meter.command is command:
                    self._finish(command.meter_id, meter, "expired")
                return
            command.tries += 1
            command.last_sent = self._clock()
            await self._send_once(command)
            if _finished(command):
                return
            delay = min(self.max_delay, self.base_delay * 2 ** (command.tries - 1))
            command.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await command.wake.wait()

    async def _send_once(self, command: _Command) -> None:
        try:
            await self._send(command.meter_id, command.state, command.id, command.reason)
            self.sent += 1
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a send that fails counts as a try
            _LOGGER.debug(
                "Sending relay %s to %s failed (try %d): %s",
                command.state,
                command.meter_id,
                command.tries,
                err,
            )

    def _finish(
        self, meter_id: str, meter: _Meter, status: OutcomeStatus, error: str | None = None
    ) -> None:
        command = meter.command
        if command is None:
            return
        meter.command = None
        meter.last_outcome = status
        meter.unresolved = command if status in ("failed", "expired") else None
        command.finished = True
        command.wake.set()
        self._finished_ids[command.id] = None
        while len(self._finished_ids) > 4096:
            self._finished_ids.popitem(last=False)
        if status in ("failed", "expired"):
            _LOGGER.warning(
                "Relay command %s for meter %s %s after %d tries%s",
                command.state,
                meter_id,
                status,
                command.tries,
                f": {error}" if error else "",
            )
        self._report(
            CommandOutcome(
                meter_id,
                command.id,
                command.state,
                status,
                command.tries,
                command.reason,
                command.actor,
                error,
            )
        )

    def _confirm_late(self, meter_id: str, meter: _Meter, command: _Command) -> None:
        """An expired or failed command turns out to be in force: report it `confirmed`."""
        meter.unresolved = None
        meter.last_outcome = "confirmed"
        _LOGGER.info("Relay command %s for meter %s is in force after all", command.state, meter_id)
        self._report(
            CommandOutcome(
                meter_id,
                command.id,
                command.state,
                "confirmed",
                command.tries,
                command.reason,
                command.actor,
            )
        )

    def _report(self, outcome: CommandOutcome) -> None:
        if self._on_outcome is not None:
            try:
                self._on_outcome(outcome)
            except Exception:
                _LOGGER.exception("The relay command outcome callback failed")


def profile_sender(profile: Profile, publish: Publish) -> Sender:
    """Return a `Sender` publishing `profile.relay_command(...)` with `publish(topic, payload)`."""

    async def send(meter_id: str, state: RelayState, command_id: str, reason: str) -> None:
        for topic, payload in profile.relay_command(meter_id, state, command_id, reason):
            await publish(topic, payload)

    return send
