"""The few places where the oldest supported and the current Home Assistant differ.

Both are tested (README: 2025.4 and 2026.10). Each difference is detected by what the running
Home Assistant offers, never by its version number, so a later release that keeps the new API
needs no change here.
"""

from __future__ import annotations

from typing import Any, cast

from homeassistant.helpers import device_registry as dr, entity_platform

#: 2026.x: a device names its parent by registry id (`via_device_id`); `via_device` (the
#: parent's identifier) is deprecated there and is all that 2025.4 knows.
VIA_DEVICE_ID = "via_device_id" in dr.DeviceInfo.__optional_keys__


def device_info(via: tuple[str, str], via_device_id: str, **fields: Any) -> dr.DeviceInfo:
    """Return a DeviceInfo under a parent device, in the form this Home Assistant takes.

    `via` is the parent's identifier, `via_device_id` its registry id (the parent must be
    registered first, as current Home Assistant requires).
    """
    if VIA_DEVICE_ID:
        fields["via_device_id"] = via_device_id
    else:
        fields["via_device"] = via
    return cast("dr.DeviceInfo", fields)


def get_device(
    registry: dr.DeviceRegistry, identifier: tuple[str, str], config_entry_id: str
) -> dr.DeviceEntry | None:
    """Return the device of this config entry with the identifier, or None.

    2026.x deprecates `async_get_device(identifiers=...)` (identifiers are unique per config
    entry there) for `async_get_device_by_identifier`, which 2025.4 does not have.
    """
    by_identifier = getattr(registry, "async_get_device_by_identifier", None)
    if by_identifier is not None:
        return cast("dr.DeviceEntry | None", by_identifier(identifier, config_entry_id))
    return registry.async_get_device(identifiers={identifier})


#: 2026.x registers at most this many enabled entities per config entry and silently adds no
#: more (a log line); 2025.4 has no limit (None).
ENTITY_LIMIT: int | None = getattr(entity_platform, "MAX_ENABLED_ENTITIES_PER_CONFIG_ENTRY", None)
