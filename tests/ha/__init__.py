"""Tests of the Home Assistant integration against a real broker."""
