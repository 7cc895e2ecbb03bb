"""Tests of the meter protocol, device profiles, MQTT transport and relay commands."""
