"""The web console: a VRAM calculator, a model-to-hardware recommender and a live fleet page.

Static pages (plain HTML, CSS and JavaScript shipped in the wheel under ``static/``; no build
step, nothing fetched from elsewhere) over a small JSON API that calls the same
``shipit.capacity`` functions as ``shipit plan``. ``ConsoleApp`` is the ASGI app: the gateway
serves it under ``/ui`` with its fleet state; ``shipit console`` serves it alone.
"""

from shipit.console.app import FLEET_PATH, PREFIX, ConsoleApp, FleetSource, serves

__all__ = ["FLEET_PATH", "PREFIX", "ConsoleApp", "FleetSource", "serves"]
