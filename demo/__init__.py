"""The one-command demo: a broker, a simulated community and Home Assistant with the integration.

`python -m demo run` (what `scripts/demo` starts) prepares `.demo/config` and runs everything
until Ctrl-C; `python -m demo setup --config-dir DIR ...` only writes a Home Assistant
configuration folder (used by the tests and the benchmarks). The pieces:

- `demo.config`: `DemoSettings` and `prepare(settings) -> Prepared`, which writes
  `configuration.yaml`, the config entry, finished onboarding, the owner user and a long-lived
  token (through Home Assistant's own auth API), links `custom_components/` and the blueprints,
  and seeds the community's ledger (households, meters, top-ups) for the simulator's meter ids.
- `demo.processes`: start and stop mosquitto, Home Assistant and the simulator as child
  processes, and wait for Home Assistant's REST API.
- `demo.household` (`--household`): mosquitto's dynamic security users for the community and
  the simulator, then `household_access` for the resident's household and a second Home
  Assistant whose "My household" entry is added through its config flow with the code.
"""
