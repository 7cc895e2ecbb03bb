"""Tests for prepaid_meter."""
