"""Tests of the Home-Assistant-free engine."""
