"""The billing and metering core of prepaid_meter: no Home Assistant import anywhere below here.

Modules: `tariff` (tariff files), `billing` (pricing consumption), `ledger` (the money journal),
`protocol` and `profiles` (what meters send), `transport` (MQTT), `commands` (relay commands).
"""
