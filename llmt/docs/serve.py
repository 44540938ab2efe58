"""`llmt docs serve`: the documentation files of target/ over HTTP on localhost, until Ctrl-C. Only the page and
the artifacts it documents are served (batch files and the rest of target/ hold data: they are not)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmt import logs
from llmt.errors import UsageError

SERVED = ("index.html", "catalog.json", "manifest.json", "run_results.json")
HOST = "127.0.0.1"


class _Handler(SimpleHTTPRequestHandler):
    def send_head(self) -> Any:
        name = urlsplit(self.path).path.lstrip("/") or "index.html"
        if name not in SERVED:
            self.send_error(404, "Not a documentation file")
            return None
        self.path = "/" + name
        return super().send_head()

    def log_message(self, format: str, *args: Any) -> None:
        logs.event("http", format % args, level=logging.DEBUG, client=self.client_address[0])


def serve(target_dir: Path, port: int, ready: Callable[[str], None]) -> None:
    """Serve until interrupted; ``ready`` is told the URL once the server listens (port 0: any free port)."""
    if not (target_dir / "index.html").is_file():
        raise UsageError(f"no documentation to serve: {target_dir / 'index.html'} does not exist",
                         hint="Run `llmt docs generate` first.")
    try:
        server = ThreadingHTTPServer((HOST, port), partial(_Handler, directory=str(target_dir)))
    except OSError as exc:
        raise UsageError(f"cannot serve on {HOST}:{port}: {exc.strerror}",
                         hint="Choose another port: `llmt docs serve --port 8081`.") from None
    with server:
        ready(f"http://{HOST}:{server.server_address[1]}/")
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop serving
            server.serve_forever()
