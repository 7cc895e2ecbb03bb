"""Fixtures shared by every test: custom integrations and a real mosquitto broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Imported before any hass fixture so Home Assistant's loader finds this repository's
# custom_components package rather than the plugin's testing_config one.
import custom_components  # noqa: F401
from tests.broker import Mosquitto

pytest_plugins = ["pytest_homeassistant_custom_component"]


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """Return one broker for the whole session (tests keep to their own topics)."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"), persistence=False)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto(mosquitto_session: Mosquitto, socket_enabled: None) -> Mosquitto:
    """Return the session broker, with sockets enabled for this test."""
    return mosquitto_session


@pytest.fixture
def mosquitto_factory(tmp_path: Path, socket_enabled: None) -> Iterator[Callable[..., Mosquitto]]:
    """Return a function that starts a private broker (for restart tests); all stop at teardown."""
    started: list[Mosquitto] = []

    def factory(**kwargs: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"broker{len(started)}", **kwargs)
        broker.start()
        started.append(broker)
        return broker

    yield factory
    for broker in started:
        broker.stop()
