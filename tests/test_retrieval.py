"""Retrieval in SQL: `nearest_neighbors` over two embedding models, in the select of an LLM model, so the
retrieved context is part of the request key."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from llmt.providers.embeddings import fake_vector
from tests.conftest import Project, on_postgres
from tests.pg import PgDatabase

MakeProject = Callable[[dict[str, str]], Project]

ARTICLES = {
    "KB-1": "How to clear a paper jam in the printer tray",
    "KB-2": "Reset your account password from the login page",
    "KB-3": "Download an invoice as PDF from the billing page",
    "KB-4": "The printer shows offline: restart the printer and check the network cable",
    "KB-5": "Ask for a refund within 30 days of the purchase",
    "KB-6": "Change the billing address on an invoice",
}
TICKETS = {
    "T-1": "My printer says paper jam and the tray is stuck",
    "T-2": "I forgot my password and the login page rejects me",
    "T-3": "Where can I download last month's invoice?",
    "T-4": "Printer offline again, I restarted it twice",
    "T-5": "I want a refund for my purchase",
    "T-6": "The invoice shows the wrong billing address",
    "T-7": "Printer prints blank pages after the paper jam",
}
FILES = {
    "models/sources.yml": """
        sources:
          - name: raw
            tables:
              - {name: kb, file: data/kb.csv}
              - {name: tickets, file: data/tickets.csv}
        """,
    "models/kb_embeddings.sql": """
        {{ config(materialized='embedding', column='body', unique_key='article_id', dimensions=128) }}
        select article_id, body from {{ source('raw', 'kb') }}
        """,
    "models/ticket_embeddings.sql": """
        {{ config(materialized='embedding', column='body', unique_key='ticket_id', dimensions=128) }}
        select ticket_id, body from {{ source('raw', 'tickets') }}
        """,
    "models/hits.sql": """
        {{ config(materialized='table') }}
        {{ nearest_neighbors(ref('ticket_embeddings'), ref('kb_embeddings'), k=2, query_key='ticket_id',
                             document_key='article_id') }}
        """,
    "models/answers.sql": """
        {{ config(materialized='llm', prompt='answer', output_schema='answer', unique_key='ticket_id') }}
        with hits as (
            {{ nearest_neighbors(ref('ticket_embeddings'), ref('kb_embeddings'), k=2, query_key='ticket_id',
                                 document_key='article_id') }}
        )
        select t.ticket_id, t.body,
               string_agg(k.article_id || ': ' || k.body, chr(10) order by h.neighbor_rank) as context
        from {{ ref('ticket_embeddings') }} t
        join hits h on h.ticket_id = t.ticket_id
        join {{ ref('kb_embeddings') }} k on k.article_id = h.article_id
        group by t.ticket_id, t.body
        """,
    "prompts/answer.md": """
        ---
        system: You answer support tickets from the articles given.
        ---
        Ticket: {{ body }}
        Articles:
        {{ context }}
        """,
    "schemas/answer.json": '{"type": "object", "properties": {"reply": {"type": "string"}}, "required": ["reply"]}',
    "models/insights.sql": "",
    "models/stg_reviews.sql": "",
}


def csv(key: str, rows: dict[str, str]) -> str:
    return f"{key},body\n" + "".join(f'{k},"{v}"\n' for k, v in rows.items())


@pytest.fixture
def support(make_project: MakeProject) -> Project:
    return make_project({**FILES, "data/kb.csv": csv("article_id", ARTICLES),
                         "data/tickets.csv": csv("ticket_id", TICKETS)})


def brute_force(k: int, articles: dict[str, str]) -> dict[str, list[str]]:
    """The k nearest articles of each ticket, computed here from the fake provider's vectors."""
    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    docs = {a: fake_vector(text, 128) for a, text in articles.items()}
    out = {}
    for ticket, text in TICKETS.items():
        query = fake_vector(text, 128)
        out[ticket] = sorted(docs, key=lambda a: (-round(cosine(query, docs[a]), 5), a))[:k]
    return out


def test_nearest_neighbors_gives_the_top_k_of_each_query_row(support: Project) -> None:
    assert support.llmt("run", "-s", "+hits").code == 0
    rows = support.query("select ticket_id, article_id, neighbor_rank, similarity from main.hits "
                         "order by ticket_id, neighbor_rank")
    got: dict[str, list[str]] = {}
    for ticket, article, rank, similarity in rows:
        got.setdefault(ticket, []).append(article)
        assert rank == len(got[ticket]) and -1.0 <= similarity <= 1.0
    assert got == brute_force(2, ARTICLES)
    assert got["T-1"][0] == "KB-1" and got["T-2"][0] == "KB-2"  # meaningful on the fake provider


def test_rows_without_a_vector_take_no_part(support: Project) -> None:
    support.write("data/tickets.csv", csv("ticket_id", {**TICKETS, "T-8": ""}))  # an empty ticket: no vector
    assert support.llmt("run", "-s", "+hits", "--max-failed-share", "1").code == 0
    assert support.query("select count(*) from main.hits where ticket_id = 'T-8'") == [(0,)]
    assert support.query("select count(distinct ticket_id) from main.hits") == [(len(TICKETS),)]


def test_when_the_knowledge_base_changes_exactly_the_tickets_whose_context_changed_are_asked_again(
        support: Project) -> None:
    first = support.run_json()
    assert support.llm_result(first, "answers")["requests"] == len(TICKETS)
    before = dict(support.query("select ticket_id, context from main.answers"))
    support.write("data/kb.csv", csv("article_id", {**ARTICLES, "KB-4": "Printer offline: check the wifi"}))

    second = support.run_json()
    after = dict(support.query("select ticket_id, context from main.answers"))
    changed = {t for t in TICKETS if before[t] != after[t]}
    assert 0 < len(changed) < len(TICKETS), changed  # the edit moves some tickets' context, not all
    assert support.llm_result(second, "kb_embeddings")["requests"] == 1
    assert support.llm_result(second, "ticket_embeddings")["requests"] == 0
    assert support.llm_result(second, "answers")["requests"] == len(changed)
    asked = {t for (t,) in support.query(
        "select ticket_id from main.answers a join _llmt.attempts t on t.request_key = a._llmt_request_key "
        f"where t.run_id = '{second['run_id']}'")}
    assert asked == changed
    assert support.llm_result(support.run_json(), "answers")["requests"] == 0


def test_mistakes_in_the_macro_are_compile_errors_at_the_models_line(support: Project) -> None:
    for call, says in (("k=0, query_key='ticket_id', document_key='article_id'", "k must be a whole number"),
                       ("k=2, query_key='ticket_id', document_key='ticket_id'", "column(s) ticket_id twice"),
                       ("k=2, query_key='ticket_id', document_key=[]", "must each name a column")):
        support.write("models/hits.sql", "{{ config(materialized='table') }}\n{{ nearest_neighbors("
                      f"ref('ticket_embeddings'), ref('kb_embeddings'), {call}) }}}}\n")
        got = support.llmt("compile", "-s", "hits")
        assert got.code == 2 and says in got.err and "models/hits.sql:2" in got.err, got.err


def test_an_engine_without_vector_functions_says_so(support: Project, pg: PgDatabase) -> None:
    on_postgres(support, pg)
    got = support.llmt("compile", "-s", "hits")
    assert got.code == 2 and "the postgres engine has no vector similarity function" in got.err, got.err
    assert re.search(r"models/(hits|answers)\.sql:\d+: nearest_neighbors", got.err), got.err  # the file and line
