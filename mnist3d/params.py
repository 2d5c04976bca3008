"""Load params.yaml and check each section a stage reads, so typos and bad values fail early."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from mnist3d.errors import PipelineError

PARAMS_FILE = Path("params.yaml")

Check = Callable[[Any], str | None]  # returns what is wrong, or None


def _positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return "must be a positive integer"
    return None


def _non_negative_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "must be an integer >= 0"
    return None


def _int_between(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        ok = not isinstance(value, bool) and isinstance(value, int) and low <= value <= high
        return None if ok else f"must be an integer from {low} to {high}"

    return check


def _positive_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return "must be a number > 0"
    return None


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


def _colormap(value: Any) -> str | None:
    import matplotlib

    if isinstance(value, str) and value in matplotlib.colormaps:
        return None
    return "must name a matplotlib colormap, such as Oranges or viridis"


def _blocks(value: Any) -> str | None:
    ok = (
        isinstance(value, list)
        and 0 < len(value) <= 4  # each block halves the 16-voxel grid: 16, 8, 4, 2, 1
        and all(isinstance(block, list) and block and all(_positive_int(n) is None for n in block) for block in value)
    )
    return None if ok else "must be 1 to 4 blocks, each a non-empty list of filter counts, like [[32], [64]]"


SCHEMAS: dict[str, dict[str, Check]] = {
    "data": {
        "source": _one_of("kaggle", "local", "synthetic"),
        "dataset": _string,
        "version": _optional_positive_int,
        "path": _string,
        "timeout": _positive_number,
        "synthetic_train_digits": _positive_int,
        "synthetic_test_digits": _positive_int,
        "seed": _non_negative_int,
    },
    "preprocess": {"colormap": _colormap, "align": _one_of("none", "plane", "axes")},
    "train": {
        "batch_size": _positive_int,
        "learning_rate": _positive_number,
        "validation_split": _fraction(),
        "seed": _non_negative_int,
        "augment": _one_of("none", "clouds", "cube"),
        "copies_per_epoch": _positive_int,
        "label_smoothing": _fraction(low_open=False),
        "schedule": _one_of("constant", "cosine"),
        "distribute": _one_of("none", "mirrored"),
    },
    "evaluate": {
        "batch_size": _positive_int,
        "tta_views": lambda v: _positive_int(v) or (None if v <= 24 else "must be at most 24"),
    },
    "architecture": {
        "blocks": _blocks,
        "kernel_size": _positive_int,
        "batch_norm": _boolean,
        "head": _one_of("flatten", "global_average"),
        "dense_units": _non_negative_int,
        "dropout": _fraction(low_open=False),
    },
}
TOP_LEVEL: dict[str, Check] = {"epochs": _positive_int, "model": _string}


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml as a dict; a missing or broken file is a PipelineError."""
    try:
        params = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path} not found; run the stage from the project root") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PipelineError(f"{path} is not valid YAML{where}; fix the syntax there") from None
    if not isinstance(params, dict):
        raise PipelineError(f"{path} must be a mapping of sections; see the README's params table")
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
    for key, check in schema.items():
        if key not in values:
            raise PipelineError(f"params.yaml: {where}.{key} is missing; add it (see the README's params table)")
        problem = check(values[key])
        if problem:
            raise PipelineError(f"params.yaml: {where}.{key} {problem}, got {values[key]!r}")
    return values


def load_section(name: str, path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read and check one section of params.yaml."""
    params = read_params(path)
    if name not in params:
        raise PipelineError(f"params.yaml: section {name!r} is missing; add it (see the README's params table)")
    return check_section(params[name], SCHEMAS[name], name)


def load_top_level(name: str, path: str | Path = PARAMS_FILE) -> Any:
    """Read and check one top-level key, such as `epochs`."""
    params = read_params(path)
    if name not in params:
        raise PipelineError(f"params.yaml: top-level key {name!r} is missing; add it")
    problem = TOP_LEVEL[name](params[name])
    if problem:
        raise PipelineError(f"params.yaml: {name} {problem}, got {params[name]!r}")
    return params[name]


def load_architecture(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The architecture that the top-level `model` names, checked."""
    name = load_top_level("model", path)
    presets = read_params(path).get("architectures")
    if not isinstance(presets, dict) or not presets:
        raise PipelineError("params.yaml: section 'architectures' is missing; add at least the seed preset")
    if name not in presets:
        raise PipelineError(f"params.yaml: model {name!r} is not a preset; use one of {', '.join(sorted(presets))}")
    return check_section(presets[name], SCHEMAS["architecture"], f"architectures.{name}")
