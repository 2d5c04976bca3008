"""A fake Kaggle API server for tests, driven by the real ``kaggle`` client.

The client is pointed at it with ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` (so it
talks to ``http://localhost/api/v1/...``) plus ``HTTP_PROXY`` aimed at this
server, which therefore sees absolute URLs in the request line.  Only the two
calls behind ``KaggleApi.dataset_download_files`` are served:

* ``POST /api/v1/datasets.DatasetApiService/DownloadDataset`` -> 302 to the blob
* ``GET /blob/<dataset>.zip`` -> the zip bytes

Faults (HTTP errors, a truncated body, a hung request) are switched on by
setting attributes before the request.  Stdlib only.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from tests.conftest import SECRET

DOWNLOAD_PATH = "/api/v1/datasets.DatasetApiService/DownloadDataset"


class FakeKaggle:
    """A fake Kaggle API on 127.0.0.1 serving one dataset zip, with faults."""

    def __init__(self, zip_bytes: bytes, owner: str = "daavoo", dataset: str = "3d-mnist") -> None:
        self.zip_bytes = zip_bytes
        self.owner = owner
        self.dataset = dataset
        # Switchable faults; tests set these before the request they target.
        self.status = 302  # DownloadDataset status; >= 400 answers a JSON error
        self.blob_status = 200  # blob GET status; >= 400 answers a JSON error
        self.truncate_blob = False  # full Content-Length, half the bytes, then close
        self.hang = False  # hold every request unanswered until stop()
        # One dict per request received: method, path, json, headers.
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._handler_threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def blob_path(self) -> str:
        return f"/blob/{self.dataset}.zip"

    def start(self) -> Self:
        """Listen on a free port of 127.0.0.1 and serve from a daemon thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        # Daemon handler threads can never keep the test process alive.
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=server.serve_forever, name="fake-kaggle", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake any hung handler and wait for handler threads to exit."""
        self._stopping.set()  # releases handlers blocked by ``hang``
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            threads, self._handler_threads = self._handler_threads, []
        for thread in threads:
            thread.join(timeout=5)

    def env(self, config_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
        """Environment variables that route the real kaggle client to this server.

        They must be in place before ``import kaggle``: the client fixes its
        endpoint and config dir at import time, so run it in a subprocess.
        """
        proxy = f"http://127.0.0.1:{self.port}"
        env = {
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
            "HTTP_PROXY": proxy,
            "http_proxy": proxy,
            # An inherited NO_PROXY=localhost,127.0.0.1 would bypass the proxy.
            "NO_PROXY": "",
            "no_proxy": "",
        }
        if config_dir is not None:
            env["KAGGLE_CONFIG_DIR"] = str(config_dir)
        return env

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _is_our_dataset(self, body: Any) -> bool:
        """Whether a DownloadDataset body asks for the dataset this fake serves."""
        if not isinstance(body, dict):
            return False
        return (body.get("ownerSlug"), body.get("datasetSlug")) == (
            self.owner,
            self.dataset,
        )

    def _track(self, thread: threading.Thread) -> None:
        with self._lock:
            self._handler_threads.append(thread)


class _Handler(BaseHTTPRequestHandler):
    """Answers the two download calls according to the owning FakeKaggle's settings."""

    server: ThreadingHTTPServer

    @property
    def fake(self) -> FakeKaggle:
        return self.server.fake  # type: ignore[attr-defined]

    def log_message(self, *args: Any) -> None:
        """Keep test output clean."""

    def do_POST(self) -> None:
        body = self._record()
        if self._hung():
            return
        fake = self.fake
        if urlsplit(self.path).path != DOWNLOAD_PATH:
            self._error(404, "unknown endpoint")
        elif fake.status >= 400:
            self._error(fake.status, "fake DownloadDataset failure")
        elif not fake._is_our_dataset(body):
            self._error(404, "dataset not found")
        else:
            self.send_response(fake.status)
            self.send_header("Location", f"http://127.0.0.1:{fake.port}{fake.blob_path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_GET(self) -> None:
        self._record()
        if self._hung():
            return
        fake = self.fake
        data = fake.zip_bytes
        if urlsplit(self.path).path != fake.blob_path:
            self._error(404, "unknown blob")
        elif fake.blob_status >= 400:
            self._error(fake.blob_status, "fake blob failure")
        else:
            self.send_response(fake.blob_status)
            self.send_header("Content-Type", "application/zip")
            # Always announce the full size, so a truncated body is detectable.
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if fake.truncate_blob:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True  # drop the socket mid-body
            else:
                self.wfile.write(data)

    def _record(self) -> Any:
        """Log the request on the fake and return its parsed JSON body (or None)."""
        self.fake._track(threading.current_thread())
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.fake.requests.append(
            {
                "method": self.command,
                "path": urlsplit(self.path).path,
                "json": body,
                "headers": dict(self.headers.items()),
            }
        )
        return body

    def _hung(self) -> bool:
        """With ``hang`` set, block until stop(), then drop the connection."""
        if not self.fake.hang:
            return False
        self.fake._stopping.wait()
        self.close_connection = True
        return True

    def _error(self, status: int, message: str) -> None:
        """Answer in Kaggle's error shape, which the client turns into HTTPError."""
        payload = json.dumps({"code": status, "message": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def write_kaggle_json(
    config_dir: str | os.PathLike[str],
    username: str = "tester",
    key: str = SECRET,
) -> Path:
    """Write ``kaggle.json`` credentials into config_dir, readable by the owner only."""
    path = Path(config_dir) / "kaggle.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create with 0o600 from the start so the key is never world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"username": username, "key": key}, fh)
    path.chmod(0o600)  # O_CREAT's mode does not apply to an existing file
    return path
