"""The shipped templates (scripts/dev/make_workflows.py, scripts/dev/make_thumbnails.py), as ComfyUI's Templates browser
shows them: each UI-format workflow is named by its readable title, with its thumbnail beside it under the
same name (small JPEG), and its API-format twin in workflows/api/; the thumbnails are what the tool draws; the
docs name only templates that exist. (That the host lists and serves them: tests/test_comfy_host.py; that the
browser shows them: tests/test_live_host.py.)"""

import importlib.util
import json
import os
import re

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(REPO, "workflows")


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", "dev", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


thumbnails = load_tool("make_thumbnails")
GRAPHS = load_tool("make_workflows").GRAPHS


def test_every_template_has_title_thumbnail_and_api_twin():
    titles = sorted(g["template"] for g in GRAPHS.values())
    assert sorted(f[:-5] for f in os.listdir(FOLDER) if f.endswith(".json")) == titles
    assert sorted(f[:-4] for f in os.listdir(FOLDER) if f.endswith(".jpg")) == titles
    assert sorted(os.listdir(os.path.join(FOLDER, "api"))) == sorted(name + ".json" for name in GRAPHS)
    for graph in GRAPHS.values():
        title = graph["template"]
        # readable, and safe as a file name on every system and as a URL path
        assert re.fullmatch(r"PersonaLive - [A-Z][A-Za-z0-9 ]+", title), title
        path = os.path.join(FOLDER, title + ".jpg")
        assert os.path.getsize(path) < 100_000, path
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.size == (thumbnails.SIDE, thumbnails.SIDE), path
        with open(os.path.join(FOLDER, title + ".json")) as f:
            (note,) = [n for n in json.load(f)["nodes"] if n["type"] == "Note"]
        assert note["widgets_values"][0].startswith(graph["title"] + "\n\n")


def test_thumbnails_are_what_the_tool_draws():
    for name, graph in GRAPHS.items():
        drawn = np.asarray(thumbnails.card(graph["template"], thumbnails.PICTURES[name]), dtype=np.float32)
        with Image.open(os.path.join(FOLDER, graph["template"] + ".jpg")) as image:
            shipped = np.asarray(image.convert("RGB"), dtype=np.float32)
        # JPEG at quality 85 moves a flat drawing by about 1 level on average; another picture by tens
        assert np.abs(drawn - shipped).mean() < 6, name


def test_docs_name_only_shipped_templates():
    titles = {g["template"] for g in GRAPHS.values()}
    named = set()
    for doc in ("README.md", os.path.join("docs", "NODES.md")):
        with open(os.path.join(REPO, doc)) as f:
            named |= set(re.findall(r"\*+(PersonaLive - [^*]+)\*+", f.read()))
    assert named and named <= titles, named - titles
