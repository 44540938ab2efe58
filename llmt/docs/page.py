"""target/index.html: one static page, everything inlined (styles, script, the lineage SVG), nothing fetched. A
list of every model and source, the lineage graph, and a card per node (shown when its node or its list entry is
clicked, or named in the URL's #fragment): description, columns with types, tests, what it reads and what reads
it, compiled SQL, and for LLM models the prompt, output schema, model and mode, rows answered, failed share, cost
to date and last run. Every text from the project is escaped."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from importlib import resources
from typing import Any

from llmt.docs.catalog import Catalog, LlmState, Relation
from llmt.docs.lineage import layout, svg
from llmt.pipeline.spec import LlmSpec, escalation_spec
from llmt.project import Project
from llmt.project.properties import ColumnProps


@dataclass
class Tested:
    """The tests of one model or source: on a column, or on the whole."""

    columns: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # column -> (name, kind) of each
    whole: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Page:
    project: Project
    specs: dict[str, LlmSpec]
    catalog: Catalog
    tests: dict[str, Tested]  # by unique id
    generated_at: str


def render(page: Page) -> str:
    project = page.project
    parents: dict[str, list[str]] = {}
    labels: dict[str, tuple[str, str]] = {}
    for (source, table) in sorted(project.sources):
        labels[f"source.{source}.{table}"] = (f"{source}.{table}", "source")
    for seed in sorted(project.seeds):
        labels[f"seed.{seed}"] = (seed, "seed")
    for name in project.graph.order():
        node = project.nodes[name]
        uid = f"model.{name}"
        labels[uid] = (name, node.materialized)
        parents[uid] = [*(f"source.{s}.{t}" for s, t in dict.fromkeys(node.sources)),
                        *(f"seed.{r}" for r in dict.fromkeys(node.seeds)),
                        *(f"model.{r}" for r in dict.fromkeys(node.refs))]
    graph = svg(layout(list(labels), parents), parents, labels)
    children: dict[str, list[str]] = {uid: [] for uid in labels}
    for uid, ups in parents.items():
        for up in ups:
            children[up].append(uid)
    cards = [_source_card(page, uid, children[uid]) for uid in labels if uid.startswith("source.")]
    cards += [_seed_card(page, uid, children[uid]) for uid in labels if uid.startswith("seed.")]
    cards += [_model_card(page, name, parents[f"model.{name}"], children[f"model.{name}"])
              for name in project.graph.order()]
    listing = "".join(f'<li><a href="#{escape(uid)}" data-id="{escape(uid)}"><span class="dot kind-{escape(kind)}">'
                      f'</span>{escape(name)}</a></li>' for uid, (name, kind) in labels.items())
    assets = resources.files("llmt.docs")
    llm = sum(1 for n in project.nodes.values() if n.is_llm)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(project.name)} · llmt docs</title>
<style>{assets.joinpath("page.css").read_text(encoding="utf-8")}</style></head>
<body>
<header class="top"><h1>{escape(project.name)}</h1><span>llmt docs · target <b>{escape(project.target_name)}</b> ·
{len(project.nodes)} models ({llm} LLM) · {len(project.sources)} sources · generated {escape(page.generated_at)}</span>
</header>
<main>
<nav id="list"><input id="filter" type="search" placeholder="Filter models and sources" aria-label="Filter">
<ul>{listing}</ul></nav>
<div id="content">
<section id="lineage"><h2>Lineage</h2><p class="help">Click a node (or press Enter on it) to see its card.</p>
<div class="graph">{graph}</div></section>
<section id="cards"><p id="none" class="help">No model selected.</p>{"".join(cards)}</section>
</div></main>
<script>{assets.joinpath("page.js").read_text(encoding="utf-8")}</script>
</body></html>
"""


def _card(uid: str, title: str, kind: str, body: list[str]) -> str:
    return (f'<article class="card" id="card-{escape(uid)}" data-id="{escape(uid)}" hidden>'
            f'<header><h2>{escape(title)}</h2><span class="badge kind-{escape(kind)}">{escape(kind)}</span></header>'
            + "".join(body) + "</article>")


def _links(title: str, uids: list[str]) -> str:
    if not uids:
        return ""
    items = "".join(f'<li><a href="#{escape(u)}">{escape(u.split(".", 1)[1])}</a></li>' for u in uids)
    return f'<h3>{escape(title)}</h3><ul class="links">{items}</ul>'


def _columns(relation: Relation | None, declared: list[ColumnProps], tested: Tested,
             extra: Sequence[tuple[str, str]] = ()) -> str:
    """Columns: the warehouse's (with types, in order), else the declared and answer columns."""
    described = {c.name: c.description for c in declared}
    rows: list[tuple[str, str, str]] = []
    if relation is not None:
        rows = [(name, kind, described.get(name) or comment or "") for name, kind, comment in relation.columns]
    else:
        rows = [(c.name, c.data_type or "", c.description) for c in declared]
        rows += [(name, kind, described.get(name, "")) for name, kind in extra if name not in described]
    if not rows:
        return ""
    body = "".join(f'<tr><td class="mono">{escape(n)}</td><td class="mono">{escape(t)}</td><td>{escape(d)}</td>'
                   f'<td>{escape(", ".join(k for _, k in tested.columns.get(n, [])))}</td></tr>' for n, t, d in rows)
    return ('<h3>Columns</h3><table class="columns"><thead><tr><th>column</th><th>type</th><th>description</th>'
            f'<th>tests</th></tr></thead><tbody>{body}</tbody></table>')


def _tests(tested: Tested) -> str:
    names = [*(f"{n} ({k})" for n, k in tested.whole),
             *(f"{n} ({k} on {c})" for c, tests in tested.columns.items() for n, k in tests)]
    if not names:
        return ""
    return "<h3>Tests</h3><ul class=\"tests\">" + "".join(f"<li>{escape(n)}</li>" for n in names) + "</ul>"


def _model_card(page: Page, name: str, ups: list[str], downs: list[str]) -> str:
    project = page.project
    node = project.nodes[name]
    uid = f"model.{name}"
    relation = page.catalog.nodes.get(uid)
    tested = page.tests.get(uid, Tested())
    body = [f'<p class="path mono">{escape(node.rel_path)} · {escape(node.relation)}'
            + (f' · tags: {escape(", ".join(node.tags))}' if node.tags else "") + "</p>"]
    if node.description:
        body.append(f'<p class="desc">{escape(node.description)}</p>')
    if relation is None:
        body.append(f'<p class="note">Not built on target `{escape(project.target_name)}` yet.</p>')
    elif relation.rows is not None:
        body.append(f'<p class="stat">{relation.rows} rows</p>')
    spec = page.specs.get(name)
    extra: list[tuple[str, str]] = []
    if spec is not None:
        body.append(_llm_card(spec, page.catalog.llm.get(name), relation is not None))
        extra = [(column, _type(structure)) for column, structure in spec.output_columns]
    body += [_columns(relation, node.columns, tested, extra), _tests(tested), _links("Depends on", ups),
             _links("Used by", downs),
             f'<details><summary>Compiled SQL</summary><pre class="sql">{escape(node.compiled_sql.strip())}</pre>'
             "</details>"]
    return _card(uid, name, node.materialized, body)


def _when(moment: Any) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if isinstance(moment, datetime) else str(moment)


def _type(structure: Any) -> str:
    return structure if isinstance(structure, str) else json.dumps(structure)


def _llm_card(spec: LlmSpec, state: LlmState | None, built: bool) -> str:
    params = ", ".join(f"{k}={v}" for k, v in spec.params.items() if k != "model")
    escalation = escalation_spec(spec)
    facts: list[tuple[str, str]] = [("model", spec.model), ("mode", spec.execution.mode), ("parameters", params)]
    if escalation is not None:
        facts.append(("escalates to", f"{escalation.model} ({escalation.execution.mode})"))
    if state is not None and built:
        statuses = state.statuses
        share = state.failed_share
        facts += [("rows", str(state.rows)), ("answered", str(statuses.get("ok", 0) + statuses.get("stale", 0))
                  + (f" ({statuses['stale']} stale: their request changed)" if statuses.get("stale") else "")),
                  ("pending", str(statuses.get("pending", 0))),
                  ("failed", f"{statuses.get('failed', 0)}" + (f" ({share:.1%} of rows)" if share is not None else ""))]
        spend = [f"${usd:.4f}" + (" simulated (fake provider: nothing paid)" if provider == "fake" else
                                  f" ({provider})") for provider, usd in state.spend.items()]
        facts.append(("cost to date", "; ".join(spend) or "$0"))
        last = state.last_run
        facts.append(("last run", "never sent requests" if last is None else
                      f"{last['run_id']} (llmt {last['command']}, {last['status']}): {last['requests']} requests "
                      f"sent, started {_when(last['started_at'])}"))
    facts.append(("template hash", spec.template_hash[:16]))
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    prompt = spec.prompt
    system = (f'<p class="label">system</p><pre class="prompt">{escape(prompt.system)}</pre>'
              if prompt.system else "")
    return (f'<section class="llm"><h3>LLM</h3><dl>{rows}</dl>'
            f'<h3>Prompt <span class="mono">{escape(prompt.name)}</span></h3>{system}'
            f'<p class="label">user</p><pre class="prompt">{escape(prompt.body.strip())}</pre>'
            f'<h3>Output schema <span class="mono">{escape(spec.schema_name)}</span></h3>'
            f'<pre class="schema">{escape(json.dumps(spec.strict_schema, indent=2, ensure_ascii=False))}</pre>'
            "</section>")


def _source_card(page: Page, uid: str, downs: list[str]) -> str:
    project = page.project
    _, source, table = uid.split(".", 2)
    src = project.sources[(source, table)]
    declared = next((t for _, parsed in project.properties for s in parsed.sources if s.name == source
                     for t in s.tables if t.name == table), None)
    relation = page.catalog.sources.get(uid)
    tested = page.tests.get(uid, Tested())
    where = f"file: {src.file}" if src.file is not None else src.sql()
    body = [f'<p class="path mono">{escape(where)} · declared at {escape(src.where)}</p>']
    if declared is not None and declared.description:
        body.append(f'<p class="desc">{escape(declared.description)}</p>')
    if relation is None:
        body.append(f'<p class="note">Not loaded on target `{escape(project.target_name)}` yet.</p>'
                    if src.file is not None else '<p class="note">Not found in the warehouse.</p>')
    elif relation.rows is not None:
        body.append(f'<p class="stat">{relation.rows} rows</p>')
    body += [_columns(relation, declared.columns if declared else [], tested), _tests(tested),
             _links("Used by", downs)]
    return _card(uid, f"{source}.{table}", "source", body)


def _seed_card(page: Page, uid: str, downs: list[str]) -> str:
    seed = page.project.seeds[uid.removeprefix("seed.")]
    relation = page.catalog.nodes.get(uid)
    tested = page.tests.get(uid, Tested())
    body = [f'<p class="path mono">{escape(seed.rel_path)} · {escape(seed.relation)}</p>']
    if seed.description:
        body.append(f'<p class="desc">{escape(seed.description)}</p>')
    body.append(f'<p class="note">Not loaded on target `{escape(page.project.target_name)}` yet (`llmt seed`).</p>'
                if relation is None else f'<p class="stat">{relation.rows} rows</p>')
    body += [_columns(relation, seed.columns, tested), _tests(tested), _links("Used by", downs)]
    return _card(uid, seed.name, "seed", body)
