#!/usr/bin/env python3
"""Draw the integration's brand images (Home Assistant 2026.3+ local brand folder) from code.

Standard library only. Every shape is a signed distance function in design units (1.0 = the
icon's side); a pixel's coverage is its distance to the edge clamped to one pixel, which
anti-aliases exactly and deterministically (only +, *, / and sqrt). Colours are composited in
premultiplied RGBA and written as 8-bit RGBA PNGs, every row with filter type 0.

    python3 scripts/render_brand.py [OUTPUT_DIR]   # default: custom_components/prepaid_meter/brand
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
import itertools
import math
from pathlib import Path
import struct
import sys
import zlib

ROOT = Path(__file__).resolve().parent.parent
BRAND_DIR = ROOT / "custom_components" / "prepaid_meter" / "brand"
TILE = 8

Point = tuple[float, float]
Sdf = Callable[[float, float], float]


@dataclass(frozen=True)
class Shape:
    """A signed distance function (negative inside) and its bounding box (x0, y0, x1, y1)."""

    sdf: Sdf
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Palette:
    """The colours (hex RGB) of one theme: light for white backgrounds, dark for dark ones."""

    body: str
    screen: str
    bolt: str
    coin: str
    coin_mark: str
    word_top: str
    word_bottom: str


LIGHT = Palette("1565C0", "E3F2FD", "FFFFFF", "FFB300", "4E2C00", "1565C0", "263238")
DARK = Palette("42A5F5", "0D2B4D", "0D2B4D", "FFCA28", "4E2C00", "64B5F6", "ECEFF1")


def _dist(x: float, y: float, px: float, py: float) -> float:
    return math.sqrt((x - px) * (x - px) + (y - py) * (y - py))


def _seg(x: float, y: float, a: Point, b: Point) -> float:
    """Distance from (x, y) to the segment a-b."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else ((x - a[0]) * dx + (y - a[1]) * dy) / length2
    t = 0.0 if t < 0.0 else 1.0 if t > 1.0 else t
    ex, ey = x - a[0] - t * dx, y - a[1] - t * dy
    return math.sqrt(ex * ex + ey * ey)


def rounded_rect(x0: float, y0: float, x1: float, y1: float, r: float) -> Shape:
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 - r, (y1 - y0) / 2 - r

    def sdf(x: float, y: float) -> float:
        qx, qy = abs(x - cx) - hx, abs(y - cy) - hy
        return _dist(max(qx, 0.0), max(qy, 0.0), 0.0, 0.0) + min(max(qx, qy), 0.0) - r

    return Shape(sdf, (x0, y0, x1, y1))


def circle(cx: float, cy: float, r: float) -> Shape:
    return Shape(lambda x, y: _dist(x, y, cx, cy) - r, (cx - r, cy - r, cx + r, cy + r))


def polygon(points: Sequence[Point], rounding: float = 0.0) -> Shape:
    """A closed polygon (even-odd rule), grown by `rounding` to round its corners."""
    edges = list(itertools.pairwise([*points, points[0]]))

    def sdf(x: float, y: float) -> float:
        inside = False
        for (x0, y0), (x1, y1) in edges:
            if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
                inside = not inside
        d = min(_seg(x, y, a, b) for a, b in edges)
        return (-d if inside else d) - rounding

    xs, ys, grow = [p[0] for p in points], [p[1] for p in points], rounding
    return Shape(sdf, (min(xs) - grow, min(ys) - grow, max(xs) + grow, max(ys) + grow))


def strokes(
    lines: Sequence[Sequence[Point]], arcs: Sequence[tuple[Point, float]], half: float
) -> Shape:
    """Round-capped strokes of half-width `half`: polylines and right half-circles (centre, r)."""
    segments = [(a, b) for line in lines for a, b in itertools.pairwise(line)]

    def sdf(x: float, y: float) -> float:
        d = min((_seg(x, y, a, b) for a, b in segments), default=math.inf)
        for (cx, cy), r in arcs:
            if x >= cx:
                d = min(d, abs(_dist(x, y, cx, cy) - r))
            else:
                d = min(d, _dist(x, y, cx, cy - r), _dist(x, y, cx, cy + r))
        return d - half

    pts = [p for a, b in segments for p in (a, b)]
    pts += [(cx + dx, cy + dy) for (cx, cy), r in arcs for dx, dy in ((-r, -r), (r, r))]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return Shape(sdf, (min(xs) - half, min(ys) - half, max(xs) + half, max(ys) + half))


class Canvas:
    """Premultiplied RGBA floats; design point (x, y) lands on pixel (x * scale, y * scale)."""

    def __init__(self, width: int, height: int, scale: float) -> None:
        self.width, self.height, self.scale = width, height, scale
        self.px = [0.0] * (width * height * 4)

    def paint(self, shape: Shape, color: str | None) -> None:
        """Composite `shape` in `color` over the canvas, or erase it (color None).

        Distances are 1-Lipschitz, so an 8x8 tile whose centre is farther than its half diagonal
        (plus half a pixel) from the edge is wholly outside or inside: same pixels, less work.
        """
        s, width, px, sdf = self.scale, self.width, self.px, shape.sdf
        x0, y0, x1, y1 = shape.box
        i0, i1 = max(0, math.floor(x0 * s) - 1), min(width, math.ceil(x1 * s) + 1)
        j0, j1 = max(0, math.floor(y0 * s) - 1), min(self.height, math.ceil(y1 * s) + 1)
        rgba = [0.0] * 4 if color is None else [*(c / 255 for c in bytes.fromhex(color)), 1.0]
        reach = 0.5 + 0.75 * TILE
        for tj, ti in itertools.product(range(j0, j1, TILE), range(i0, i1, TILE)):
            tj1, ti1 = min(tj + TILE, j1), min(ti + TILE, i1)
            d = sdf((ti + ti1) / 2 / s, (tj + tj1) / 2 / s) * s
            for j in range(tj, tj1) if d <= reach else ():
                if d < -reach:  # wholly inside: coverage 1 everywhere
                    px[(j * width + ti) * 4 : (j * width + ti1) * 4] = rgba * (ti1 - ti)
                    continue
                for i in range(ti, ti1):
                    a = min(1.0, 0.5 - sdf((i + 0.5) / s, (j + 0.5) / s) * s)
                    if a > 0.0:
                        k = (j * width + i) * 4
                        px[k : k + 4] = [
                            v * (1.0 - a) + c * a for v, c in zip(px[k : k + 4], rgba, strict=True)
                        ]

    def png(self) -> bytes:
        raw, cache = bytearray(), {(0.0, 0.0, 0.0, 0.0): b"\0\0\0\0"}
        for j in range(self.height):
            raw.append(0)  # filter type 0 (None) on every row
            row = self.px[j * self.width * 4 : (j + 1) * self.width * 4]
            for k in range(0, len(row), 4):
                key = (row[k], row[k + 1], row[k + 2], row[k + 3])
                if (pixel := cache.get(key)) is None:
                    f = 255 / key[3]  # un-premultiply
                    rgb = [min(255, int(v * f + 0.5)) for v in key[:3]]
                    pixel = cache[key] = bytes([*rgb, min(255, int(key[3] * 255 + 0.5))])
                raw += pixel

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 6, 0, 0, 0)  # 8-bit RGBA
        chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(bytes(raw), 9)), (b"IEND", b"")]
        return b"\x89PNG\r\n\x1a\n" + b"".join(chunk(kind, data) for kind, data in chunks)


BOLT = [(0.60, 0.0), (0.10, 0.58), (0.46, 0.58), (0.36, 1.0), (0.90, 0.40), (0.54, 0.40)]
# The yuan sign's strokes around the coin's centre, in units of about half the coin's radius.
YEN: list[list[Point]] = [[(-0.55, -0.75), (0, -0.05), (0.55, -0.75)], [(0, -0.05), (0, 0.8)]]
YEN += [[(-0.45, y), (0.45, y)] for y in (0.05, 0.4)]


def draw_mark(canvas: Canvas, p: Palette) -> None:
    """The icon: a meter body with a display, a lightning bolt and a yuan coin."""
    canvas.paint(rounded_rect(0.0, 0.0, 1.0, 1.0, 0.2), p.body)
    canvas.paint(rounded_rect(0.15, 0.13, 0.85, 0.35, 0.05), p.screen)
    for n in range(3):  # the balance, as a segmented gauge on the display
        canvas.paint(rounded_rect(0.21 + n * 0.13, 0.19, 0.31 + n * 0.13, 0.29, 0.02), p.body)
    bx, by, bs = 0.10, 0.43, 0.44
    canvas.paint(polygon([(bx + x * bs, by + y * bs) for x, y in BOLT], 0.012), p.bolt)
    cx, cy, r = 0.72, 0.70, 0.17
    canvas.paint(circle(cx, cy, r + 0.035), None)  # a transparent gap around the coin
    canvas.paint(circle(cx, cy, r), p.coin)
    u = r * 0.52
    yen = strokes([[(cx + x * u, cy + y * u) for x, y in line] for line in YEN], [], r * 0.09)
    canvas.paint(yen, p.coin_mark)


# A stroke font for the capitals the wordmark needs: (width, polylines, right half-circles) in
# a box of height 1 (y down).
P_STEM: list[list[Point]] = [[(0, 1), (0, 0), (0.3, 0)], [(0, 0.56), (0.3, 0.56)]]
P_BOWL: tuple[Point, float] = ((0.3, 0.28), 0.28)
GLYPHS: dict[str, tuple[float, list[list[Point]], list[tuple[Point, float]]]] = {
    "P": (0.56, P_STEM, [P_BOWL]),
    "R": (0.6, [*P_STEM, [(0.3, 0.56), (0.6, 1)]], [P_BOWL]),
    "E": (0.5, [[(0.5, 0), (0, 0), (0, 1), (0.5, 1)], [(0, 0.5), (0.42, 0.5)]], []),
    "A": (0.72, [[(0, 1), (0.36, 0), (0.72, 1)], [(0.13, 0.64), (0.59, 0.64)]], []),
    "I": (0.0, [[(0, 0), (0, 1)]], []),
    "D": (0.62, [[(0.12, 0), (0, 0), (0, 1), (0.12, 1)]], [((0.12, 0.5), 0.5)]),
    "M": (0.8, [[(0, 1), (0, 0), (0.4, 0.62), (0.8, 0), (0.8, 1)]], []),
    "T": (0.64, [[(0, 0), (0.64, 0)], [(0.32, 0), (0.32, 1)]], []),
}
CAP, HALF, GAP = 0.3, 0.03, 0.085  # cap height, stroke half-width, space between letters
LINES = (("PREPAID", 0.13), ("METER", 0.57))  # text and skeleton top, in icon heights
TEXT_X = 1.0 + 0.16 + HALF


def word_shapes(text: str, x: float, top: float) -> tuple[list[Shape], float]:
    """The letters of `text` from skeleton x, and the x where its ink ends."""
    shapes = []
    for letter in text:
        width, lines, arcs = GLYPHS[letter]
        moved = [[(x + px * CAP, top + py * CAP) for px, py in line] for line in lines]
        moved_arcs = [((x + cx * CAP, top + cy * CAP), r * CAP) for (cx, cy), r in arcs]
        shapes.append(strokes(moved, moved_arcs, HALF))
        x += width * CAP + 2 * HALF + GAP
    return shapes, x - GAP - HALF


def logo_width() -> float:
    return max(word_shapes(text, TEXT_X, top)[1] for text, top in LINES)


def render_icon(size: int, p: Palette) -> bytes:
    canvas = Canvas(size, size, size)
    draw_mark(canvas, p)
    return canvas.png()


def render_logo(height: int, p: Palette) -> bytes:
    canvas = Canvas(math.ceil(logo_width() * height), height, height)
    draw_mark(canvas, p)
    for (text, top), color in zip(LINES, (p.word_top, p.word_bottom), strict=True):
        for shape in word_shapes(text, TEXT_X, top)[0]:
            canvas.paint(shape, color)
    return canvas.png()


def render_all() -> dict[str, bytes]:
    """Every brand file name and its PNG bytes."""
    files: dict[str, bytes] = {}
    for prefix, palette in (("", LIGHT), ("dark_", DARK)):
        files[f"{prefix}icon.png"] = render_icon(256, palette)
        files[f"{prefix}icon@2x.png"] = render_icon(512, palette)
        files[f"{prefix}logo.png"] = render_logo(256, palette)
        files[f"{prefix}logo@2x.png"] = render_logo(512, palette)
    return files


def main(argv: Sequence[str] = ()) -> None:
    out = Path(argv[0]) if argv else BRAND_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, data in render_all().items():
        (out / name).write_bytes(data)


if __name__ == "__main__":
    main(sys.argv[1:])
