"""docs/guide.md builds a small application from scratch; this test builds and runs it.

The guide's fenced blocks, in document order, become:

* a ```python block whose first line is ``# file: PATH``: the file PATH of a fresh project
  directory (the header line left out); every package directory gets an ``__init__.py``
  unless the guide writes one;
* any other ```python block: a step of one script, run in order in one namespace by a fresh
  interpreter whose working directory is the project (so ``import library`` works);
* each line of a ```sh block that starts with ``escqrs ``: a run of the virtualenv's
  ``escqrs`` in the project directory, after the script (which creates the SQLite files the
  commands read), with the ``export NAME=VALUE`` lines above it applied; it must exit 0.
  Other lines (``pip install ...``) are not run;
* ```text blocks: sample output, not run.

Then the tests the guide writes run with ``python -m pytest`` in the project directory (that it
imports only public names is checked with the README's, in ``tests/test_public_api.py``). A
failing block fails with the line of the guide where it starts; the script's tracebacks point
at lines of the guide too.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guide.md"
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
FILE_HEADER = re.compile(r"# file: (\S+)\n")
TIMEOUT = 120


@dataclass(frozen=True)
class Block:
    """A fenced block of the guide: its language, its text and the line its code starts on."""

    language: str
    code: str
    line: int

    @property
    def path(self) -> str | None:
        """The file it is, for a ``# file: PATH`` block."""
        match = FILE_HEADER.match(self.code) if self.language == "python" else None
        return match.group(1) if match else None

    @property
    def body(self) -> str:
        """The code without its ``# file:`` header."""
        return FILE_HEADER.sub("", self.code, count=1) if self.path else self.code

    @property
    def where(self) -> str:
        return f"docs/guide.md:{self.line}"


@dataclass(frozen=True)
class Command:
    """An ``escqrs`` line of a shell block, with the environment its ``export`` lines set."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    line: int


def blocks() -> list[Block]:
    text = GUIDE.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        fence_line = text.count("\n", 0, match.start()) + 1
        found.append(Block(match.group(1), match.group(2), fence_line + 1))
    return found


def files() -> list[Block]:
    return [block for block in blocks() if block.path is not None]


def scripts() -> list[Block]:
    return [block for block in blocks() if block.language == "python" and block.path is None]


def commands() -> list[Command]:
    found: list[Command] = []
    env: dict[str, str] = {}
    for block in blocks():
        if block.language != "sh":
            continue
        for offset, line in enumerate(block.code.splitlines()):
            words = shlex.split(line, comments=True)
            if words[:1] == ["export"]:
                env.update(word.split("=", 1) for word in words[1:])
            elif words[:1] == ["escqrs"]:
                found.append(Command(tuple(words), tuple(env.items()), block.line + offset))
    return found


# --------------------------------------------------------------------------- the guide's shape


def test_the_guide_builds_an_application_and_tests_it() -> None:
    paths = [block.path for block in files()]
    assert "library/events.py" in paths
    assert "tests/test_library.py" in paths
    assert len(paths) == len(set(paths)), f"a file is written twice: {paths}"
    assert len(scripts()) >= 5
    assert len(commands()) >= 5
    assert "esdb_server" in guide_tests().body, "one of the guide's tests must run over gRPC"


# --------------------------------------------------------------------------- building and running it

#: Runs the script blocks in one namespace, compiled so that tracebacks show the guide's lines.
DRIVER = textwrap.dedent(
    """
    import json, sys, traceback
    steps, guide = json.loads(open(sys.argv[1], encoding="utf-8").read()), sys.argv[2]
    sys.path.insert(0, ".")
    namespace = {"__name__": "__main__"}
    for line, code in steps:
        try:
            exec(compile("\\n" * (line - 1) + code, guide, "exec"), namespace)
        except BaseException:
            traceback.print_exc()
            print(f"docs/guide.md:{line}: this python block failed", file=sys.stderr)
            sys.exit(1)
    """
)


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the escqrs settings a developer may have exported."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ESCQRS_")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project the guide writes, after its script ran."""
    base = tmp_path_factory.mktemp("guide")
    root = base / "project"
    root.mkdir()
    for block in files():
        assert block.path is not None
        target = root / block.path
        assert root in target.resolve().parents, f"{block.where}: {block.path} is outside the project"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.body, encoding="utf-8")
    for directory in {target.parent for target in root.rglob("*.py")} - {root}:
        # A package gets an __init__.py; a directory of test modules needs none.
        if not any(directory.glob("test_*.py")) and not (directory / "__init__.py").exists():
            (directory / "__init__.py").write_text("", encoding="utf-8")
    steps = base / "steps.json"
    steps.write_text(json.dumps([[block.line, block.body] for block in scripts()]), encoding="utf-8")
    driver = base / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    done = run([sys.executable, str(driver), str(steps), str(GUIDE)], root, clean_env())
    if done.returncode != 0:
        # stderr has the traceback; stdout the script's prints and (structlog unconfigured) its logs.
        output = f"{done.stderr}\n--- the end of its stdout ---\n{done.stdout[-4000:]}"
        pytest.fail(f"The guide's script failed:\n{output}", pytrace=False)
    return root


def test_the_script_runs(project: Path) -> None:
    assert (project / "library.db").exists()
    assert (project / "views.db").exists()


@pytest.mark.parametrize("command", commands(), ids=lambda c: f"line-{c.line}")
def test_the_escqrs_command_runs(command: Command, project: Path) -> None:
    escqrs = BIN / "escqrs"
    done = run([str(escqrs), *command.argv[1:]], project, clean_env(**dict(command.env), COLUMNS="120"))
    if done.returncode != 0:
        pytest.fail(
            f"docs/guide.md:{command.line}: `{shlex.join(command.argv)}` exited {done.returncode}:\n"
            f"{done.stdout}{done.stderr}",
            pytrace=False,
        )


def guide_tests() -> Block:
    (block,) = [block for block in files() if block.path == "tests/test_library.py"]
    return block


def test_the_guides_tests_pass(project: Path) -> None:
    argv = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(project), "tests"]
    done = run([sys.executable, *argv], project, clean_env())
    tests = guide_tests()
    if done.returncode != 0:
        pytest.fail(f"{tests.where}: the guide's tests failed:\n{done.stdout}{done.stderr}", pytrace=False)
    defined = [node for node in ast.parse(tests.body).body if isinstance(node, ast.FunctionDef)]
    expected = sum(node.name.startswith("test_") for node in defined)
    assert f"{expected} passed" in done.stdout, done.stdout


def test_the_guides_code_is_formatted(tmp_path: Path) -> None:
    ruff = BIN / "ruff" if (BIN / "ruff").exists() else shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    for block in blocks():
        if block.language == "python":
            (tmp_path / f"line_{block.line}.py").write_text(block.body, encoding="utf-8")
    done = run(
        [str(ruff), "format", "--isolated", "--line-length", "110", "--check", "--diff", "."], tmp_path
    )
    assert done.returncode == 0, (
        f"The guide's code is not formatted as ruff would:\n{done.stdout}{done.stderr}"
    )
