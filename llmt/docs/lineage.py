"""The lineage graph as an SVG laid out here (no library, nothing fetched): nodes in columns by their depth in the
DAG (a node stands one column right of its deepest parent), ordered within a column by the barycentre of their
neighbours (a few sweeps down and up, which removes most crossings), edges as curves from a parent's right side
to a child's left side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

NODE_W, NODE_H = 184, 38
GAP_X, GAP_Y = 64, 14
MARGIN = 16
SWEEPS = 4
MAX_LABEL = 23  # characters shown in a node (the full name is its tooltip)


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    layer: int


def layout(nodes: Sequence[str], parents: Mapping[str, Sequence[str]]) -> dict[str, Box]:
    """A position for each of ``nodes``, given parents first (their parents are among them)."""
    depth: dict[str, int] = {}
    for node in nodes:
        depth[node] = 1 + max((depth[p] for p in parents.get(node, ())), default=-1)
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node in nodes:
        layers[depth[node]].append(node)
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for node in nodes:
        for parent in parents.get(node, ()):
            children[parent].append(node)
    position = {n: i / len(lay) for lay in layers for i, n in enumerate(lay)}  # 0..1 within its column
    for sweep in range(SWEEPS):
        order = layers[1:] if sweep % 2 == 0 else layers[-2::-1]
        neighbours = parents if sweep % 2 == 0 else children
        for layer in order:
            layer.sort(key=lambda n: _barycentre(n, neighbours, position))
            position.update((n, i / len(layer)) for i, n in enumerate(layer))
    tallest = max((len(lay) for lay in layers), default=0)
    boxes = {}
    for i, layer in enumerate(layers):
        top = MARGIN + (tallest - len(layer)) * (NODE_H + GAP_Y) // 2
        for j, node in enumerate(layer):
            boxes[node] = Box(MARGIN + i * (NODE_W + GAP_X), top + j * (NODE_H + GAP_Y), i)
    return boxes


def _barycentre(node: str, neighbours: Mapping[str, Sequence[str]], position: Mapping[str, float]) -> float:
    places = [position[n] for n in neighbours.get(node, ()) if n in position]
    return sum(places) / len(places) if places else position.get(node, 0.0)


def svg(boxes: Mapping[str, Box], parents: Mapping[str, Sequence[str]], labels: Mapping[str, tuple[str, str]]) -> str:
    """The graph: ``labels`` gives each node its name and kind (its CSS class: source, view, table, llm, ...)."""
    width = max((b.x for b in boxes.values()), default=0) + NODE_W + MARGIN
    height = max((b.y for b in boxes.values()), default=0) + NODE_H + MARGIN
    parts = [f'<svg id="lineage-graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="Lineage graph">']
    for node, box in boxes.items():
        for parent in parents.get(node, ()):
            start = boxes[parent]
            x1, y1 = start.x + NODE_W, start.y + NODE_H // 2
            x2, y2 = box.x, box.y + NODE_H // 2
            bend = (x2 - x1) // 2
            parts.append(f'<path class="edge" data-from="{escape(parent)}" data-to="{escape(node)}" '
                         f'd="M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"/>')
    for node, box in boxes.items():
        name, kind = labels[node]
        shown = name if len(name) <= MAX_LABEL else name[:MAX_LABEL - 1] + "…"
        parts.append(
            f'<g class="node kind-{escape(kind)}" data-id="{escape(node)}" transform="translate({box.x},{box.y})" '
            f'tabindex="0" role="button" aria-label="{escape(name)}"><title>{escape(name)} ({escape(kind)})</title>'
            f'<rect width="{NODE_W}" height="{NODE_H}" rx="7"/>'
            f'<text x="10" y="16" class="name">{escape(shown)}</text>'
            f'<text x="10" y="30" class="kind">{escape(kind)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
