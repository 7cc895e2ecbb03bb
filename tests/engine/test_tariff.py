"""Tariff files: presets load, and every broken file gets one clear error."""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys

import pytest

from custom_components.prepaid_meter.engine.tariff import (
    TariffError,
    load_preset,
    load_tariff,
    parse_tariff,
    preset_names,
)

GOOD = """
name: Test
currency: CNY
timezone: Asia/Shanghai
cycle: {period: year, starts: "01-01 00:00"}
periods:
  peak: ["06:00-22:00"]
  valley: ["22:00-06:00"]
tiers:
  - up_to: 3120
    price: {peak: "0.617", valley: "0.307"}
  - price: {peak: "0.977", valley: "0.487"}
"""


def test_presets_load_with_sources() -> None:
    """Every shipped preset is valid and names its published source."""
    assert set(preset_names()) >= {
        "beijing_monthly",
        "zhejiang_yearly_tou",
        "shanghai_yearly_tou",
        "flat",
    }
    for name in preset_names():
        tariff = load_preset(name)
        assert tariff.currency == "CNY"
        text = (
            Path(__file__).parents[2]
            / "custom_components/prepaid_meter/engine/presets"
            / f"{name}.yaml"
        ).read_text()
        assert "Source:" in text or "China Daily" in text


def test_unknown_preset() -> None:
    """An unknown preset id lists the known ones."""
    with pytest.raises(TariffError, match="unknown tariff preset 'nope'"):
        load_preset("nope")


BROKEN = [
    (GOOD.replace('"0.617"', '"-0.617"'), "cannot be negative"),
    (GOOD.replace('peak: "0.977"', 'noon: "0.977"'), "unknown period 'noon'"),
    (
        GOOD.replace(
            "up_to: 3120", 'up_to: 3120\n    price: {peak: "1", valley: "1"}\n  - up_to: 100'
        ),
        "must ascend",
    ),
    (GOOD.replace('valley: ["22:00-06:00"]', 'valley: ["21:00-06:00"]'), "overlaps"),
    (
        GOOD.replace('valley: ["22:00-06:00"]', 'valley: ["23:00-06:00"]'),
        "22:00-23:00 belongs to no period",
    ),
    (GOOD.replace('"0.617"', "0.617"), "quoted strings"),
    (GOOD.replace('"0.617"', '"abc"'), "not a decimal"),
    (GOOD.replace("Asia/Shanghai", "Mars/Olympus"), "unknown time zone"),
    (GOOD.replace("period: year", "period: week"), "must be month or year"),
    (GOOD.replace('"01-01 00:00"', '"02-30 00:00"'), "not a valid date"),
    (GOOD.replace('  - price: {peak: "0.977", valley: "0.487"}', ""), "the last tier has no up_to"),
    (GOOD.replace('["06:00-22:00"]', '["6-22"]'), "HH:MM-HH:MM"),
    (GOOD.replace("currency: CNY\n", ""), "currency: required"),
    ("[1, 2]", "must be a mapping"),
]


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_broken_files_raise_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    """Each broken tariff raises TariffError naming the problem and the file."""
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TariffError, match=message) as info:
        load_tariff(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_malformed_yaml_and_missing_file(tmp_path: Path) -> None:
    """Unreadable files are errors, not exceptions of the YAML library."""
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(TariffError, match="not valid YAML at line"):
        load_tariff(path)
    with pytest.raises(TariffError, match="cannot read"):
        load_tariff(tmp_path / "missing.yaml")


def test_versions_must_increase() -> None:
    """Versions out of date order are refused."""
    doc = {
        "currency": "CNY",
        "timezone": "Asia/Shanghai",
        "versions": [
            {
                "effective_from": "2026-07-01",
                "cycle": {"period": "month"},
                "tiers": [{"price": "1"}],
            },
            {
                "effective_from": "2026-01-01",
                "cycle": {"period": "month"},
                "tiers": [{"price": "2"}],
            },
        ],
    }
    with pytest.raises(TariffError, match="effective_from dates must increase"):
        parse_tariff(doc)


# --- the bill command ------------------------------------------------------------------


def _bill(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custom_components.prepaid_meter.engine", "bill", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[2],
    )


def test_bill_command_prints_json() -> None:
    """The bill command prints the statement of TARIFFS.md."""
    golden = Path(__file__).parent / "golden"
    result = _bill(
        "--tariff",
        str(golden / "zhejiang_yearly.yaml"),
        "--readings",
        str(golden / "zhejiang_yearly.csv"),
    )
    assert result.returncode == 0, result.stderr
    assert '"total": "1626.00"' in result.stdout
    assert '"lines"' in result.stdout


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        (
            "ts,energy_kwh\n2026-01-02T00:00:00+08:00,1\n2026-01-01T00:00:00+08:00,2\n",
            "timestamps must increase",
        ),
        ("ts,kwh\n", "header must be 'ts,energy_kwh'"),
        ("ts,energy_kwh\nyesterday,1\n2026-01-01T00:00:00+08:00,2\n", "neither ISO 8601 nor UNIX"),
        ("ts,energy_kwh\n2026-01-01T00:00:00,1\n2026-01-02T00:00:00,2\n", "no UTC offset"),
        (
            "ts,energy_kwh\n2026-01-01T00:00:00+08:00,x\n2026-01-02T00:00:00+08:00,2\n",
            "not a decimal",
        ),
        ("ts,energy_kwh\n2026-01-01T00:00:00+08:00,1\n", "at least two readings"),
    ],
)
def test_bill_command_errors(tmp_path: Path, csv: str, message: str) -> None:
    """Bad input exits non-zero with one clear line on stderr and nothing on stdout."""
    readings = tmp_path / "r.csv"
    readings.write_text(csv)
    tariff = Path(__file__).parent / "golden" / "beijing_monthly.yaml"
    result = _bill("--tariff", str(tariff), "--readings", str(readings))
    assert result.returncode == 1
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bill_command_bad_tariff(tmp_path: Path) -> None:
    """A broken tariff file is one line on stderr."""
    tariff = tmp_path / "t.yaml"
    tariff.write_text(GOOD.replace('"0.617"', '"-1"'))
    result = _bill(
        "--tariff",
        str(tariff),
        "--readings",
        str(Path(__file__).parent / "golden" / "zhejiang_yearly.csv"),
    )
    assert result.returncode == 1
    assert "cannot be negative" in result.stderr
    result = _bill("--tariff", str(tariff), "--readings", "x.csv", "--opened", "2026-13-01")
    assert result.returncode == 2
    assert "not a date" in result.stderr
