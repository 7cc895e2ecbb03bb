"""Constants of the Prepaid Meter integration."""

from __future__ import annotations

from typing import Final

DOMAIN: Final = "prepaid_meter"

# Config entry data (the broker and the community; changed by the reconfigure flow).
CONF_PREFIX: Final = "prefix"
CONF_COMMUNITY_ID: Final = "community_id"
CONF_COMMUNITY_NAME: Final = "community_name"
CONF_CURRENCY: Final = "currency"
CONF_TARIFF: Final = "tariff"
# The device family of the community's meters (engine.profiles.PROFILE_NAMES).
CONF_PROFILE: Final = "profile"
CONF_TLS: Final = "tls"
CONF_CA_FILE: Final = "ca_file"
CONF_CLIENT_CERT: Final = "client_cert"
CONF_CLIENT_KEY: Final = "client_key"
# The collapsible form section that holds the TLS fields; the entry stores them flat.
SECTION_TLS: Final = "tls_settings"

DEFAULT_PREFIX: Final = "prepaid"
DEFAULT_PORT: Final = 1883
DEFAULT_CURRENCY: Final = "CNY"
DEFAULT_PROFILE: Final = "native"

# Tariff presets shipped under engine/presets/ (the file stems); a test keeps them in step.
PRESET_TARIFFS: Final = (
    "beijing_monthly",
    "zhejiang_yearly",
    "zhejiang_yearly_tou",
    "shanghai_yearly_tou",
    "flat",
)

# Config entry options: the prepaid policy, read by engine.policy.PolicyConfig.from_options.
CONF_WARN_LEVEL_1: Final = "warn_level_1"
CONF_WARN_LEVEL_2: Final = "warn_level_2"
CONF_EMERGENCY_CREDIT: Final = "emergency_credit"
CONF_FRIENDLY_START: Final = "friendly_start"
CONF_FRIENDLY_END: Final = "friendly_end"
CONF_FRIENDLY_WEEKENDS: Final = "friendly_weekends"
CONF_HOLIDAYS: Final = "holidays"
CONF_RECLOSE_THRESHOLD: Final = "reclose_threshold"
CONF_AUTO_RESTORE: Final = "auto_restore"
CONF_WORKDAYS: Final = "workdays"
#: Seconds between writes of a meter's measurement sensors (not a policy option).
CONF_MEASUREMENT_INTERVAL: Final = "measurement_interval"
#: Which entities each meter gets (not a policy option): all of them, or the essential set (see
#: entity.py); empty: by the community's size (coordinator.PrepaidRuntime.meter_entities).
CONF_METER_ENTITIES: Final = "meter_entities"
METER_ENTITIES_ALL: Final = "all"
METER_ENTITIES_ESSENTIAL: Final = "essential"
POLICY_OPTIONS: Final = (
    CONF_WARN_LEVEL_1,
    CONF_WARN_LEVEL_2,
    CONF_EMERGENCY_CREDIT,
    CONF_FRIENDLY_START,
    CONF_FRIENDLY_END,
    CONF_FRIENDLY_WEEKENDS,
    CONF_HOLIDAYS,
    CONF_WORKDAYS,
    CONF_RECLOSE_THRESHOLD,
    CONF_AUTO_RESTORE,
)
