"""The README's figures are benchmarks/results.md's, which one offline command rebuilds: they cannot drift apart."""

import re

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
RESULTS = (ROOT / "benchmarks" / "results.md").read_text()


def section(text: str, heading: str) -> str:
    """The text under a `## heading`, up to the next one."""
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_every_table_row_and_figure_of_the_readme_results_is_in_results_md():
    results = section(README, "Results")
    rows = [line for line in results.splitlines() if line.startswith("|")]
    assert len(rows) >= 10, "the recipes' table and the epoch's parts"
    for row in rows:
        assert row in RESULTS.splitlines(), row
    ratio = re.search(r"\*\*(\d\.\d\d)x\*\*", results)
    assert ratio and f"the default took **{ratio[1]}x** the notebook recipe's wall" in RESULTS


def test_results_md_says_how_it_was_made_and_the_readme_gives_that_command():
    command = re.match(r"Command: `(python benchmarks/benchmark\.py[^`]*)`, (\d{4}-\d\d-\d\d)\.\n", RESULTS)
    assert command, RESULTS[:200]
    assert command[1].startswith("python benchmarks/benchmark.py --source synthetic")  # offline: no Kaggle, no dev set
    assert "--data" not in command[1] and "--quick" not in command[1] and "data.seed" not in command[1]
    assert re.search(r"\nData: the synthetic source at data\.seed 0, \d+ train / \d+ test vectors\.\n", RESULTS)
    assert re.search(r"\nMachine: .+, \d+ cores, \d+ GiB; Python 3\.\d+\.\d+, tensorflow \S+, keras \S+", RESULTS)
    assert command[1] in section(README, "Results") and command[2] in section(README, "Results")
