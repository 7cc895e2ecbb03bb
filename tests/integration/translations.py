"""Resolve `[%key:...%]` references of a strings.json, the way Home Assistant's build does."""

from __future__ import annotations

import json
from pathlib import Path
import re
from typing import Any

import homeassistant

from custom_components.prepaid_meter.const import DOMAIN

PACKAGE = Path(__file__).parents[2] / "custom_components" / DOMAIN
REFERENCE = re.compile(r"\[%key:([a-z0-9_:-]+)%\]", re.IGNORECASE)
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def load(path: Path) -> dict[str, Any]:
    """Read a JSON file."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _lookup(tree: dict[str, Any], path: str) -> str:
    node: Any = tree
    for part in path.split("::"):
        node = node[part]
    if not isinstance(node, str):
        raise TypeError(f"{path} is not a string")
    return node


def resolve(strings: dict[str, Any]) -> dict[str, Any]:
    """Return strings.json with every reference replaced by the English text it names."""
    core = load(Path(homeassistant.__file__).parent / "strings.json")
    roots: dict[str, Any] = {"common": core["common"], "component": {DOMAIN: strings}}

    def text(value: str, depth: int = 0) -> str:
        if depth > 5:
            raise ValueError(f"reference loop at {value}")
        return REFERENCE.sub(lambda m: text(_lookup(roots, m.group(1)), depth + 1), value)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        return text(node)

    resolved: dict[str, Any] = walk(strings)
    return resolved


def leaves(node: Any, prefix: str = "") -> dict[str, str]:
    """Return every string of a translation tree by its `a.b.c` path."""
    if isinstance(node, dict):
        found: dict[str, str] = {}
        for key, value in node.items():
            found.update(leaves(value, f"{prefix}.{key}" if prefix else key))
        return found
    return {prefix: node}
