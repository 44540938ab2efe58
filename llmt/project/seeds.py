"""Seeds (dbt's): the CSV files under `seeds/` (`seed-paths`), each loaded by `llmt seed` into a table named after
it (seeding.py) that models read with `ref('name')`. Config, highest first: `config:` of the seed in a properties
file (`seeds:` in models/*.yml or seeds/*.yml), folder `+key` under `seeds:` in project.yml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmt.compile import relation
from llmt.errors import ConfigError, did_you_mean
from llmt.project.config import PERSIST_DOCS_KEYS, ProjectConfig, folder_config, schema_name
from llmt.project.properties import ColumnProps, SeedProps

# dbt's seed config that maps onto DuckDB's CSV reader, and where a seed goes
SEED_CONFIG_KEYS = ("column_types", "delimiter", "quote_columns", "schema", "enabled", "tags", "persist_docs")


@dataclass
class Seed:
    name: str  # the file's name without .csv
    path: Path
    rel_path: str
    config: dict[str, Any]
    schema: str  # the database schema its table is in
    props: SeedProps | None = None
    where: str = ""  # its properties' file:line, or its file

    @property
    def relation(self) -> str:
        return relation(self.schema, self.name)

    @property
    def tags(self) -> list[str]:
        tags = self.config.get("tags", [])
        return [tags] if isinstance(tags, str) else list(tags)

    @property
    def description(self) -> str:
        return self.props.description if self.props else ""

    @property
    def columns(self) -> list[ColumnProps]:
        return self.props.columns if self.props else []

    def reader_options(self) -> dict[str, Any]:
        """DuckDB's read_csv options of its config: dbt's `delimiter` (`,` by default, as in dbt) and
        `column_types` (the other columns' types are detected); `quote_columns` changes nothing on DuckDB, which
        keeps column names as written either way."""
        options: dict[str, Any] = {"delim": self.config.get("delimiter", ",")}
        if self.config.get("column_types"):
            options["types"] = dict(self.config["column_types"])
        return options


def discover_seeds(project_dir: Path, config: ProjectConfig, target_schema: str,
                   props: list[tuple[str, SeedProps]]) -> dict[str, Seed]:
    """Every enabled seed of the project, with its config (``props``: (where, properties) of each `seeds:`
    entry of the properties files)."""
    found: dict[str, Seed] = {}
    for folder in config.seed_paths:
        for file in sorted((project_dir / folder).rglob("*.csv")):
            rel = file.relative_to(project_dir).as_posix()
            if file.stem in found:
                raise ConfigError(f"two seeds are named `{file.stem}`: {found[file.stem].rel_path} and {rel}",
                                  hint="Seed names are file names and must be unique; rename one.")
            folders = list(Path(rel).parent.parts[1:])
            defaults = folder_config(config.seeds, config.name, folders)
            found[file.stem] = Seed(file.stem, file, rel, check_seed_config(defaults, "project.yml (seeds:)"), "",
                                    where=rel)
    for where, seed_props in props:
        seed = found.get(seed_props.name)
        if seed is None:
            raise ConfigError(f"properties for unknown seed `{seed_props.name}`.{did_you_mean(seed_props.name, found)}",
                              where=where, hint="Seeds are the .csv files under seeds/; fix the name or remove the "
                              "entry.")
        seed.props, seed.where = seed_props, where
        seed.config = {**seed.config, **check_seed_config(seed_props.config, where)}
    for seed in found.values():
        seed.schema = schema_name(target_schema, seed.config.get("schema"))
    return {name: seed for name, seed in found.items() if seed.config.get("enabled", True) is not False}


def check_seed_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    """Reject unknown keys and wrong values in a seed's config."""
    for key, value in config.items():
        if key not in SEED_CONFIG_KEYS:
            raise ConfigError(f"unknown seed config key `{key}`.{did_you_mean(key, SEED_CONFIG_KEYS)}", where=where,
                              hint=f"Seed config keys: {', '.join(SEED_CONFIG_KEYS)}.")
        if key == "column_types" and not (isinstance(value, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
            raise ConfigError(f"`column_types` must map column names to SQL types, got {value!r}", where=where,
                              hint="Example: column_types: {country_code: VARCHAR, population: BIGINT}.")
        if key == "delimiter" and not (isinstance(value, str) and value):
            raise ConfigError(f"`delimiter` must be a character, got {value!r}", where=where,
                              hint="Example: delimiter: ';'.")
        if key in ("quote_columns", "enabled") and not isinstance(value, bool):
            raise ConfigError(f"`{key}` must be true or false, got {value!r}", where=where)
        if key == "schema" and not (isinstance(value, str) and value.strip()):
            raise ConfigError(f"`schema` must be the name of a database schema, got {value!r}", where=where)
        if key == "persist_docs" and not (isinstance(value, dict) and set(value) <= set(PERSIST_DOCS_KEYS)):
            raise ConfigError(f"`persist_docs` must map `relation` and `columns` to true or false, got {value!r}",
                              where=where)
    return config
