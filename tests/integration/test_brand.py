"""The brand images (Home Assistant 2026.3+ serves custom_components/<domain>/brand/ locally).

Sizes follow the home-assistant/brands rules: icons square, 256x256 (hDPI 512x512); logos
landscape with the shortest side 128..256 (hDPI 256..512); PNG, transparent, trimmed. The
committed files must be exactly what scripts/render_brand.py draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import struct
import subprocess
import sys
import zlib

import pytest

ROOT = Path(__file__).resolve().parents[2]
BRAND_DIR = ROOT / "custom_components" / "prepaid_meter" / "brand"
RENDERER = ROOT / "scripts" / "render_brand.py"
SIGNATURE = b"\x89PNG\r\n\x1a\n"
ICONS = ["icon.png", "icon@2x.png", "dark_icon.png", "dark_icon@2x.png"]
LOGOS = ["logo.png", "logo@2x.png", "dark_logo.png", "dark_logo@2x.png"]


@dataclass(frozen=True)
class Png:
    """An 8-bit RGBA PNG decoded to rows of bytes (4 per pixel)."""

    width: int
    height: int
    color_type: int
    rows: list[bytes]

    def alpha(self, x: int, y: int) -> int:
        return self.rows[y][x * 4 + 3]


def read_png(path: Path) -> Png:
    """Parse a plain 8-bit PNG whose rows all use filter type 0 (as the renderer writes)."""
    data = path.read_bytes()
    assert data.startswith(SIGNATURE), f"{path.name}: not a PNG"
    pos = len(SIGNATURE)
    chunks: dict[bytes, bytes] = {}
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), f"{path.name}: bad CRC in {kind!r}"
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    assert b"IEND" in chunks, f"{path.name}: no IEND"
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8, f"{path.name}: bit depth {depth}, expected 8"
    assert interlace == 0, f"{path.name}: interlaced; this reader handles only non-interlaced"
    channels = {6: 4, 2: 3}.get(color_type, 1)
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = 1 + width * channels
    assert len(raw) == stride * height, f"{path.name}: {len(raw)} bytes of pixel data"
    rows: list[bytes] = []
    for y in range(height):
        kind = raw[y * stride]
        if kind != 0:
            pytest.fail(f"{path.name}: row {y} uses PNG filter type {kind}; only 0 is decoded here")
        rows.append(raw[y * stride + 1 : (y + 1) * stride])
    return Png(width, height, color_type, rows)


@pytest.mark.parametrize("name", ICONS + LOGOS)
def test_rgba_png_with_transparent_corners(name: str) -> None:
    """Every file exists, is 8-bit RGBA and has transparent corners."""
    path = BRAND_DIR / name
    assert path.is_file(), f"missing {path.relative_to(ROOT)}: run scripts/render_brand.py"
    png = read_png(path)
    assert png.color_type == 6, f"{name}: colour type {png.color_type}, expected 6 (RGBA)"
    corners = [(0, 0), (png.width - 1, 0), (0, png.height - 1), (png.width - 1, png.height - 1)]
    assert [png.alpha(x, y) for x, y in corners] == [0, 0, 0, 0]


@pytest.mark.parametrize("name", ICONS + LOGOS)
def test_trimmed(name: str) -> None:
    """The artwork touches all four edges: no empty margin around it."""
    png = read_png(BRAND_DIR / name)
    w, h = png.width, png.height
    assert any(png.alpha(x, 0) for x in range(w)), f"{name}: empty top row"
    assert any(png.alpha(x, h - 1) for x in range(w)), f"{name}: empty bottom row"
    assert any(png.alpha(0, y) for y in range(h)), f"{name}: empty left column"
    assert any(png.alpha(w - 1, y) for y in range(h)), f"{name}: empty right column"


@pytest.mark.parametrize("name", ICONS)
def test_icon_sizes(name: str) -> None:
    """Icons are square: 256x256, and 512x512 for @2x."""
    png = read_png(BRAND_DIR / name)
    side = 512 if "@2x" in name else 256
    assert (png.width, png.height) == (side, side)


@pytest.mark.parametrize("name", LOGOS)
def test_logo_sizes(name: str) -> None:
    """Logos are landscape with the shortest side 128..256 (256..512 for @2x)."""
    png = read_png(BRAND_DIR / name)
    low, high = (256, 512) if "@2x" in name else (128, 256)
    assert png.width > png.height
    assert low <= png.height <= high


def test_hdpi_doubles_normal() -> None:
    """Each @2x image is the normal one at twice the size (within a pixel of rounding)."""
    for name in ICONS + LOGOS:
        if "@2x" in name:
            big, small = read_png(BRAND_DIR / name), read_png(BRAND_DIR / name.replace("@2x", ""))
            assert big.height == 2 * small.height
            assert abs(big.width - 2 * small.width) <= 1


def test_committed_images_are_what_the_renderer_draws(tmp_path: Path) -> None:
    """Rendering into a temporary folder gives byte-identical files, and no others."""
    subprocess.run([sys.executable, str(RENDERER), str(tmp_path)], check=True, timeout=300)
    rendered = sorted(p.name for p in tmp_path.iterdir())
    assert rendered == sorted(ICONS + LOGOS)
    assert sorted(p.name for p in BRAND_DIR.iterdir()) == rendered
    for name in rendered:
        fresh, committed = (tmp_path / name).read_bytes(), (BRAND_DIR / name).read_bytes()
        if fresh != committed:
            same_pixels = read_png(tmp_path / name).rows == read_png(BRAND_DIR / name).rows
            pytest.fail(
                f"{name} differs from scripts/render_brand.py's output "
                + (
                    f"(same pixels, different zlib stream: zlib {zlib.ZLIB_RUNTIME_VERSION})"
                    if same_pixels
                    else "(different pixels): run scripts/render_brand.py and commit the images"
                )
            )
