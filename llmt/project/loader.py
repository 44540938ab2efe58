"""Discover and compile a project's nodes. Config precedence (highest first): in-file config(),
properties files (models/*.yml), folder `+key` config in project.yml, project defaults."""

from __future__ import annotations

import glob
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmt.compile import (
    Captured,
    ParseCache,
    Source,
    SqlContext,
    check_sql,
    relation,
    render_model_sql,
)
from llmt.errors import CompileError, ConfigError, did_you_mean
from llmt.graph import Graph, GraphNode
from llmt.macros import Macros, load_macros
from llmt.project.config import ProjectConfig, TargetConfig, check_node_config, folder_config, schema_name
from llmt.project.properties import ColumnProps, ModelProps, PropertiesFile
from llmt.project.seeds import Seed, discover_seeds
from llmt.project.yamlfile import line_of, read_yaml, validate
from llmt.textfile import read_text
from llmt.warehouse import dialect
from llmt.warehouse.files import file_reader, reader_parameters

PARSE_CACHE = "parse_cache.bin"  # in target/: see ParseCache


@dataclass
class Node:
    name: str
    path: Path
    rel_path: str
    raw_sql: str
    config: dict[str, Any]
    relation: str
    compiled_sql: str = ""
    refs: list[str] = field(default_factory=list)  # the models it reads
    sources: list[tuple[str, str]] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)  # the seeds it reads (with ref(), as in dbt)
    description: str = ""
    columns: list[ColumnProps] = field(default_factory=list)
    props: ModelProps | None = None
    schema: str = ""  # the database schema it is built in (its config's `schema`: schema_name)
    selected: list[str] | None = None  # an LLM model's select's columns, when sqlglot can tell them

    @property
    def materialized(self) -> str:
        return str(self.config.get("materialized", "view"))

    @property
    def tags(self) -> list[str]:
        tags = self.config.get("tags", [])
        return [tags] if isinstance(tags, str) else list(tags)

    @property
    def unique_key(self) -> list[str]:
        key = self.config.get("unique_key")
        if key is None:
            return []
        return [key] if isinstance(key, str) else list(key)

    @property
    def is_llm(self) -> bool:
        return self.materialized == "llm"

    @property
    def is_embedding(self) -> bool:
        return self.materialized == "embedding"

    @property
    def sends(self) -> bool:
        """Whether its rows are sent to a provider (an LLM or an embedding model): its table shows answers."""
        return self.is_llm or self.is_embedding


@dataclass
class Project:
    dir: Path
    config: ProjectConfig
    target_name: str
    target: TargetConfig
    vars: dict[str, Any]
    nodes: dict[str, Node]
    sources: dict[tuple[str, str], Source]
    graph: Graph
    properties: list[tuple[Path, PropertiesFile]] = field(default_factory=list)  # every models/*.yml, parsed
    parse_cache: ParseCache = field(default_factory=ParseCache)
    seeds: dict[str, Seed] = field(default_factory=dict)
    macros: Macros = field(default_factory=Macros)  # macros/*.sql
    cli_vars: dict[str, Any] = field(default_factory=dict)  # what --vars gave (`vars` has them merged)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def target_dir(self) -> Path:
        return self.dir / "target"

    @property
    def schema(self) -> str:
        return self.target.warehouse.schema_

    @property
    def dialect(self) -> str:
        """The SQL dialect of the target's engine (sqlglot's name): models are written in it."""
        return dialect(self.target.warehouse.type)

    def relations(self) -> dict[str, str]:
        """What ref() gives for each name: a model's or a seed's relation."""
        seeds = {s.name: s.relation for s in self.seeds.values()}
        return {**seeds, **{n.name: n.relation for n in self.nodes.values()}}

    def sql_context(self, node: Node, incremental: bool = False) -> SqlContext:
        return SqlContext(
            node_names=self.relations(),
            sources=self.sources,
            vars=self.vars,
            this=node.relation,
            incremental=incremental,
            macros=self.macros,
            engine=self.target.warehouse.type,
        )

    def render(self, node: Node, incremental: bool) -> str:
        """The node's SQL for a run (is_incremental() depends on the warehouse)."""
        if not incremental:
            return node.compiled_sql
        return render_model_sql(node.raw_sql, node.rel_path, self.sql_context(node, True), Captured(),
                                self.parse_cache)


def load_project(
    project_dir: Path, target: str | None = None, cli_vars: dict[str, Any] | None = None
) -> Project:
    project_dir = project_dir.resolve()
    path = project_dir / "project.yml"
    if not path.is_file():
        raise ConfigError(
            f"no project.yml in {project_dir}",
            hint="Run llmt from a project directory, pass --project-dir, or create one with `llmt init NAME`.",
        )
    config = validate(ProjectConfig, read_yaml(path), path)
    target_name = target or config.target or next(iter(config.targets), "dev")
    if target_name not in config.targets:
        raise ConfigError(
            f"target `{target_name}` is not defined.{did_you_mean(target_name, config.targets)}",
            where=f"{path}",
            hint=f"Targets: {', '.join(config.targets) or 'none'}.",
        )
    warehouse = config.targets[target_name].warehouse
    schema = warehouse.schema_
    props, sources, prop_files = _load_properties(project_dir, config, warehouse.state_schema)
    files = _discover_models(project_dir, config)
    seeds = discover_seeds(project_dir, config, schema, [
        (_where(path, ["seeds", i]), seed) for path, parsed in prop_files for i, seed in enumerate(parsed.seeds)])
    clash = sorted(seeds.keys() & files.keys())
    if clash:
        raise ConfigError(f"a seed and a model are both named `{clash[0]}`: {seeds[clash[0]].rel_path} and "
                          f"{files[clash[0]][1]}", hint="ref() names one of them: rename the seed or the model file.")
    nodes: dict[str, Node] = {}
    for name, (file, rel) in files.items():
        nodes[name] = Node(name, file, rel, read_text(file), {}, relation(schema, name), schema=schema)
    project = Project(
        project_dir, config, target_name, config.targets[target_name],
        {**config.vars, **(cli_vars or {})}, nodes, sources, Graph([]), prop_files,
        ParseCache(project_dir / "target" / PARSE_CACHE), seeds,
    )
    project.macros = load_macros(project_dir, config.macro_paths, project.parse_cache)
    project.cli_vars = dict(cli_vars or {})
    for prop_path, index, model_props in props:
        if model_props.name not in nodes:
            raise ConfigError(
                f"properties for unknown model `{model_props.name}`.{did_you_mean(model_props.name, nodes)}",
                where=_where(prop_path, ["models", index, "name"]),
                hint="Fix the name or remove the entry.",
            )
        node = nodes[model_props.name]
        node.props, node.description, node.columns = model_props, model_props.description, model_props.columns
        check_node_config(model_props.config, _where(prop_path, ["models", index, "config"]))
    for node in nodes.values():  # the schema its folder or properties give (its own config() may change it)
        _place(node, schema, _outer_config(project, node).get("schema"))
    context = SqlContext(project.relations(), sources, project.vars, "", macros=project.macros,
                         engine=warehouse.type)
    for node in list(nodes.values()):
        _compile_node(project, node, replace(context, this=node.relation))
        if node.config.get("enabled", True) is False:
            del nodes[node.name]
    moved = [n for n in nodes.values() if _place(n, schema, n.config.get("schema"))]
    if moved:  # a model's config() named its schema: the models that ref it are compiled with its relation
        context = SqlContext(project.relations(), sources, project.vars, "", macros=project.macros,
                             engine=warehouse.type)
        for node in nodes.values():
            _compile_node(project, node, replace(context, this=node.relation))
    project.parse_cache.save()
    project.graph = Graph(
        GraphNode(n.name, n.rel_path, tuple(n.tags), tuple(dict.fromkeys(n.refs))) for n in nodes.values()
    )
    return project


def _compile_node(project: Project, node: Node, context: SqlContext) -> None:
    captured = Captured()
    node.compiled_sql = render_model_sql(node.raw_sql, node.rel_path, context, captured, project.parse_cache)
    check_node_config(captured.config, node.rel_path)
    node.config = {**_outer_config(project, node), **captured.config}
    node.refs = [r for r in captured.refs if r not in project.seeds]
    node.seeds = [r for r in captured.refs if r in project.seeds]
    node.sources = captured.sources
    check_sql(node.compiled_sql, node.rel_path, node.raw_sql, project.dialect, project.parse_cache)
    if node.is_llm:
        _check_schema_key(project, node)
        node.selected = project.parse_cache.select_columns(node.compiled_sql, project.dialect)


def _outer_config(project: Project, node: Node) -> dict[str, Any]:
    """A model's config from its folder (`+key` in project.yml) and its properties, the latter winning."""
    defaults = folder_config(project.config.models, project.name, list(Path(node.rel_path).parent.parts[1:]))
    check_node_config(defaults, "project.yml (models:)")
    props = {**({"tags": node.props.tags} if node.props.tags else {}), **node.props.config} if node.props else {}
    return {**defaults, **props}


def _place(node: Node, target_schema: str, custom: Any) -> bool:
    """Put ``node`` in the schema its config names (``custom``); True when that moved it."""
    schema = schema_name(target_schema, custom)
    moved, node.schema, node.relation = schema != node.schema, schema, relation(schema, node.name)
    return moved


def _check_schema_key(project: Project, node: Node) -> None:
    """`schema` was the name of an LLM model's answer schema before it meant the database schema (dbt's): a
    project that still names a JSON schema with it gets an error saying which key to use."""
    value = node.config.get("schema")
    if value is None or "output_schema" in node.config:
        return
    found = [f"schemas/{value}{ext}" for ext in (".json", ".yml", ".yaml") if (project.dir / "schemas" /
                                                                            f"{value}{ext}").is_file()]
    if found:
        raise ConfigError(
            f"`schema` is the database schema a model is built in, and `{node.name}` sets it to `{value}`, the name "
            f"of its answer's JSON schema ({found[0]})", where=node.rel_path,
            hint=f"Name the answer's JSON schema with output_schema='{value}' in config() (`output_schema:` in "
            "models/*.yml, `+output_schema:` in project.yml); keep `schema` only for a database schema "
            f"(`{project.schema}_<schema>`).",
        )


def _discover_models(project_dir: Path, config: ProjectConfig) -> dict[str, tuple[Path, str]]:
    found: dict[str, tuple[Path, str]] = {}
    for folder in config.model_paths:
        for file in sorted((project_dir / folder).rglob("*.sql")):
            rel = file.relative_to(project_dir).as_posix()
            if file.stem in found:
                raise ConfigError(
                    f"two models are named `{file.stem}`: {found[file.stem][1]} and {rel}",
                    hint="Model names are file names and must be unique; rename one.",
                )
            found[file.stem] = (file, rel)
    return found


def _where(path: Path, loc: list[str | int]) -> str:
    line = line_of(path, loc)
    return f"{path}:{line}" if line else str(path)


def _source_files(project_dir: Path, name: str, pattern: str | None, where: str) -> tuple[Path, ...]:
    """The files a source's `file:` (a path or a glob, relative to the project directory) names: at least one."""
    if pattern is None:
        return ()
    full = project_dir / pattern
    if not glob.has_magic(pattern):
        if not full.is_file():
            raise ConfigError(f"source `{name}` points at a missing file {pattern}", where=where,
                              hint="Fix `file:` (paths are relative to the project directory).")
        return (full.resolve(),)
    found = tuple(sorted(Path(p).resolve() for p in glob.glob(str(full), recursive=True) if Path(p).is_file()))
    if not found:
        raise ConfigError(f"source `{name}`: `file: {pattern}` matches no file", where=where,
                          hint="Fix the pattern (relative to the project directory; `*` within a folder, `**` "
                          "across folders) or add the files.")
    return found


def _check_options(pattern: str | None, options: dict[str, Any], path: Path, loc: list[str | int]) -> None:
    """Reader options are handed to DuckDB's reader of the file's format: a key it does not take is an error here,
    not when the source is read."""
    if pattern is None:
        raise ConfigError("`options:` are for file sources (they are handed to DuckDB's file reader)",
                          where=_where(path, loc), hint="Remove them, or read a file with `file:`.")
    reader = file_reader(pattern)
    known = reader_parameters(reader)
    for key in options:
        if key not in known:
            raise ConfigError(
                f"`{key}` is not an option of DuckDB's {reader}.{did_you_mean(key, known)}",
                where=_where(path, [*loc, key]), hint=f"Options of {reader}: {', '.join(known)}.",
            )


def _load_properties(
    project_dir: Path, config: ProjectConfig, state_schema: str,
) -> tuple[list[tuple[Path, int, ModelProps]], dict[tuple[str, str], Source], list[tuple[Path, PropertiesFile]]]:
    models: list[tuple[Path, int, ModelProps]] = []
    sources: dict[tuple[str, str], Source] = {}
    parsed_files: list[tuple[Path, PropertiesFile]] = []
    folders = dict.fromkeys([*config.model_paths, *config.seed_paths])  # seeds' properties may be beside them
    for folder in folders:
        files = sorted([*(project_dir / folder).rglob("*.yml"), *(project_dir / folder).rglob("*.yaml")])
        for path in files:
            data = read_yaml(path)
            if data is None:
                continue
            if not isinstance(data, dict):
                raise ConfigError("a properties file must be a YAML mapping", where=str(path))
            parsed = validate(PropertiesFile, data, path)
            parsed_files.append((path, parsed))
            models.extend((path, i, m) for i, m in enumerate(parsed.models))
            for i, src in enumerate(parsed.sources):
                for j, table in enumerate(src.tables):
                    where = _where(path, ["sources", i, "tables", j])
                    key = (src.name, table.name)
                    if key in sources:
                        raise CompileError(f"source `{src.name}.{table.name}` is declared twice", where=where)
                    matched = _source_files(project_dir, f"{src.name}.{table.name}", table.file, where)
                    if table.options:
                        _check_options(table.file, table.options, path, ["sources", i, "tables", j, "options"])
                    sources[key] = Source(src.name, table.name, where, src.schema_, table.identifier, table.file,
                                          matched, table.options, state_schema,
                                          table.loaded_at_field or src.loaded_at_field)
    return models, sources, parsed_files
