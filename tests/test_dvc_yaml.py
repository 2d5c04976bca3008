"""dvc.yaml lists every stage's exact code deps, so a code change re-runs exactly the stages that use it."""

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def package_modules(script: Path) -> set[str]:
    """The mnist3d modules a script imports, directly or through other mnist3d modules."""
    found = {"mnist3d/__init__.py"}
    pending = [script]
    while pending:
        tree = ast.parse(pending.pop().read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist3d"):
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("mnist3d")]
            else:
                continue
            for name in names:
                for module in files_run_by_import(name):
                    if module not in found:
                        found.add(module)
                        pending.append(ROOT / module)
    return found


def files_run_by_import(name: str) -> list[str]:
    """The files that importing `name` runs: each package's __init__.py on the way down, then the module itself."""
    parts, files = name.split("."), []
    for depth in range(1, len(parts) + 1):
        path = "/".join(parts[:depth])
        if (ROOT / path / "__init__.py").is_file():
            files.append(f"{path}/__init__.py")
        elif (ROOT / f"{path}.py").is_file():
            files.append(f"{path}.py")
    return files


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_exactly_the_modules_it_imports(stage):
    declared = {dep for dep in STAGES[stage]["deps"] if dep.startswith("mnist3d/")}
    assert declared == package_modules(ROOT / "stages" / f"{stage}.py")
    assert f"stages/{stage}.py" in STAGES[stage]["deps"]
    # epochs re-runs train, and never fetch or preprocess
    assert ("epochs" in STAGES[stage].get("params", [])) == (stage == "train")


# The package's folders in pipeline order; a module may import its own folder, a folder before it, or the top level.
LAYERS = ["io", "data", "features", "train", "evaluate"]


def imported_modules(path: Path) -> set[str]:
    """The mnist3d modules and packages that one file imports, as dotted names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist3d"):
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("mnist3d")}
    return names


def test_no_folder_imports_a_folder_later_in_the_pipeline():
    seen = 0
    for path in sorted((ROOT / "mnist3d").rglob("*.py")):
        folder = path.relative_to(ROOT / "mnist3d").parts[0]
        if folder not in LAYERS:
            continue
        seen += 1
        for name in imported_modules(path):
            target = name.split(".")[1] if name.count(".") else None
            if target in LAYERS:
                assert LAYERS.index(target) <= LAYERS.index(folder), f"{path.relative_to(ROOT)} imports {name}"
    assert seen > 20  # the walk found the package's modules
