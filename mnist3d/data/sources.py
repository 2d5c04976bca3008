"""Where the raw files come from: Kaggle, a local copy, or the synthetic generator."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from mnist3d.errors import PipelineError, reading
from mnist3d.io.files import (
    atomic_paths,
    check_size,
    copy_bounded,
    file_kind,
    json_text,
    max_clouds,
    regular_file,
    sha256,
)
from mnist3d.io.readers import read_paired_clouds, read_vectors
from mnist3d.io.schema import CLOUD_FILES, VECTORS_FILE

WANTED = (VECTORS_FILE, *CLOUD_FILES.values())
NO_CREDENTIALS = (
    "no Kaggle credentials found; put kaggle.json in ~/.kaggle (or set KAGGLE_API_TOKEN, "
    "or KAGGLE_USERNAME and KAGGLE_KEY), or run offline with: dvc exp run -S data.source=synthetic"
)


def _kaggle_config_dir(environ: dict[str, str], home: Path) -> Path:
    """Where the kaggle client looks for kaggle.json: KAGGLE_CONFIG_DIR, ~/.kaggle, else the XDG config folder."""
    if environ.get("KAGGLE_CONFIG_DIR"):
        return Path(environ["KAGGLE_CONFIG_DIR"])
    if (home / ".kaggle").is_dir() or sys.platform != "linux":
        return home / ".kaggle"
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"


def kaggle_credentials_present(environ: dict[str, str] | None = None) -> bool:
    """Whether the kaggle client will find credentials, checked without importing it (its import has side effects)."""
    environ = os.environ if environ is None else environ
    if environ.get("KAGGLE_API_TOKEN") or (environ.get("KAGGLE_USERNAME") and environ.get("KAGGLE_KEY")):
        return True
    home = Path(environ.get("HOME", Path.home()))
    if any((home / ".kaggle" / name).is_file() for name in ("access_token", "access_token.txt")):
        return True
    config = _kaggle_config_dir(environ, home) / "kaggle.json"
    if not config.is_file():
        return False
    try:
        values = json.loads(config.read_text())
    except (OSError, ValueError):
        raise PipelineError(
            f"{config} is not valid JSON; download a fresh one from your Kaggle account settings"
        ) from None
    if not isinstance(values, dict) or not values.get("username") or not values.get("key"):
        raise PipelineError(
            f"{config} needs both 'username' and 'key'; download a fresh one from your Kaggle account settings"
        )
    return True


@contextmanager
def http_timeout(seconds: float) -> Iterator[None]:
    """Give every requests call a timeout, since the kaggle client sets none and could wait forever."""
    import requests

    original = requests.Session.send

    def send(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = seconds
        return original(self, request, **kwargs)

    requests.Session.send = send
    try:
        yield
    finally:
        requests.Session.send = original


def download_kaggle(dataset: str, version: int | None, folder: Path, timeout: float) -> Path:
    """Download the dataset zip with the official kaggle client into `folder`; returns the zip's path."""
    if not kaggle_credentials_present():
        raise PipelineError(NO_CREDENTIALS)
    import requests

    slug = f"{dataset}/{version}" if version else dataset
    print(f"fetch: downloading {slug} from Kaggle", file=sys.stderr, flush=True)
    try:
        with http_timeout(timeout):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
            api.dataset_download_files(slug, path=str(folder), quiet=False, unzip=False)
    except SystemExit:  # the client exits when it finds no usable credentials
        raise PipelineError(NO_CREDENTIALS) from None
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else None
        raise PipelineError(_http_advice(slug, status)) from None
    except requests.RequestException as error:  # refused, stalled, or cut off mid-transfer
        if isinstance(error, requests.Timeout):
            kind = "timed out"
        elif isinstance(error, requests.exceptions.ChunkedEncodingError):
            kind = "was cut short"
        else:
            kind = "could not connect"
        raise PipelineError(
            f"Kaggle download of {slug} {kind} ({type(error).__name__}); check the network, "
            "raise data.timeout, or run offline with: dvc exp run -S data.source=synthetic"
        ) from None
    zips = sorted(folder.glob("*.zip"))
    if not zips:
        raise PipelineError(f"the Kaggle client wrote no zip for {slug}; run the fetch stage again")
    return zips[0]


def _http_advice(slug: str, status: int | None) -> str:
    if status in (401, 403):
        return (
            f"Kaggle refused the credentials (HTTP {status}) for {slug}; check kaggle.json or KAGGLE_KEY, "
            "and accept the dataset's terms on its Kaggle page"
        )
    if status == 404:
        return f"Kaggle has no dataset {slug} (HTTP 404); check data.dataset and data.version in params.yaml"
    return f"Kaggle answered HTTP {status} for {slug}; try again later, or run offline with: dvc exp run -S data.source=synthetic"


def extract_zip(archive: Path, folder: Path) -> None:
    """Extract the dataset files from a zip into `folder`, refusing any entry that would land outside it."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            names = zipped.namelist()
            for name in names:
                parts = PurePosixPath(name.replace("\\", "/")).parts
                if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise PipelineError(
                        f"{archive} has an unsafe entry {name!r} that points outside the folder; refusing it"
                    )
            found = {PurePosixPath(n).name: n for n in names if PurePosixPath(n).name in WANTED}
            if VECTORS_FILE not in found:
                raise PipelineError(f"{archive} holds no {VECTORS_FILE}; is it the 3D MNIST zip?")
            for name in found.values():
                check_size(zipped.getinfo(name).file_size, f"{archive} member {name}")
            for short, name in found.items():
                with reading(f"{archive} member {name}"), zipped.open(name) as member:
                    copy_bounded(member, folder / short, f"{archive} member {name}")
    except (zipfile.BadZipFile, zlib.error, EOFError):  # a damaged entry, or a compressed stream damaged or cut short
        raise PipelineError(f"{archive} is not a valid zip file (damaged or cut short); fetch it again") from None


def copy_local(path: Path, folder: Path) -> None:
    """Copy the dataset files from a zip, a folder (of the files, or of one zip) or a bare vectors .h5 into `folder`.

    Only regular files and folders are opened: a FIFO would block the fetch forever.
    """
    kind = file_kind(path)
    if kind is None:
        raise PipelineError(f"data.path {str(path)!r} does not exist; point it at the 3D MNIST zip, folder or .h5")
    if kind == "other":
        raise PipelineError(
            f"data.path {str(path)!r} is not a regular file or folder (a pipe, socket or device); "
            "point it at the 3D MNIST zip, folder or .h5"
        )
    if kind == "directory":
        zips = sorted(path.glob("*.zip"))
        if file_kind(path / VECTORS_FILE) is None and len(zips) == 1:
            return copy_local(zips[0], folder)
        if file_kind(path / VECTORS_FILE) is None:
            raise PipelineError(
                f"data.path folder {path} holds no {VECTORS_FILE} (nor one zip of it); put the 3D MNIST files or "
                "Kaggle's 3d-mnist.zip there, or point data.path at them"
            )
        for name in WANTED:
            if file_kind(path / name) is not None:
                copy_file(path / name, folder / name)
    elif zipfile.is_zipfile(path):
        extract_zip(path, folder)
    elif path.suffix == ".h5":
        copy_file(path, folder / VECTORS_FILE)
    else:
        raise PipelineError(f"data.path {path} is neither a zip, a folder nor an .h5 file")


def copy_file(source: Path, target: Path) -> None:
    """Copy one dataset file, refusing a non-regular one and one over the size limit before reading it."""
    source = regular_file(source, "point data.path at the 3D MNIST files")
    check_size(source.stat().st_size, str(source))
    with open(source, "rb") as reader:
        copy_bounded(reader, target, str(source))


def fetch(section: dict[str, Any], target: str | os.PathLike, manifest_path: str | os.PathLike) -> dict[str, Any]:
    """Fill `target` with the raw files and write the manifest; both appear together, once everything checks out.

    The manifest sits outside `target`: it records data.path, which must not re-run the stages that read the files.
    """
    source = section["source"]
    manifest: dict[str, Any] = {"source": source}
    with atomic_paths(files=[manifest_path], folders=[target]) as (manifest_temp, folder):
        if source == "kaggle":
            # Inside the temp folder, so a killed download is cleaned up with it.
            with tempfile.TemporaryDirectory(dir=folder, prefix=".download.") as download:
                archive = download_kaggle(section["dataset"], section["version"], Path(download), section["timeout"])
                manifest.update(dataset=section["dataset"], version=section["version"], zip_sha256=sha256(archive))
                extract_zip(archive, folder)
        elif source == "local":
            if not section["path"]:
                raise PipelineError(
                    "data.path is empty; set it with: dvc exp run -S data.source=local -S data.path=PATH"
                )
            copy_local(Path(section["path"]).expanduser(), folder)
            manifest["path"] = section["path"]
        else:
            from mnist3d.data.synthetic import write_dataset

            sizes = {k: section[k] for k in ("synthetic_train_digits", "synthetic_test_digits", "seed")}
            if max(sizes["synthetic_train_digits"], sizes["synthetic_test_digits"]) > max_clouds():
                raise PipelineError(  # before minutes of rendering, not after them
                    f"data.synthetic_*_digits asks for more than the {max_clouds():,} point clouds one file may "
                    "hold; ask for fewer, or raise the limit with MNIST3D_MAX_CLOUDS"
                )
            write_dataset(folder, sizes["synthetic_train_digits"], sizes["synthetic_test_digits"], sizes["seed"])
            manifest.update(sizes)
        splits = read_vectors(folder / VECTORS_FILE)  # checks that rows 2i and 2i+1 agree on their label
        for split, name in CLOUD_FILES.items():
            if (folder / name).exists():  # structure, sizes, and one cloud per pair labelled as it: no points read
                read_paired_clouds(folder / name, splits[split].y, rows=[])
        manifest["rows"] = {name: len(split.y) for name, split in splits.items()}
        manifest["files"] = {
            p.name: {"sha256": sha256(p), "bytes": p.stat().st_size}
            for p in sorted(folder.iterdir())
            if p.name in WANTED
        }
        manifest_temp.write_text(json_text(manifest))
    return manifest
