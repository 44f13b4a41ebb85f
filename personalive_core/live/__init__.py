"""Live streaming from a camera, the front end of `pipelines.live`: the engine (newest frames only,
streams served in turn), its websocket routes and output pages, and recorded takes."""
from .engine import LiveEngine, LiveError
from .recorder import TakeFolder
from .server import add_live_routes

__all__ = ["LiveEngine", "LiveError", "TakeFolder", "add_live_routes"]
