"""Realtime mode: the same request bodies sent to the chat completions (or embeddings) endpoint of OpenAI, Azure
OpenAI or any OpenAI-compatible server (vLLM, Ollama, llama.cpp), through the official SDK.

The SDK retries 429 (honouring `retry-after`) and 5xx with exponential backoff (`max_retries`);
what still fails comes back as a result line and is classified like a batch line."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmt.providers.base import RealtimeProvider
from llmt.providers.openai_batch import make_client

if TYPE_CHECKING:
    import openai


class OpenAIRealtimeProvider(RealtimeProvider):
    name = "openai-realtime"

    def __init__(self, client: openai.OpenAI) -> None:
        self.client = client

    @classmethod
    def from_options(cls, options: dict[str, Any], where: str) -> OpenAIRealtimeProvider:
        return cls(make_client({"max_retries": 5, **options}, where))

    def complete(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._line(custom_id, lambda: self.client.chat.completions.with_raw_response.create(
            **body, extra_headers={"X-Client-Request-Id": custom_id}))

    def embed(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._line(custom_id, lambda: self.client.embeddings.with_raw_response.create(
            **body, extra_headers={"X-Client-Request-Id": custom_id}))

    def _line(self, custom_id: str, send: Callable[[], Any]) -> dict[str, Any]:
        """The result line of one request (``send`` makes it and returns the SDK's raw response)."""
        import openai

        line_id = f"realtime_{secrets.token_hex(8)}"
        try:
            response = send()
            payload = response.http_response.json()
            status = response.http_response.status_code
        except openai.APIStatusError as exc:
            try:
                payload = exc.response.json()
            except ValueError:
                payload = {"error": {"message": exc.message, "type": "api_error", "code": None}}
            status = exc.status_code
        except openai.APIError as exc:  # no answer at all (connection, timeout): retryable
            return {"id": line_id, "custom_id": custom_id, "response": None,
                    "error": {"code": type(exc).__name__, "message": str(exc)[:500]}}
        return {"id": line_id, "custom_id": custom_id,
                "response": {"status_code": status, "request_id": None, "body": payload}, "error": None}

    def close(self) -> None:
        self.client.close()
