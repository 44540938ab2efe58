"""LLM providers: one interface (base.py), one request/outcome vocabulary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmt.compile import env_var, render_jinja
from llmt.errors import ConfigError, did_you_mean
from llmt.providers.base import BatchProvider

PROVIDERS = ("fake",)


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
    if kind == "fake":
        from llmt.providers.fake import FakeProvider

        return FakeProvider.from_options(resolve_options(options, where), target_dir / "fake_remote", project_dir)
    raise ConfigError(
        f"unknown provider type `{kind}`.{did_you_mean(kind, PROVIDERS)}",
        where=where,
        hint=f"Providers: {', '.join(PROVIDERS)}.",
    )
