"""Every JSON and Python example in the README is well-formed (the bash ones run in tests/integration)."""

from __future__ import annotations

import ast
import json

import pytest

from tests.readme import blocks

ALL = blocks()


def test_the_readme_starts_with_the_two_set_up_commands():
    first = ALL[0]
    commands = [line.split("#")[0].strip() for line in first.code.splitlines()]
    assert first.lang == "bash" and commands == ["bash scripts/serve.sh", "bash scripts/test.sh"]


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "json"], ids=lambda b: f"line-{b.line}")
def test_json_examples_parse(block):
    json.loads(block.code)


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "python"], ids=lambda b: f"line-{b.line}")
def test_python_examples_compile(block):
    ast.parse(block.code)


def test_the_reader_sees_not_run_marks():
    text = "x\n<!-- README test: not run (slow) -->\n```bash\necho hi\n```\n```json\n{}\n```\n"
    found = blocks(text)
    assert [(b.lang, b.not_run, b.line) for b in found] == [("bash", "slow", 3), ("json", None, 6)]


def test_the_cost_table_is_generated_from_the_committed_bench_result():
    """Every figure of the README's table can be traced: it is what bench/report.py makes of the
    result file it names (regenerate with the command in the marker after a new bench run)."""
    import importlib.util
    import re
    from pathlib import Path

    root = Path(__file__).parents[2]
    spec = importlib.util.spec_from_file_location("bench_report", root / "bench" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    readme = (root / "README.md").read_text()
    found = re.search(r"<!-- generated: \.venv/bin/python bench/report\.py (\S+) -->\n(.*?)<!-- end of generated -->",
                      readme, re.S)
    assert found, "the README has no generated bench table"
    path, table = found.groups()
    assert table == report.markdown(json.loads((root / path).read_text()), path)
