"""The embeddings endpoint (`/v1/embeddings`) in OpenAI's request and response format: its limits, and the
synthetic embeddings that the offline ``fake`` provider and the test emulator answer with.

A request embeds one text or a list of texts (``input``) with a ``model`` and, for text-embedding-3 and later
models, ``dimensions``. OpenAI's limits, which llmt packs its requests within: at most ``MAX_INPUTS`` texts a
request, ``MAX_INPUT_TOKENS`` tokens a text (the model's context window), ``MAX_REQUEST_TOKENS`` tokens a
request, no empty text, and ``MAX_BATCH_INPUTS`` texts a batch across its requests.

Synthetic vectors make retrieval meaningful offline: a text's words (lower-cased, of at least three letters or
digits, but for a few of the commonest English words) are hashed into the vector (each word adds to a few signed
positions, 1 + ln(n) for a word seen n times), which is then normalized to length 1. Texts that share words are
near each other (cosine similarity), texts that share none are near orthogonal; the vector depends only on the
text and the dimensions. Asked for ``encoding_format: base64``, as the API the vectors come as the base64 of
their little-endian float32 values.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections import Counter
from functools import lru_cache
from typing import Any

ENDPOINT = "/v1/embeddings"
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
MAX_BATCH_INPUTS = 50_000
# the vector length of each model when a request does not ask for `dimensions` (ada-002 takes no `dimensions`)
DEFAULT_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
FIXED_DIMENSIONS = ("text-embedding-ada-002",)
SLOTS_PER_WORD = 4
_WORD = re.compile(r"\w{3,}")
_COMMON = frozenset(("the", "and", "for", "you", "your", "with", "this", "that", "not", "are", "from", "have", "how",
                     "can", "was", "but", "all", "any", "our", "its"))


@lru_cache(maxsize=65536)
def _slots(word: str, dims: int) -> tuple[tuple[int, float], ...]:
    digest = hashlib.sha256(word.encode("utf-8")).digest()
    return tuple((int.from_bytes(digest[4 * i:4 * i + 3], "big") % dims, 1.0 if digest[4 * i + 3] & 1 else -1.0)
                 for i in range(SLOTS_PER_WORD))


def fake_vector(text: str, dims: int) -> list[float]:
    """A unit vector of ``dims`` floats for ``text``: its hashed bag of words (see the module's docstring)."""
    words = Counter(w for w in _WORD.findall(text.lower()) if w not in _COMMON) or Counter([text.lower()])
    vector = [0.0] * dims
    for word, n in words.items():
        weight = 1.0 + math.log(n)
        for slot, sign in _slots(word, dims):
            vector[slot] += sign * weight
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 8) for v in vector]


def dimensions_of(body: dict[str, Any]) -> int | None:
    """The vector length a request asks for (None: a model whose default llmt does not know)."""
    asked = body.get("dimensions")
    return int(asked) if isinstance(asked, int) else DEFAULT_DIMENSIONS.get(str(body.get("model")))


def _invalid(message: str, param: str, code: str | None = None) -> tuple[int, dict[str, Any]]:
    return 400, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def embeddings_body(body: dict[str, Any], *, kind: str | None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and response body of one embeddings request, checked against OpenAI's limits. ``kind``:
    a forced outcome (synth.FAULT_KINDS): HTTP errors as such, `schema_violation` as a vector one float short;
    the other kinds are those of chat answers and do not apply."""
    from llmt.providers.synth import error_body
    from llmt.tokens import count_text

    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _invalid("you must provide a model parameter", "model", "missing_required_parameter")
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return _invalid("'$.input' is invalid: a string or a non-empty array of strings is expected.", "input")
    if len(texts) > MAX_INPUTS:
        return _invalid(f"'$.input' is too long: {len(texts)} inputs, at most {MAX_INPUTS}.", "input")
    if any(not t for t in texts):
        return _invalid("'$.input' is invalid: an input cannot be an empty string.", "input")
    dims, asked = dimensions_of(body), body.get("dimensions")
    if asked is not None and (model in FIXED_DIMENSIONS or not isinstance(asked, int)
                              or not 1 <= asked <= DEFAULT_DIMENSIONS.get(model, 1 << 16)):
        return _invalid(f"This model does not support specifying dimensions={asked!r}.", "dimensions")
    tokens = [count_text(t, model) for t in texts]
    longest = max(tokens)
    if longest > MAX_INPUT_TOKENS:
        return _invalid(f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however you requested "
                        f"{longest} tokens in input {tokens.index(longest)}.", "input", "context_length_exceeded")
    if sum(tokens) > MAX_REQUEST_TOKENS:
        return _invalid(f"Requested {sum(tokens)} tokens, max {MAX_REQUEST_TOKENS} tokens per request", "input",
                        "max_tokens_per_request")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return _invalid(f"Invalid value for 'encoding_format': {encoding!r}; 'float' or 'base64'.", "encoding_format")
    if kind == "http_error_400":
        return 400, error_body(400)
    if kind == "http_error_500":
        return 500, error_body(500)
    vectors = [fake_vector(t, dims or 1536) for t in texts]
    if kind == "schema_violation":
        vectors[0] = vectors[0][:-1]
    data = [{"object": "embedding", "index": i,
             "embedding": v if encoding == "float" else base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()}
            for i, v in enumerate(vectors)]
    return 200, {"object": "list", "data": data, "model": model,
                 "usage": {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)}}
