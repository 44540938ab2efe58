"""`llmt docs generate` (target/manifest.json, catalog.json and index.html) and `llmt docs serve` (serve.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from llmt import logs
from llmt.artifacts import write_json, write_manifest
from llmt.console import Console
from llmt.docs.catalog import read_catalog
from llmt.docs.page import Page, Tested, render
from llmt.pipeline.spec import LlmSpec, build_spec
from llmt.project import Project
from llmt.warehouse import open_warehouse

INDEX = "index.html"
CATALOG = "catalog.json"


@dataclass(frozen=True)
class Generated:
    index: Path
    catalog: Path
    models: int
    built: int  # models whose relation exists on the target


def generate_docs(project: Project, console: Console) -> Generated:
    """Write the manifest, the catalog (read from the target's warehouse, read-only) and the page."""
    specs: dict[str, LlmSpec] = {n: build_spec(project, node) for n, node in project.nodes.items() if node.is_llm}
    write_manifest(project, specs)
    config = project.target.warehouse
    built = config.exists(project.dir)
    with logs.step("read the catalog"):
        wh = open_warehouse(config, project.dir, console, read_only=True, target=project.target_name) if built else None
        try:
            catalog = read_catalog(project, wh)
        finally:
            if wh is not None:
                wh.close()
    generated_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    index, catalog_path = project.target_dir / INDEX, project.target_dir / CATALOG
    write_json(catalog_path, catalog.as_dict(logs.invocation_id()))
    html = render(Page(project, specs, catalog, _tests(project), generated_at))
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(html, encoding="utf-8")
    done = Generated(index, catalog_path, len(project.nodes), len(catalog.nodes))
    if console.json_output:
        console.json({"index": str(index), "catalog": str(catalog_path), "models": done.models, "built": done.built,
                      "target": project.target_name})
        return done
    if not built:
        console.warn(f"nothing is built on target `{project.target_name}` yet: the page shows the project without "
                     "column types or row counts (`llmt run`, then `llmt docs generate` again)")
    console.info(f"Wrote {index} and {catalog_path}: {done.models} model(s), {done.built} built on target "
                 f"`{project.target_name}`. Open it in a browser, or `llmt docs serve`.")
    return done


def _tests(project: Project) -> dict[str, Tested]:
    """Each model's and source's tests (data, schema-derived, singular, unit), by unique id."""
    from llmt.testing.collect import collect_tests
    from llmt.testing.unit import collect_unit_tests

    out: dict[str, Tested] = {}
    for test in collect_tests(project):
        if test.attached.startswith(("source:", "seed:")):
            owners = [test.attached.replace(":", ".", 1)]
        else:
            owners = [f"model.{m}" for m in (test.depends_on if test.kind == "singular" else [test.attached])]
        for owner in owners:
            tested = out.setdefault(owner, Tested())
            column = test.column.strip('"').replace('""', '"') if test.column else None
            (tested.columns.setdefault(column, []) if column else tested.whole).append((test.name, test.kind))
    for unit in collect_unit_tests(project):
        out.setdefault(f"model.{unit.node.name}", Tested()).whole.append((unit.name, "unit"))
    return out
