"""`llmt init`: copy the scaffold project shipped inside the package."""

from __future__ import annotations

import re
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from llmt.errors import ConfigError

PLACEHOLDER = "__PROJECT_NAME__"


def create_project(path: Path) -> Path:
    name = path.name
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(
            f"`{name}` is not a valid project name",
            hint="Use letters, digits and underscores, starting with a letter (e.g. my_project).",
        )
    if path.exists() and any(path.iterdir()):
        raise ConfigError(f"{path} already exists and is not empty", hint="Choose another name or directory.")
    root = resources.files("llmt") / "scaffold"
    _copy(root, path, name)
    return path


def _copy(src: Traversable, dest: Path, name: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name == "__pycache__":
            continue
        target = dest / item.name
        if item.is_dir():
            _copy(item, target, name)
        else:
            target.write_text(item.read_text(encoding="utf-8").replace(PLACEHOLDER, name), encoding="utf-8")
