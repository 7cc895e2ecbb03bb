"""Counters and the status line the simulator prints to stderr."""

from __future__ import annotations

from dataclasses import dataclass, field
import datetime as dt
import time


@dataclass
class Stats:
    """Counters the links and meters update as they go."""

    published: int = 0
    commands: int = 0
    publish_errors: int = 0
    connects: int = 0
    connect_errors: int = 0
    _mark_count: int = 0
    _mark_time: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        """Return messages per second since the previous call (or since the start)."""
        now = time.monotonic()
        elapsed = now - self._mark_time
        count = self.published - self._mark_count
        self._mark_time, self._mark_count = now, self.published
        return count / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class Snapshot:
    """What the status line shows."""

    community: str
    meters: int
    online: int
    rate: float
    relays_off: int
    backlog: int
    published: int
    sim_time: float
    sim_start: float
    utc_offset_s: int

    def line(self) -> str:
        """Return one human-readable status line."""
        local = dt.timezone(dt.timedelta(seconds=self.utc_offset_s))
        when = dt.datetime.fromtimestamp(self.sim_time, local).strftime("%Y-%m-%d %H:%M:%S")
        elapsed = max(0, int(self.sim_time - self.sim_start))
        days, rest = divmod(elapsed, 86_400)
        hours, rest = divmod(rest, 3_600)
        minutes, seconds = divmod(rest, 60)
        return (
            f"[{self.community}] online {self.online}/{self.meters} | "
            f"{self.rate:.1f} msg/s | relays off {self.relays_off} | backlog {self.backlog} | "
            f"sent {self.published} | simulated {when} "
            f"(+{days}d {hours:02d}:{minutes:02d}:{seconds:02d})"
        )
