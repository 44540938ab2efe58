"""The project DAG: nodes, topological order and dbt-style node selection.

Selection syntax (``llmt run -s ... --exclude ...``), as in dbt:

- each argument may hold several space-separated selectors, whose results are unioned;
- a comma inside one selector intersects its parts: ``tag:nightly,path:models/marts``;
- an atom is ``[@][N+]method:value[+N]`` or ``[@][N+]name[+N]``: ``+`` before means ancestors,
  ``+`` after means descendants, an optional number limits the depth, ``@`` means the node, its
  descendants and all their ancestors;
- methods: ``tag:``, ``path:`` (directory prefix or exact file), ``file:`` (file name),
  ``resource_type:``; a bare ``*`` means every node, a bare value with a ``/`` is a path and a
  bare value with glob characters matches node names.

An unknown model name is an error (a typo must not silently select nothing); a tag or path that
matches nothing selects nothing, like dbt.
"""

from __future__ import annotations

import fnmatch
import heapq
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from llmt.errors import GraphError, did_you_mean

__all__ = ["METHODS", "Graph", "GraphNode"]

METHODS: tuple[str, ...] = ("tag", "path", "file", "resource_type")

_ATOM = re.compile(r"\A(?P<at>@)?(?:(?P<up>\d*)\+)?(?P<body>.*?)(?:\+(?P<down>\d*))?\Z")
_GLOB_CHARS = ("*", "?", "[")


@dataclass(frozen=True)
class GraphNode:
    """One node of the DAG (a model or a seed). Sources are not nodes."""

    name: str
    path: str
    tags: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    resource_type: str = "model"


@dataclass(frozen=True)
class _Atom:
    text: str
    method: str | None
    value: str
    up: int | None  # None: no ancestors; -1: all ancestors
    down: int | None
    at: bool


class Graph:
    """A DAG of nodes; edges run from a dependency (parent) to its dependents (children)."""

    def __init__(self, nodes: Iterable[GraphNode], noun: str = "model") -> None:
        self.noun = noun  # what its nodes are called in errors (`llmt seed` selects among seeds)
        self.nodes: dict[str, GraphNode] = {}
        for node in nodes:
            if node.name in self.nodes:
                other = self.nodes[node.name]
                raise GraphError(
                    f"two nodes are named `{node.name}`: {other.path} and {node.path}.",
                    hint="Node names must be unique across the project; rename one of the files.",
                )
            self.nodes[node.name] = node
        self._parents: dict[str, set[str]] = {name: set() for name in self.nodes}
        self._children: dict[str, set[str]] = {name: set() for name in self.nodes}
        for node in self.nodes.values():
            for dep in node.depends_on:
                if dep not in self.nodes:
                    raise GraphError(
                        f"{node.resource_type} `{node.name}` ({node.path}) depends on `{dep}`, "
                        f"which is not a node of this project.{did_you_mean(dep, self.nodes)}",
                        hint="Fix the ref() name, or declare the table as a source and use source().",
                    )
                self._parents[node.name].add(dep)
                self._children[dep].add(node.name)
        self._order: list[str] | None = None

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, name: object) -> bool:
        return name in self.nodes

    # -- order -------------------------------------------------------------------------------

    def order(self) -> list[str]:
        """Every node, parents before children; ties broken by name. A cycle raises GraphError."""
        if self._order is None:
            self._order = self._toposort()
        return list(self._order)

    def _toposort(self) -> list[str]:
        waiting = {name: len(parents) for name, parents in self._parents.items()}
        ready = [name for name, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        result: list[str] = []
        while ready:
            name = heapq.heappop(ready)
            result.append(name)
            for child in self._children[name]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, child)
        if len(result) < len(self.nodes):
            done = set(result)
            raise self._cycle_error({name for name in self.nodes if name not in done})
        return result

    def _cycle_error(self, remaining: set[str]) -> GraphError:
        # Every node left over by the sort has a parent that is also left over, so walking up
        # from any of them must come back to a node already seen: that loop is a cycle.
        walk: list[str] = []
        seen: dict[str, int] = {}
        current = min(remaining)
        while current not in seen:
            seen[current] = len(walk)
            walk.append(current)
            current = min(p for p in self._parents[current] if p in remaining)
        upward = walk[seen[current] :]
        cycle = list(reversed(upward))  # parent -> child, the direction data flows
        start = cycle.index(min(cycle))
        cycle = cycle[start:] + cycle[:start]
        chain = " -> ".join([*cycle, cycle[0]])
        files = ", ".join(f"{name} ({self.nodes[name].path})" for name in cycle)
        return GraphError(
            f"dependency cycle: {chain}. Files involved: {files}.",
            hint="Each arrow is a ref() from the right-hand node; remove one of them to break the cycle.",
        )

    # -- navigation --------------------------------------------------------------------------

    def parents(self, name: str) -> set[str]:
        """The nodes `name` depends on directly."""
        return set(self._parents[self._known(name)])

    def children(self, name: str) -> set[str]:
        """The nodes that depend directly on `name`."""
        return set(self._children[self._known(name)])

    def ancestors(self, name: str, depth: int | None = None) -> set[str]:
        """Everything upstream of `name` (not `name` itself), at most `depth` edges away."""
        return _reach({self._known(name)}, self._parents, depth) - {name}

    def descendants(self, name: str, depth: int | None = None) -> set[str]:
        """Everything downstream of `name` (not `name` itself), at most `depth` edges away."""
        return _reach({self._known(name)}, self._children, depth) - {name}

    def _known(self, name: str) -> str:
        if name not in self.nodes:
            raise GraphError(f"no {self.noun} named `{name}`.{did_you_mean(name, self.nodes)}")
        return name

    # -- selection ---------------------------------------------------------------------------

    def select(self, select: Sequence[str] | None = None, exclude: Sequence[str] | None = None) -> list[str]:
        """The nodes chosen by dbt-style `select` minus `exclude`, in topological order."""
        selectors = _split(select)
        chosen = self._union(selectors) if selectors else set(self.nodes)
        chosen -= self._union(_split(exclude))
        return [name for name in self.order() if name in chosen]

    def _union(self, selectors: list[str]) -> set[str]:
        result: set[str] = set()
        for selector in selectors:
            result |= self._intersection(selector)
        return result

    def _intersection(self, selector: str) -> set[str]:
        parts = [part for part in selector.split(",") if part]
        if not parts:
            raise GraphError(f"empty selector `{selector}`.", hint=_SYNTAX_HINT)
        result = self._atom(_parse_atom(parts[0]))
        for part in parts[1:]:
            result &= self._atom(_parse_atom(part))
        return result

    def _atom(self, atom: _Atom) -> set[str]:
        matched = self._match(atom)
        result = set(matched)
        if atom.up is not None:
            result |= _reach(matched, self._parents, None if atom.up < 0 else atom.up)
        if atom.at:
            below = _reach(matched, self._children, None)
            result |= below | _reach(below, self._parents, None)
        elif atom.down is not None:
            result |= _reach(matched, self._children, None if atom.down < 0 else atom.down)
        return result

    def _match(self, atom: _Atom) -> set[str]:
        method, value = atom.method, atom.value
        if method is None:
            if value == "*":
                return set(self.nodes)
            if "/" in value:
                method = "path"
            elif any(ch in value for ch in _GLOB_CHARS):
                return {name for name in self.nodes if fnmatch.fnmatchcase(name, value)}
            elif value in self.nodes:
                return {value}
            else:
                raise GraphError(
                    f"no model named `{value}` (selector `{atom.text}`).{did_you_mean(value, self.nodes)}",
                    hint="Run `llmt ls` to list the models of the project.",
                )
        predicate = self._predicate(method, value, atom.text)
        return {name for name, node in self.nodes.items() if predicate(node)}

    def _predicate(self, method: str, value: str, text: str) -> Callable[[GraphNode], bool]:
        if method == "tag":
            return lambda node: any(fnmatch.fnmatchcase(tag, value) for tag in node.tags)
        if method == "path":
            wanted = _norm_path(value)
            if wanted == "":
                return lambda node: True
            return lambda node: (p := _norm_path(node.path)) == wanted or p.startswith(wanted + "/")
        if method == "file":
            return lambda node: (b := node.path.rsplit("/", 1)[-1]) == value or b.rsplit(".", 1)[0] == value
        if method == "resource_type":
            return lambda node: node.resource_type == value
        supported = ", ".join(f"`{m}:`" for m in METHODS)
        raise GraphError(
            f"unknown selector method `{method}:` in `{text}`.{did_you_mean(method, METHODS)}",
            hint=f"Supported methods: {supported}; a bare name selects a model. {_SYNTAX_HINT}",
        )


_SYNTAX_HINT = "Selector syntax: `name`, `+name`, `name+`, `2+name+1`, `@name`, `tag:x`, `path:models/dir`."


def _split(selectors: Sequence[str] | None) -> list[str]:
    if selectors is None:
        return []
    if isinstance(selectors, str):
        selectors = [selectors]
    return [part for element in selectors for part in element.split()]


def _parse_atom(text: str) -> _Atom:
    match = _ATOM.match(text)
    assert match is not None  # the pattern matches any string
    body = match["body"]
    method: str | None = None
    if ":" in body:
        method, body = body.split(":", 1)
    if not body or (method is not None and not method):
        raise GraphError(f"selector `{text}` names no node.", hint=_SYNTAX_HINT)
    if match["at"] and match["up"] is not None:
        raise GraphError(f"selector `{text}` cannot combine `@` with a leading `+`.", hint=_SYNTAX_HINT)
    return _Atom(
        text=text,
        method=method,
        value=body,
        up=_depth(match["up"]),
        down=_depth(match["down"]),
        at=bool(match["at"]),
    )


def _reach(starts: set[str], edges: dict[str, set[str]], depth: int | None) -> set[str]:
    """`starts` and every node at most `depth` edges (all when None) away from them along `edges`."""
    found = set(starts)
    frontier = set(starts)
    level = 0
    while frontier and (depth is None or level < depth):
        frontier = {n for f in frontier for n in edges[f]} - found
        found |= frontier
        level += 1
    return found


def _depth(raw: str | None) -> int | None:
    if raw is None:
        return None
    return int(raw) if raw else -1


def _norm_path(path: str) -> str:
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    path = path.rstrip("/")
    return "" if path == "." else path
