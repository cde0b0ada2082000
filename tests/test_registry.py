"""The Comfy Registry metadata and the archive `comfy node publish` would upload.

comfy-cli reads pyproject.toml's [project] (name, version, description, license, dependencies,
urls) and [tool.comfy] (PublisherId, DisplayName, Icon), then zips the git-tracked files that
.comfyignore (gitignore patterns, pathspec "gitwildmatch") does not match. The checks follow the
Registry's specification (docs.comfy.org/registry/specifications).
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def archive_files() -> list[str]:
    """The files comfy-cli's zip_files would pack: `git ls-files` less the .comfyignore matches."""
    import pathspec  # the [test] extra; comfy-cli matches .comfyignore with it
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True)
    lines = (REPO / ".comfyignore").read_text(encoding="utf-8").splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    spec = pathspec.PathSpec.from_lines("gitwildmatch", patterns)
    return [f for f in tracked.stdout.splitlines() if f.strip() and not spec.match_file(f)]


def test_project_fields_the_registry_requires(pyproject):
    project = pyproject["project"]
    name = project["name"]
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*", name), name
    assert "comfyui" not in name.lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    import restorer_core

    assert restorer_core.__version__ == project["version"], "bump restorer_core.__version__ with pyproject"
    assert len(project["description"]) > 30
    license_file = REPO / project["license"]["file"]  # the Registry takes {file = ...} or {text = ...}
    assert license_file.is_file() and "Apache License" in license_file.read_text(encoding="utf-8")[:200]
    assert project["urls"]["Repository"].startswith("https://github.com/")
    deps = project["dependencies"]
    assert not any(re.match(r"torch\b", d) for d in deps), "ComfyUI brings its own torch"
    requirements = [ln.strip() for ln in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
                    if ln.strip() and not ln.startswith("#")]
    assert deps == requirements, "pyproject dependencies and requirements.txt must agree"


def test_tool_comfy_publisher_name_and_icon(pyproject):
    from PIL import Image

    comfy = pyproject["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"])
    assert comfy["DisplayName"].strip()
    repo = pyproject["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{repo}/main/"
    assert comfy["Icon"].startswith(prefix), "the icon is served from the repository's own file"
    icon = comfy["Icon"].removeprefix(prefix)
    assert icon in archive_files(), f"{icon} must be committed (and not in .comfyignore)"
    with Image.open(REPO / icon) as img:
        assert img.format == "PNG" and img.size[0] == img.size[1] and 128 <= img.size[0] <= 400


def test_archive_has_what_comfyui_runs_and_not_the_development_material(pyproject):
    files = archive_files()
    listed = set(files)
    for needed in ("__init__.py", "pyproject.toml", "requirements.txt", "README.md", "LICENSE",
                   pyproject["tool"]["comfy"]["Icon"].rsplit("/main/", 1)[1]):
        assert needed in listed, needed
    code = [p.relative_to(REPO).as_posix() for d in ("nodes", "restorer_core") for p in (REPO / d).rglob("*.py")
            if "__pycache__" not in p.parts]
    tracked_code = [c for c in code if subprocess.run(["git", "-C", str(REPO), "ls-files", "--error-unmatch", c],
                                                        capture_output=True).returncode == 0]
    assert tracked_code and set(tracked_code) <= listed, "every module of the pack ships"
    assert any(f.startswith("restorer_core/assets/") for f in files)  # the embedded models
    assert sum(f.startswith("web/docs/") for f in files) == 8  # node help pages
    templates = [f for f in files if re.fullmatch(r"example_workflows/[^/]+\.(json|jpg)", f)]
    assert len(templates) == 8  # four workflows with their thumbnails
    for left_out in ("tests/", "benchmarks/", "docs/images/", "docs/training/", "scripts/", ".ci/"):
        assert not any(f.startswith(left_out) for f in files), left_out
    assert not any(re.fullmatch(r"docs/[^/]+\.py", f) for f in files)
    assert "docs/COMFYUI_NODES.md" in listed  # the user documentation stays
