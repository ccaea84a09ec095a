"""The README's Python code blocks run, in order, in a fresh directory: the docs cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_examples() -> None:
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_block_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The blocks import the installed packages only (no checkout on sys.path) and write only into
    # the directory they run in, never into the checkout.
    monkeypatch.chdir(tmp_path)
    checkout_before = sorted(README.parent.iterdir())
    code = python_blocks()[index]
    namespace: dict[str, object] = {"__name__": f"readme_block_{index}"}
    exec(compile(code, f"README.md block {index + 1}", "exec"), namespace)  # noqa: S102 - the README is ours
    assert sorted(README.parent.iterdir()) == checkout_before
