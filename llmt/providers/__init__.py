"""LLM providers: one interface (base.py), one request/outcome vocabulary."""
