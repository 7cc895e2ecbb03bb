"""Constants of the Prepaid Meter integration."""

from __future__ import annotations

from typing import Final

DOMAIN: Final = "prepaid_meter"

CONF_PREFIX: Final = "prefix"
CONF_COMMUNITY_ID: Final = "community_id"
CONF_COMMUNITY_NAME: Final = "community_name"
CONF_CURRENCY: Final = "currency"
CONF_TARIFF: Final = "tariff"
CONF_TLS: Final = "tls"
CONF_CA_FILE: Final = "ca_file"
CONF_CLIENT_CERT: Final = "client_cert"
CONF_CLIENT_KEY: Final = "client_key"

DEFAULT_PREFIX: Final = "prepaid"
DEFAULT_PORT: Final = 1883
DEFAULT_CURRENCY: Final = "CNY"
