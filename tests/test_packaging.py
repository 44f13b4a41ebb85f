"""The install files agree: pyproject.toml's dependencies are requirements.txt (what ComfyUI installs into
its Python), its `cli` extra is requirements-cli.txt beyond that; and the nodes' file stays small."""

import os
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def requirement_lines(name):
    """Requirement lines of a requirements file, comments, blanks and -r includes left out."""
    with open(os.path.join(REPO, name)) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith("-r")]


def test_pyproject_matches_the_requirements_files():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["dependencies"] == requirement_lines("requirements.txt")
    assert project["optional-dependencies"]["cli"] == requirement_lines("requirements-cli.txt")
    with open(os.path.join(REPO, "requirements-cli.txt")) as f:
        assert "-r requirements.txt" in f.read().splitlines()


def test_diffusers_fits_comfyui_hosts():
    """diffusers 0.40 on needs huggingface_hub>=1, which the transformers 4.x of ComfyUI hosts refuses: a
    pip install of the command line's requirements into a ComfyUI Python would break the host."""
    (diffusers,) = [line for line in requirement_lines("requirements-cli.txt") if line.startswith("diffusers")]
    assert "<0.40" in diffusers.replace(" ", "")
    assert not [line for line in requirement_lines("requirements.txt") if line.startswith(("diffusers", "torch"))]
