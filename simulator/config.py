"""The simulator's settings and the command line that fills them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
import datetime as dt
import re
from typing import Final
from urllib.parse import unquote, urlsplit

from simulator.household import KINDS
from simulator.profiles import PROFILES

_COMMUNITY: Final = re.compile(r"[a-z0-9_-]{1,32}")
_PREFIX: Final = re.compile(r"[^+#\s]+")


class ConfigError(ValueError):
    """A setting that cannot work; the message says which and why."""


@dataclass(frozen=True)
class Broker:
    """Where the broker is."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Broker:
        """Parse `mqtt://[user:pass@]host[:port]` (or plain `host[:port]`)."""
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ConfigError(f"--broker {url!r} is not mqtt://host[:port]")
        try:
            port = parts.port or 1883
        except ValueError:
            raise ConfigError(f"--broker {url!r} has a bad port") from None
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    @property
    def url(self) -> str:
        """Return mqtt://host:port (no credentials)."""
        return f"mqtt://{self.host}:{self.port}"


@dataclass(frozen=True)
class SimConfig:
    """Everything a simulated community needs. Build it in code or with `parse_args`."""

    broker: Broker = field(default_factory=Broker)
    community: str = "demo"
    meters: int = 50
    prefix: str = "prepaid"
    #: Real (wall-clock) seconds between two readings of one meter.
    interval: float = 10.0
    #: Simulated seconds per real second; each reading advances `ts` by interval * speed.
    speed: float = 1.0
    #: Simulated start, UNIX seconds (None: now).
    start: float | None = None
    #: Real seconds to run (None: until stopped).
    duration: float | None = None
    seed: int = 0
    profile: str = "native"
    scenarios: tuple[tuple[str, int], ...] = ()
    quiet: bool = True
    #: Meters per shared connection.
    pool_size: int = 250
    connection_per_meter: bool = False
    #: The `offline` scenario: readings online, then readings offline, repeated.
    offline_after: int = 30
    offline_for: int = 18
    #: The `reset` scenario: the reading (counted from 1) at which the register resets.
    reset_after: int | None = None
    #: The `garbage` scenario: chance that a reading comes with a malformed message.
    garbage_rate: float = 0.25
    #: Local time of the simulated community (China Standard Time), for the daily curve and
    #: Tasmota's `Time`.
    utc_offset_s: int = 8 * 3_600
    #: Real seconds between two status lines.
    status_every: float = 5.0
    #: Seconds to wait for a PUBACK before a message goes back to the backlog.
    publish_timeout: float = 10.0

    def __post_init__(self) -> None:
        """Refuse settings that cannot work, with one clear message."""
        if not _COMMUNITY.fullmatch(self.community):
            raise ConfigError(f"--community {self.community!r} must match [a-z0-9_-]{{1,32}}")
        if not _PREFIX.fullmatch(self.prefix):
            raise ConfigError(f"--prefix {self.prefix!r} must not contain +, # or spaces")
        if self.meters < 1:
            raise ConfigError("--meters must be at least 1")
        if self.interval <= 0 or self.speed <= 0:
            raise ConfigError("--interval and --speed must be greater than 0")
        if self.profile not in (*PROFILES, "mix"):
            raise ConfigError(f"--profile must be one of {', '.join((*PROFILES, 'mix'))}")
        for name, count in self.scenarios:
            if name not in KINDS:
                raise ConfigError(f"unknown scenario {name!r}; expected one of {', '.join(KINDS)}")
            if count < 0:
                raise ConfigError(f"--scenario {name}:{count} needs a count of 0 or more")
        wanted = sum(count for _, count in self.scenarios)
        if wanted > self.meters:
            raise ConfigError(f"the scenarios need {wanted} meters but --meters is {self.meters}")
        if self.pool_size < 1:
            raise ConfigError("--pool-size must be at least 1")


def _scenario(text: str) -> tuple[str, int]:
    name, _, count = text.partition(":")
    try:
        number = int(count) if count else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:COUNT") from None
    if name not in KINDS:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {name!r}; expected one of {', '.join(KINDS)}"
        )
    return name, number


def _start(text: str) -> float:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone(dt.timedelta(hours=8)))
    return when.timestamp()


def build_parser() -> argparse.ArgumentParser:
    """Return the command line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Simulate a community of smart prepaid electricity meters over MQTT.",
    )
    add = parser.add_argument
    add("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port (default %(default)s)")
    add("--community", default="demo", help="community id, [a-z0-9_-]{1,32} (default %(default)s)")
    add("--meters", type=int, default=50, help="number of meters (default %(default)s)")
    add("--prefix", default="prepaid", help="topic prefix (default %(default)s)")
    add(
        "--interval",
        type=float,
        default=10.0,
        help="real seconds between readings (default %(default)s)",
    )
    add("--speed", type=float, default=1.0,
        help="simulated seconds per real second; ts advances interval*speed a reading")  # fmt: skip
    add("--start", type=_start, default=None,
        help="simulated start, ISO date or date-time (no zone: UTC+8); default now")  # fmt: skip
    add("--duration", type=float, default=None, help="real seconds to run (default: until Ctrl-C)")
    add("--seed", type=int, default=0, help="random seed; the same seed gives the same community")
    add(
        "--profile",
        choices=(*PROFILES, "mix"),
        default="native",
        help="wire format (default native)",
    )
    add("--scenario", type=_scenario, action="append", default=[], metavar="NAME:COUNT",
        help=f"give COUNT meters a scenario (repeatable): {', '.join(KINDS[1:])}")  # fmt: skip
    add("--username", default=None)
    add("--password", default=None)
    add("--quiet", action="store_true", help="no status line")
    add(
        "--pool-size",
        type=int,
        default=250,
        help="meters per shared MQTT connection (default %(default)s)",
    )
    add("--connection-per-meter", action="store_true",
        help="one MQTT connection (and a real last will) per meter")  # fmt: skip
    add(
        "--offline-after",
        type=int,
        default=30,
        help="offline scenario: readings online (default %(default)s)",
    )
    add(
        "--offline-for",
        type=int,
        default=18,
        help="offline scenario: readings offline (default %(default)s)",
    )
    add(
        "--reset-after",
        type=int,
        default=None,
        help="reset scenario: the reading that resets the register",
    )
    add(
        "--garbage-rate",
        type=float,
        default=0.25,
        help="garbage scenario: malformed share (default %(default)s)",
    )
    add(
        "--status-every",
        type=float,
        default=5.0,
        help="seconds between status lines (default %(default)s)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> SimConfig:
    """Return the settings on a command line (argparse exits with status 2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        broker = Broker.parse(args.broker)
        if args.username is not None:
            broker = Broker(broker.host, broker.port, args.username, args.password)
        return SimConfig(
            broker=broker,
            community=args.community,
            meters=args.meters,
            prefix=args.prefix,
            interval=args.interval,
            speed=args.speed,
            start=args.start,
            duration=args.duration,
            seed=args.seed,
            profile=args.profile,
            scenarios=tuple(args.scenario),
            quiet=args.quiet,
            pool_size=args.pool_size,
            connection_per_meter=args.connection_per_meter,
            offline_after=args.offline_after,
            offline_for=args.offline_for,
            reset_after=args.reset_after,
            garbage_rate=args.garbage_rate,
            status_every=args.status_every,
        )
    except ConfigError as err:
        parser.error(str(err))
