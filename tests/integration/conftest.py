"""Fixtures for the setup surface: form input for a broker, a stand-in for entry setup."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
import ipaddress
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, patch
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from homeassistant.const import CONF_HOST, CONF_PASSWORD, CONF_PORT, CONF_USERNAME
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prepaid_meter.const import (
    CONF_CA_FILE,
    CONF_CLIENT_CERT,
    CONF_CLIENT_KEY,
    CONF_COMMUNITY_ID,
    CONF_COMMUNITY_NAME,
    CONF_CURRENCY,
    CONF_PREFIX,
    CONF_TARIFF,
    CONF_TLS,
    DOMAIN,
    SECTION_TLS,
)
from tests.broker import Mosquitto


@pytest.fixture
def mock_setup_entry() -> Iterator[AsyncMock]:
    """Stand in for entry setup: these tests are about the flow, not the runtime."""
    with patch(
        "custom_components.prepaid_meter.async_setup_entry", return_value=True
    ) as setup_entry:
        yield setup_entry


@pytest.fixture
def config_dir(hass: HomeAssistant, tmp_path: Path) -> Path:
    """Give Home Assistant a config folder of this test's own (tariff and TLS files)."""
    hass.config.config_dir = str(tmp_path)
    return tmp_path


@pytest.fixture
def community_id() -> str:
    """Return a community id of this test alone."""
    return f"c{uuid.uuid4().hex[:10]}"


def form_input(host: str, port: int, community_id: str, /, **changes: Any) -> dict[str, Any]:
    """Return what the user form sends for a community on a broker (TLS section included)."""
    data: dict[str, Any] = {
        CONF_HOST: host,
        CONF_PORT: port,
        CONF_PREFIX: "prepaid",
        CONF_COMMUNITY_ID: community_id,
        CONF_COMMUNITY_NAME: "Lotus Garden",
        CONF_CURRENCY: "CNY",
        CONF_TARIFF: "beijing_monthly",
        SECTION_TLS: {CONF_TLS: False},
    }
    data.update(changes)
    return data


def entry_for(
    host: str,
    port: int,
    community_id: str,
    /,
    *,
    username: str | None = None,
    password: str | None = None,
    **data: Any,
) -> MockConfigEntry:
    """Return a stored entry as the flow would have created it."""
    stored: dict[str, Any] = {
        CONF_HOST: host,
        CONF_PORT: port,
        CONF_PREFIX: "prepaid",
        CONF_COMMUNITY_ID: community_id,
        CONF_COMMUNITY_NAME: "Lotus Garden",
        CONF_CURRENCY: "CNY",
        CONF_TARIFF: "beijing_monthly",
        CONF_TLS: False,
        **data,
    }
    if username is not None:
        stored[CONF_USERNAME] = username
    if password is not None:
        stored[CONF_PASSWORD] = password
    return MockConfigEntry(
        domain=DOMAIN,
        title="Lotus Garden",
        unique_id=f"{host}:{port}/{community_id}",
        data=stored,
    )


@dataclass(frozen=True)
class TlsBroker:
    """A mosquitto that speaks only TLS and requires a client certificate."""

    broker: Mosquitto
    config_files: dict[str, str]  # CONF_* -> path relative to the config folder


def _pem_certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> tuple[bytes, bytes]:
    """Return (certificate, key) as PEM; self-signed unless an issuer is given."""
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # Python 3.13 verifies strictly (X.509 v3 key identifiers required).
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
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
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    certificate = builder.sign(issuer_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture
def tls_broker(tmp_path: Path, config_dir: Path, socket_enabled: None) -> Iterator[TlsBroker]:
    """Start a TLS-only broker with a CA of its own; put the client's files in config/certs."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_pem, _ = _pem_certificate("Test CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_pem, server_key_pem = _pem_certificate(
        "127.0.0.1", server_key, ("Test CA", ca_key), ip="127.0.0.1"
    )
    client_pem, client_key_pem = _pem_certificate(
        "prepaid-meter", ec.generate_private_key(ec.SECP256R1()), ("Test CA", ca_key)
    )
    broker_dir = tmp_path / "tls-broker"
    broker = Mosquitto(broker_dir, persistence=False)
    files = {"ca.pem": ca_pem, "server.pem": server_pem, "server.key": server_key_pem}
    for name, content in files.items():
        (broker_dir / name).write_bytes(content)
    with broker.config.open("a") as config:
        config.write(
            f"cafile {broker_dir / 'ca.pem'}\n"
            f"certfile {broker_dir / 'server.pem'}\n"
            f"keyfile {broker_dir / 'server.key'}\n"
            "require_certificate true\n"
        )
    certs = config_dir / "certs"
    certs.mkdir()
    (certs / "ca.pem").write_bytes(ca_pem)
    (certs / "client.pem").write_bytes(client_pem)
    (certs / "client.key").write_bytes(client_key_pem)
    broker.start()
    yield TlsBroker(
        broker,
        {
            CONF_CA_FILE: "certs/ca.pem",
            CONF_CLIENT_CERT: "certs/client.pem",
            CONF_CLIENT_KEY: "certs/client.key",
        },
    )
    broker.stop()


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: Any) -> None:
    """Let Home Assistant load custom_components/prepaid_meter in every test here.

    Only the Home Assistant test folders take this (and so a `hass`): the engine, transport
    and simulator tests run on plain pytest-asyncio, without Home Assistant's loop checks.
    """
