"""Live streaming from a camera, the front end of `pipelines.live`: the engine (newest frames only,
streams served in turn, portraits swapped in while live), its websocket routes and output pages, recorded
takes, and the standalone server (the live page without ComfyUI)."""

from .engine import LiveEngine, LiveError
from .recorder import TakeFolder
from .server import add_live_routes
from .standalone import TARGET, check_address, make_app, serve

__all__ = ["TARGET", "LiveEngine", "LiveError", "TakeFolder", "add_live_routes", "check_address", "make_app", "serve"]
