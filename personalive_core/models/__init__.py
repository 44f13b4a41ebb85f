"""Networks of PersonaLive (nn.Modules with their configs) and the loading of their weights."""

from .loader import PersonaLiveModels, build_personalive_networks, load_models

__all__ = ["PersonaLiveModels", "build_personalive_networks", "load_models"]
