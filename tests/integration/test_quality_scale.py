"""quality_scale.yaml lists every rule of the current Integration Quality Scale, once."""

from __future__ import annotations

from typing import Any

import yaml

# ALL_RULES mirrors script/hassfest/quality_scale.py of Home Assistant 2026.10 (54 rules).
from tests.integration.test_hassfest import ALL_RULES
from tests.integration.translations import PACKAGE

SETUP_SURFACE = {
    "config-flow",
    "config-flow-test-coverage",
    "test-before-configure",
    "unique-config-entry",
    "reauthentication-flow",
    "reconfiguration-flow",
    "entity-translations",
    "exception-translations",
    "icon-translations",
}


def rules() -> dict[str, Any]:
    """Read the rules of quality_scale.yaml."""
    data = yaml.safe_load((PACKAGE / "quality_scale.yaml").read_text())
    found: dict[str, Any] = data["rules"]
    return found


def test_every_rule_once_with_a_valid_status() -> None:
    """Each rule appears, nothing else; exempt ones say why, as hassfest requires."""
    found = rules()
    assert sorted(found) == sorted(ALL_RULES)
    assert len(ALL_RULES) == 54
    for name, value in found.items():
        status = value["status"] if isinstance(value, dict) else value
        assert status in ("done", "todo", "exempt"), name
        if status == "exempt":
            assert isinstance(value, dict) and value.get("comment"), name


def test_setup_surface_rules_are_done() -> None:
    """The rules the config flow, the strings and the icons cover are marked done."""
    found = rules()
    assert {name for name in SETUP_SURFACE if found[name] != "done"} == set()
