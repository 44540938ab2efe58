"""The LLM model lifecycle: stage -> diff -> render -> shards -> provider -> collect -> output."""
