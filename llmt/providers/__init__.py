"""LLM providers: one interface (base.py), one request/outcome vocabulary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmt.compile import env_var, render_jinja
from llmt.errors import ConfigError, did_you_mean
from llmt.providers.base import BatchProvider, RealtimeProvider

if TYPE_CHECKING:
    from llmt.providers.finetuning import FineTuner

PROVIDERS = ("fake", "openai")
FAKE_REMOTE = "fake_remote"  # in target/: the fake provider's files and batches (its "remote")
# target provider options that steer the pipeline rather than the provider
PIPELINE_OPTIONS = ("max_requests_per_batch", "poll_interval", "concurrency", "requests_per_minute",
                    "tokens_per_minute")


def resolve_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """Render `{{ env_var(...) }}` in option strings. The values (secrets) are never stored."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, str) and "{{" in value:
            out[key] = render_jinja(env, value, {"env_var": env_var}, f"{where} (provider option `{key}`)")
        elif isinstance(value, dict):
            out[key] = resolve_options(value, where)
        else:
            out[key] = value
    return out


def make_provider(kind: str, options: dict[str, Any], *, project_dir: Path, target_dir: Path) -> BatchProvider:
    where = f"{project_dir / 'project.yml'}"
    options = {k: v for k, v in options.items() if k not in PIPELINE_OPTIONS}
    if kind == "fake":
        from llmt.providers.fake import FakeProvider

        return FakeProvider.from_options(resolve_options(options, where), target_dir / FAKE_REMOTE, project_dir)
    if kind == "openai":
        from llmt.providers.openai_batch import OpenAIBatchProvider

        return OpenAIBatchProvider.from_options(resolve_options(options, where), where)
    raise ConfigError(
        f"unknown provider type `{kind}`.{did_you_mean(kind, PROVIDERS)}",
        where=where,
        hint=f"Providers: {', '.join(PROVIDERS)}.",
    )


def make_realtime_provider(
    kind: str, options: dict[str, Any], *, project_dir: Path, target_dir: Path, batch: BatchProvider
) -> RealtimeProvider:
    """The realtime side of a target's provider (the fake provider serves both sides itself)."""
    if isinstance(batch, RealtimeProvider):
        return batch
    where = f"{project_dir / 'project.yml'}"
    options = {k: v for k, v in options.items() if k not in PIPELINE_OPTIONS}
    if kind == "openai":
        from llmt.providers.openai_realtime import OpenAIRealtimeProvider

        return OpenAIRealtimeProvider.from_options(resolve_options(options, where), where)
    raise ConfigError(f"provider `{kind}` has no realtime mode", where=where, hint="Use mode: batch.")


def make_finetuner(kind: str, options: dict[str, Any], *, project_dir: Path, target_dir: Path) -> FineTuner:
    """The fine-tuning side of a target's provider."""
    where = f"{project_dir / 'project.yml'}"
    options = {k: v for k, v in options.items() if k not in PIPELINE_OPTIONS}
    if kind == "fake":
        from llmt.providers.finetuning import FakeFineTuner

        return FakeFineTuner(target_dir / "fake_remote")
    if kind == "openai":
        from llmt.providers.finetuning import OpenAIFineTuner
        from llmt.providers.openai_batch import make_client

        return OpenAIFineTuner(make_client(resolve_options(options, where), where))
    raise ConfigError(f"provider `{kind}` has no fine-tuning", where=where, hint="Use the openai (or fake) provider.")
