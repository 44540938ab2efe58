"""llmt: dbt-style LLM enrichment for DuckDB, through the OpenAI Batch API."""

__version__ = "0.1.0"
