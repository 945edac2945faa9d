"""The code blocks of README.md and docs/*.md, and the marker line above each of them.

The convention (enforced by tests/test_docs.py): the line right before every fenced block whose
language is bash / sh / shell / console / python / py / yaml / yml is one HTML comment,

    <!-- illustration: why it is not run (e.g. needs a GPU) -->
    <!-- tested-by: tests/test_file.py::test_name -->

A test named by `tested-by` either reads the blocks marked with its own name from the doc
(`marked_blocks("README.md", "test_name")`) and runs them, or contains the block's content
itself: every command line of a bash / console block verbatim (whitespace normalised), the text
of a python block, or, for a yaml block, the path of a repository file whose text contains it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Info-string language -> the kind of block it is.
CHECKED = {
    "bash": "bash",
    "sh": "bash",
    "shell": "bash",
    "console": "console",
    "python": "python",
    "py": "python",
    "yaml": "yaml",
    "yml": "yaml",
}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
_MARKER = re.compile(r"^<!--\s*(?P<kind>illustration|tested-by)\s*:\s*(?P<value>.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    doc: str  # path relative to the repository root, e.g. "docs/grids.md"
    line: int  # 1-based line number of the opening fence
    lang: str  # first word of the info string, lower case ("" for none)
    text: str  # the content, dedented to the fence's indentation
    marker: tuple[str, str] | None  # ("illustration", reason) or ("tested-by", test id)

    @property
    def kind(self) -> str | None:
        """bash, console, python, yaml, or None for a block the convention does not cover."""
        return CHECKED.get(self.lang)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def doc_files() -> list[str]:
    """README.md and every docs/*.md page, relative to the repository root."""
    pages = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))
    return ["README.md", *pages]


def blocks(doc: str, root: Path = REPO) -> list[Block]:
    """Every fenced code block of `doc` (a path relative to `root`, the repository's)."""
    lines = (root / doc).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        end = i + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence) and lines[end].strip().strip(fence[0]) == ""
        ):
            end += 1
        body = [
            line[indent:] if line[:indent].strip() == "" else line for line in lines[i + 1 : end]
        ]
        previous = lines[i - 1].strip() if i > 0 else ""
        marker = _MARKER.match(previous)
        found.append(
            Block(
                doc=doc,
                line=i + 1,
                lang=opening["info"].lower(),
                text=textwrap.dedent("\n".join(body)),
                marker=(marker["kind"], marker["value"]) if marker else None,
            )
        )
        i = end + 1
    return found


def marked_blocks(doc: str, test_name: str) -> list[Block]:
    """The blocks of `doc` whose marker is `tested-by: <file>::<test_name>`."""
    chosen = [
        b
        for b in blocks(doc)
        if b.marker and b.marker[0] == "tested-by" and b.marker[1].split("::")[-1] == test_name
    ]
    assert chosen, f"{doc} has no block marked tested-by ...::{test_name}"
    return chosen


def normalise(text: str) -> str:
    """Whitespace runs as one space: how command lines are compared with test sources."""
    return " ".join(text.split())


def commands(block: Block) -> list[str]:
    """The command lines of a bash block (continuations joined, comments dropped) or of a
    console block (the lines after `$ `), whitespace normalised."""
    lines = block.text.splitlines()
    if block.kind == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    joined: list[str] = []
    pending = ""
    for raw in lines:
        line = raw.strip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    if pending:
        joined.append(pending)
    out = []
    for line in joined:
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.append(normalise(line))
    return out


def console_output(block: Block) -> list[str]:
    """The output lines of a console block (every line that is not a `$ ` command)."""
    return [line for line in block.text.splitlines() if not line.startswith("$ ")]


def run_command(command: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one documented command line in `cwd`: `hamgraph ...` as this interpreter's
    `python -m hamgraph ...`, `python ...` with this interpreter. Fails the test on a non-zero
    exit, with the command's stderr."""
    argv = shlex.split(command)
    if argv[0] == "hamgraph":
        argv = [sys.executable, "-m", "hamgraph", *argv[1:]]
    elif argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )
    assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done
