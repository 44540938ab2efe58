"""`llmt clean`: remove target/ (dbt's `clean-targets`), but never what a later command still needs: the files of
batches still open (every target's state store says which; the next `llmt run` collects them), the fake
provider's batches while one of them is open, and a target's warehouse database kept in there."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from llmt.console import Console
from llmt.errors import ConfigError, LlmtError
from llmt.project.config import ProjectConfig
from llmt.project.yamlfile import read_yaml, validate
from llmt.providers import FAKE_REMOTE


@dataclass(frozen=True)
class Place:
    """What `llmt clean` reads of a project: its directory and project.yml (its models need not compile)."""

    dir: Path
    config: ProjectConfig

    @property
    def target_dir(self) -> Path:
        return self.dir / "target"


def read_place(project_dir: Path) -> Place:
    path = project_dir.resolve() / "project.yml"
    if not path.is_file():
        raise ConfigError(f"no project.yml in {project_dir.resolve()}",
                          hint="Run llmt from a project directory, or pass --project-dir.")
    return Place(path.parent, validate(ProjectConfig, read_yaml(path), path))


@dataclass
class Cleaned:
    removed: int = 0  # files
    kept: dict[str, str] = field(default_factory=dict)  # path (relative to the project) -> why


def clean_targets(project: Place) -> list[Path]:
    """The folders `clean-targets` names (default: target/), each inside the project."""
    out = []
    for name in project.config.clean_targets:
        path = (project.dir / name).resolve()
        if path == project.dir or project.dir not in path.parents:
            raise ConfigError(f"`clean-targets` names {name}, which is not a folder inside the project",
                              where=str(project.dir / "project.yml"),
                              hint="List folders inside the project directory, e.g. clean-targets: [target].")
        out.append(path)
    return out


def clean_project(project: Place, console: Console) -> Cleaned:
    """`llmt clean`: remove, and say what was kept and why."""
    done = clean(project)
    folders = ", ".join(f"{_rel(project, f)}/" for f in clean_targets(project))
    if console.json_output:
        console.json({"removed_files": done.removed, "kept": done.kept})
        return done
    console.info(f"Removed {done.removed} file(s) from {folders}" + (":" if done.kept else "."))
    for path, why in done.kept.items():
        console.info(f"  kept {path}: {why}")
    return done


def clean(project: Place) -> Cleaned:
    folders = clean_targets(project)
    keep = {p: why for p, why in _needed(project).items() if any(f in p.parents for f in folders)}
    done = Cleaned(kept={_rel(project, p): why for p, why in sorted(keep.items())})
    for folder in folders:
        if not folder.is_dir():
            continue
        if not any(folder in p.parents for p in keep):
            done.removed += sum(len(files) for _, _, files in os.walk(folder))
            shutil.rmtree(folder)
            continue
        for root, dirs, files in os.walk(folder, topdown=False):
            for name in files:
                path = Path(root) / name
                if path not in keep and not any(k in path.parents for k in keep):
                    path.unlink()
                    done.removed += 1
            for name in dirs:
                with_kept = Path(root) / name
                if not any(with_kept.iterdir()):
                    with_kept.rmdir()
    return done


def _needed(project: Place) -> dict[Path, str]:
    """Files (or folders) under the project to keep, and why."""
    keep: dict[Path, str] = {}
    batches = project.target_dir.resolve() / "batches"
    fake_open = 0
    for name, target in project.config.targets.items():
        config = target.warehouse
        if config.type == "duckdb":
            database = None if config.path == ":memory:" else (project.dir / config.path).resolve()
            if database is not None:
                for file in (database, database.with_name(database.name + ".wal")):
                    if file.exists():
                        keep[file] = f"the warehouse of target `{name}`"
                if not database.is_file():
                    continue  # nothing was run on this target
        elif not (batches / name).is_dir():
            continue  # a server's state: none of its batch files is here (no need to reach the server)
        try:
            shards = _open_shards(project, name)
        except LlmtError as exc:
            folder = batches / name
            if folder.is_dir():
                keep[folder] = (f"the batches of target `{name}`: its state could not be read "
                                f"({exc.message.splitlines()[0]}), so which are open is not known")
            continue
        for shard_id, node, provider in shards:
            fake_open += provider == "fake"
            for file in (batches / name).rglob(f"{shard_id}.*"):
                keep[file] = f"open batch of `{node}` (target `{name}`): the next `llmt run` collects it"
    remote = project.target_dir.resolve() / FAKE_REMOTE
    if fake_open and remote.is_dir():
        keep[remote] = f"the fake provider's batches: {fake_open} of them are open"
    return keep


def _open_shards(project: Place, target: str) -> list[tuple[str, str, str]]:
    """(shard id, model, provider) of every open shard of ``target``, read without waiting for its lock."""
    from llmt.warehouse import open_warehouse
    from llmt.warehouse.store import StateStore

    config = project.config.targets[target].warehouse.model_copy(update={"lock_timeout": 0})
    wh = open_warehouse(config, project.dir, read_only=True)
    try:
        return StateStore(wh).open_files()
    finally:
        wh.close()


def _rel(project: Place, path: Path) -> str:
    try:
        return path.relative_to(project.dir).as_posix()
    except ValueError:
        return str(path)
