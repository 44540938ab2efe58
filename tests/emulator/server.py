"""A faithful local OpenAI Batch API server for tests that drive the real ``openai`` SDK.

    emu = Emulator().start()
    client = emu.client()            # openai.OpenAI(base_url=emu.base_url, max_retries=2, timeout=5)
    ...
    emu.stop()

Endpoints: ``POST/GET /v1/files``, ``GET/DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``,
``POST/GET /v1/batches``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``,
``POST /v1/chat/completions`` and ``POST /v1/embeddings`` (batches of either), and fine-tuning jobs
(finetuning.py), with OpenAI's object shapes and error bodies ``{"error": {"message", "type", "param", "code"}}``.
Answers come from :func:`llmt.providers.synth.answer_line`, the same as the fake provider's.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from llmt.providers.embeddings import ENDPOINT as EMBEDDINGS
from llmt.providers.fake import BATCH_ENDPOINTS, MAX_REQUESTS
from llmt.providers.synth import answer_line, error_body, invalid_request, request_seed
from tests.emulator.faults import FaultInjector, HttpFault
from tests.emulator.finetuning import FINE_TUNABLE, FineTuning
from tests.emulator.state import BatchRecord, Clock, Seen, Store, Timing, copy

if TYPE_CHECKING:
    import openai

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
CHAT = "/v1/chat/completions"
JSON = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, body: JSON, headers: dict[str, str] | None = None) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body
        self.headers = headers or {}


def not_found(kind: str, object_id: str, param: str = "id") -> ApiError:
    return ApiError(404, invalid_request(f"No such {kind} object: {object_id}", param))


class Emulator:
    """The server, its state, its clock and its fault injector."""

    def __init__(
        self,
        *,
        timing: Timing | None = None,
        step_per_poll: bool = False,
        api_key: str | None = None,
        max_requests: int = MAX_REQUESTS,
    ) -> None:
        self.clock = Clock()
        self.timing = timing or Timing()
        self.faults = FaultInjector()
        self.store = Store(self.clock, self.timing, self.faults, max_requests)
        self.finetuning = FineTuning(self.clock)
        self.store.step_per_poll = step_per_poll
        self.api_key = api_key
        self.stopping = threading.Event()
        self.local = threading.local()  # per request: the client's x-client-request-id
        self.realtime_delay = 0.0  # seconds each chat completion takes (so concurrent requests overlap)
        self.errors: list[str] = []  # unexpected exceptions in the emulator (a bug in it)
        self.disconnects = 0  # clients that went away before their answer was written
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> Emulator:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the emulator is not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, *, max_retries: int = 2, timeout: float = 5.0, **kwargs: Any) -> openai.OpenAI:
        """An ``openai.OpenAI`` client pointed at this server."""
        import openai

        return openai.OpenAI(
            api_key=self.api_key or "sk-emulator",
            base_url=self.base_url,
            max_retries=max_retries,
            timeout=timeout,
            **kwargs,
        )

    # -- test helpers

    @property
    def seen(self) -> Seen:
        return self.store.seen

    @property
    def step_per_poll(self) -> bool:
        return self.store.step_per_poll

    @step_per_poll.setter
    def step_per_poll(self, value: bool) -> None:
        self.store.step_per_poll = value

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward (batches move on when next looked at)."""
        self.clock.advance(seconds)

    def batch(self, batch_id: str) -> JSON:
        """A batch as the API would show it now."""
        return self.store.view(self.store.batches[batch_id])

    def release(self, batch_id: str) -> None:
        """Let a batch stalled with ``next_batch(stall_after=...)`` finish."""
        self.store.release(batch_id)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``condition()`` holds (e.g. a slow request has been committed)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("the emulator did not reach the expected state")
            self.stopping.wait(0.002)

    def file_content(self, file_id: str) -> bytes:
        return self.store.files[file_id].content

    def delete_file(self, file_id: str) -> None:
        """Remove a file behind the client's back (it will 404)."""
        with self.store.lock:
            self.store.files.pop(file_id, None)

    # -- routing

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes, ctype: str) -> tuple[int, Any]:
        files = re.fullmatch(r"/v1/files/([^/]*)(/content)?", path)
        batch = re.fullmatch(r"/v1/batches/([^/]*)(/cancel)?", path)
        job = re.fullmatch(r"/v1/fine_tuning/jobs/([^/]*)(/cancel)?", path)
        if path == "/v1/fine_tuning/jobs" and method == "POST":
            return 200, self.create_job(_json_body(body))
        if path == "/v1/fine_tuning/jobs" and method == "GET":
            return 200, self.list_jobs(query)
        if job and job.group(1) not in self.finetuning.jobs:
            raise not_found("FineTuningJob", job.group(1))
        if job and method == "GET" and not job.group(2):
            return 200, self.finetuning.view(job.group(1))
        if job and method == "POST" and job.group(2):
            cancelled = self.finetuning.cancel(job.group(1))
            if cancelled is None:
                raise ApiError(400, invalid_request("Job has already completed and cannot be cancelled."))
            return 200, cancelled
        if path == "/v1/files" and method == "POST":
            return 200, self.upload(body, ctype)
        if path == "/v1/files" and method == "GET":
            return 200, self.list_files(query)
        if files and method == "GET" and files.group(2):
            return 200, self.content(files.group(1))
        if files and method == "GET":
            return 200, self.file(files.group(1)).obj
        if files and method == "DELETE" and not files.group(2):
            self.file(files.group(1))
            self.delete_file(files.group(1))
            return 200, {"id": files.group(1), "object": "file", "deleted": True}
        if path == "/v1/batches" and method == "POST":
            return 200, self.create_batch(_json_body(body))
        if path == "/v1/batches" and method == "GET":
            return 200, self.list_batches(query)
        if batch and method == "GET" and not batch.group(2):
            return 200, self.store.view(self.record(batch.group(1)))
        if batch and method == "POST" and batch.group(2):
            return 200, self.cancel(batch.group(1))
        if path in (CHAT, EMBEDDINGS) and method == "POST":
            return self.realtime(path, _json_body(body))
        raise ApiError(404, invalid_request(f"Invalid URL ({method} {path})"))

    def create_job(self, params: JSON) -> JSON:
        for name in ("model", "training_file"):
            if not params.get(name):
                raise ApiError(400, invalid_request(f"Missing required parameter: '{name}'.", name))
        model = str(params["model"])
        if model not in FINE_TUNABLE and not model.startswith("ft:"):
            raise ApiError(400, invalid_request(f"Model {model} is not available for fine-tuning or does not exist.",
                                                "model", "model_not_available"))
        contents = {}
        for name in ("training_file", "validation_file"):
            if params.get(name):
                stored = self.store.files.get(str(params[name]))
                if stored is None:
                    raise not_found("File", str(params[name]), name)
                if stored.obj["purpose"] != "fine-tune":
                    message = f"File {params[name]} has purpose {stored.obj['purpose']!r}; 'fine-tune' is required."
                    raise ApiError(400, invalid_request(message, name, "invalid_value"))
                contents[name] = stored.content
        metadata = params.get("metadata") or {}
        if not isinstance(metadata, dict) or len(metadata) > 16:
            raise ApiError(400, invalid_request("Invalid 'metadata': at most 16 pairs.", "metadata"))
        hyper = ((params.get("method") or {}).get("supervised") or {}).get("hyperparameters") or {}
        epochs = hyper.get("n_epochs", "auto")
        if epochs != "auto" and not (isinstance(epochs, int) and 1 <= epochs <= 50):
            raise ApiError(400, invalid_request(f"Invalid n_epochs: {epochs!r}.", "n_epochs", "invalid_value"))
        return self.finetuning.create(params, contents["training_file"])

    def list_jobs(self, query: dict[str, str]) -> JSON:
        metadata = {k[9:-1]: v for k, v in query.items() if k.startswith("metadata[") and k.endswith("]")}
        return self.finetuning.listing(query.get("after"), int(query.get("limit", "20")), metadata)

    def file(self, file_id: str) -> Any:
        stored = self.store.files.get(file_id)
        if stored is None:
            raise not_found("File", file_id)
        return stored

    def record(self, batch_id: str) -> BatchRecord:
        record = self.store.batches.get(batch_id)
        if record is None:
            raise not_found("Batch", batch_id)
        return record

    def upload(self, body: bytes, ctype: str) -> JSON:
        fields = _multipart(body, ctype)
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if "file" not in fields:
            raise ApiError(400, invalid_request("Missing required parameter: 'file'.", "file"))
        if purpose not in FILE_PURPOSES:
            raise ApiError(400, invalid_request(f"Invalid value for purpose: '{purpose}'.", "purpose"))
        filename, content = fields["file"]
        if purpose in ("batch", "fine-tune") and not (filename or "").endswith(".jsonl"):
            raise ApiError(400, invalid_request(f"Invalid file format for purpose {purpose}. Must be .jsonl", "file"))
        obj = self.store.add_file(content, filename or "upload", purpose)
        self.seen.files.append(dict(obj))
        return obj

    def content(self, file_id: str) -> bytes:
        content: bytes = self.file(file_id).content
        return content

    def list_files(self, query: dict[str, str]) -> JSON:
        objs = [f.obj for f in self.store.files.values() if query.get("purpose") in (None, f.obj["purpose"])]
        return {"object": "list", "data": objs[::-1], "has_more": False}

    def create_batch(self, params: JSON) -> JSON:
        input_file_id = params.get("input_file_id")
        endpoint = params.get("endpoint")
        window = params.get("completion_window")
        metadata = params.get("metadata") or {}
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not params.get(name):
                raise ApiError(400, invalid_request(f"Missing required parameter: '{name}'.", name))
        if endpoint not in BATCH_ENDPOINTS:
            message = f"Invalid value: '{endpoint}'. Supported values are: {', '.join(BATCH_ENDPOINTS)}."
            raise ApiError(400, invalid_request(message, "endpoint", "invalid_value"))
        if window != "24h":
            message = f"Invalid value: '{window}'. Supported values are: '24h'."
            raise ApiError(400, invalid_request(message, "completion_window", "invalid_value"))
        if not isinstance(metadata, dict) or len(metadata) > 16:
            raise ApiError(400, invalid_request("Invalid 'metadata': at most 16 pairs.", "metadata"))
        for key, value in metadata.items():
            if not isinstance(value, str) or len(key) > 64 or len(value) > 512:
                message = f"Invalid 'metadata.{key}': keys have at most 64 characters, values are strings of 512."
                raise ApiError(400, invalid_request(message, "metadata", "invalid_value"))
        stored = self.store.files.get(str(input_file_id))
        if stored is None:
            raise not_found("File", str(input_file_id), "input_file_id")
        if stored.obj["purpose"] != "batch":
            message = f"The input file {input_file_id} must have purpose 'batch'."
            raise ApiError(400, invalid_request(message, "input_file_id", "invalid_value"))
        record = self.store.create_batch(str(input_file_id), str(endpoint), str(window), metadata)
        return copy(record.obj)

    def list_batches(self, query: dict[str, str]) -> JSON:
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            raise ApiError(400, invalid_request("Invalid 'limit': must be an integer.", "limit")) from None
        if not 1 <= limit <= 100:
            raise ApiError(400, invalid_request("Invalid 'limit': between 1 and 100.", "limit"))
        with self.store.lock:
            ids = self.store.order[::-1]  # newest first
        after = query.get("after")
        if after:
            if after not in ids:
                raise not_found("Batch", after, "after")
            ids = ids[ids.index(after) + 1 :]
        page = [self.store.view(self.store.batches[i]) for i in ids[:limit]]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(ids) > limit,
        }

    def cancel(self, batch_id: str) -> JSON:
        record = self.record(batch_id)
        obj = self.store.cancel(record)
        if obj is None:
            status = record.obj["status"]
            raise ApiError(400, invalid_request(f"Cannot cancel a batch with status '{status}'."))
        return obj

    def realtime(self, url: str, body: JSON) -> tuple[int, JSON]:
        """A chat completion or embeddings request, answered now."""
        seen = self.store.seen
        with self.store.lock:
            seen.realtime += 1
            seen.realtime_in_flight += 1
            seen.realtime_max_in_flight = max(seen.realtime_max_in_flight, seen.realtime_in_flight)
            client_id = getattr(self.local, "client_id", None)
            if client_id:
                seen.realtime_answered[client_id] += 1
        try:
            if self.realtime_delay:
                self.stopping.wait(self.realtime_delay)  # server-side latency: requests overlap
            return self._answer(url, body)
        finally:
            with self.store.lock:
                seen.realtime_in_flight -= 1

    def _answer(self, url: str, body: JSON) -> tuple[int, JSON]:
        request = {"custom_id": request_seed(body), "method": "POST", "url": url, "body": body}
        kind = self.faults.realtime_kind()
        attempt = f"realtime-{self.store.seen.realtime}"
        line, _ = answer_line(request, faults=self.faults.lines, batch_id=attempt, seq=0, kind=kind)
        response = line["response"]
        return int(response["status_code"]), response["body"]


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llmt-emulator"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    @property
    def emu(self) -> Emulator:
        server = self.server
        assert isinstance(server, _Server)
        return server.emulator

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self, method: str) -> None:
        emu = self.emu
        url = urlsplit(self.path)
        path = url.path.rstrip("/")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self._read_body()
        retry = int(self.headers.get("x-stainless-retry-count") or 0)
        emu.local.client_id = self.headers.get("x-client-request-id")
        hold = emu.faults.holding(method, path, self.headers.get("Authorization", "").removeprefix("Bearer "))
        if hold is not None:
            hold.wait(emu.stopping)
        faults = {f.kind: f for f in emu.faults.take(method, path)}

        def record(status: int) -> None:
            with emu.store.lock:
                emu.seen.http.append((method, path, status, retry))

        if "slow" in faults:
            emu.stopping.wait(faults["slow"].delay)
        if "drop_before" in faults:
            record(0)
            self._hang_up()
            return
        status, payload, headers = self._dispatch(method, path, query, body, faults.get("status"))
        if "drop_after" in faults:
            record(0)
            self._hang_up()
            return
        record(status)
        self._send(status, payload, headers)

    def _dispatch(
        self, method: str, path: str, query: dict[str, str], body: bytes, fault: HttpFault | None
    ) -> tuple[int, Any, dict[str, str]]:
        emu = self.emu
        if fault is not None:
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = f"{fault.retry_after:g}"
                headers["retry-after-ms"] = f"{fault.retry_after * 1000:g}"
            return fault.status, fault.body or error_body(fault.status), headers
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or (emu.api_key is not None and auth != f"Bearer {emu.api_key}"):
            message = "Incorrect API key provided." if auth else "You didn't provide an API key."
            return 401, invalid_request(message, None, "invalid_api_key" if auth else None), {}
        try:
            status, payload = emu.handle(method, path, query, body, self.headers.get("Content-Type", ""))
        except ApiError as exc:
            return exc.status, exc.body, exc.headers
        except Exception as exc:  # a bug in the emulator: answer 500 and let the test see it
            emu.errors.append(f"{method} {path}: {exc!r}")
            return 500, error_body(500, message=f"emulator error: {exc!r}"), {"x-should-retry": "false"}
        return status, payload, {}

    def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        if isinstance(payload, bytes):
            data, ctype = payload, "application/octet-stream"
        else:
            data, ctype = json.dumps(payload).encode("utf-8"), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{secrets.token_hex(16)}")
        self.send_header("openai-processing-ms", "1")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _hang_up(self) -> None:
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: Emulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout) is not a server error: note it, stay quiet."""
        self.emulator.disconnects += 1


def _json_body(body: bytes) -> JSON:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise ApiError(400, invalid_request("We could not parse the JSON body of your request.")) from None
    if not isinstance(value, dict):
        raise ApiError(400, invalid_request("The request body must be a JSON object."))
    return value


def _multipart(body: bytes, ctype: str) -> dict[str, tuple[str | None, bytes]]:
    """Fields of a multipart/form-data body: name -> (filename, bytes)."""
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(400, invalid_request("Expected a multipart/form-data body."))
    head = f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str):
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields
