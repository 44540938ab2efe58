"""`llmt test`, `llmt build` and `llmt eval`: data tests, schema-derived tests, LLM tests, singular
tests, unit tests with pinned answers, and evals on labelled examples.

- generic.py  the generic tests, each compiled to SQL selecting what breaks it (dbt style)
- collect.py  tests gathered from properties files and tests/*.sql, each with its file:line
- derived.py  tests derived from an LLM model's output schema
- execute.py  running data tests against the warehouse: counts, samples, thresholds, stored failures
- unit.py     unit tests (given rows, pinned LLM answers, expected rows, prompt assertions), offline;
              rows.py: YAML/CSV rows as DuckDB tables and the comparison of expected rows
- evals.py    labelled examples asked through the model's provider, stored per prompt version;
              metrics.py: accuracy, macro F1, mean absolute error, Jaccard
- result.py   one test's result; report.py: the table, samples and JSON; junit.py: JUnit XML
- run.py      the commands: test, build, eval
"""
