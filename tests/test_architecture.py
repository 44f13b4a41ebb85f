"""The import graph keeps the architecture the folders show (README, "How it works").

personalive_core is layered, lower layers never import higher ones, and there is no import loop:
  errors (0) ← models (1) ← streaming (2) ← media (3) ← live (4) ← tools (5, the commands).
Media sits below live because the live engine prepares camera frames with media's `square`; the
command line (tools) may use everything. The core imports nothing from ComfyUI, and the ComfyUI
nodes/ never import the command line (tools). Every import counts, also those inside functions.
"""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = "personalive_core"
LAYERS = {"errors": 0, "models": 1, "streaming": 2, "media": 3, "live": 4, "tools": 5}
ENTRY_POINTS = {f"{CORE}.__main__": "tools", CORE: "errors"}  # `python -m`, and the empty root package
HOST = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "nodes"}


# -- reading the imports ---------------------------------------------------------------------------
def module_name(path):
    """'personalive_core/media/driving.py' → 'personalive_core.media.driving' (packages: their folder)."""
    parts = os.path.splitext(os.path.relpath(path, REPO))[0].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_files(folder):
    for root, _, files in os.walk(os.path.join(REPO, folder)):
        yield from (os.path.join(root, f) for f in sorted(files) if f.endswith(".py"))


def imports_of(source, module, is_package, known):
    """Module names imported by `source` (absolute or relative; `from pkg import sub` gives pkg.sub
    when that is a module in `known`)."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            subs = {f"{base}.{alias.name}" for alias in node.names} & known
            found.update(subs or {base})
    return found


def read_graph(folders=(CORE, "nodes")):
    """{module: set of imported module names} for every module under `folders`."""
    files = {module_name(p): p for folder in folders for p in python_files(folder)}
    graph = {}
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            graph[module] = imports_of(f.read(), module, path.endswith("__init__.py"), set(files))
    return graph


# -- the rules -------------------------------------------------------------------------------------
def layer(module):
    if module in ENTRY_POINTS:
        return LAYERS[ENTRY_POINTS[module]]
    return LAYERS.get(module.split(".")[1])


def top(module):
    return module.split(".")[0]


def cycles(graph):
    """Import loops among the core's modules, each as a list of modules (first repeated at the end)."""
    core = {m: {t for t in targets if t in graph and top(t) == CORE} for m, targets in graph.items()
            if top(m) == CORE}
    found, state = [], {}

    def visit(m, path):
        state[m] = "open"
        for t in sorted(core[m]):
            if state.get(t) == "open":
                found.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(core):
        if m not in state:
            visit(m, [m])
    return found


def violations(graph):
    """Every broken rule, as readable lines (empty when the architecture holds)."""
    out = []
    for m, targets in sorted(graph.items()):
        for t in sorted(targets):
            if top(m) == CORE and top(t) == CORE:
                if layer(m) is None or layer(t) is None:
                    out.append(f"{m} or {t}: not in a layer ({', '.join(LAYERS)}); add the folder to LAYERS")
                elif layer(t) > layer(m):
                    out.append(f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)}), a layer above it")
            if top(m) == CORE and top(t) in HOST:
                out.append(f"{m} imports the ComfyUI module {t}; the core must run without ComfyUI")
            if top(m) == "nodes" and t.startswith(f"{CORE}.tools"):
                out.append(f"{m} imports the command line ({t}); move what it needs below tools/")
    out += ["import loop: " + " → ".join(c) for c in cycles(graph)]
    return out


# -- the checker on small made-up graphs -----------------------------------------------------------
GOOD = {
    "personalive_core.models.unet": {"torch", "personalive_core.errors"},
    "personalive_core.errors": set(),
    "personalive_core.streaming.session": {"personalive_core.models.unet"},
    "personalive_core.tools.cli": {"personalive_core.streaming.session", "argparse"},
    "personalive_core.__main__": {"personalive_core.tools.cli"},
    "nodes.sampler": {"personalive_core.streaming.session", "comfy.utils"},
}


@pytest.mark.parametrize("change, message", [
    ({"personalive_core.models.unet": {"personalive_core.streaming.window"}}, "a layer above it"),
    ({"personalive_core.streaming.session": {"personalive_core.models.unet", "personalive_core.streaming.window"},
      "personalive_core.streaming.window": {"personalive_core.streaming.session"}}, "import loop"),
    ({"personalive_core.media.driving": {"comfy_api.latest"}}, "ComfyUI module comfy_api.latest"),
    ({"personalive_core.live.engine": {"folder_paths"}}, "ComfyUI module folder_paths"),
    ({"nodes.render_video": {"personalive_core.tools.options"}}, "imports the command line"),
    ({"personalive_core.extras.thing": set(), "personalive_core.tools.cli": {"personalive_core.extras.thing"}},
     "not in a layer"),
])
def test_the_checker_finds_each_kind_of_violation(change, message):
    assert violations(GOOD) == []
    found = violations({**GOOD, **change})
    assert found and all(message in line for line in found), found


def test_cycles_are_reported_with_their_path():
    graph = {"personalive_core.media.a": {"personalive_core.media.b"},
             "personalive_core.media.b": {"personalive_core.media.c"},
             "personalive_core.media.c": {"personalive_core.media.a"}}
    assert cycles(graph) == [["personalive_core.media.a", "personalive_core.media.b", "personalive_core.media.c",
                              "personalive_core.media.a"]]


def test_relative_imports_resolve_to_modules():
    known = {"personalive_core.media.face_crop", "personalive_core.media.video_io", "nodes.common"}
    source = ("from . import face_crop as fc\nfrom .video_io import square\nfrom ..streaming.render import x\n"
              "def f():\n    from ..errors import InputError\n    import torch.nn\n")
    assert imports_of(source, "personalive_core.media.footage", False, known) == {
        "personalive_core.media.face_crop", "personalive_core.media.video_io", "personalive_core.streaming.render",
        "personalive_core.errors", "torch.nn"}
    assert imports_of("from .common import CATEGORY\n", "nodes", True, known) == {"nodes.common"}


# -- the real tree ---------------------------------------------------------------------------------
def test_the_project_keeps_its_architecture():
    graph = read_graph()
    assert len([m for m in graph if top(m) == CORE]) > 30 and any(top(m) == "nodes" for m in graph)
    assert "personalive_core.streaming.session" in graph["personalive_core.streaming.render"]  # imports are seen
    assert violations(graph) == []
