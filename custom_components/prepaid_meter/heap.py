"""Short garbage-collection pauses in a Home Assistant that holds a large community.

Measured with `benchmarks/bench_ha.py --meters 5000` (70,000 entities): CPython's full
(generation 2) collection walks every object the collector tracks, about three million there,
and took 1.1-1.4 s every 80-90 s. The event loop stands still meanwhile, so a reading that
exhausts a credit, and the cut it causes, waits for it.

Almost all of those objects live as long as Home Assistant does: registries, devices,
entities, loaded modules. Once Home Assistant has started and a large community has loaded,
`gc.collect()` then `gc.freeze()` takes them out of the collector's walk (a full collection
then took 0.21-0.25 s, every 40-55 s). Frozen objects are still freed by reference counting;
only a reference cycle among them is not found while they are frozen. So every night at
RECLAIM_AT (inside the default friendly hours, when no supply is cut) they are unfrozen,
collected and frozen again: such a cycle lives a day at most. When the last large community
unloads, everything is unfrozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import gc
import logging
import time
from typing import Any

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers.event import async_track_time_change
from homeassistant.helpers.start import async_at_started
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN

_LOGGER = logging.getLogger(__name__)

#: Communities of more meters than this freeze the heap; a smaller one's pauses are short.
FREEZE_ABOVE = 1000
#: Local time of the nightly unfreeze, collect and freeze (hour, minute).
RECLAIM_AT = (4, 0)


@dataclass(slots=True)
class _Heap:
    """Which large communities hold the heap frozen, and the timers that serve them."""

    holders: set[str] = field(default_factory=set)
    unsubs: list[CALLBACK_TYPE] = field(default_factory=list)
    frozen: bool = False


HEAP: HassKey[_Heap] = HassKey(f"{DOMAIN}_heap")


@callback
def async_hold_frozen(hass: HomeAssistant, holder: str) -> CALLBACK_TYPE:
    """Freeze the heap once Home Assistant has started, keep it so; return the release."""
    heap = hass.data.setdefault(HEAP, _Heap())
    heap.holders.add(holder)
    if not heap.unsubs:

        @callback
        def freeze(_hass: HomeAssistant) -> None:
            _freeze(heap, reclaim=False)

        @callback
        def reclaim(_now: Any) -> None:
            _freeze(heap, reclaim=True)

        heap.unsubs.append(async_at_started(hass, freeze))
        heap.unsubs.append(
            async_track_time_change(
                hass, reclaim, hour=RECLAIM_AT[0], minute=RECLAIM_AT[1], second=0
            )
        )

    @callback
    def release() -> None:
        heap.holders.discard(holder)
        if heap.holders:
            return
        for unsub in heap.unsubs:
            unsub()
        heap.unsubs.clear()
        if heap.frozen:
            heap.frozen = False
            gc.unfreeze()
            _LOGGER.debug("Heap unfrozen: no large community is loaded")

    return release


def _freeze(heap: _Heap, *, reclaim: bool) -> None:
    """Collect, then freeze what survives (first unfreezing, to reclaim frozen cycles)."""
    started = time.perf_counter()
    if reclaim and heap.frozen:
        gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    heap.frozen = True
    _LOGGER.debug(
        "Heap frozen after collecting %d objects in %.0f ms (%s)",
        collected,
        1000 * (time.perf_counter() - started),
        "nightly reclaim" if reclaim else "start",
    )
