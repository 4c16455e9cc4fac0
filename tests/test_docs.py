"""The documentation site under docs/: its code runs, its shown outputs are true, and it builds.

- Every ```python block of docs/**/*.md is executed in a fresh namespace, from a temporary
  working directory. A block whose first line is ``# not run: <reason>`` is only compiled, and
  the test is skipped with that reason.
- A block followed by a line ``Output:`` and a ```text block must print exactly that text.
- ``mkdocs build --strict`` (mkdocs.yml at the repository root) must pass, quickly.

The weights are the suite's random ones (tests/conftest.py writes them into a temporary
TORCH_HOME): the blocks prove that the documented code runs, not perceptual quality.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOT_RUN = "# not run:"
OUTPUT_LABEL = "Output:"
BUILD_SECONDS = 30.0

_OPENING = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s][^`]*)?$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a docs page."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    output: str | None = None  # the text of the "Output:" block that follows it, if any

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(DOCS).as_posix()}:{self.line}"

    @property
    def not_run_reason(self) -> str | None:
        first = self.code.lstrip("\n").splitlines()[0] if self.code.strip() else ""
        return first[len(NOT_RUN) :].strip() if first.startswith(NOT_RUN) else None


def _fences(path: Path) -> list[tuple[int, int, str, str]]:
    """``(opening index, closing index, language, code)`` of every fenced block, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        match = _OPENING.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        language = match["info"].split()[0] if match["info"] else ""
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path}:{i + 1}: the code block opened here is never closed")
        body = [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[i + 1 : j]]
        found.append((i, j, language, "\n".join(body) + "\n"))
        i = j + 1
    return found


def parse_page(path: Path) -> list[Block]:
    """The fenced blocks of one page; each python block carries its shown output, if any."""
    lines = path.read_text(encoding="utf-8").splitlines()
    fences = _fences(path)
    blocks = []
    for k, (start, end, language, code) in enumerate(fences):
        output = None
        if language == "python" and k + 1 < len(fences):
            next_start, _, next_language, next_code = fences[k + 1]
            between = [line.strip() for line in lines[end + 1 : next_start] if line.strip()]
            if between == [OUTPUT_LABEL] and next_language == "text":
                output = next_code
        blocks.append(Block(path, start + 1, language, code, output))
    return blocks


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def python_blocks() -> list[Block]:
    return [block for page in pages() for block in parse_page(page) if block.language == "python"]


PYTHON_BLOCKS = python_blocks()


def test_the_docs_have_runnable_python_blocks() -> None:
    assert pages(), f"no pages under {DOCS}"
    runnable = [block for block in PYTHON_BLOCKS if block.not_run_reason is None]
    assert len(runnable) >= 20, f"only {len(runnable)} runnable python blocks under {DOCS}"


def test_every_shown_output_follows_a_python_block() -> None:
    """An ``Output:`` line must sit between a python block and the text block it checks."""
    problems = []
    for page in pages():
        lines = page.read_text(encoding="utf-8").splitlines()
        checked = {block.line for block in parse_page(page) if block.output is not None}
        fences = _fences(page)
        inside = {n for start, end, _, _ in fences for n in range(start, end + 1)}
        for n, line in enumerate(lines):
            if line.strip() != OUTPUT_LABEL or n in inside:
                continue
            before = [f for f in fences if f[1] < n]
            if not before or before[-1][0] + 1 not in checked:
                problems.append(
                    f"{page.relative_to(DOCS)}:{n + 1}: 'Output:' not between a python block and a text block"
                )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.name for block in PYTHON_BLOCKS])
def test_python_block(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Line numbers in tracebacks are the page's own.
    code = compile("\n" * block.line + block.code, str(block.path), "exec")
    reason = block.not_run_reason
    if reason is not None:
        assert block.output is None, f"{block.name}: a block that is not run cannot show an output"
        pytest.skip(f"{block.name} not run: {reason}")
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast, and robust to a busy machine
    try:
        with torch.random.fork_rng(), contextlib.redirect_stdout(printed):
            torch.manual_seed(0)
            exec(code, {"__name__": "__docs__"})
    finally:
        torch.set_num_threads(threads)
    if block.output is not None:
        shown = [line.rstrip() for line in block.output.rstrip("\n").splitlines()]
        got = [line.rstrip() for line in printed.getvalue().rstrip("\n").splitlines()]
        assert got == shown, f"{block.name}: the page shows\n{block.output}\nbut the code prints\n{printed.getvalue()}"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    needed = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
    missing = [name for name in needed if importlib.util.find_spec(name.split(".")[0]) is None]
    if not missing and importlib.util.find_spec("mkdocstrings_handlers.python") is None:
        missing.append("mkdocstrings_handlers.python")
    if missing:
        pytest.skip(
            f"the docs build needs {', '.join(missing)}: pip install mkdocs mkdocs-material 'mkdocstrings[python]'"
        )
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice about MkDocs 2.0
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        check=False,
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    assert seconds < BUILD_SECONDS, f"mkdocs build took {seconds:.1f} s (limit {BUILD_SECONDS:.0f} s)"
