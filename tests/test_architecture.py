"""The import graph keeps the architecture docs/ARCHITECTURE.md draws.

personalive_core is layered, lower layers never import higher ones, and there is no import loop:
  errors, config, runtime, download (0) ← models, media (1) ← streaming (2) ← pipelines (3)
  ← live, batch (4, front ends) ← devtools (5) ← cli (6).
The package root re-exports the public API (layer 3). The core imports nothing from ComfyUI.
The front ends (nodes/, cli/, live/, batch/) import the core only through its public API: the package
root, `pipelines`, `config`, `errors`, `runtime`, `download`, and the front-end packages themselves
(`live`, `batch`); the command line also dispatches to the developer tools (`devtools`: benchmarks,
precision, random weights), which reach inside by design. Nodes never import the command line or the
developer tools. No configuration travels through hidden channels: no `x._attr = …` on another object,
no `getattr`/`setattr` of underscore names, no assignment to another module's attributes (only
`runtime.py`, the process-settings module, changes process-wide switches), and no `sys.path` edits.
Every import counts, also those inside functions.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = "personalive_core"
LAYERS = {
    "errors": 0,
    "config": 0,
    "runtime": 0,
    "download": 0,
    "models": 1,
    "media": 1,
    "streaming": 2,
    "pipelines": 3,
    "live": 4,
    "batch": 4,
    "devtools": 5,
    "cli": 6,
}
ENTRY_POINTS = {f"{CORE}.__main__": "cli", CORE: "pipelines"}  # `python -m`, and the root's re-exports
HOST = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "nodes"}
PUBLIC = {
    CORE,
    f"{CORE}.pipelines",
    f"{CORE}.config",
    f"{CORE}.errors",
    f"{CORE}.runtime",
    f"{CORE}.download",
    f"{CORE}.live",
    f"{CORE}.batch",
}
FRONT_ENDS = {"nodes": "nodes", f"{CORE}.cli": "cli", f"{CORE}.live": "live", f"{CORE}.batch": "batch"}
PROCESS_SETTINGS = f"{CORE}.runtime"


# -- reading the imports ---------------------------------------------------------------------------
def module_name(path):
    """'personalive_core/media/driving.py' → 'personalive_core.media.driving' (packages: their folder)."""
    parts = os.path.splitext(os.path.relpath(path, REPO))[0].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_files(folder):
    for root, _, files in os.walk(os.path.join(REPO, folder)):
        yield from (os.path.join(root, f) for f in sorted(files) if f.endswith(".py"))


def _resolve(node, module, is_package):
    """The absolute module an ImportFrom names (relative imports resolved; `nodes` may reach the core
    as its sibling `..personalive_core`, which is the core itself)."""
    package = module if is_package else module.rpartition(".")[0]
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        anchor = parts[: len(parts) - (node.level - 1)]
        if not anchor:  # above the top: the pack's root package, whose sibling is the core
            return base
        base = ".".join(anchor + ([base] if base else []))
    return base


def imports_of(source, module, is_package, known):
    """Module names imported by `source` (absolute or relative; `from pkg import sub` gives pkg.sub
    when that is a module in `known`)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
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


def front_end(module):
    """The front end a module belongs to (nodes, cli, live, batch), or None for the core proper."""
    for prefix, name in FRONT_ENDS.items():
        if module == prefix or module.startswith(prefix + "."):
            return name
    return None


def allowed_for_front_end(module, target):
    """Whether front-end `module` may import core module `target`."""
    own = front_end(module)
    if target in PUBLIC or (own != "nodes" and front_end(target) == own):
        return True
    return own == "cli" and target.startswith(f"{CORE}.devtools")


def cycles(graph):
    """Import loops among the core's modules, each as a list of modules (first repeated at the end)."""
    core = {m: {t for t in targets if t in graph and top(t) == CORE} for m, targets in graph.items() if top(m) == CORE}
    found, state = [], {}

    def visit(m, path):
        state[m] = "open"
        for t in sorted(core[m]):
            if state.get(t) == "open":
                found.append(path[path.index(t) :] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(core):
        if m not in state:
            visit(m, [m])
    return found


def violations(graph):
    """Every broken import rule, as readable lines (empty when the architecture holds)."""
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
            if front_end(m) and top(t) == CORE and not allowed_for_front_end(m, t):
                out.append(
                    f"{m} (front end {front_end(m)}) imports {t}, not the public API; export what it "
                    "needs from personalive_core or personalive_core.pipelines"
                )
    out += ["import loop: " + " → ".join(c) for c in cycles(graph)]
    return out


# -- hidden channels -------------------------------------------------------------------------------
def _imported_modules(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
    return names


def _private(name):
    return name.startswith("_") and not name.startswith("__")


def _root(node):
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def hidden_channels(source, module):
    """Lines of `source` that carry configuration through a hidden channel."""
    tree = ast.parse(source)
    modules = _imported_modules(tree)
    out = []
    for node in ast.walk(tree):
        where = f"{module}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if not isinstance(t, ast.Attribute):
                    continue
                owner = _root(t)
                if _private(t.attr) and owner not in ("self", "cls"):
                    out.append(f"{where}: sets the hidden attribute {t.attr} of {owner}")
                elif owner in modules and module != PROCESS_SETTINGS:
                    out.append(f"{where}: sets {ast.unparse(t)}, a module attribute (a global switch)")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "delattr")
            and len(node.args) >= 2
        ):
            obj, name = node.args[0], node.args[1]
            if (
                isinstance(name, ast.Constant)
                and isinstance(name.value, str)
                and _private(name.value)
                and _root(obj) not in ("self", "cls")
            ):
                out.append(f"{where}: {node.func.id} of the hidden attribute {name.value}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and ast.unparse(node.func.value) == "sys.path"
        ):
            out.append(f"{where}: edits sys.path")
    return out


def project_hidden_channels(folders=(CORE, "nodes")):
    out = []
    for folder in folders:
        for path in python_files(folder):
            with open(path, encoding="utf-8") as f:
                out += hidden_channels(f.read(), module_name(path))
    return out


# -- the checker on small made-up graphs and sources ----------------------------------------------
GOOD = {
    "personalive_core.models.unet": {"torch", "personalive_core.errors"},
    "personalive_core.errors": set(),
    "personalive_core.streaming.session": {"personalive_core.models.unet"},
    "personalive_core.pipelines": {"personalive_core.streaming.session"},
    "personalive_core.cli.main": {"personalive_core.pipelines", "personalive_core.devtools.bench", "argparse"},
    "personalive_core.devtools.bench": {"personalive_core.streaming.session"},
    "personalive_core.live.engine": {"personalive_core.pipelines", "personalive_core.live.viewers"},
    "personalive_core.live.viewers": set(),
    "personalive_core.__main__": {"personalive_core.cli.main"},
    "nodes.sampler": {"personalive_core.pipelines", "personalive_core.live", "comfy.utils"},
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"personalive_core.models.unet": {"personalive_core.streaming.window"}}, "a layer above it"),
        (
            {
                "personalive_core.streaming.session": {
                    "personalive_core.models.unet",
                    "personalive_core.streaming.window",
                },
                "personalive_core.streaming.window": {"personalive_core.streaming.session"},
            },
            "import loop",
        ),
        ({"personalive_core.media.driving": {"comfy_api.latest"}}, "ComfyUI module comfy_api.latest"),
        ({"personalive_core.live.engine": {"folder_paths"}}, "ComfyUI module folder_paths"),
        ({"nodes.render_video": {"personalive_core.cli.options"}}, "not the public API"),
        ({"nodes.render_video": {"personalive_core.streaming.session"}}, "not the public API"),
        ({"nodes.render_video": {"personalive_core.devtools.bench"}}, "not the public API"),
        ({"personalive_core.live.engine": {"personalive_core.streaming.session"}}, "not the public API"),
        ({"personalive_core.cli.commands": {"personalive_core.media.output"}}, "not the public API"),
        (
            {"personalive_core.extras.thing": set(), "personalive_core.pipelines": {"personalive_core.extras.thing"}},
            "not in a layer",
        ),
    ],
)
def test_the_checker_finds_each_kind_of_violation(change, message):
    assert violations(GOOD) == []
    found = violations({**GOOD, **change})
    assert found and all(message in line for line in found), found


@pytest.mark.parametrize(
    "source, message",
    [
        ("def f(unet):\n    unet._speed_compiled = {}\n", "hidden attribute _speed_compiled"),
        ("def f(unet):\n    return getattr(unet, '_speed_compiled', None)\n", "getattr of the hidden attribute"),
        ("def f(a):\n    setattr(a, '_x', 1)\n", "setattr of the hidden attribute"),
        ("from ..models import speed\ndef f():\n    speed.BACKEND = 'eager'\n", "a module attribute"),
        ("import torch\ntorch.backends.cudnn.benchmark = True\n", "a module attribute"),
        ("import sys\nsys.path.append('/x')\n", "edits sys.path"),
        ("import sys\nsys.path.insert(0, '/x')\n", "edits sys.path"),
    ],
)
def test_the_checker_finds_hidden_channels(source, message):
    found = hidden_channels(source, "personalive_core.x")
    assert found and all(message in line for line in found), found


def test_what_is_not_a_hidden_channel():
    source = (
        "import torch\nclass A:\n    def f(self, m):\n        self._cache = None\n"
        "        return getattr(m, 'decoder', m), hasattr(torch, '_scaled_mm'), vars(m).get('__x__')\n"
    )
    assert hidden_channels(source, "personalive_core.x") == []
    assert hidden_channels("import torch\ntorch.backends.cudnn.benchmark = True\n", PROCESS_SETTINGS) == []


def test_cycles_are_reported_with_their_path():
    graph = {
        "personalive_core.media.a": {"personalive_core.media.b"},
        "personalive_core.media.b": {"personalive_core.media.c"},
        "personalive_core.media.c": {"personalive_core.media.a"},
    }
    assert cycles(graph) == [
        ["personalive_core.media.a", "personalive_core.media.b", "personalive_core.media.c", "personalive_core.media.a"]
    ]


def test_relative_imports_resolve_to_modules():
    known = {
        "personalive_core.media.face_crop",
        "personalive_core.media.video_io",
        "nodes.common",
        "personalive_core.pipelines",
    }
    source = (
        "from . import face_crop as fc\nfrom .video_io import square\nfrom ..streaming.render import x\n"
        "def f():\n    from ..errors import InputError\n    import torch.nn\n"
    )
    assert imports_of(source, "personalive_core.media.footage", False, known) == {
        "personalive_core.media.face_crop",
        "personalive_core.media.video_io",
        "personalive_core.streaming.render",
        "personalive_core.errors",
        "torch.nn",
    }
    assert imports_of("from .common import CATEGORY\n", "nodes", True, known) == {"nodes.common"}
    # the nodes reach the core as their sibling inside the pack
    assert imports_of(
        "from ..personalive_core.pipelines import x\nfrom ..personalive_core import InputError\n",
        "nodes.sampler",
        False,
        known,
    ) == {"personalive_core.pipelines", "personalive_core"}


# -- the real tree ---------------------------------------------------------------------------------
def test_the_project_keeps_its_architecture():
    graph = read_graph()
    assert len([m for m in graph if top(m) == CORE]) > 40 and any(top(m) == "nodes" for m in graph)
    assert "personalive_core.streaming.session" in graph["personalive_core.streaming.render"]  # imports are seen
    assert "personalive_core.pipelines" in graph["nodes.sampler"]  # the pack-relative imports are seen
    assert violations(graph) == []


def test_no_configuration_through_hidden_channels():
    assert project_hidden_channels() == []
