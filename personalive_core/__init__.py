"""PersonaLive, re-implemented for streaming portrait animation; imports nothing from ComfyUI."""
