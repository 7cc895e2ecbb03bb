"""quality_scale.yaml lists every rule of the 2025.4 Integration Quality Scale, once."""

from __future__ import annotations

from typing import Any

import yaml

from tests.integration.translations import PACKAGE

# script/hassfest/quality_scale.py of Home Assistant 2025.4 (ALL_RULES, in order).
RULES_2025_4 = [
    # Bronze
    "action-setup",
    "appropriate-polling",
    "brands",
    "common-modules",
    "config-flow",
    "config-flow-test-coverage",
    "dependency-transparency",
    "docs-actions",
    "docs-high-level-description",
    "docs-installation-instructions",
    "docs-removal-instructions",
    "entity-event-setup",
    "entity-unique-id",
    "has-entity-name",
    "runtime-data",
    "test-before-configure",
    "test-before-setup",
    "unique-config-entry",
    # Silver
    "action-exceptions",
    "config-entry-unloading",
    "docs-configuration-parameters",
    "docs-installation-parameters",
    "entity-unavailable",
    "integration-owner",
    "log-when-unavailable",
    "parallel-updates",
    "reauthentication-flow",
    "test-coverage",
    # Gold
    "devices",
    "diagnostics",
    "discovery",
    "discovery-update-info",
    "docs-data-update",
    "docs-examples",
    "docs-known-limitations",
    "docs-supported-devices",
    "docs-supported-functions",
    "docs-troubleshooting",
    "docs-use-cases",
    "dynamic-devices",
    "entity-category",
    "entity-device-class",
    "entity-disabled-by-default",
    "entity-translations",
    "exception-translations",
    "icon-translations",
    "reconfiguration-flow",
    "repair-issues",
    "stale-devices",
    # Platinum
    "async-dependency",
    "inject-websession",
    "strict-typing",
]
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
    assert sorted(found) == sorted(RULES_2025_4)
    assert len(RULES_2025_4) == 52
    for name, value in found.items():
        status = value["status"] if isinstance(value, dict) else value
        assert status in ("done", "todo", "exempt"), name
        if status == "exempt":
            assert isinstance(value, dict) and value.get("comment"), name


def test_setup_surface_rules_are_done() -> None:
    """The rules the config flow, the strings and the icons cover are marked done."""
    found = rules()
    assert {name for name in SETUP_SURFACE if found[name] != "done"} == set()
