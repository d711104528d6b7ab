"""Static HTML reports built from artifact directories alone.

This package reads artifact files (JSON, safetensors, PNG) and writes pages; it never
loads a model and imports nothing from ``mechscope.models`` or the other analysis packages.
"""

from .demo_page import DemoRun, draw_lens_png, load_demo, render_demo

__all__ = ["DemoRun", "draw_lens_png", "load_demo", "render_demo"]
