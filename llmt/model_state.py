"""State-aware runs: a view or table is built again only when something it reads changed since it was built
(as SQLMesh and dbt's state-aware orchestration skip by fingerprint).

A model's fingerprint covers its compiled SQL (so every var, env_var() and macro it renders with), the config
that shapes its build, where it is built, and the *version* of everything it reads:

- a model's version is recorded when it is built, in the same transaction: a view's or table's is its
  fingerprint; an incremental model's changes whenever a build changed its rows (a full build, or an
  increment with rows) and is kept when the increment was empty; an LLM or embedding model's is the fingerprint
  of what its output table was built from (warehouse/outputs.py), written with that table;
- a file source's is the hash of its files' content, taken when they are loaded (file_sources.py; they are
  loaded again when their size or time stamp changed);
- a source llmt did not build (a table of the warehouse) is signed once per run by `content_signature`: its
  row count and an order-independent hash of every row (one scan of it), or, when the source names dbt's
  `loaded_at_field`, its row count and that column's largest value (cheap, but an update that does not set
  the column is not seen).

A view or table is skipped when its fingerprint is the one recorded at its last build and its relation is
still there; a model reading something whose version is not known (never built, or built by an older llmt) is
built. Incremental models are never skipped: their select reads their own table (`this`), so only running it
tells whether it adds rows. `--full-refresh` and `state: always` in a model's config build it every time (the
latter for SQL that is not a function of what it reads: now(), random()); an `always` model's version is new
at each build, so what reads it is built too. llmt trusts that it alone writes its models' relations, as dbt
does: a table changed behind its back is not seen.

The same fingerprint, of what an LLM or embedding model's select reads, lets its run skip staging (re-reading and
re-hashing every input row) when it equals the one its inputs were staged with (warehouse/staging.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from llmt.compile import Source
from llmt.errors import ConfigError, NodeError
from llmt.file_sources import load_file_sources
from llmt.materialize import materialize_sql
from llmt.persist_docs import node_docs, persist_docs
from llmt.project import Node, Project
from llmt.warehouse.base import DatabaseError, Warehouse
from llmt.warehouse.store import StateStore

FINGERPRINT_VERSION = 1  # bump when what a fingerprint covers changes: every view and table is then built again
# config keys that change nothing in what a build writes (descriptions are written apart: see `docs`)
NOT_BUILT = frozenset({"description", "tags", "persist_docs", "schema_tests", "enabled", "state"})
SKIPPABLE = ("view", "table")


def _hash(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class ModelState:
    """What one run knows of the models' last builds; decides which views and tables it can skip."""

    def __init__(self, wh: Warehouse, store: StateStore, project: Project, run_id: str, full_refresh: bool) -> None:
        self.wh, self.store, self.project, self.run_id = wh, store, project, run_id
        self.full_refresh = full_refresh
        self._models = store.fingerprints("model")  # one query; updated as this run builds
        self._relations: dict[tuple[str, str], str] | None = None  # read when first needed
        self._signatures: dict[tuple[str, str], str | None] = {}  # of the sources llmt did not build, this run
        self._loaded: set[tuple[str, str]] = set()  # the file sources checked (and loaded when changed) this run

    def load_sources(self, node: Node) -> None:
        """Load the file sources ``node`` reads whose files changed (each once per run: a run reads one state
        of its sources)."""
        keys = set(node.sources) - self._loaded
        load_file_sources(self.wh, self.store, self.project, keys)
        self._loaded |= keys

    # -- building -----------------------------------------------------------------------------------
    def plan(self, node: Node) -> Build:
        """What building SQL model ``node`` takes (`build`; or `Build.run` elsewhere, then `record`), or that it
        is unchanged since its last build (its descriptions are then written here when they changed)."""
        self._check_seeds(node)
        stored = self._models.get(node.name, {})
        fingerprint = self.fingerprint(node)
        docs = _hash(node_docs(node))
        if (not self.full_refresh and node.materialized in SKIPPABLE and fingerprint is not None
                and stored.get("build") == fingerprint and self._exists(node)):
            if stored.get("docs") != docs:
                with self.wh.transaction():
                    persist_docs(self.wh, node.schema, node.name, node_docs(node))
                    self._record(node, {**stored, "docs": docs})
            rows = stored.get("rows")
            return Build(self.project, node, stored, fingerprint, docs, None, self.full_refresh, unchanged=True,
                         rows=int(rows) if isinstance(rows, int) else None)
        return Build(self.project, node, stored, fingerprint, docs, self._kind(node), self.full_refresh)

    def build(self, build: Build) -> int | None:
        """Build a model that `plan` found changed, and record its fingerprint in the same transaction: its
        rows (tables)."""
        with self.wh.transaction():
            rows = build.run(self.wh)
            self.record(build, rows)
        return rows

    def before_elsewhere(self, build: Build) -> None:
        """Before ``build`` runs on another connection (whose commit comes before `record`): its schema made here
        (two builds making one schema at once would collide), and an incremental model's version forgotten, so
        that a crash before `record` leaves it unknown (what reads it is then built again) rather than the
        version of the rows it had before."""
        if build.kind is None:
            self.wh.create_schema(build.node.schema)
        if build.node.materialized == "incremental" and build.stored.get("version"):
            self._record(build.node, {**build.stored, "version": None})

    def record(self, build: Build, rows: int | None) -> None:
        """The fingerprint and version of a model ``build`` just built (``rows``: what its build returned)."""
        node, stored = build.node, build.stored
        if build.incremental and not rows and stored.get("version"):
            version = stored["version"]  # an empty increment changed no row
        elif build.fingerprint is not None:
            version = build.fingerprint
        else:  # rows that only this build has
            version = _hash([self.run_id, node.name])
        value = {"build": build.fingerprint, "version": version, "docs": build.docs,
                 "rows": rows if node.materialized != "incremental" else None}
        if value != self._models.get(node.name, {}):
            self._record(node, value)

    def staging(self, node: Node) -> str | None:
        """The fingerprint of what LLM or embedding model ``node``'s select reads, when its staging may be skipped
        while that stays the same (not with --full-refresh or `state: always`)."""
        self._check_seeds(node)
        return None if self.full_refresh else self.fingerprint(node)

    # -- fingerprints -------------------------------------------------------------------------------
    def fingerprint(self, node: Node) -> str | None:
        """What a build of ``node`` depends on; None when that does not decide whether to build it (`state:
        always`, an incremental model, something it reads whose version is not known)."""
        if self._always(node) or node.materialized == "incremental":
            return None
        parts: list[Any] = [FINGERPRINT_VERSION, node.materialized, node.schema, node.compiled_sql,
                            {k: v for k, v in node.config.items() if k not in NOT_BUILT}]
        for name in sorted(set(node.refs)):
            version = self.version(name)
            if version is None:
                return None
            parts.append(["ref", name, version])
        for key in sorted(set(node.sources)):
            version = self._source_version(key)
            if version is None:
                return None
            parts.append(["source", *key, version])
        for name in sorted(set(node.seeds)):
            loaded = self.store.fingerprint("seed", name)  # (a seed loaded by another tool has none)
            if loaded is None or not loaded.get("content"):
                return None
            parts.append(["seed", name, self.project.seeds[name].schema, loaded["content"]])
        return _hash(parts)

    def version(self, name: str) -> str | None:
        """The version of model ``name`` as its last build left it (None when not known)."""
        node = self.project.nodes[name]
        if node.sends:  # an LLM or embedding model's; read now: it may have been built earlier in this run
            output = (self.store.fingerprint("stage", name) or {}).get("output")
            return f"llm:{output}" if output else None
        version = self._models.get(name, {}).get("version")
        return str(version) if version else None

    def _source_version(self, key: tuple[str, str]) -> str | None:
        source = self.project.sources[key]
        if source.files:  # loaded by llmt before the models that read it run
            loaded = self.store.fingerprint("source", source.loaded_table[1])
            return None if loaded is None else str(loaded.get("content") or _hash(loaded))
        if key not in self._signatures:
            self._signatures[key] = self._signature(source)
        return self._signatures[key]

    def _signature(self, source: Source) -> str | None:
        """The content signature of a source llmt did not build; None when it cannot be read (the build of the
        model that reads it says why)."""
        try:
            return self.wh.content_signature(source.sql(), source.loaded_at_field)
        except DatabaseError:
            if source.loaded_at_field is None:
                return None
        try:
            self.wh.describe(f"SELECT * FROM {source.sql()}")
        except DatabaseError:
            return None
        raise ConfigError(f"`loaded_at_field: {source.loaded_at_field}` of source `{source.source_name}."
                          f"{source.table_name}` is not a column of {source.sql()}", where=source.where,
                          hint="Name a column that every load of the table sets (its load time), or remove the key: "
                          "the table is then signed by a hash of all its rows.")

    # -- helpers ------------------------------------------------------------------------------------
    def _always(self, node: Node) -> bool:
        return node.config.get("state") == "always"

    def _check_seeds(self, node: Node) -> None:
        """A model reading a seed that was never loaded fails saying so (`llmt run` does not load seeds)."""
        for name in node.seeds:
            seed = self.project.seeds[name]
            if self._kind_of(seed.schema, name) != "table":
                raise NodeError(f"`{node.name}` reads seed `{name}` ({seed.rel_path}), which is not loaded",
                                where=node.rel_path, hint="Run `llmt seed` (or `llmt build`, which loads seeds "
                                "first); `llmt run` does not load seeds, as in dbt.")

    def _kind(self, node: Node) -> str | None:
        return self._kind_of(node.schema, node.name)

    def _kind_of(self, schema: str, name: str) -> str | None:
        if self._relations is None:
            project = self.project
            schemas = sorted({n.schema for n in project.nodes.values()} | {s.schema for s in project.seeds.values()})
            self._relations = self.wh.relation_kinds(schemas)
        return self._relations.get((schema, name))

    def _exists(self, node: Node) -> bool:
        return self._kind(node) == node.materialized

    def _record(self, node: Node, value: dict[str, Any]) -> None:
        self.store.set_fingerprint("model", node.name, value)
        self._models[node.name] = value


@dataclass
class Build:
    """One SQL model's build, as `ModelState.plan` found it: what it was at its last build (``stored``), what it
    is now (``fingerprint``, ``docs``), and its relation's kind now."""

    project: Project
    node: Node
    stored: dict[str, Any]
    fingerprint: str | None
    docs: str
    kind: str | None
    full_refresh: bool
    unchanged: bool = False  # nothing it reads changed: not built again
    rows: int | None = None  # of its last build, when unchanged

    @property
    def incremental(self) -> bool:
        """An increment to an existing table (not a full build)."""
        return self.node.materialized == "incremental" and not self.full_refresh and self.kind == "table"

    def run(self, wh: Warehouse) -> int | None:
        """Build the model on ``wh`` (in the caller's transaction): its rows (tables). An incremental model's table
        keeps its comments unless they changed."""
        return materialize_sql(wh, self.project, self.node, self.full_refresh, self.kind,
                               docs=not self.incremental or self.stored.get("docs") != self.docs)
