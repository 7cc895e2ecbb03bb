"""Helpers for the transport tests: a persistent broker that really persists."""

from __future__ import annotations

from collections.abc import Callable
import os

import pytest

from tests.broker import Mosquitto


@pytest.fixture
def persistent_broker(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """Return a private broker with persistence that can write its database.

    Started as root, mosquitto drops to the `mosquitto` user, which cannot write into the
    test's (root-owned, 0700) directory: no database, no log, and so no session survives a
    restart. `user root` keeps it able to write there.
    """
    broker = mosquitto_factory(persistence=True)
    if os.geteuid() == 0:
        broker.config.write_text(broker.config.read_text() + "user root\n")
        broker.restart()
    return broker
