"""A simulated residential community of smart prepaid electricity meters, speaking MQTT.

Run it: `python -m simulator --broker mqtt://127.0.0.1:1883 --community demo --meters 50`.
Use it from code: `Community(SimConfig(...))`, `await community.run()`, `await community.stop()`;
the load model (`Household`) and a meter (`SimMeter`) work without a broker.
"""

from simulator.config import Broker, ConfigError, SimConfig, parse_args
from simulator.household import KINDS, Household
from simulator.meter import Publish, Sample, SimMeter
from simulator.profiles import PROFILES, Native, Shelly, Tasmota, make_profile
from simulator.runner import Community, SimClock, SimulatorError, build_meters

__all__ = [
    "KINDS",
    "PROFILES",
    "Broker",
    "Community",
    "ConfigError",
    "Household",
    "Native",
    "Publish",
    "Sample",
    "Shelly",
    "SimClock",
    "SimConfig",
    "SimMeter",
    "SimulatorError",
    "Tasmota",
    "build_meters",
    "make_profile",
    "parse_args",
]
