"""Short garbage-collection pauses in a Home Assistant that holds a large community.

Measured with `benchmarks/bench_ha.py --meters 5000` (70,000 entities): CPython's full
(generation 2) collection walks every object the collector tracks, about three million there,
and took 1.1-1.4 s every 80-90 s. The event loop stands still meanwhile, so a reading that
exhausts a credit, and the cut it causes, waits for it.

Almost all of those objects live as long as Home Assistant does: registries, devices,
entities, loaded modules. SETTLE_S after Home Assistant has started, or after another large
community has joined, `gc.collect()` then `gc.freeze()` takes them out of the collector's walk
(a full collection then took 0.21-0.25 s, every 40-55 s). Frozen objects are still freed by
reference counting; only a reference cycle among them is not found while they are frozen. So
every night at RECLAIM_AT (inside the default friendly hours, when no supply is cut) they are
unfrozen, collected and frozen again: such a cycle lives a day at most. When the last large
community unloads (a reload too), everything is unfrozen at once, so that its objects can go.

Python has one permanent generation and no way to unfreeze part of it. Where something else had
frozen the heap before our first freeze (the current Home Assistant's test harness does;
another integration might), its objects are not ours to unfreeze: then neither the nightly
reclaim nor the last release unfreezes anything, and collections simply skip what is frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import gc
import logging
import time
from typing import Any

from homeassistant.const import EVENT_HOMEASSISTANT_STARTED
from homeassistant.core import CALLBACK_TYPE, CoreState, Event, HomeAssistant, callback
from homeassistant.helpers.event import async_call_later, async_track_time_change
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN

_LOGGER = logging.getLogger(__name__)

#: Communities of more meters than this freeze the heap; a smaller one's pauses are short.
FREEZE_ABOVE = 1000
#: Seconds between a community joining (or Home Assistant starting) and the freeze, so that
#: what starts with them (entities, first states) is frozen too.
SETTLE_S = 60.0
#: Local time of the nightly unfreeze, collect and freeze (hour, minute).
RECLAIM_AT = (4, 0)


@dataclass(slots=True)
class _Heap:
    """Which large communities hold the heap frozen, and the timers that serve them."""

    holders: set[str] = field(default_factory=set)
    nightly: CALLBACK_TYPE | None = None
    pending: CALLBACK_TYPE | None = None  # the start listener or the scheduled freeze
    frozen: bool = False
    #: Whether the heap held frozen objects of someone else's before our first freeze.
    shared: bool = False

    def cancel_pending(self) -> None:
        if self.pending is not None:
            self.pending()
            self.pending = None


HEAP: HassKey[_Heap] = HassKey(f"{DOMAIN}_heap")


@callback
def async_hold_frozen(hass: HomeAssistant, holder: str) -> CALLBACK_TYPE:
    """Freeze the heap soon (and keep it so) for a large community; return the release."""
    heap = hass.data.setdefault(HEAP, _Heap())
    heap.holders.add(holder)
    if heap.nightly is None:

        @callback
        def reclaim(_now: Any) -> None:
            _freeze(heap, reclaim=True)

        heap.nightly = async_track_time_change(
            hass, reclaim, hour=RECLAIM_AT[0], minute=RECLAIM_AT[1], second=0
        )

    @callback
    def freeze(_now: Any) -> None:
        heap.pending = None
        _freeze(heap, reclaim=False)

    @callback
    def started(_event: Event) -> None:
        heap.pending = async_call_later(hass, SETTLE_S, freeze)

    heap.cancel_pending()
    if hass.state is CoreState.running:
        heap.pending = async_call_later(hass, SETTLE_S, freeze)
    else:
        heap.pending = hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STARTED, started)

    @callback
    def release() -> None:
        heap.holders.discard(holder)
        if heap.holders:
            return
        heap.cancel_pending()
        if heap.nightly is not None:
            heap.nightly()
            heap.nightly = None
        if heap.frozen:
            heap.frozen = False
            if not heap.shared:
                gc.unfreeze()
                _LOGGER.debug("Heap unfrozen: no large community is loaded")

    return release


def _freeze(heap: _Heap, *, reclaim: bool) -> None:
    """Collect, then freeze what survives (first unfreezing, to reclaim frozen cycles)."""
    started = time.perf_counter()
    if not heap.frozen:
        # Walks the permanent generation: only here, once per freeze, never per collection.
        heap.shared = gc.get_freeze_count() > 0
    elif reclaim and not heap.shared:
        gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    heap.frozen = True
    _LOGGER.debug(
        "Heap frozen after collecting %d objects in %.0f ms (%s)",
        collected,
        1000 * (time.perf_counter() - started),
        "nightly reclaim" if reclaim else "settled",
    )
