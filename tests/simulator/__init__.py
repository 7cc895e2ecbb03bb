"""Tests of the meter simulator."""
