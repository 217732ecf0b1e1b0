"""Charts as static SVG and PNG (vl-convert, offline): for the trial and regulator reports (which carry no script)
and as files for documents.

vl-convert renders with its own embedded Vega; no font is fetched because no chart names a web font (research/
reports.md A1.2: Google-font discovery is what makes vl-convert reach the network).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reports.bundle import ReportBundle
from reports.views import View, default_views

_ID = re.compile(r'\bid="([^"]+)"')


def svg_of(spec: dict[str, Any], prefix: str) -> str:
    """The chart as an SVG string, its element ids prefixed so several SVGs can share one HTML page."""
    import vl_convert

    svg = vl_convert.vegalite_to_svg(spec)
    for ident in set(_ID.findall(svg)):
        svg = svg.replace(f'id="{ident}"', f'id="{prefix}-{ident}"').replace(f"url(#{ident})", f"url(#{prefix}-{ident})")
    return svg


def png_of(spec: dict[str, Any], scale: float = 2.0) -> bytes:
    import vl_convert

    return vl_convert.vegalite_to_png(spec, scale=scale)


def write_chart_images(bundle: ReportBundle, directory: str | Path, views: Iterable[View] | None = None) -> list[Path]:
    """Every chart of the bundle's views as ``<key>.svg`` and ``<key>.png`` in ``directory``; returns the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for view in (views if views is not None else default_views(bundle, bundle.tier)):
        if view.spec is None:
            continue
        svg_path, png_path = out / f"{view.key}.svg", out / f"{view.key}.png"
        svg_path.write_text(svg_of(view.spec, view.key), encoding="utf-8")
        png_path.write_bytes(png_of(view.spec))
        written += [svg_path, png_path]
    return written
