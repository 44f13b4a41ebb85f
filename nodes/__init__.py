"""PersonaLive nodes for ComfyUI (V3 schema, `comfy_api.latest`).

Thin wrappers around the core's public API (`personalive_core`, `personalive_core.pipelines`,
`personalive_core.live`), imported relatively as part of this pack: the core is `<pack>.personalive_core`,
never a global top-level name that another pack or an old copy could shadow. Every file here is one
node (`options.py`: the inputs generated from the core's config).
"""

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .common import register_model_folder
from .encode_reference import PersonaLiveEncodeReference
from .extract_motion import PersonaLiveExtractMotion
from .face_crop import PersonaLiveCropFace, PersonaLivePasteBack
from .live import PersonaLiveLive
from .load_model import PersonaLiveLoadModel
from .render_video import PersonaLiveRenderVideo
from .sampler import PersonaLiveStreamSampler

NODES = [
    PersonaLiveLoadModel,
    PersonaLiveEncodeReference,
    PersonaLiveExtractMotion,
    PersonaLiveStreamSampler,
    PersonaLiveRenderVideo,
    PersonaLiveCropFace,
    PersonaLivePasteBack,
    PersonaLiveLive,
]

register_model_folder()


class PersonaLiveExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> PersonaLiveExtension:
    return PersonaLiveExtension()
