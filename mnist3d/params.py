"""Load params.yaml and check all of it whenever a stage starts, so typos and bad values fail early.

Every stage checks every section (a typo in `evaluate` stops `fetch`), yet reads only its own: dvc.yaml's
`params:` lists decide what re-runs. Every number has an upper bound, so none reaches TensorFlow as a traceback.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from mnist3d.errors import PipelineError
from mnist3d.io.files import regular_file

PARAMS_FILE = Path("params.yaml")
MAX_PARAMS_BYTES = 1 << 20  # params.yaml is ~3 kB
MAX_DEPTH = 10  # params.yaml nests 4 deep (architectures.seed.blocks[0])

Check = Callable[[Any], str | None]  # returns what is wrong, or None


def _int_up_to(high: int, low: int = 1) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, bool) and isinstance(value, int) and low <= value <= high:
            return None
        return f"must be a positive integer, at most {high:,}" if low == 1 else f"must be an integer from 0 to {high:,}"

    return check


_positive_int = _int_up_to(1_000_000)  # only where a tighter bound below does not apply
SEED = _int_up_to(2**32 - 1, low=0)  # what numpy and Keras accept as a seed
BATCH = _int_up_to(8192)


def _number_up_to(high: float, zero: bool = False) -> Check:
    def check(value: Any) -> str | None:
        low_ok = isinstance(value, int | float) and (value >= 0 if zero else value > 0)
        if isinstance(value, bool) or not low_ok or not value <= high:
            return f"must be a number from 0 to {high:g}" if zero else f"must be a number > 0 and at most {high:g}"
        return None

    return check


def _fraction(low_open: bool = True) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        ok = 0 < value < 1 if low_open else 0 <= value < 1
        return None if ok else ("must lie strictly between 0 and 1" if low_open else "must lie in [0, 1)")

    return check


def _one_of(*choices: Any) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(map(str, choices))}"

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _optional_positive_int(value: Any) -> str | None:
    return None if value is None else _positive_int(value)


MAX_FILTERS = 1024
# Kaggle's owner/slug, as the kaggle client puts it in a URL: letters, digits, - (and _ in user names); the client
# allows slugs of at most 50 characters. Nothing else may reach it: `../../../etc/passwd` must not become a path.
KAGGLE_DATASET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,49}/[A-Za-z0-9][A-Za-z0-9-]{0,49}")


def _kaggle_dataset(value: Any) -> str | None:
    if isinstance(value, str) and KAGGLE_DATASET.fullmatch(value):
        return None
    return (
        "must be a Kaggle dataset as owner/slug, such as daavoo/3d-mnist: letters, digits and - "
        "(and _ in the owner), at most 50 characters each"
    )


def _colormap(value: Any) -> str | None:
    import matplotlib

    if isinstance(value, str) and value in matplotlib.colormaps:
        return None
    return "must name a matplotlib colormap, such as Oranges or viridis"


def _blocks(value: Any) -> str | None:
    ok = (
        isinstance(value, list)
        and 0 < len(value) <= 4  # each block halves the 16-voxel grid: 16, 8, 4, 2, 1
        and all(
            isinstance(block, list) and 0 < len(block) <= 8 and all(_int_up_to(MAX_FILTERS)(n) is None for n in block)
            for block in value
        )
    )
    return (
        None
        if ok
        else f"must be 1 to 4 blocks, each a list of 1 to 8 filter counts up to {MAX_FILTERS}, like [[32], [64]]"
    )


SCHEMAS: dict[str, dict[str, Check]] = {
    "data": {
        "source": _one_of("kaggle", "local", "synthetic"),
        "dataset": _kaggle_dataset,
        "version": _optional_positive_int,
        "path": _string,
        "timeout": _number_up_to(3600),
        "synthetic_train_digits": _int_up_to(100_000),
        "synthetic_test_digits": _int_up_to(100_000),
        "seed": SEED,
    },
    "preprocess": {"colormap": _colormap, "align": _one_of("none", "plane", "axes")},
    "train": {
        "batch_size": BATCH,
        "learning_rate": _number_up_to(10),
        "validation_split": _fraction(),
        "seed": SEED,
        "augment": _one_of("none", "clouds", "cube"),
        "copies_per_epoch": _int_up_to(100),
        "upright_copies": _int_up_to(100, low=0),
        "jitter_degrees": _number_up_to(90, zero=True),
        "jitter_slant": _number_up_to(1, zero=True),
        "label_smoothing": _fraction(low_open=False),
        "schedule": _one_of("constant", "cosine"),
        "ema": _fraction(low_open=False),
        "flip_aligned": _boolean,
        "distribute": _one_of("none", "mirrored", "multi_worker"),
        "threads": _int_up_to(1024, low=0),
        "jit_compile": _boolean,
    },
    "evaluate": {
        "batch_size": BATCH,
        "tta_views": _int_up_to(24),
    },
    "architecture": {
        "blocks": _blocks,
        "kernel_size": _int_up_to(16),  # the grid is 16 voxels a side
        "batch_norm": _boolean,
        "head": _one_of("flatten", "global_average"),
        "dense_units": _int_up_to(8192, low=0),
        "dropout": _fraction(low_open=False),
        "pool_before_norm": _boolean,  # optional (OPTIONAL_KEYS): a block's max-pool before its BatchNorm and ReLU
    },
}
OPTIONAL_KEYS = {"pool_before_norm"}  # keys a preset may leave out (the seed preset has no BatchNorm to pool before)
TOP_LEVEL: dict[str, Check] = {"epochs": _int_up_to(10_000), "model": _string}


def _check_structure(text: str, path: str | Path) -> None:
    """Refuse YAML aliases (which can expand exponentially) and deep nesting, before anything is built."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise PipelineError(f"{path}: YAML anchors and aliases (& and *) are not allowed; write the values out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise PipelineError(f"{path}: nested more than {MAX_DEPTH} levels deep; see params.yaml's layout")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _read_bytes(path: str | Path) -> tuple[Path, bytes]:
    path = regular_file(path, "run the stage from the project root, or pass a params.yaml")
    if path.stat().st_size > MAX_PARAMS_BYTES:
        raise PipelineError(f"{path} is over {MAX_PARAMS_BYTES >> 10} kB, not a params file; check the path")
    return path, path.read_bytes()


def _parse(data: bytes, path: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
        _check_structure(text, path)
        params = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise PipelineError(f"{path} is not a text file; pass a params.yaml") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PipelineError(f"{path} is not valid YAML{where}; fix the syntax there") from None
    if not isinstance(params, dict):
        raise PipelineError(f"{path} must be a mapping of sections; see docs/params.md")
    return params


def check_section(values: Any, schema: dict[str, Check], where: str) -> dict[str, Any]:
    """Check a mapping against a schema: every key known, present and valid."""
    if not isinstance(values, dict):
        raise PipelineError(f"params.yaml: {where} must be a mapping of keys")
    for key in values:
        if key not in schema:
            raise PipelineError(
                f"params.yaml: unknown key {where}.{key}; known keys are {', '.join(schema)} (fix the typo)"
            )
    _check_values(values, schema, f"{where}.")
    return values


def _check_values(values: dict[str, Any], schema: dict[str, Check], prefix: str) -> None:
    """Every key of `schema` present in `values` and valid; `prefix` is how the keys are named (`train.`, or none)."""
    for key, check in schema.items():
        if key not in values and key in OPTIONAL_KEYS:
            continue
        if key not in values:
            raise PipelineError(f"params.yaml: {prefix}{key} is missing; add it (see docs/params.md)")
        problem = check(values[key])
        if problem:
            raise PipelineError(f"params.yaml: {prefix}{key} {problem}, got {values[key]!r}")


def check_params(params: dict[str, Any]) -> None:
    """Check every section, top-level key and architecture preset, so any typo stops whichever stage runs first."""
    known = [*TOP_LEVEL, *(name for name in SCHEMAS if name != "architecture"), "architectures"]
    for key in params:
        if key not in known:
            raise PipelineError(
                f"params.yaml: unknown section {key!r}; known ones are {', '.join(known)} (fix the typo)"
            )
    _check_values(params, TOP_LEVEL, "")
    for name, schema in SCHEMAS.items():
        if name == "architecture":
            continue
        if name not in params:
            raise PipelineError(f"params.yaml: section {name!r} is missing; add it (see docs/params.md)")
        check_section(params[name], schema, name)
    presets = params.get("architectures")
    if not isinstance(presets, dict) or not presets:
        raise PipelineError("params.yaml: section 'architectures' is missing; add at least the seed preset")
    if params["model"] not in presets:
        raise PipelineError(
            f"params.yaml: model {params['model']!r} is not a preset; use one of {', '.join(sorted(map(str, presets)))}"
        )
    for preset, values in presets.items():
        check_section(values, SCHEMAS["architecture"], f"architectures.{preset}")


@functools.lru_cache(maxsize=4)
def _checked(data: bytes, path: str) -> dict[str, Any]:
    params = _parse(data, path)
    check_params(params)
    return params


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole of params.yaml, checked; parsed and checked once per process for the same bytes."""
    path, data = _read_bytes(path)
    return copy.deepcopy(_checked(data, str(path)))  # callers may change their copy


def load_section(name: str, path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """One section of params.yaml, after checking the whole file."""
    return load_params(path)[name]


def load_top_level(name: str, path: str | Path = PARAMS_FILE) -> Any:
    """One top-level key, such as `epochs`, after checking the whole file."""
    return load_params(path)[name]


def load_architecture(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The architecture that the top-level `model` names, after checking the whole file."""
    params = load_params(path)
    return params["architectures"][params["model"]]
