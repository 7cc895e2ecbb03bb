"""Every word the user sees exists in English and Chinese, for every key the code uses."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import service, translation
from homeassistant.helpers.entity import EntityDescription
from homeassistant.setup import async_setup_component
from homeassistant.util import yaml as yaml_util
import pytest

from custom_components.prepaid_meter import (
    binary_sensor,
    button,
    household_entities,
    image,
    number,
    select,
    sensor,
    services,
    switch,
)
from custom_components.prepaid_meter.config_flow import (
    POLICY_ERRORS,
    RESIDENT_ERRORS,
    SAFETY_ERROR,
)
from custom_components.prepaid_meter.const import DOMAIN
from custom_components.prepaid_meter.payments import SETUP_ERRORS as PAYMENT_SETUP_ERRORS
from tests.integration.translations import PACKAGE, PLACEHOLDER, leaves, load, resolve

STRINGS = load(PACKAGE / "strings.json")
EN = load(PACKAGE / "translations" / "en.json")
ZH = load(PACKAGE / "translations" / "zh-Hans.json")
ICONS = load(PACKAGE / "icons.json")
SERVICES_YAML: dict[str, Any] = yaml_util.load_yaml_dict(str(PACKAGE / "services.yaml"))

PLATFORM_DESCRIPTIONS: dict[str, list[EntityDescription]] = {
    "sensor": [
        *sensor.METER_SENSORS,
        *sensor.COMMUNITY_SENSORS,
        *household_entities.HOUSEHOLD_SENSORS,
    ],
    "binary_sensor": [
        *binary_sensor.METER_BINARY_SENSORS,
        *household_entities.HOUSEHOLD_BINARY_SENSORS,
    ],
    "switch": [switch.SUPPLY],
    "number": [number.THRESHOLD],
    "button": [button.RESTORE, *button.PAY.values(), household_entities.HOUSEHOLD_RESTORE],
    "image": [image.CODE],
    "select": [select.AMOUNT],
}


def test_english_is_strings_json_resolved() -> None:
    """translations/en.json is strings.json with every reference replaced."""
    assert resolve(STRINGS) == EN
    assert not [path for path, text in leaves(EN).items() if "[%key:" in text]


def test_chinese_matches_english() -> None:
    """zh-Hans has every English string, no other, each with the same placeholders."""
    english, chinese = leaves(EN), leaves(ZH)
    assert set(chinese) == set(english)
    for path, text in english.items():
        assert set(PLACEHOLDER.findall(chinese[path])) == set(PLACEHOLDER.findall(text)), path
        assert chinese[path].strip(), path


def test_every_entity_has_a_name_and_an_icon() -> None:
    """Each entity description's translation key has a name and an icon, and nothing extra."""
    for platform, descriptions in PLATFORM_DESCRIPTIONS.items():
        keys = {str(d.translation_key) for d in descriptions}
        assert all(d.translation_key for d in descriptions), platform
        assert set(EN["entity"][platform]) == keys, platform
        assert set(ICONS["entity"][platform]) == keys, platform
        assert all(EN["entity"][platform][key]["name"] for key in keys)
    assert set(EN["entity"]) == set(PLATFORM_DESCRIPTIONS)


def test_services_yaml_matches_the_actions() -> None:
    """services.yaml, strings and icons describe exactly the registered actions and fields."""
    assert set(SERVICES_YAML) == set(services.SERVICES)
    assert set(EN["services"]) == set(services.SERVICES)
    assert set(ICONS["services"]) == set(services.SERVICES)
    for name, (schema, _handler, _supports) in services.SERVICES.items():
        fields = set(SERVICES_YAML[name]["fields"])
        assert fields == {str(key) for key in schema.schema}, name
        assert set(EN["services"][name]["fields"]) == fields, name
        for field, spec in SERVICES_YAML[name]["fields"].items():
            select = spec["selector"].get("select")
            if select is not None:
                options = EN["selector"][select["translation_key"]]["options"]
                assert set(select["options"]) <= set(options), (name, field)


def test_service_field_defaults_pass_the_schemas() -> None:
    """A call made from the form's defaults and examples is valid for each action's schema."""
    for name, (schema, _handler, _supports) in services.SERVICES.items():
        call: dict[str, Any] = {}
        for field, spec in SERVICES_YAML[name]["fields"].items():
            if "default" in spec:
                call[field] = spec["default"]
            elif spec.get("required"):
                select = spec["selector"].get("select")
                call[field] = spec["example"] if select is None else select["options"][0]
        schema(call)


def test_tariff_selector_has_every_preset() -> None:
    """The config flow's tariff list has a label for each preset, in both languages."""
    from custom_components.prepaid_meter.const import PRESET_TARIFFS

    assert set(EN["selector"]["tariff"]["options"]) == set(PRESET_TARIFFS)
    assert set(ZH["selector"]["tariff"]["options"]) == set(PRESET_TARIFFS)


def test_options_flow_errors_are_translated() -> None:
    """Every policy error the options flow can show has a text."""
    assert set(EN["options"]["error"]) == {
        *POLICY_ERRORS,
        "invalid_option",
        *RESIDENT_ERRORS,
        "cannot_link",
        *PAYMENT_SETUP_ERRORS,
        SAFETY_ERROR,
    }


def test_config_flow_errors_and_aborts_are_translated() -> None:
    """Every error and abort reason written in config_flow.py has a text, and none is unused."""
    tree = ast.parse((PACKAGE / "config_flow.py").read_text())
    errors: set[str] = set()
    aborts: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and ast.unparse(target.value) == "errors":
                    errors.add(str(node.value.value))
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "base"
                    and isinstance(value, ast.Constant)
                ):
                    errors.add(str(value.value))
        if isinstance(node, ast.keyword) and node.arg == "reason":
            assert isinstance(node.value, ast.Constant)
            aborts.add(str(node.value.value))
    # The error of a policy field is the policy's key (a variable): checked above.
    assert errors == set(EN["config"]["error"])
    # Aborts Home Assistant raises for the flow (unique id, reauth, reconfigure).
    aborts |= {"already_configured", "reauth_successful", "reconfigure_successful"}
    # The options flow's own (the residents step) are under options.
    assert aborts == set(EN["config"]["abort"]) | set(EN["options"]["abort"])


@dataclass(frozen=True)
class Use:
    """A translation key used in the code, where, and the placeholders given (None: unknown)."""

    kind: str
    key: str
    where: str
    placeholders: frozenset[str] | None


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {kw.arg: kw.value for kw in call.keywords if kw.arg is not None}


def _dict_keys(node: ast.expr | None) -> frozenset[str] | None:
    if node is None:
        return frozenset()
    if isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) for k in node.keys):
        return frozenset(str(k.value) for k in node.keys if isinstance(k, ast.Constant))
    return None


def _uses() -> Iterator[Use]:
    """Find every exception and issue translation key the integration's code uses."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func).rsplit(".", 1)[-1]
            where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
            keywords = _keywords(node)
            first = node.args[0] if node.args else None
            literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
            if name == "Refusal" and literal:
                # Refusal(key, message, {placeholder: value, ...}) (engine/permissions.py)
                assert isinstance(first, ast.Constant)
                given = _dict_keys(node.args[2]) if len(node.args) > 2 else frozenset()
                yield Use("exceptions", str(first.value), where, given)
            elif name in ("_error", "CommunityError") and literal:
                assert isinstance(first, ast.Constant)
                named = frozenset(kw.arg for kw in node.keywords if kw.arg is not None)
                dynamic = any(kw.arg is None for kw in node.keywords)
                yield Use("exceptions", str(first.value), where, None if dynamic else named)
            elif name == "_create_issue" and literal:
                assert isinstance(first, ast.Constant)
                yield Use("issues", str(first.value), where, frozenset({"meter_id", "community"}))
            elif "translation_key" in keywords and (
                "translation_domain" in keywords or name == "async_create_issue"
            ):
                key = keywords["translation_key"]
                if isinstance(key, ast.Constant):
                    kind = "issues" if name == "async_create_issue" else "exceptions"
                    given = _dict_keys(keywords.get("translation_placeholders"))
                    yield Use(kind, str(key.value), where, given)


def test_every_exception_and_issue_key_is_translated() -> None:
    """Each key raised or reported has a text; each placeholder in it is given by the code."""
    uses = list(_uses())
    assert {use.key for use in uses if use.kind == "exceptions"} >= {
        "credit_exhausted_restore_refused",
        "unknown_household",
        "unknown_meter",
        "not_admin",
    }
    for use in uses:
        texts = EN[use.kind]
        assert use.key in texts, use
        messages = (
            [texts[use.key]["message"]]
            if use.kind == "exceptions"
            else [texts[use.key]["title"], texts[use.key]["description"]]
        )
        if use.placeholders is not None:
            needed = {name for text in messages for name in PLACEHOLDER.findall(text)}
            assert needed <= use.placeholders, use


async def test_home_assistant_reads_services_yaml(hass: HomeAssistant) -> None:
    """Home Assistant's own loader accepts services.yaml and finds every field."""
    assert await async_setup_component(hass, DOMAIN, {})
    descriptions = await service.async_get_all_descriptions(hass)
    for name, (schema, _handler, _supports) in services.SERVICES.items():
        assert set(descriptions[DOMAIN][name]["fields"]) == {str(key) for key in schema.schema}


@pytest.mark.parametrize("language", ["en", "zh-Hans"])
async def test_home_assistant_loads_the_translations(hass: HomeAssistant, language: str) -> None:
    """Home Assistant reads both files: entity names, and exception texts with placeholders."""
    assert await async_setup_component(hass, DOMAIN, {})
    names = await translation.async_get_translations(hass, language, "entity", {DOMAIN})
    expected = {"en": "Balance", "zh-Hans": "余额"}[language]
    assert names[f"component.{DOMAIN}.entity.sensor.balance.name"] == expected
    flow = await translation.async_get_translations(hass, language, "config", {DOMAIN})
    assert f"component.{DOMAIN}.config.step.community.sections.tls_settings.name" in flow
    err = ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="unknown_meter",
        translation_placeholders={"meter_id": "000012345678"},
    )
    # Home Assistant drops the final full stop of exception messages.
    assert str(err) == "There is no meter 000012345678 in this community"
