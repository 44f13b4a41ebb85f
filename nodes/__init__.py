"""PersonaLive nodes for ComfyUI (V3 schema, `comfy_api.latest`).

Thin wrappers around `personalive_core`: every file here is one node; model code lives in the core.
The repo root is put on `sys.path` (at the end, so ComfyUI's own top-level modules such as `nodes`
keep precedence) so that `personalive_core` imports the same way here as in the CLI and the tests.
"""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

from typing_extensions import override  # noqa: E402

from comfy_api.latest import ComfyExtension, io  # noqa: E402

from .common import register_model_folder  # noqa: E402
from .encode_reference import PersonaLiveEncodeReference  # noqa: E402
from .extract_motion import PersonaLiveExtractMotion  # noqa: E402
from .face_crop import PersonaLiveCropFace, PersonaLivePasteBack  # noqa: E402
from .live import PersonaLiveLive  # noqa: E402
from .load_model import PersonaLiveLoadModel  # noqa: E402
from .render_video import PersonaLiveRenderVideo  # noqa: E402
from .sampler import PersonaLiveStreamSampler  # noqa: E402

NODES = [PersonaLiveLoadModel, PersonaLiveEncodeReference, PersonaLiveExtractMotion, PersonaLiveStreamSampler,
         PersonaLiveRenderVideo, PersonaLiveCropFace, PersonaLivePasteBack, PersonaLiveLive]

register_model_folder()


class PersonaLiveExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> PersonaLiveExtension:
    return PersonaLiveExtension()
