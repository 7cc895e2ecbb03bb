"""The engine's events in Home Assistant: bus events (and so the logbook), repairs, devices.

`Notices.handle(events)` is the one `match` over every kind of `engine.community.Event`
(mypy's exhaustiveness check: a kind the engine adds fails type-checking here until this
says what it means). Commands, publishes and displays are the service's own business, done
before the runtime hands the events over.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, assert_never

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, issue_registry as ir

from .const import DOMAIN
from .engine.billing import CENT
from .engine.community import PEOPLE_EVENTS, Event, Relay

if TYPE_CHECKING:
    from .coordinator import PrepaidRuntime

EVENT_PREFIX = "prepaid_meter_"
#: Kinds fired as prepaid_meter_<kind> for the automations of earlier versions and not
#: described in the logbook: the `prepaid_meter_alarm` fired with each (its `state` start or
#: clear) is the one logbook line of an episode's start and of its end.
ALSO_ALARMS = frozenset({"alarm_cleared", "inactivity"})
#: Fired as prepaid_meter_<kind> and described in the logbook.
BUS_EVENTS = PEOPLE_EVENTS - ALSO_ALARMS
#: Every kind fired as prepaid_meter_<kind> (what automations and blueprints may listen to).
FIRED_EVENTS = BUS_EVENTS | ALSO_ALARMS
#: payments.py fires prepaid_meter_payment (an order paid or refunded through a provider).
PAYMENT_EVENT = "payment"
#: The kinds the logbook describes, one line each.
LOGBOOK_EVENTS = BUS_EVENTS | {PAYMENT_EVENT}
#: Engine kinds that are an alarm episode's start or end: `prepaid_meter_alarm`'s `state`.
ALARM_STATES = {"alarm": "start", "inactivity": "start", "alarm_cleared": "clear"}
#: Event fields that are amounts of money: carried to the cent, as people read them.
MONEY_FIELDS = ("balance", "amount")


def money(value: object) -> str:
    """Return an amount as people read it, to the cent (half up); anything else as it came."""
    try:
        return str(Decimal(str(value)).quantize(CENT, ROUND_HALF_UP))
    except InvalidOperation:
        return str(value)


class Notices:
    """What one community's events become in Home Assistant (see the module docstring)."""

    def __init__(self, hass: HomeAssistant, runtime: PrepaidRuntime) -> None:
        """Bind to the community's runtime (its entry, devices and engine state)."""
        self.hass = hass
        self.runtime = runtime
        self.issues: set[str] = set()
        #: Meters whose supply is not known to be as wanted: the state their failed command asked.
        self.command_failures: dict[str, Relay] = {}

    @property
    def _entry_id(self) -> str:
        return self.runtime.entry.entry_id

    @callback
    def handle(self, events: Sequence[Event]) -> tuple[bool, bool]:
        """Act on `events`; return whether the community figures changed, and urgently.

        Urgent: something an operator's lists name (a supply, an alarm, a link, an
        assignment), written within seconds even in a large community.
        """
        dirty = urgent = False
        for event in events:
            meter_id = event.meter_id
            match event.kind:
                case "account":
                    dirty = True
                case "relay":
                    urgent = True
                case "register_reset" | "unassigned_meter":
                    assert meter_id is not None
                    self.meter_issue(event.kind, meter_id, ir.IssueSeverity.WARNING)
                case "unknown_meter":
                    assert meter_id is not None
                    self.community_issue(
                        "unknown_meter", ir.IssueSeverity.WARNING, meter_id=meter_id
                    )
                case "assigned":
                    assert meter_id is not None
                    self.delete_issue(f"unassigned_meter_{self._entry_id}_{meter_id}")
                    self._update_device_name(meter_id)
                    urgent = True
                case "command_failed":
                    assert meter_id is not None
                    if not self._command_failed(meter_id, event):
                        continue  # the same wish failing again: already told
                case "command_confirmed":
                    assert meter_id is not None
                    self.command_failures.pop(meter_id, None)
                    self.delete_issue(f"command_failed_{self._entry_id}_{meter_id}")
                case (
                    "low_balance"
                    | "supply_cut"
                    | "supply_restored"
                    | "supply_cut_deferred"
                    | "top_up"
                ):
                    pass  # bus events only (below)
                case "alarm" | "alarm_cleared" | "inactivity" | "availability":
                    urgent = True  # the operator's lists name them
                    if meter_id is not None:
                        self.runtime.meter_changed(meter_id)  # its alarm sensors
                case "alarm_acknowledged":
                    pass  # bus event only (below)
                case "announce":
                    assert meter_id is not None
                    self._update_device_model(meter_id)
                case "cycle_closed" | "rejected" | "reconcile" | "display":
                    pass  # the meter's entities and diagnostics show these; the service acted
                case unknown:
                    assert_never(unknown)
            if event.kind in BUS_EVENTS or event.kind in ALSO_ALARMS:
                data = self.event_data(event)
                if event.kind in ALARM_STATES:
                    alarm = {**data, "type": event.data.get("type", "inactivity")}
                    alarm["state"] = ALARM_STATES[event.kind]
                    if event.kind != "alarm":
                        self.hass.bus.async_fire(EVENT_PREFIX + event.kind, data)
                    self.hass.bus.async_fire(EVENT_PREFIX + "alarm", alarm)
                else:
                    self.hass.bus.async_fire(EVENT_PREFIX + event.kind, data)
        return dirty or urgent, urgent

    # ------------------------------------------------------------------ bus events

    def event_data(self, event: Event) -> dict[str, Any]:
        """Return a bus event's data: who, where, the household's people, money to the cent."""
        community = self.runtime.community
        meter_id = event.meter_id
        if meter_id is None and event.account_id is not None:
            meters = community.meters.values()
            meter_id = next((m.meter_id for m in meters if m.account_id == event.account_id), None)
        data: dict[str, Any] = {
            "config_entry_id": self._entry_id,
            "community": self.runtime.community_id,
            "meter_id": meter_id,
            "device_id": None,
            "household": None,
            **{k: v for k, v in event.data.items() if v is not None or k == "household"},
        }
        if event.account_id is not None:
            data["account_id"] = event.account_id
            household = community.households.get(event.account_id)
            if household is not None:
                data["household"] = household.label
                data.setdefault("balance", household.electricity)
        if meter_id is not None:
            device = self.runtime.meter_device(meter_id)
            data["device_id"] = device.id if device else None
        for field in MONEY_FIELDS:
            if data.get(field) is not None:
                data[field] = money(data[field])
        # Who to tell: the Home Assistant users linked to the household (blueprints notify them).
        account_id = data.get("account_id")
        data["users"] = sorted(self.runtime.service.users_of(account_id)) if account_id else []
        return data

    # ------------------------------------------------------------------ repairs

    @callback
    def _command_failed(self, meter_id: str, event: Event) -> bool:
        """Raise the repair of a relay command the meter did not carry out; False if known.

        Once per meter and wanted state until a command succeeds again (a relay stuck and
        refusing would otherwise be reported at every retried reconciliation).
        """
        state: Relay = "off" if event.data["state"] == "off" else "on"
        if self.command_failures.get(meter_id) == state:
            return False
        self.command_failures[meter_id] = state
        issue_id = f"command_failed_{self._entry_id}_{meter_id}"
        self.issues.add(issue_id)
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            issue_id,
            is_fixable=False,
            # A cut that did not happen leaves a home on that everybody believes off.
            severity=ir.IssueSeverity.ERROR if state == "off" else ir.IssueSeverity.WARNING,
            translation_key="command_failed",
            translation_placeholders={
                "meter_id": meter_id,
                "community": self.runtime.community_name,
                "state": state,
            },
        )
        return True

    @callback
    def meter_issue(self, kind: str, meter_id: str, severity: ir.IssueSeverity) -> None:
        """Raise one repair of this kind for a meter."""
        issue_id = f"{kind}_{self._entry_id}_{meter_id}"
        if issue_id in self.issues:
            return
        self.issues.add(issue_id)
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            issue_id,
            is_fixable=False,
            severity=severity,
            translation_key=kind,
            translation_placeholders={
                "meter_id": meter_id,
                "community": self.runtime.community_name,
            },
        )

    @callback
    def community_issue(self, kind: str, severity: ir.IssueSeverity, **placeholders: str) -> None:
        """Raise one repair of this kind for the community (the first occurrence names it)."""
        issue_id = f"{kind}_{self._entry_id}"
        if issue_id in self.issues:
            return
        self.issues.add(issue_id)
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            issue_id,
            is_fixable=False,
            severity=severity,
            translation_key=kind,
            translation_placeholders={**placeholders, "community": self.runtime.community_name},
        )

    @callback
    def delete_issue(self, issue_id: str) -> None:
        """Clear a repair (whether or not it was raised)."""
        self.issues.discard(issue_id)
        ir.async_delete_issue(self.hass, DOMAIN, issue_id)

    # ------------------------------------------------------------------ devices

    @callback
    def _update_device_model(self, meter_id: str) -> None:
        """Show on the device page the model and firmware the meter announced."""
        meter = self.runtime.community.meters.get(meter_id)
        device = self.runtime.meter_device(meter_id)
        if meter is None or device is None:
            return
        model = meter.model or device.model
        firmware = meter.firmware or device.sw_version
        if (model, firmware) != (device.model, device.sw_version):
            dr.async_get(self.hass).async_update_device(device.id, model=model, sw_version=firmware)

    @callback
    def _update_device_name(self, meter_id: str) -> None:
        household = self.runtime.household_of(meter_id)
        device = self.runtime.meter_device(meter_id)
        if device is not None and household is not None:
            dr.async_get(self.hass).async_update_device(device.id, name=household.label)
