"""Helpers for the transport tests: a persistent broker that really persists."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.broker import Mosquitto


@pytest.fixture
def persistent_broker(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """Return a private broker with persistence that can write its database.

    Started as root, mosquitto drops to the `mosquitto` user, which cannot write into the
    test's (root-owned, 0700) directory: no database, no log, and so no session survives a
    restart. `user root` keeps it able to write there.
    """
    return mosquitto_factory(persistence=True)


@pytest.fixture
def password_broker(tmp_path: Path, socket_enabled: None) -> Iterator[Mosquitto]:
    """Return a broker that only lets `meterbox` / `s3cret` in.

    Built here rather than through `mosquitto_factory`, which starts the broker before the
    `user root` line can be added; without it, mosquitto (dropped to its own user) cannot read
    the password file in the test's private directory and does not start.
    """
    broker = Mosquitto(tmp_path / "auth", persistence=False, passwords={"meterbox": "s3cret"})
    broker.start()
    yield broker
    broker.stop()
