"""hassfest's rules for this custom integration, applied in tests.

hassfest lives in the core repository (script/hassfest/), not in the homeassistant wheel, so it
cannot run here. These tests write its schemas out with voluptuous and apply them to the files
of custom_components/prepaid_meter. They mirror home-assistant/core's dev branch of
August 2026 (the 2026.9 and 2026.10 releases): quality_scale.py at 008538e8, the schema of
quality_scale.yaml as changed by core PR 175777 (every rule listed), services.py, manifest.py,
translations.py, icons.py, config_schema.py, config_flow.py, dependencies.py and
requirements.py. Where hassfest checks a rule for core integrations only (and skips or only
warns for a custom one) the test applies the core rule, and its docstring says so.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
import re
from typing import Any

from awesomeversion import AwesomeVersion, AwesomeVersionException, AwesomeVersionStrategy
import homeassistant
from homeassistant.const import Platform
from homeassistant.helpers import selector
from homeassistant.util import slugify
from homeassistant.util.yaml import load_yaml_dict
import pytest
import voluptuous as vol
import yaml

from custom_components.prepaid_meter.const import DOMAIN
from tests.integration.translations import PACKAGE, load

MANIFEST = load(PACKAGE / "manifest.json")
STRINGS = load(PACKAGE / "strings.json")
EN = load(PACKAGE / "translations" / "en.json")
ICONS = load(PACKAGE / "icons.json")
SERVICES_YAML: dict[str, Any] = load_yaml_dict(str(PACKAGE / "services.yaml"))
QUALITY_SCALE: dict[str, Any] = yaml.safe_load((PACKAGE / "quality_scale.yaml").read_text())
CORE = Path(homeassistant.__file__).parent
TRANSLATION_FILES = ["strings.json", "translations/en.json", "translations/zh-Hans.json"]

# ------------------------------------------------------------------------- quality scale

# script/hassfest/model.py: ScaledQualityScaleTiers (an IntEnum).
TIERS = {"bronze": 1, "silver": 2, "gold": 3, "platinum": 4}

# script/hassfest/quality_scale.py: ALL_RULES, in its order, with each rule's tier. 54 rules:
# the 52 of 2025.4 and, since core PR 174555 (June 2026), docs-conditions and docs-triggers.
ALL_RULES: dict[str, str] = {
    "action-setup": "bronze",
    "appropriate-polling": "bronze",
    "brands": "bronze",
    "common-modules": "bronze",
    "config-flow": "bronze",
    "config-flow-test-coverage": "bronze",
    "dependency-transparency": "bronze",
    "docs-actions": "bronze",
    "docs-conditions": "bronze",
    "docs-high-level-description": "bronze",
    "docs-installation-instructions": "bronze",
    "docs-removal-instructions": "bronze",
    "docs-triggers": "bronze",
    "entity-event-setup": "bronze",
    "entity-unique-id": "bronze",
    "has-entity-name": "bronze",
    "runtime-data": "bronze",
    "test-before-configure": "bronze",
    "test-before-setup": "bronze",
    "unique-config-entry": "bronze",
    "action-exceptions": "silver",
    "config-entry-unloading": "silver",
    "docs-configuration-parameters": "silver",
    "docs-installation-parameters": "silver",
    "entity-unavailable": "silver",
    "integration-owner": "silver",
    "log-when-unavailable": "silver",
    "parallel-updates": "silver",
    "reauthentication-flow": "silver",
    "test-coverage": "silver",
    "devices": "gold",
    "diagnostics": "gold",
    "discovery": "gold",
    "discovery-update-info": "gold",
    "docs-data-update": "gold",
    "docs-examples": "gold",
    "docs-known-limitations": "gold",
    "docs-supported-devices": "gold",
    "docs-supported-functions": "gold",
    "docs-troubleshooting": "gold",
    "docs-use-cases": "gold",
    "dynamic-devices": "gold",
    "entity-category": "gold",
    "entity-device-class": "gold",
    "entity-disabled-by-default": "gold",
    "entity-translations": "gold",
    "exception-translations": "gold",
    "icon-translations": "gold",
    "reconfiguration-flow": "gold",
    "repair-issues": "gold",
    "stale-devices": "gold",
    "async-dependency": "platinum",
    "inject-websession": "platinum",
    "strict-typing": "platinum",
}

QUALITY_SCALE_SCHEMA = vol.Schema(
    {
        vol.Required("rules"): vol.Schema(
            {
                vol.Required(rule): vol.Any(
                    vol.In(["todo", "done"]),
                    vol.Schema(
                        {
                            vol.Required("status"): vol.In(["todo", "done"]),
                            vol.Required("comment"): str,
                        }
                    ),
                    vol.Schema({vol.Required("status"): "exempt", vol.Required("comment"): str}),
                )
                for rule in ALL_RULES
            }
        )
    }
)


def rule_statuses() -> dict[str, str]:
    """Return the status of each rule of quality_scale.yaml."""
    return {
        name: value["status"] if isinstance(value, dict) else value
        for name, value in QUALITY_SCALE["rules"].items()
    }


def test_quality_scale_file_matches_the_schema() -> None:
    """Every rule of ALL_RULES is listed, no other; exempt ones carry a comment.

    Mirrors SCHEMA of script/hassfest/quality_scale.py (vol.Required for every rule since
    core PR 175777). hassfest validates this file for core integrations only.
    """
    QUALITY_SCALE_SCHEMA(QUALITY_SCALE)


def reached_tier() -> str | None:
    """Return the highest tier whose rules, and those of every tier below, are met."""
    met = {name for name, status in rule_statuses().items() if status in ("done", "exempt")}
    reached = None
    for tier in TIERS:
        if {rule for rule, of in ALL_RULES.items() if of == tier} - met:
            break
        reached = tier
    return reached


def test_manifest_quality_scale_is_reached() -> None:
    """The manifest claims no tier above the one quality_scale.yaml reaches.

    Mirrors validate_iqs_file of script/hassfest/quality_scale.py: each tier up to the
    declared one needs all its rules done or exempt. hassfest returns early for custom
    integrations (`if not integration.core`); this applies the core rule.
    """
    declared = MANIFEST.get("quality_scale")
    if declared not in TIERS:
        return
    met = {name for name, status in rule_statuses().items() if status in ("done", "exempt")}
    missing = {
        name: tier
        for name, tier in ALL_RULES.items()
        if TIERS[tier] <= TIERS[declared] and name not in met
    }
    assert missing == {}, f"{declared} is claimed; quality_scale.yaml reaches {reached_tier()}"


BRAND_IMAGES = {
    f"{theme}{kind}{scale}.png"
    for theme in ("", "dark_")
    for kind in ("icon", "logo")
    for scale in ("", "@2x")
}


def png_size(path: Path) -> tuple[int, int]:
    """Return the width and height of a PNG file (from its IHDR chunk)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return int.from_bytes(head[16:20]), int.from_bytes(head[20:24])


def test_brands_rule_matches_the_brand_folder() -> None:
    """`brands` is done exactly when the integration ships its own brand images.

    The `brands` rule of script/hassfest/quality_scale.py; since Home Assistant 2026.3 a
    custom integration ships them in brand/ (home-assistant/brands takes no custom ones).
    Sizes are those of the brands repository: icons square, 256 px (512 px for @2x), logos
    128 to 256 px on their shortest side (256 to 512 px for @2x).
    """
    folder = PACKAGE / "brand"
    images = {path.name for path in folder.iterdir()} if folder.is_dir() else set()
    assert images <= BRAND_IMAGES, f"unknown files in brand/: {images - BRAND_IMAGES}"
    for name in images:
        width, height = png_size(folder / name)
        scale = 2 if "@2x" in name else 1
        if "icon" in name:
            assert (width, height) == (256 * scale, 256 * scale), name
        else:
            assert 128 * scale <= min(width, height) <= 256 * scale, name
    assert ("icon.png" in images) == (rule_statuses()["brands"] == "done")


# ------------------------------------------------------------------------------ manifest


def verify_lowercase(value: str) -> str:
    """Return the value if it is lowercase (manifest.py)."""
    if value.lower() != value:
        raise vol.Invalid("Value needs to be lowercase")
    return value


def verify_uppercase(value: str) -> str:
    """Return the value if it is uppercase (manifest.py)."""
    if value.upper() != value:
        raise vol.Invalid("Value needs to be uppercase")
    return value


def verify_wildcard(value: str) -> str:
    """Return the matcher if it contains a wildcard (manifest.py)."""
    if "*" not in value:
        raise vol.Invalid(f"'{value}' needs to contain a wildcard matcher")
    return value


def verify_version(value: str) -> str:
    """Return the version if AwesomeVersion reads it with a known strategy (manifest.py)."""
    try:
        AwesomeVersion(
            value,
            ensure_strategy=[
                AwesomeVersionStrategy.CALVER,
                AwesomeVersionStrategy.SEMVER,
                AwesomeVersionStrategy.SIMPLEVER,
                AwesomeVersionStrategy.BUILDVER,
                AwesomeVersionStrategy.PEP440,
            ],
        )
    except AwesomeVersionException as err:
        raise vol.Invalid(f"'{value}' is not a valid version.") from err
    return value


CORE_DOCUMENTATION_BASE = "https://www.home-assistant.io/integrations"


def custom_documentation_url(value: str) -> str:
    """Return the URL if it is https and not a core integration's page (manifest.py)."""
    if not value.startswith("https://"):
        raise vol.Invalid("Documentation url is not prefixed with https")
    if value.startswith(CORE_DOCUMENTATION_BASE):
        raise vol.Invalid("Documentation URL should point to the custom integration documentation")
    return value


SUPPORTED_QUALITY_SCALES = [*TIERS, "custom", "no_score", "internal", "legacy"]
SUPPORTED_IOT_CLASSES = [
    "assumed_state",
    "calculated",
    "cloud_polling",
    "cloud_push",
    "local_polling",
    "local_push",
]
# model.py's IntegrationType without "virtual" (virtual integrations have a schema of their own).
INTEGRATION_TYPES = ["device", "entity", "hardware", "helper", "hub", "service", "system"]
LOWER = vol.All(str, verify_lowercase)
UPPER = vol.All(str, verify_uppercase)

CUSTOM_INTEGRATION_MANIFEST_SCHEMA = vol.Schema(
    {
        vol.Required("domain"): str,
        vol.Required("name"): str,
        vol.Optional("integration_type"): vol.In(INTEGRATION_TYPES),
        vol.Optional("config_flow"): bool,
        vol.Optional("mqtt"): [str],
        vol.Optional("zeroconf"): [
            vol.Any(
                str,
                {
                    vol.Required("type"): str,
                    vol.Optional("macaddress"): vol.All(UPPER, verify_wildcard),
                    vol.Optional("manufacturer"): LOWER,
                    vol.Optional("model"): LOWER,
                    vol.Optional("name"): LOWER,
                    vol.Optional("properties"): {str: verify_lowercase},
                },
            )
        ],
        vol.Optional("ssdp"): [vol.All(vol.Schema({}, extra=vol.ALLOW_EXTRA), vol.Length(min=1))],
        vol.Optional("bluetooth"): [
            {
                vol.Optional("connectable"): bool,
                vol.Optional("service_uuid"): LOWER,
                vol.Optional("service_data_uuid"): LOWER,
                vol.Optional("local_name"): str,
                vol.Optional("manufacturer_id"): int,
                vol.Optional("manufacturer_data_start"): [int],
            }
        ],
        vol.Optional("homekit"): {vol.Optional("models"): [str]},
        vol.Optional("dhcp"): [
            {
                vol.Optional("macaddress"): vol.All(UPPER, verify_wildcard),
                vol.Optional("hostname"): LOWER,
                vol.Optional("registered_devices"): bool,
            }
        ],
        vol.Optional("usb"): [
            {
                vol.Optional("vid"): UPPER,
                vol.Optional("pid"): UPPER,
                vol.Optional("serial_number"): LOWER,
                vol.Optional("manufacturer"): LOWER,
                vol.Optional("description"): LOWER,
                vol.Optional("known_devices"): [str],
            }
        ],
        vol.Required("documentation"): vol.All(vol.Url(), custom_documentation_url),
        vol.Optional("issue_tracker"): vol.Url(),
        vol.Optional("quality_scale"): vol.In(SUPPORTED_QUALITY_SCALES),
        vol.Optional("requirements"): [str],
        vol.Optional("dependencies"): [str],
        vol.Optional("after_dependencies"): [str],
        vol.Required("codeowners"): [str],
        vol.Optional("loggers"): [str],
        vol.Optional("disabled"): str,
        vol.Optional("iot_class"): vol.In(SUPPORTED_IOT_CLASSES),
        vol.Optional("single_config_entry"): bool,
        vol.Optional("preview_features"): {
            str: {
                vol.Optional("feedback_url"): vol.Url(),
                vol.Optional("learn_more_url"): vol.Url(),
                vol.Optional("report_issue_url"): vol.Url(),
            }
        },
        # Custom integrations only.
        vol.Optional("version"): vol.All(str, verify_version),
        vol.Optional("import_executor"): bool,
    }
)


def test_manifest_matches_the_custom_integration_schema() -> None:
    """manifest.json passes CUSTOM_INTEGRATION_MANIFEST_SCHEMA and validate_manifest.

    Mirrors script/hassfest/manifest.py: the schema, `version` (required of custom
    integrations by validate_version), the domain equal to the folder's name, an IoT class,
    no collision with a core integration's domain (a warning there), and a code owner for a
    claim of silver or above.
    """
    CUSTOM_INTEGRATION_MANIFEST_SCHEMA(MANIFEST)
    assert MANIFEST.get("version"), "No 'version' key in the manifest file."
    assert MANIFEST["domain"] == PACKAGE.name == DOMAIN
    assert "iot_class" in MANIFEST, "Domain is missing an IoT Class"
    assert not (CORE / "components" / DOMAIN).exists(), "Domain collides with a core integration"
    if TIERS.get(MANIFEST.get("quality_scale", ""), 0) >= TIERS["silver"]:
        assert MANIFEST["codeowners"], "a silver or better integration needs a code owner"


def test_manifest_keys_are_sorted() -> None:
    """Keys run domain, name, then alphabetically (sort_manifest of script/hassfest/manifest.py)."""
    keys = list(MANIFEST)
    order = {"domain": ".domain", "name": ".name"}
    assert keys == sorted(keys, key=lambda key: order.get(key, key))


PACKAGE_REGEX = re.compile(r"^(?:--.+\s)?([-_,\.\w\d\[\]]+)(==|>=|<=|~=|!=|<|>|===)*(.*)$")


def test_requirements_are_pinned() -> None:
    """Each requirement is `package==version`, without spaces, with a readable version.

    Mirrors validate_requirements_format of script/hassfest/requirements.py; the `==` pin is
    demanded of core integrations there, and applied here too.
    """
    for requirement in MANIFEST.get("requirements", []):
        assert " " not in requirement, requirement
        match = PACKAGE_REGEX.match(requirement)
        assert match, requirement
        _package, separator, version = match.groups()
        assert separator == "==", f'{requirement} needs to be pinned "<pkg name>==<version>"'
        strategy = AwesomeVersion(version.split(";", 1)[0]).strategy
        assert strategy != AwesomeVersionStrategy.UNKNOWN, requirement


# Components any integration may import (script/hassfest/dependencies.py).
ALLOWED_USED_COMPONENTS = {
    *(platform.value for platform in Platform),
    "alert",
    "automation",
    "conversation",
    "default_config",
    "device_automation",
    "frontend",
    "group",
    "homeassistant",
    "input_boolean",
    "input_button",
    "input_datetime",
    "input_number",
    "input_select",
    "input_text",
    "media_source",
    "onboarding",
    "panel_custom",
    "persistent_notification",
    "person",
    "script",
    "shopping_list",
    "sun",
    "system_health",
    "system_log",
    "timer",
    "webhook",
    "websocket_api",
    "zone",
    "mjpeg",
    "stream",
}


def referenced_components(tree: ast.Module) -> Iterator[str]:
    """Yield the integrations a module imports from homeassistant.components."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("homeassistant.components."):
                yield node.module.split(".")[2]
            elif node.module == "homeassistant.components":
                yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("homeassistant.components."):
                    yield alias.name.split(".")[2]


def test_used_components_are_dependencies() -> None:
    """Every component imported is allowed, a dependency, or a platform of this integration.

    Mirrors ImportCollector and find_non_referenced_integrations of
    script/hassfest/dependencies.py (which it also runs for custom integrations).
    """
    allowed = (
        ALLOWED_USED_COMPONENTS
        | set(MANIFEST.get("dependencies", []))
        | set(MANIFEST.get("after_dependencies", []))
    )
    undeclared = {
        f"{path.relative_to(PACKAGE)}: {ref}"
        for path in PACKAGE.rglob("*.py")
        for ref in referenced_components(ast.parse(path.read_text()))
        if ref not in allowed and ref != DOMAIN and not (PACKAGE / f"{ref}.py").is_file()
    }
    assert undeclared == set()


def test_config_flow_is_in_config_flow_py() -> None:
    """`config_flow: true` has its flow in config_flow.py, and that file sets unique IDs.

    Mirrors script/hassfest/config_flow.py (discoverable flows must set a unique ID).
    """
    source = (PACKAGE / "config_flow.py").read_text()
    assert MANIFEST.get("config_flow") is True
    assert "self.async_set_unique_id" in source


def has_name(module: ast.Module, name: str) -> bool:
    """Return whether the module assigns or imports a top-level name."""
    for item in module.body:
        if isinstance(item, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in item.targets
        ):
            return True
        if isinstance(item, ast.AnnAssign | ast.AugAssign) and (
            isinstance(item.target, ast.Name) and item.target.id == name
        ):
            return True
        if isinstance(item, ast.Import | ast.ImportFrom) and any(
            (alias.asname or alias.name) == name for alias in item.names
        ):
            return True
    return False


def test_async_setup_has_a_config_schema() -> None:
    """The module with async_setup (or setup) defines CONFIG_SCHEMA or a platform schema.

    Mirrors script/hassfest/config_schema.py (an error for core, a warning for custom). The
    package's __init__ re-exports them from entry.py (see its docstring): both are read.
    """
    init = ast.parse((PACKAGE / "entry.py").read_text())
    assert "async_setup" in (PACKAGE / "__init__.py").read_text()
    functions = {item.name for item in init.body if isinstance(item, ast.FunctionDef)}
    functions |= {item.name for item in init.body if isinstance(item, ast.AsyncFunctionDef)}
    if functions & {"async_setup", "setup"}:
        names = ("CONFIG_SCHEMA", "PLATFORM_SCHEMA", "PLATFORM_SCHEMA_BASE")
        assert any(has_name(init, name) for name in names)


# -------------------------------------------------------------------- validators, strings

RE_REFERENCE = re.compile(r"\[\%key:(.+)\%\]")
RE_TRANSLATION_KEY = re.compile(r"^(?!.+[_-]{2})(?![_-])[a-z0-9-_]+(?<![_-])$")
RE_COMBINED_REFERENCE = re.compile(r"(.+\[%)|(%\].+)")
RE_PLACEHOLDER_IN_SINGLE_QUOTES = re.compile(r"'{\w+}'")
RE_HTML = re.compile(r"<[a-z].*?>", re.IGNORECASE)  # cv.string_with_no_html


def slug(value: Any) -> str:
    """Return the value if it is its own slug (cv.slug)."""
    if not isinstance(value, str) or slugify(value) != value:
        raise vol.Invalid(f"invalid slug {value} (try {slugify(str(value))})")
    return value


def translation_key(value: Any) -> str:
    """Return a valid translation key (translation_key_validator of translations.py)."""
    if not isinstance(value, str) or RE_TRANSLATION_KEY.match(value) is None:
        raise vol.Invalid(
            f"Invalid translation key '{value}', need to be [a-z0-9-_]+ and"
            " cannot start or end with a hyphen or underscore."
        )
    return value


def translation_value(value: Any) -> str:
    """Return a valid text (translation_value_validator of translations.py)."""
    if not isinstance(value, str):
        raise vol.Invalid("expected a string")
    if RE_HTML.search(value):
        raise vol.Invalid("the string should not contain HTML")
    if RE_PLACEHOLDER_IN_SINGLE_QUOTES.search(value):
        raise vol.Invalid("the string should not contain placeholders inside single quotes")
    if RE_COMBINED_REFERENCE.search(value):
        raise vol.Invalid("the string should not contain combined translations")
    if value != value.strip():
        raise vol.Invalid("the string should not contain leading or trailing spaces")
    return value


def keyed(value_schema: Any, key: Callable[[Any], Any] = slug) -> Callable[[Any], dict[str, Any]]:
    """Return a validator of a mapping whose keys pass `key` (cv.schema_with_slug_keys)."""
    schema = vol.Schema({str: value_schema})

    def verify(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise vol.Invalid("expected a dictionary")
        for name in value:
            try:
                key(name)
            except vol.Invalid as err:
                raise vol.Invalid(err.msg, path=[name]) from err
        checked: dict[str, Any] = schema(value)
        return checked

    return verify


def has_at_least_one_key(*keys: str) -> Callable[[Any], Any]:
    """Return a validator of a mapping holding one of the keys (cv.has_at_least_one_key)."""

    def verify(value: Any) -> Any:
        if not isinstance(value, dict) or not set(keys) & set(value):
            raise vol.Invalid(f"must contain at least one of {', '.join(keys)}.")
        return value

    return verify


T = translation_value
TEXTS = {str: T}


def data_descriptions_are_data(value: dict[str, Any]) -> dict[str, Any]:
    """Each data_description key is a data key, in each step and section.

    data_description_validator of translations.py (which looks at steps; sections added here).
    """
    for step in value["step"].values():
        for part in [step, *step.get("sections", {}).values()]:
            for field in part.get("data_description", {}):
                if field not in part.get("data", {}):
                    raise vol.Invalid(f"data_description key {field} is not in data")
    return value


def data_entry_schema() -> vol.All:
    """Return the schema of a flow's texts (gen_data_entry_schema of translations.py).

    Neither `config` nor `options` may have a flow `title` (REMOVED and UNDEFINED there).
    """
    step = {
        vol.Optional("title"): T,
        vol.Optional("description"): T,
        vol.Optional("data"): TEXTS,
        vol.Optional("data_description"): TEXTS,
        vol.Optional("menu_options"): TEXTS,
        vol.Optional("submit"): T,
        vol.Optional("sections"): {
            str: {
                vol.Optional("data"): TEXTS,
                vol.Optional("data_description"): TEXTS,
                vol.Optional("description"): T,
                vol.Optional("name"): T,
            }
        },
    }
    schema = {
        vol.Optional("flow_title"): T,
        vol.Required("step"): {str: step},
        vol.Optional("error"): TEXTS,
        vol.Optional("abort"): TEXTS,
        vol.Optional("progress"): TEXTS,
        vol.Optional("create_entry"): TEXTS,
    }
    return vol.All(vol.Schema(schema), data_descriptions_are_data)


STATE_TEXTS = keyed(T, translation_key)

STRINGS_SCHEMA = vol.Schema(
    {
        vol.Optional("title"): T,
        vol.Optional("config"): data_entry_schema(),
        vol.Optional("options"): data_entry_schema(),
        vol.Optional("selector"): keyed({"options": keyed(T, translation_key)}, vol.Any("_", slug)),
        vol.Optional("device_automation"): {
            vol.Optional(kind): TEXTS
            for kind in (
                "action_type",
                "condition_type",
                "trigger_type",
                "trigger_subtype",
                "extra_fields",
                "extra_fields_descriptions",
            )
        },
        vol.Optional("system_health"): {vol.Optional("info"): keyed(T, translation_key)},
        vol.Optional("issues"): {
            str: vol.All(
                has_at_least_one_key("description", "fix_flow"),
                vol.Schema(
                    {
                        vol.Required("title"): T,
                        vol.Exclusive("description", "fixable"): T,
                        vol.Exclusive("fix_flow", "fixable"): data_entry_schema(),
                    }
                ),
            )
        },
        vol.Optional("device"): keyed({vol.Optional("name"): T}, translation_key),
        vol.Optional("entity"): keyed(
            keyed(
                {
                    vol.Optional("name"): T,
                    vol.Optional("unit_of_measurement"): T,
                    vol.Optional("state"): STATE_TEXTS,
                    vol.Optional("state_attributes"): keyed(
                        {vol.Optional("name"): T, vol.Optional("state"): STATE_TEXTS},
                        translation_key,
                    ),
                },
                translation_key,
            )
        ),
        vol.Optional("exceptions"): keyed({vol.Optional("message"): T}),
        vol.Optional("services"): keyed(
            {
                vol.Required("name"): T,
                vol.Required("description"): T,
                vol.Optional("fields"): keyed(
                    {
                        vol.Required("name"): str,
                        vol.Required("description"): T,
                        vol.Optional("example"): T,
                    },
                    translation_key,
                ),
                vol.Optional("sections"): keyed(
                    {vol.Required("name"): str, vol.Optional("description"): T},
                    translation_key,
                ),
            },
            translation_key,
        ),
        vol.Optional("common"): {slug: T},
    }
)


@pytest.mark.parametrize("name", TRANSLATION_FILES)
def test_translations_match_the_strings_schema(name: str) -> None:
    """strings.json and each translation pass gen_strings_schema of translations.py.

    Texts without HTML (no angle-bracket tags), without '{placeholder}' in single quotes,
    without text around a [%key:%] reference and without leading or trailing spaces; keys
    that are slugs or translation keys; issues with a title and a description or fix flow;
    services and their fields with a name and a description; no flow `title` (a warning for
    custom integrations in hassfest, an error here). hassfest reads strings.json and
    translations/en.json of a custom integration; zh-Hans.json gets the same rules here.
    """
    STRINGS_SCHEMA(load(PACKAGE / name))


def reference_target(path: str) -> str:
    """Return the text a [%key:...%] reference names, from core or this integration."""
    parts = path.split("::")
    tree: Any
    if parts[0] == "common":
        tree = load(CORE / "strings.json")["common"]
    elif parts[:2] == ["component", DOMAIN]:
        tree = STRINGS
    elif parts[0] == "component":
        tree = load(CORE / "components" / parts[1] / "translations" / "en.json")
    else:
        raise KeyError(path)
    for part in parts[1:] if parts[0] == "common" else parts[2:]:
        tree = tree[part]
    if not isinstance(tree, str):
        raise TypeError(f"{path} is not a string")
    return tree


def strings_with_references(node: Any, prefix: str = "strings.json") -> Iterator[tuple[str, str]]:
    """Yield (where, reference) for each text of strings.json that is a reference."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from strings_with_references(value, f"{prefix}::{key}")
        elif match := RE_REFERENCE.match(value):
            yield f"{prefix}::{key}", match.group(1)


def test_references_resolve_in_one_step() -> None:
    """Each [%key:...%] names an existing text that is not itself a reference.

    Mirrors the reference check of validate_translation_file in translations.py ("Could not
    find", "Lokalise supports only one level of references"), run there for core only.
    """
    references = list(strings_with_references(STRINGS))
    assert references
    for where, path in references:
        try:
            target = reference_target(path)
        except (KeyError, FileNotFoundError) as err:
            pytest.fail(f"{where} contains invalid reference {path}: could not find {err}")
        assert not RE_REFERENCE.match(target), f"{where} should point directly to {target}"


# ---------------------------------------------------------------------------- services


def exists(value: Any) -> Any:
    """Return the value unless it is None (services.py)."""
    if value is None:
        raise vol.Invalid("Value cannot be None")
    return value


def unique_fields(fields: Any) -> Any:
    """No field appears twice across sections (unique_field_validator of services.py)."""
    seen: set[str] = set()
    for key, value in fields.items():
        for name in value["fields"] if value and "fields" in value else [key]:
            if name in seen:
                raise vol.Invalid(f"Duplicate use of field {name} in service.")
            seen.add(name)
    return fields


CUSTOM_TEXTS: dict[Hashable, Any] = {vol.Optional("description"): str, vol.Optional("name"): str}


def field_schema(*, targeted: bool) -> vol.Schema:
    """Return the schema of a service field (_field_schema of services.py, custom)."""
    schema: dict[Hashable, Any] = {
        vol.Optional("example"): exists,
        vol.Optional("default"): exists,
        vol.Optional("required"): bool,
        vol.Optional("advanced"): bool,
        vol.Optional("selector"): selector.validate_selector,
        **CUSTOM_TEXTS,
    }
    if targeted:
        # Filters need a target to filter (attribute and supported_features lists).
        schema[vol.Optional("filter")] = {
            vol.Exclusive("attribute", "field_filter"): {vol.Required(str): [str]},
            vol.Exclusive("supported_features", "field_filter"): [str],
        }
    return vol.Schema(schema)


def service_schema(*, targeted: bool) -> vol.Schema:
    """Return the schema of one service (_service_schema of services.py, custom)."""
    field = field_schema(targeted=targeted)
    section_schema: dict[Hashable, Any] = {
        vol.Optional("collapsed"): bool,
        vol.Required("fields"): {str: field},
        **CUSTOM_TEXTS,
    }
    section = vol.Schema(section_schema)
    schema: dict[Hashable, Any] = {
        vol.Optional("fields"): vol.All({str: vol.Any(field, section)}, unique_fields),
        **CUSTOM_TEXTS,
    }
    if targeted:
        schema[vol.Required("target")] = selector.TargetSelector.CONFIG_SCHEMA
    return vol.Schema(schema)


CUSTOM_INTEGRATION_SERVICES_SCHEMA = vol.Schema(
    {slug: vol.Any(service_schema(targeted=True), service_schema(targeted=False), None)}
)


def test_services_yaml_matches_the_custom_integration_schema() -> None:
    """services.yaml passes CUSTOM_INTEGRATION_SERVICES_SCHEMA of services.py.

    Each selector is validated by Home Assistant's own selector schemas.
    """
    CUSTOM_INTEGRATION_SERVICES_SCHEMA(SERVICES_YAML)


@pytest.mark.parametrize("name", ["strings.json", "translations/en.json"])
def test_every_action_field_and_section_is_translated(name: str) -> None:
    """Each action has a name and a description, each field and section too, and no extra.

    Mirrors validate_services and check_extraneous_translation_fields of services.py. For a
    custom integration hassfest reads translations/en.json and asks for names and
    descriptions only of core integrations; both rules are applied here, to both files.
    Select selectors' translation keys must be in the file's `selector` (checked there for
    custom integrations too).
    """
    strings = load(PACKAGE / name)
    for service, spec in SERVICES_YAML.items():
        texts = strings["services"][service]
        assert texts.get("name") and texts.get("description"), service
        fields = (spec or {}).get("fields", {})
        sections = {key: value for key, value in fields.items() if "fields" in value}
        plain = {key: value for key, value in fields.items() if key not in sections}
        in_sections = {field for value in sections.values() for field in value["fields"]}
        for field in plain.keys() | in_sections:
            text = texts.get("fields", {}).get(field, {})
            assert text.get("name") and text.get("description"), (service, field)
        for section in sections:
            assert texts.get("sections", {}).get(section, {}).get("name"), (service, section)
        assert set(texts.get("fields", {})) <= plain.keys() | in_sections, service
        specs = [*plain.values(), *(v for s in sections.values() for v in s["fields"].values())]
        for value in specs:
            select = value.get("selector", {}).get("select") or {}
            if key := select.get("translation_key"):
                assert key in strings.get("selector", {}), (service, key)


def test_every_action_has_an_icon() -> None:
    """Each action has an icon in icons.json (services.py; enforced there for core only)."""
    assert set(SERVICES_YAML) <= set(ICONS.get("services", {}))


# ------------------------------------------------------------------------------- icons


def icon(value: Any) -> str:
    """Return a valid icon (icon_value_validator of icons.py)."""
    if not isinstance(value, str) or RE_HTML.search(value):
        raise vol.Invalid("expected a string without HTML")
    if not value.startswith("mdi:"):
        raise vol.Invalid(
            "The icon needs to be a valid icon from Material Design Icons and start with `mdi:`"
        )
    return value


def range_key(value: Any) -> str:
    """Return a numeric range key (range_key_validator of icons.py)."""
    try:
        float(value)
    except (TypeError, ValueError) as err:
        raise vol.Invalid(f"Invalid range key '{value}', needs to be a valid number") from err
    return str(value)


def ranges_are_sorted(value: dict[str, Any]) -> dict[str, Any]:
    """Range keys ascend (ensure_range_is_sorted of icons.py)."""
    for key, section in value.items():
        keys = list(section.get("range", {}))
        if keys != sorted(keys, key=float):
            raise vol.Invalid(f"The range of `{key}` needs to be sorted")
    return value


def not_same_as_default(value: dict[str, Any]) -> dict[str, Any]:
    """No state icon equals its default (ensure_not_same_as_default of icons.py)."""
    for key, section in value.items():
        default = section.get("default")
        for state, state_icon in section.get("state", {}).items():
            if default and state_icon == default:
                raise vol.Invalid(
                    f"The icon for state `{key}.{state}` is the same as the default icon"
                    " and thus can be removed"
                )
    return value


def icon_entry(marker: type[vol.Marker]) -> dict[Hashable, Any]:
    """Return the schema of one translation key's icons (icon_schema_slug of icons.py)."""
    return {
        marker("default"): icon,
        vol.Optional("state"): keyed(icon, translation_key),
        vol.Optional("range"): keyed(icon, range_key),
        vol.Optional("state_attributes"): vol.All(
            keyed(
                {
                    marker("default"): icon,
                    vol.Optional("state"): keyed(icon, translation_key),
                    vol.Optional("range"): keyed(icon, range_key),
                },
                translation_key,
            ),
            not_same_as_default,
            ranges_are_sorted,
        ),
    }


def shorthand_service_icon(value: Any) -> Any:
    """Turn `"service": "mdi:x"` into a dict (convert_shorthand_service_icon)."""
    return {"service": value} if isinstance(value, str) else value


DATA_ENTRY_ICONS = {"step": {str: {"sections": {str: icon}}}}

# icon_schema of icons.py for a custom integration of type hub: no entity_component.
ICONS_SCHEMA = vol.Schema(
    {
        vol.Optional("config"): DATA_ENTRY_ICONS,
        vol.Optional("options"): DATA_ENTRY_ICONS,
        vol.Optional("issues"): {str: {"fix_flow": DATA_ENTRY_ICONS}},
        vol.Optional("services"): keyed(
            vol.All(
                shorthand_service_icon,
                {
                    vol.Optional("service"): icon,
                    vol.Optional("sections"): keyed(icon, translation_key),
                },
            ),
            translation_key,
        ),
        vol.Optional("entity"): keyed(
            vol.All(
                keyed(icon_entry(vol.Optional), translation_key),
                not_same_as_default,
                ranges_are_sorted,
            )
        ),
    }
)


def test_icons_match_the_schema() -> None:
    """icons.json passes icon_schema of script/hassfest/icons.py (integration type hub).

    Icons start with mdi:, entity icons are keyed by platform and translation key, a state's
    icon differs from the default, ranges ascend, actions may use the shorthand form.
    """
    assert MANIFEST["integration_type"] not in ("entity", "system")
    ICONS_SCHEMA(ICONS)
