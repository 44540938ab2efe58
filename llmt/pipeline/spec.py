"""What one LLM model asks: its prompt, schema, generation parameters and template hash.

The request key of a row is ``sha256(template_hash || input_hash)`` where ``template_hash``
covers everything that shapes the request except the row (endpoint, model, parameters, the
strict schema, the prompt templates and their includes, and the kind of provider that answers it)
and ``input_hash`` is computed in SQL over the canonical text (warehouse/keys.py) of the columns the templates
reference, by each engine alike.

Every version of the key is kept in ``KEY_VERSIONS`` (oldest first), so that an upgrade can find the
answers stored under an older one (pipeline/rekey.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import ValidationError

from llmt.errors import CompileError, ConfigError
from llmt.persist_docs import Docs, node_docs
from llmt.project import Node, Project
from llmt.project.config import EXECUTION_KEYS, GENERATION_KEYS, Execution
from llmt.prompts import Prompt, load_prompt
from llmt.schema import META_PREFIX, json_structure, load_schema, to_strict

ENDPOINT = "/v1/chat/completions"
# the kinds of provider an answer can come from: `fake` (synthetic answers) and `openai` (OpenAI, Azure
# OpenAI, or any OpenAI-compatible server); the kind is part of the request key, so that an answer is only
# ever served to requests of the kind of provider that gave it
PROVIDER_KINDS = ("fake", "openai")


@dataclass(frozen=True)
class LlmSpec:
    node: str
    prompt: Prompt
    schema_name: str
    strict_schema: dict[str, Any]
    params: dict[str, Any]  # model, temperature, top_p, seed, max_output_tokens (None dropped)
    max_attempts: int
    unique_key: list[str]
    columns: list[str]  # referenced input columns, sorted
    provider: str  # the kind of provider that answers (one of PROVIDER_KINDS): part of the key
    template_hash: str
    output_columns: list[tuple[str, Any]]  # (answer field, its type: schema.json_structure)
    execution: Execution = field(default_factory=Execution)
    docs: Docs = field(default_factory=Docs)  # comments of the output table (persist_docs)

    @property
    def model(self) -> str:
        return str(self.params["model"])

    def body_base(self) -> dict[str, Any]:
        """The request body without messages; constant parts first so prompt caching applies."""
        body: dict[str, Any] = {"model": self.model}
        for key in ("temperature", "top_p", "seed"):
            if self.params.get(key) is not None:
                body[key] = self.params[key]
        body["max_completion_tokens"] = self.params["max_output_tokens"]
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": _schema_name(self.schema_name), "strict": True, "schema": self.strict_schema},
        }
        return body


@dataclass(frozen=True)
class KeyVersion:
    """One version of the request key: how its template hash is made for a spec and a provider kind, and how
    its input hash is computed (`canonical`: keys.py, on every engine; before: DuckDB's JSON of the columns)."""

    name: str
    by_provider: bool  # whether the provider kind is part of the template hash
    canonical: bool  # whether the input hash is the canonical one of keys.py

    def template_hash(self, spec: LlmSpec, provider: str) -> str:
        return _template_hash(spec.params, spec.strict_schema, spec.schema_name, spec.prompt,
                              provider if self.by_provider else None, self.name)


# oldest first; the last one is what requests are keyed by now (v2: the provider kind is part of the key; v3: the
# input hash is the canonical one, the same on every engine)
KEY_VERSIONS = (KeyVersion("llmt-request-v1", by_provider=False, canonical=False),
                KeyVersion("llmt-request-v2", by_provider=True, canonical=False),
                KeyVersion("llmt-request-v3", by_provider=True, canonical=True))
KEY_VERSION = KEY_VERSIONS[-1].name


def _schema_name(name: str) -> str:
    """The json_schema name: letters, digits, underscores and dashes, at most 64 characters."""
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
    return cleaned[:64] or "answer"


def build_spec(project: Project, node: Node, provider: str | None = None) -> LlmSpec:
    """The model's spec for the target's provider kind (or ``provider``: unit tests answer with `fake`)."""
    where = node.rel_path
    cfg = {**project.config.llm.model_dump(), **node.config}
    if not node.unique_key:
        raise ConfigError(
            "an LLM model needs a `unique_key` (the column(s) identifying an input row)",
            where=where,
            hint="Add unique_key='your_id_column' to its config().",
        )
    for key, files in (("prompt", "prompts/name.md"), ("output_schema", "schemas/name.json")):
        if not cfg.get(key):
            raise ConfigError(
                f"an LLM model needs `{key}=` in its config", where=where,
                hint=f"Add {key}='name' (the file {files}).",
            )
    prompt = load_prompt(project.dir / "prompts", str(cfg["prompt"]), where, project.macros)
    schema_name = str(cfg["output_schema"])
    schema_file = next(
        (project.dir / "schemas" / f"{schema_name}{ext}" for ext in (".json", ".yml", ".yaml")
         if (project.dir / "schemas" / f"{schema_name}{ext}").is_file()),
        None,
    )
    if schema_file is None:
        raise ConfigError(
            f"schema `{schema_name}` not found (expected schemas/{schema_name}.json or .yml)", where=where,
            hint="Create the file or fix `output_schema=` in the model's config.",
        )
    strict = to_strict(load_schema(schema_file), where=str(schema_file))
    # precedence for generation parameters: model config > prompt front matter > project llm defaults
    params = {k: cfg.get(k) for k in GENERATION_KEYS}
    for key, value in prompt.params.items():
        if key not in node.config and key not in (node.props.config if node.props else {}):
            params[key] = value
    out_cols = list(json_structure(strict).items())
    variables = prompt.variables()
    if node.selected is not None:
        check_columns(node.name, node.rel_path, prompt, variables, node.unique_key, node.selected, out_cols)
    kind = provider or project.target.provider.type
    template_hash = _template_hash(params, strict, schema_name, prompt, kind)
    try:
        execution = Execution.model_validate({k: cfg[k] for k in EXECUTION_KEYS if k in cfg})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(
            f"`{'.'.join(str(p) for p in err['loc'])}`: {err['msg']}", where=where,
            hint="See the README's \"Realtime and batch\", \"Cascades\" and \"Canary\" sections.",
        ) from None
    return LlmSpec(
        execution=execution,
        node=node.name,
        prompt=prompt,
        schema_name=schema_name,
        strict_schema=strict,
        params={k: v for k, v in params.items() if v is not None},
        max_attempts=int(cfg.get("max_attempts") or 1),
        unique_key=node.unique_key,
        columns=sorted(variables),
        provider=kind,
        template_hash=template_hash,
        output_columns=out_cols,
        docs=node_docs(node, {name: prop["description"] for name, prop in strict["properties"].items()
                              if isinstance(prop.get("description"), str)}),
    )


def _template_hash(params: dict[str, Any], strict: dict[str, Any], schema_name: str, prompt: Prompt,
                   provider: str | None, version: str | None = None) -> str:
    template = {
        "version": version or KEY_VERSION,
        "endpoint": ENDPOINT,
        "params": {k: v for k, v in sorted(params.items()) if v is not None},
        "schema": strict,
        "schema_name": _schema_name(schema_name),
        "prompt": prompt.fingerprint(),
    }
    if provider is not None:
        template["provider"] = provider
    return hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Sends(Protocol):
    """A model that sends requests (an LLM or an embedding model): how it sends them."""

    @property
    def execution(self) -> Execution: ...


def send_mode(spec: Sends, requests: int, override: str | None = None) -> str:
    """How ``requests`` pending requests are sent: the model's mode (or ``override``, --mode), `auto` resolved
    by `realtime_below`."""
    mode = override or spec.execution.mode
    if mode == "auto":
        mode = "realtime" if requests < spec.execution.realtime_below else "batch"
    return mode


def escalation_spec(spec: LlmSpec) -> LlmSpec | None:
    """The same requests for the escalation model (its own template hash, so its own keys), of the same
    provider kind."""
    esc = spec.execution.escalate
    if esc is None:
        return None
    params = {**spec.params, "model": esc.model}
    execution = spec.execution.model_copy(update={"mode": esc.mode or spec.execution.mode, "escalate": None,
                                                  "canary_above": None})
    return replace(spec, params=params, execution=execution, template_hash=_template_hash(
        params, spec.strict_schema, spec.schema_name, spec.prompt, spec.provider))


def check_columns(name: str, where: str, prompt: Prompt, variables: set[str], unique_key: list[str],
                  available: list[str], out_cols: list[tuple[str, Any]]) -> None:
    """Prompt variables and unique key must come from the select of model ``name`` (its file ``where``); answer
    fields must not clash."""
    missing = sorted(variables - set(available))
    if missing:
        raise CompileError(
            f"prompt `{prompt.name}` uses {', '.join(f'`{m}`' for m in missing)}, which the select of model "
            f"`{name}` does not provide",
            where=str(prompt.path),
            hint=f"Available columns: {', '.join(available)}. Add the column to the select or fix the prompt.",
        )
    absent = [k for k in unique_key if k not in available]
    if absent:
        raise ConfigError(
            f"unique_key column(s) {', '.join(absent)} are not in the select of `{name}`",
            where=where, hint=f"Available columns: {', '.join(available)}.",
        )
    clash = sorted({c for c, _ in out_cols} & set(available)) + [c for c in available if c.startswith(META_PREFIX)]
    if clash:
        raise CompileError(
            f"the select of `{name}` has column(s) {', '.join(clash)} that the answer schema also defines "
            f"(or that use the reserved `{META_PREFIX}` prefix)",
            where=where, hint="Rename the column in the select (e.g. `as input_<name>`).",
        )
