"""A fake Kaggle API on 127.0.0.1 for the real `kaggle` client (stdlib only). KAGGLE_API_ENVIRONMENT=LOCALHOST sends the
client to http://localhost/api/v1/..., and HTTP_PROXY aimed here brings it to this server, which so sees absolute URLs.
It serves the two calls of dataset_download_files: POST DOWNLOAD_PATH answers 302 to the blob, GET the blob the zip."""

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
    """Serves one dataset zip while in a `with` block, with faults that tests switch on before the request."""

    def __init__(self, zip_bytes: bytes, owner: str = "daavoo", dataset: str = "3d-mnist") -> None:
        self.zip_bytes, self.owner, self.dataset = zip_bytes, owner, dataset
        self.status = 302  # DownloadDataset status; >= 400 answers a JSON error
        self.blob_status = 200  # blob GET status; >= 400 answers a JSON error
        self.truncate_blob = False  # announce the full Content-Length, send half the bytes, then close
        self.hang = False  # hold every request unanswered until the block ends
        self.requests: list[dict[str, Any]] = []  # one per request received: method, path, json, headers
        self.port, self.blob_path = 0, f"/blob/{dataset}.zip"
        self._stopping, self._handlers = threading.Event(), []

    def env(self, config_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
        """Variables that route the real client here; it reads them at import, so run it in a subprocess."""
        proxy = f"http://127.0.0.1:{self.port}"  # an inherited NO_PROXY=localhost,127.0.0.1 would bypass it
        env = {"KAGGLE_API_ENVIRONMENT": "LOCALHOST", "HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": ""}
        return env | {"no_proxy": ""} | ({} if config_dir is None else {"KAGGLE_CONFIG_DIR": str(config_dir)})

    def __enter__(self) -> Self:
        """Listen on a port the OS picks, serving from daemon threads that never keep the test process alive."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads, self._server.fake, self.port = True, self, self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="fake-kaggle", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop serving, wake any hung handler and wait for the handler threads to end."""
        self._stopping.set()
        self._server.shutdown()  # returns once serve_forever has stopped
        self._server.server_close()
        for thread in list(self._handlers):
            thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    """Answers the two download calls according to the owning FakeKaggle's settings."""

    def log_message(self, *args: Any) -> None:
        """Keep test output clean."""

    def do_POST(self) -> None:
        """Log the request on the fake, then answer it as the fake's settings say (or hold it, with `hang`)."""
        fake: FakeKaggle = self.server.fake  # type: ignore[attr-defined]
        fake._handlers.append(threading.current_thread())
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        except ValueError:
            body = None
        path = urlsplit(self.path).path
        fake.requests.append(
            {"method": self.command, "path": path, "json": body, "headers": dict(self.headers.items())}
        )
        ours = isinstance(body, dict) and (body.get("ownerSlug"), body.get("datasetSlug")) == (fake.owner, fake.dataset)
        if fake.hang:  # hold the request until the block ends, then drop the connection
            fake._stopping.wait()
            self.close_connection = True
        elif self.command == "POST" and path != DOWNLOAD_PATH:
            self._error(404, "unknown endpoint")
        elif self.command == "POST" and fake.status >= 400:
            self._error(fake.status, "fake DownloadDataset failure")
        elif self.command == "POST" and not ours:
            self._error(404, "dataset not found")
        elif self.command == "POST":
            self._answer(fake.status, b"", {"Location": f"http://127.0.0.1:{fake.port}{fake.blob_path}"})
        elif path != fake.blob_path:
            self._error(404, "unknown blob")
        elif fake.blob_status >= 400:
            self._error(fake.blob_status, "fake blob failure")
        else:  # the full size always announced, so that a truncated body is detectable
            data = fake.zip_bytes
            sent = data[: len(data) // 2] if fake.truncate_blob else data
            self._answer(fake.blob_status, sent, {"Content-Type": "application/zip"}, length=len(data))
            self.close_connection = self.close_connection or fake.truncate_blob  # cut short: drop the socket

    do_GET = do_POST

    def _answer(self, status: int, body: bytes, headers: dict[str, str], length: int | None = None) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body) if length is None else length)}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        """Answer in Kaggle's error shape, which the client turns into HTTPError."""
        payload = json.dumps({"code": status, "message": message}).encode()
        self._answer(status, payload, {"Content-Type": "application/json"})


def write_kaggle_json(config_dir: str | os.PathLike[str], username: str = "tester", key: str = SECRET) -> Path:
    """Write `kaggle.json` credentials into config_dir, readable by the owner only (from the start: O_CREAT's mode)."""
    path = Path(config_dir) / "kaggle.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump({"username": username, "key": key}, handle)
    path.chmod(0o600)  # O_CREAT's mode does not apply to an existing file
    return path


def kaggle_env(folder: Path, fake: FakeKaggle, credentials: bool = True, config_dir: bool = True) -> dict[str, str]:
    """Env routing the client to `fake`, with a scratch HOME, and kaggle.json in KAGGLE_CONFIG_DIR unless told not to."""
    home, config = folder / "home", folder / "kaggle-config"
    home.mkdir(parents=True, exist_ok=True)
    if credentials:
        write_kaggle_json(config)
    elif config_dir:
        config.mkdir(exist_ok=True)
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **fake.env(config if config_dir else None)}
