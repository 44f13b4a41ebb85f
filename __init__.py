"""ComfyUI entry point of the PersonaLive node pack (V3 extension: `comfy_entrypoint`).

Install by cloning (or linking) this repository into ComfyUI's custom_nodes/. The nodes live in
`nodes/`, the model code in `personalive_core/` (which imports nothing from ComfyUI), the live
widget in `web/js/` (served through `WEB_DIRECTORY`).
"""

WEB_DIRECTORY = "./web/js"

try:
    import comfy_api.latest  # noqa: F401  (only present inside ComfyUI)
except ModuleNotFoundError:  # imported outside ComfyUI (e.g. by a tool): nothing to register
    comfy_entrypoint = None
else:
    from .nodes import NODES, comfy_entrypoint  # noqa: F401
