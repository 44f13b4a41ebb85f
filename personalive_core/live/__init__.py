"""Live streaming from a camera: the engine (newest frames only) and its websocket routes."""
