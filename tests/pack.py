"""This repository imported the way ComfyUI imports a custom-node pack, once per test process.

ComfyUI loads the pack's root `__init__.py` under a module name of its own (the folder's path), so
the nodes' relative imports make the core `<pack>.personalive_core`. `load()` does the same and then
makes `personalive_core` an alias of the pack's copy (a finder on sys.meta_path that hands out the
pack's modules under the short name), so a test process holds one copy of the core: the tests'
`from personalive_core.errors import InputError` is the class the nodes raise, and one live engine
serves the nodes and the tests alike. Only for processes that run the nodes (COMFYUI_PATH set).
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "personalive_pack"  # ComfyUI would use the folder's path; any name not on sys.path does
CORE = "personalive_core"


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`personalive_core[.x]` → the module `personalive_pack.personalive_core[.x]` itself."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == CORE or fullname.startswith(CORE + "."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"{NAME}.{spec.name}")

    def exec_module(self, module):
        pass  # already executed under its pack name


def load(comfy_path):
    """Import ComfyUI's modules (CPU) and this pack as ComfyUI does; returns the pack module."""
    if NAME in sys.modules:
        return sys.modules[NAME]
    if any(m == CORE or m.startswith(CORE + ".") for m in sys.modules):
        raise RuntimeError("personalive_core was imported before the pack: import tests/pack.py first")
    if comfy_path not in sys.path:
        sys.path.insert(0, comfy_path)  # before the repo root, whose nodes/ would shadow ComfyUI's nodes.py
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported
    spec = importlib.util.spec_from_file_location(
        NAME, os.path.join(REPO, "__init__.py"), submodule_search_locations=[REPO]
    )
    pack = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = pack
    spec.loader.exec_module(pack)
    importlib.import_module(f"{NAME}.{CORE}")
    sys.meta_path.insert(0, _Alias())
    return pack


def call(node, *sockets, **inputs):
    """`node.execute` as the host calls it: the socket values, then every widget input the frontend would
    send, its schema default where the test gives none (optional inputs only when given)."""
    schema = node.define_schema()
    names = [i.id for i in schema.inputs]
    given = dict(zip(names, sockets))
    for item in schema.inputs:
        if item.id in given or item.id in inputs:
            continue
        default = getattr(item, "default", None)
        if default is not None and not item.optional:
            given[item.id] = default
    return node.execute(**given, **inputs)
