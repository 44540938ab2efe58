"""The OpenAI Batch API (or any OpenAI-compatible one, or Azure OpenAI) through the official SDK.

The SDK sends no idempotency key, so a create whose response was lost may have happened:
creating a batch is never retried blindly. After any doubtful failure the provider looks for
the batch by its metadata (``batches.list``) before trying again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from llmt import logs
from llmt.errors import ConfigError, ProviderError, did_you_mean
from llmt.providers.base import BatchInfo, BatchLineError, BatchNotFound, BatchProvider, Shard

if TYPE_CHECKING:
    import openai

OPTION_KEYS = (
    "type", "api_key", "base_url", "organization", "project", "azure_endpoint", "api_version",
    "max_retries", "timeout", "list_limit",
)
CREATE_TRIES = 5
DOWNLOAD_TRIES = 3
T = TypeVar("T")


def make_client(options: dict[str, Any], where: str) -> openai.OpenAI:
    """An SDK client from target options (OpenAI, any compatible base URL, or Azure OpenAI)."""
    return client_maker(options, where)()


def client_maker(options: dict[str, Any], where: str) -> Callable[[], openai.OpenAI]:
    """What makes the SDK client of ``options``, which are checked now (a configuration error comes before
    anything runs); the SDK is imported when it is called (importing it costs more than a whole no-op run)."""
    for key in options:
        if key not in OPTION_KEYS:
            raise ConfigError(
                f"unknown option `{key}` for the openai provider.{did_you_mean(key, OPTION_KEYS)}",
                where=where, hint=f"Options: {', '.join(OPTION_KEYS)}.",
            )
    api_key = options.get("api_key") or os.environ.get(
        "AZURE_OPENAI_API_KEY" if options.get("azure_endpoint") else "OPENAI_API_KEY"
    )
    if not api_key:
        raise ConfigError(
            "no API key for the openai provider",
            where=where,
            hint="Set OPENAI_API_KEY in the environment (or api_key: \"{{ env_var('MY_KEY') }}\" in the target; "
            "a self-hosted server that needs none takes any value, e.g. api_key: local).",
        )
    logs.secret(api_key)
    max_retries, timeout = int(options.get("max_retries", 3)), float(options.get("timeout", 120.0))

    def make() -> openai.OpenAI:
        import openai

        common: dict[str, Any] = {
            "api_key": api_key,
            "http_client": openai.DefaultHttpxClient(event_hooks=logs.http_hooks()),  # each call logged
            "max_retries": max_retries,
            "timeout": timeout,
        }
        if options.get("azure_endpoint"):
            return openai.AzureOpenAI(
                azure_endpoint=str(options["azure_endpoint"]),
                api_version=str(options.get("api_version") or "2024-10-21"),
                **common,
            )
        return openai.OpenAI(
            base_url=options.get("base_url") or None,
            organization=options.get("organization") or None,
            project=options.get("project") or None,
            **common,
        )

    return make


class OpenAIBatchProvider(BatchProvider):
    name = "openai"

    def __init__(self, connect: Callable[[], openai.OpenAI], *, list_limit: int = 10_000,
                 backoff: float = 1.0) -> None:
        self.connect = connect
        self.list_limit = list_limit  # how many recent batches find_batch looks through
        self.backoff = backoff

    @classmethod
    def from_options(cls, options: dict[str, Any], where: str) -> OpenAIBatchProvider:
        return cls(client_maker(options, where), list_limit=int(options.get("list_limit", 10_000)))

    @cached_property
    def client(self) -> openai.OpenAI:
        """The SDK client, made when first used: a run that finds nothing to send never imports the SDK."""
        return self.connect()

    # -- the lifecycle ----------------------------------------------------------------------
    def upload(self, shard: Shard) -> str:
        with shard.path.open("rb") as handle:
            created = self._call("upload the batch file", lambda: self.client.files.create(
                file=(shard.path.name, handle), purpose="batch"))
        return str(created.id)

    def find_batch(self, shard: Shard) -> BatchInfo | None:
        seen = 0
        page = self._call("list batches", lambda: self.client.batches.list(limit=100))
        while True:
            for batch in page.data:
                seen += 1
                if (batch.metadata or {}).get("shard_id") == shard.shard_id:
                    return _info(batch)
            if not page.has_next_page() or seen >= self.list_limit:
                return None
            page = self._call("list batches", page.get_next_page)

    def create_batch(self, shard: Shard, file_id: str) -> BatchInfo:
        return create_once("create the batch", lambda: _info(self.client.with_options(max_retries=0).batches.create(
            input_file_id=file_id, endpoint=shard.endpoint,  # type: ignore[arg-type]
            completion_window="24h", metadata=dict(shard.metadata))), lambda: self.find_batch(shard), self.backoff)

    def retrieve(self, batch_id: str) -> BatchInfo:
        import openai

        try:
            return _info(self.client.batches.retrieve(batch_id))
        except openai.NotFoundError:
            raise BatchNotFound(f"batch {batch_id} is not found at this provider", where="openai provider") from None
        except openai.APIError as exc:
            raise _provider_error("read the batch", exc) from None

    def download(self, file_id: str, dest: Path) -> bool:
        import openai

        tmp = dest.with_suffix(dest.suffix + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, DOWNLOAD_TRIES + 1):
            try:
                with self.client.files.with_streaming_response.content(file_id) as response, tmp.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                break
            except openai.NotFoundError:
                return False
            except openai.APIError as exc:
                raise _provider_error(f"download file {file_id}", exc) from None
            except _transport_errors() as exc:  # the body broke off: the SDK retries requests, not body reads
                if attempt == DOWNLOAD_TRIES:
                    raise ProviderError(
                        f"could not download file {file_id}: the connection broke off ({exc})",
                        where="openai provider", hint="Re-run `llmt run` to collect it; nothing paid for is lost.",
                    ) from None
        tmp.replace(dest)
        return True

    def cancel(self, batch_id: str) -> BatchInfo:
        import openai

        try:
            return _info(self.client.batches.cancel(batch_id))
        except openai.NotFoundError:
            raise BatchNotFound(f"batch {batch_id} is not found at this provider", where="openai provider") from None
        except (openai.ConflictError, openai.BadRequestError) as exc:
            # "Cannot cancel a batch with status 'completed'": it ended meanwhile; collect it as it is
            info = self.retrieve(batch_id)
            if info.terminal or info.status == "cancelling":
                return info
            raise _provider_error("cancel the batch", exc) from None
        except openai.APIError as exc:
            raise _provider_error("cancel the batch", exc) from None

    def check(self) -> str:
        once = self.client.with_options(max_retries=0, timeout=30.0)  # a diagnosis: one try, not a long wait
        page = self._call("list batches", lambda: once.batches.list(limit=1))
        return f"{self.client.base_url} accepted the API key (listing batches: {len(page.data)} shown)"

    def close(self) -> None:
        if "client" in self.__dict__:  # (made)
            self.client.close()

    def _call(self, what: str, func: Any) -> Any:
        import openai

        try:
            return func()
        except openai.APIError as exc:
            raise _provider_error(what, exc) from None


def create_once(what: str, create: Callable[[], T], find: Callable[[], T | None], backoff: float,
                error: Callable[[str, Exception], ProviderError] | None = None) -> T:
    """Create a remote object (a batch, a fine-tuning job) that carries llmt's id in its metadata, never twice:
    the SDK sends no idempotency key, so a create that failed in doubt (a lost connection, a 5xx, a 429) is looked
    for (``find``) before it is tried again after a pause that doubles. ``error`` makes the final failure's error
    (default: a batch's)."""
    import openai

    fail = error or _provider_error
    delay = backoff
    for attempt in range(1, CREATE_TRIES + 1):
        if attempt > 1:  # a create that timed out may have landed while we waited: look again
            found = find()
            if found is not None:
                return found
        try:
            return create()
        except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as exc:
            # the server may have created it before the failure: look before creating again
            found = find()
            if found is not None:
                return found
            if attempt == CREATE_TRIES:
                raise fail(what, exc) from None
            time.sleep(_retry_after(exc, delay))
            delay *= 2
        except openai.APIError as exc:
            raise fail(what, exc) from None
    raise AssertionError("unreachable")


def _info(batch: Any) -> BatchInfo:
    counts = batch.request_counts
    errors = tuple(
        BatchLineError(str(e.code or ""), str(e.message or ""), e.line)
        for e in ((batch.errors.data or []) if batch.errors else [])
    )
    return BatchInfo(
        batch_id=batch.id,
        status=batch.status,
        input_file_id=batch.input_file_id or None,
        output_file_id=batch.output_file_id or None,  # Azure sends "" for "none"
        error_file_id=batch.error_file_id or None,
        total=counts.total if counts else 0,
        completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        errors=errors,
        created_at=batch.created_at,
        expires_at=batch.expires_at,
        metadata=dict(batch.metadata or {}),
    )


def _transport_errors() -> tuple[type[Exception], ...]:
    """What the SDK's HTTP library raises while a response body is read (it does not wrap those)."""
    import sys

    return tuple(m.HTTPError for m in (sys.modules.get("httpx"), sys.modules.get("httpx2")) if m is not None)


def _retry_after(exc: Exception, default: float) -> float:
    response = getattr(exc, "response", None)
    header = response.headers.get("retry-after") if response is not None else None
    try:
        return min(float(header), 60.0) if header else default
    except ValueError:
        return default


def _provider_error(what: str, exc: Exception) -> ProviderError:
    import openai

    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, openai.AuthenticationError):
        hint = "Check OPENAI_API_KEY (or the target's api_key)."
    elif isinstance(exc, openai.APIConnectionError):
        hint = "Check the network and the target's base_url; re-run `llmt run` to continue where it stopped."
    else:
        hint = "Re-run `llmt run` to continue where it stopped; nothing already paid for is lost."
    return ProviderError(
        f"could not {what}: {message}" + (f" (HTTP {status})" if status else ""), where="openai provider",
        hint=hint,
    )
