"""The DAG: topological order, cycles, unknown dependencies and dbt-style selection."""

from __future__ import annotations

import random

import pytest

from llmt.errors import GraphError
from llmt.graph import Graph, GraphNode

# countries (seed)      stg_orders ----------------------------------+
#                                                                    v
# unrelated             stg_reviews -> int_reviews -> review_insights -> orders_summary
NODES = [
    GraphNode("countries", "data/countries.csv", resource_type="seed"),
    GraphNode("stg_orders", "models/staging/stg_orders.sql", tags=("staging",)),
    GraphNode("stg_reviews", "models/staging/stg_reviews.sql", tags=("staging", "nightly")),
    GraphNode("int_reviews", "models/intermediate/int_reviews.sql", depends_on=("stg_reviews",)),
    GraphNode(
        "review_insights",
        "models/marts/review_insights.sql",
        tags=("nightly", "llm"),
        depends_on=("int_reviews",),
    ),
    GraphNode(
        "orders_summary",
        "models/marts/orders_summary.sql",
        tags=("nightly",),
        depends_on=("stg_orders", "review_insights"),
    ),
    GraphNode("unrelated", "models/other/unrelated.sql"),
]
ORDER = [
    "countries",
    "stg_orders",
    "stg_reviews",
    "int_reviews",
    "review_insights",
    "orders_summary",
    "unrelated",
]


@pytest.fixture
def graph() -> Graph:
    return Graph(NODES)


def sel(graph: Graph, *select: str, exclude: tuple[str, ...] = ()) -> list[str]:
    return graph.select(list(select), list(exclude))


# -- order -----------------------------------------------------------------------------------


def test_order_is_topological_with_ties_broken_by_name(graph: Graph) -> None:
    assert graph.order() == ORDER


def test_order_does_not_depend_on_input_order() -> None:
    shuffled = list(NODES)
    random.Random(7).shuffle(shuffled)
    assert Graph(shuffled).order() == ORDER
    assert Graph(reversed(NODES)).order() == ORDER


def test_order_ties_use_name_among_ready_nodes_not_levels() -> None:
    # `a` becomes ready only after `z`, so it comes last although its name sorts first.
    graph = Graph(
        [GraphNode("z", "z.sql"), GraphNode("b", "b.sql"), GraphNode("a", "a.sql", depends_on=("z",))]
    )
    assert graph.order() == ["b", "z", "a"]


def test_empty_graph() -> None:
    assert Graph([]).order() == []
    assert Graph([]).select() == []


# -- cycles and bad dependencies -------------------------------------------------------------


def test_cycle_prints_the_exact_cycle_and_its_files() -> None:
    nodes = [
        GraphNode("src", "models/src.sql"),
        GraphNode("a", "models/a.sql", depends_on=("c", "src")),
        GraphNode("b", "models/b.sql", depends_on=("a",)),
        GraphNode("c", "models/c.sql", depends_on=("b",)),
        GraphNode("after", "models/after.sql", depends_on=("c",)),
    ]
    graph = Graph(nodes)
    with pytest.raises(GraphError) as info:
        graph.order()
    message = str(info.value)
    assert "a -> b -> c -> a" in message
    for path in ("models/a.sql", "models/b.sql", "models/c.sql"):
        assert path in message
    assert "src.sql" not in message and "after.sql" not in message
    with pytest.raises(GraphError, match="a -> b -> c -> a"):
        graph.select(["src"])


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(GraphError, match=r"x -> x\b"):
        Graph([GraphNode("x", "models/x.sql", depends_on=("x",))]).order()


def test_unknown_dependency_names_node_file_missing_name_and_suggestion() -> None:
    nodes = [
        GraphNode("stg_reviews", "models/staging/stg_reviews.sql"),
        GraphNode("insights", "models/marts/insights.sql", depends_on=("stg_review",)),
    ]
    with pytest.raises(GraphError) as info:
        Graph(nodes)
    message = str(info.value)
    assert "`insights`" in message
    assert "models/marts/insights.sql" in message
    assert "`stg_review`" in message
    assert "Did you mean `stg_reviews`?" in message


def test_duplicate_node_names_are_rejected() -> None:
    with pytest.raises(GraphError, match=r"a\.sql and .*other/a\.sql"):
        Graph([GraphNode("a", "models/a.sql"), GraphNode("a", "models/other/a.sql")])


# -- navigation ------------------------------------------------------------------------------


def test_parents_children(graph: Graph) -> None:
    assert graph.parents("orders_summary") == {"stg_orders", "review_insights"}
    assert graph.children("stg_orders") == {"orders_summary"}
    assert graph.parents("countries") == set()


def test_ancestors_and_descendants_with_depth(graph: Graph) -> None:
    assert graph.ancestors("orders_summary") == {
        "stg_orders",
        "review_insights",
        "int_reviews",
        "stg_reviews",
    }
    assert graph.ancestors("orders_summary", depth=1) == {"stg_orders", "review_insights"}
    assert graph.ancestors("orders_summary", depth=2) == {"stg_orders", "review_insights", "int_reviews"}
    assert graph.ancestors("orders_summary", depth=0) == set()
    assert graph.descendants("stg_reviews") == {"int_reviews", "review_insights", "orders_summary"}
    assert graph.descendants("stg_reviews", depth=1) == {"int_reviews"}


def test_navigation_on_unknown_name_suggests(graph: Graph) -> None:
    with pytest.raises(GraphError, match="Did you mean `int_reviews`"):
        graph.ancestors("int_review")


# -- selection -------------------------------------------------------------------------------


def test_no_selector_selects_everything_in_order(graph: Graph) -> None:
    assert graph.select() == ORDER
    assert graph.select([]) == ORDER
    assert graph.select(["*"]) == ORDER


def test_plain_name(graph: Graph) -> None:
    assert sel(graph, "int_reviews") == ["int_reviews"]


def test_descendants_and_ancestors_operators(graph: Graph) -> None:
    assert sel(graph, "int_reviews+") == ["int_reviews", "review_insights", "orders_summary"]
    assert sel(graph, "+review_insights") == ["stg_reviews", "int_reviews", "review_insights"]
    assert sel(graph, "+int_reviews+") == ["stg_reviews", "int_reviews", "review_insights", "orders_summary"]


def test_depth_limited_operators(graph: Graph) -> None:
    assert sel(graph, "1+review_insights") == ["int_reviews", "review_insights"]
    assert sel(graph, "2+review_insights") == ["stg_reviews", "int_reviews", "review_insights"]
    assert sel(graph, "stg_reviews+1") == ["stg_reviews", "int_reviews"]
    assert sel(graph, "stg_reviews+2") == ["stg_reviews", "int_reviews", "review_insights"]
    assert sel(graph, "1+int_reviews+1") == ["stg_reviews", "int_reviews", "review_insights"]


def test_at_operator_adds_ancestors_of_descendants(graph: Graph) -> None:
    # stg_orders is not upstream of int_reviews, but it feeds one of its descendants.
    assert sel(graph, "@int_reviews") == [
        "stg_orders",
        "stg_reviews",
        "int_reviews",
        "review_insights",
        "orders_summary",
    ]
    with pytest.raises(GraphError, match="@"):
        sel(graph, "@+int_reviews")


def test_tag_method_and_operators_on_it(graph: Graph) -> None:
    assert sel(graph, "tag:staging") == ["stg_orders", "stg_reviews"]
    assert sel(graph, "tag:llm+") == ["review_insights", "orders_summary"]
    assert sel(graph, "+tag:llm") == ["stg_reviews", "int_reviews", "review_insights"]
    assert sel(graph, "tag:nosuchtag") == []


@pytest.mark.parametrize(
    "selector",
    ["path:models/staging", "path:models/staging/", "path:./models/staging", "models/staging/"],
)
def test_path_method_directory_forms(graph: Graph, selector: str) -> None:
    assert sel(graph, selector) == ["stg_orders", "stg_reviews"]


def test_path_method_exact_file_prefix_and_operators(graph: Graph) -> None:
    assert sel(graph, "path:models/staging/stg_reviews.sql") == ["stg_reviews"]
    assert sel(graph, "path:models/stag") == []  # a directory prefix, not a string prefix
    assert sel(graph, "path:models/nowhere") == []
    assert sel(graph, "path:models/intermediate+") == ["int_reviews", "review_insights", "orders_summary"]


def test_other_methods_and_name_globs(graph: Graph) -> None:
    assert sel(graph, "resource_type:seed") == ["countries"]
    assert sel(graph, "file:stg_orders.sql") == ["stg_orders"]
    assert sel(graph, "stg_*") == ["stg_orders", "stg_reviews"]


def test_union_within_one_argument_and_across_arguments(graph: Graph) -> None:
    assert sel(graph, "unrelated stg_orders") == ["stg_orders", "unrelated"]
    assert sel(graph, "unrelated", "stg_orders", "countries") == ["countries", "stg_orders", "unrelated"]
    assert graph.select("unrelated  countries") == ["countries", "unrelated"]  # a bare string, not chars


def test_intersection(graph: Graph) -> None:
    assert sel(graph, "tag:nightly,path:models/marts") == ["review_insights", "orders_summary"]
    assert sel(graph, "tag:llm+,tag:nightly") == ["review_insights", "orders_summary"]
    assert sel(graph, "+orders_summary,tag:staging") == ["stg_orders", "stg_reviews"]
    assert sel(graph, "tag:staging,tag:llm") == []
    assert sel(graph, "tag:staging,tag:llm unrelated") == ["unrelated"]


def test_exclude(graph: Graph) -> None:
    assert sel(graph, "stg_reviews+", exclude=("orders_summary",)) == [
        "stg_reviews",
        "int_reviews",
        "review_insights",
    ]
    assert sel(graph, exclude=("tag:nightly", "countries")) == ["stg_orders", "int_reviews", "unrelated"]
    assert sel(graph, "+orders_summary", exclude=("int_reviews+ stg_orders",)) == ["stg_reviews"]
    assert sel(graph, "tag:staging", exclude=("tag:nosuchtag",)) == ["stg_orders", "stg_reviews"]


def test_unknown_model_name_names_selector_and_suggests(graph: Graph) -> None:
    with pytest.raises(GraphError) as info:
        sel(graph, "stg_review+")
    assert "no model named `stg_review` (selector `stg_review+`)" in str(info.value)
    assert "Did you mean `stg_reviews`?" in str(info.value)
    with pytest.raises(GraphError, match="no model named `unrelatd`"):
        sel(graph, "tag:staging,unrelatd")
    with pytest.raises(GraphError, match="no model named `countrie`"):
        sel(graph, exclude=("countrie",))


def test_unknown_method_lists_supported_methods(graph: Graph) -> None:
    with pytest.raises(GraphError) as info:
        sel(graph, "foo:bar")
    message = str(info.value)
    assert "`foo:`" in message
    assert "`tag:`" in message and "`path:`" in message


@pytest.mark.parametrize("selector", ["+", "tag:", ":x", "@", ","])
def test_selectors_without_a_value_are_errors(graph: Graph, selector: str) -> None:
    with pytest.raises(GraphError):
        sel(graph, selector)
