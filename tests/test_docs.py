"""The documentation: its conventions (markers, navigation, README length, one version) and
the README's and docs' runnable blocks, run. `make docs` builds the site itself."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from doc_blocks import (
    REPO,
    Block,
    blocks,
    commands,
    console_output,
    doc_files,
    marked_blocks,
    normalise,
    run_command,
)

# --- the marker convention ---------------------------------------------------------------------


def _all_checked_blocks() -> list[Block]:
    return [b for doc in doc_files() for b in blocks(doc) if b.kind]


def _test_source(test_id: str) -> str:
    """The source of the test function `tests/file.py::[Class::]test_name`, followed by the
    source of every module-level function or constant of its file that it names (a helper that
    holds the commands counts). AssertionError if the file or the function does not exist."""
    path, *names = test_id.split("::")
    file = REPO / path
    assert path.startswith("tests/") and file.is_file() and names, f"no test file: {test_id}"
    source = file.read_text(encoding="utf-8")
    scope: list[ast.stmt] = ast.parse(source).body
    node: ast.AST | None = None
    for name in names:
        node = next(
            (
                n
                for n in scope
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                and n.name == name
            ),
            None,
        )
        assert node is not None, f"{test_id}: no {name} in {path}"
        scope = getattr(node, "body", [])
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef), f"{test_id} is no function"
    assert node.name.startswith("test"), f"{test_id} is not a test function"
    used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    helpers = [
        ast.get_source_segment(source, top) or ""
        for top in ast.parse(source).body
        if (isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef) and top.name in used)
        or (
            isinstance(top, ast.Assign | ast.AnnAssign)
            and {t.id for t in ast.walk(top) if isinstance(t, ast.Name)
                 and isinstance(t.ctx, ast.Store)} & used
        )
    ]
    return "\n".join([ast.get_source_segment(source, node) or "", *helpers])


def _yaml_lines(text: str) -> list[str]:
    """YAML text without comments and blank lines, for 'does this file contain that block'."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).rstrip()
        if line.strip():
            out.append(line)
    return out


def _file_contains_yaml(file: Path, block_text: str) -> bool:
    want = _yaml_lines(block_text)
    have = _yaml_lines(file.read_text(encoding="utf-8"))
    return any(
        textwrap.dedent("\n".join(have[i : i + len(want)])) == "\n".join(want)
        for i in range(len(have) - len(want) + 1)
    )


def _covered(block: Block, source: str) -> str | None:
    """None when the test source runs the block, else why not."""
    if "marked_blocks(" in source and f'"{block.doc}"' in source:
        return None  # the test reads its own blocks out of the doc and runs them
    flat = normalise(source)
    if block.kind in ("bash", "console"):
        missing = [c for c in commands(block) if c not in flat]
        return f"the test's source lacks the command line(s) {missing}" if missing else None
    # python / yaml: the test holds the block's text, or it names a repository file holding
    # the block (by its path, its file name, or a directory above it that the test uses)
    if normalise(block.text) in flat:
        return None
    named = set(re.findall(r"""["']([\w.][\w./-]*)["']""", source))
    for file in _files_containing(block):
        rel = file.relative_to(REPO).as_posix()
        parts = rel.split("/")
        prefixes = {"/".join(parts[:i]) for i in range(1, len(parts))}
        if rel in named or parts[-1] in named or prefixes & named:
            return None
    return f"neither the test's source nor a {block.kind} file it names contains the block"


def _files_containing(block: Block) -> list[Path]:
    """Repository files (not the docs) of the block's kind whose text contains the block."""
    suffixes = {"python": (".py",), "yaml": (".yaml", ".yml")}[block.kind or ""]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()
    out = []
    for name in listed:
        file = REPO / name
        if not name.endswith(suffixes) or name.startswith("docs/") or not file.is_file():
            continue
        if block.kind == "yaml":
            if _file_contains_yaml(file, block.text):
                out.append(file)
        elif normalise(block.text) in normalise(file.read_text(encoding="utf-8")):
            out.append(file)
    return out


def test_every_code_block_is_marked():
    """Every bash / console / python / yaml block has the marker line right above it."""
    unmarked = [
        f"{b.where} ({b.lang})"
        for b in _all_checked_blocks()
        if b.marker is None
        or not b.marker[1]
        or (b.marker[0] == "illustration" and len(b.marker[1].split()) < 2)  # a reason, please
    ]
    assert not unmarked, (
        "code blocks without '<!-- illustration: why -->' or '<!-- tested-by: tests/x.py::test -->'"
        f" on the line before: {unmarked}"
    )


def test_tested_by_markers_name_tests_that_run_the_block():
    """A tested-by test exists and runs the block (see doc_blocks.py for what counts)."""
    problems = []
    for b in _all_checked_blocks():
        if b.marker and b.marker[0] == "tested-by":
            try:
                source = _test_source(b.marker[1])
            except AssertionError as exc:
                problems.append(f"{b.where}: {exc}")
                continue
            why = _covered(b, source)
            if why:
                problems.append(f"{b.where}: {b.marker[1]}: {why}")
    assert not problems, "\n".join(problems)


def test_marker_checks_catch_what_they_should(tmp_path: Path):
    """The checks above reject an unmarked block, a missing test and an unrun command."""
    (tmp_path / "probe.md").write_text(
        "```bash\nhamgraph run a.yaml\n```\n\n"
        "<!-- tested-by: tests/test_docs.py::test_no_such_test -->\n```bash\nhamgraph x\n```\n\n"
        "<!-- tested-by: tests/test_docs.py::test_every_code_block_is_marked -->\n"
        "```bash\nhamgraph sweep never-run.yaml  # a comment\n```\n\n"
        "<!-- tested-by: tests/test_docs.py::test_every_code_block_is_marked -->\n"
        "```python\nprint('in no file of the repository')\n```\n",
        encoding="utf-8",
    )
    found = blocks("probe.md", root=tmp_path)
    assert [b.marker for b in found] == [
        None,
        ("tested-by", "tests/test_docs.py::test_no_such_test"),
        ("tested-by", "tests/test_docs.py::test_every_code_block_is_marked"),
        ("tested-by", "tests/test_docs.py::test_every_code_block_is_marked"),
    ]
    with pytest.raises(AssertionError, match="no test_no_such_test"):
        _test_source(found[1].marker[1])
    assert commands(found[2]) == ["hamgraph sweep never-run.yaml"]
    why = _covered(found[2], _test_source(found[2].marker[1]))
    assert why and "hamgraph sweep never-run.yaml" in why
    assert _covered(found[3], _test_source(found[3].marker[1]))
    # module-level helpers and constants that a test names are part of its source
    assert "def _assert_printed_table" in _test_source(
        "tests/test_docs.py::test_readme_grid_and_its_table"
    )


# --- navigation, README, version, changelog ---------------------------------------------------


def _mkdocs() -> dict:
    return yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))


def _nav_files(nav: list) -> list[str]:
    out: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out.extend(_nav_files(value) if isinstance(value, list) else [value])
    return out


def test_every_page_is_in_the_nav():
    """Every docs/*.md page is linked from the navigation, except the changelog fragments,
    which the build excludes. (That every nav entry exists is `mkdocs build --strict`'s check.)"""
    config = _mkdocs()
    assert config["strict"] is True
    assert "changelog-*.md" in config["exclude_docs"].split()
    nav = _nav_files(config["nav"])
    assert len(nav) == len(set(nav)), f"a page is listed twice in the nav: {nav}"
    pages = {p.name for p in (REPO / "docs").glob("*.md") if not p.name.startswith("changelog-")}
    missing = sorted(pages - set(nav))
    assert not missing, f"docs pages not in mkdocs.yml's nav: {missing}"


def test_readme_fits_on_two_screens():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 150, f"README.md has {len(lines)} lines; the manual belongs in docs/"


def test_readme_links_into_the_docs_exist():
    """Links from the README to docs/ pages point at pages of the nav."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[\w.-]+\.md)(?:#[\w-]+)?\)", text)
    assert links, "the README links into no docs page"
    nav = set(_nav_files(_mkdocs()["nav"]))
    assert not [p for p in links if p.removeprefix("docs/") not in nav]


def test_version_is_defined_once():
    """pyproject.toml holds the version; hamgraph.__version__ is read from the installed
    metadata, and the changelog has a section for it."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    declared = re.search(r'(?m)^version\s*=\s*"([^"]+)"', text)
    assert declared, "pyproject.toml declares no [project] version"
    import hamgraph

    assert hamgraph.__version__ == importlib.metadata.version("hamgraph") == declared[1]
    init = (REPO / "hamgraph" / "__init__.py").read_text(encoding="utf-8")
    assert declared[1] not in init, "hamgraph/__init__.py repeats the version literally"
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{declared[1]}]" in changelog, f"CHANGELOG.md has no section for {declared[1]}"
    shown = subprocess.run([sys.executable, "-m", "hamgraph", "--version"],
                           capture_output=True, text=True, check=True).stdout
    assert shown.split() == ["hamgraph", declared[1]]


def test_changelog_page_includes_the_changelog():
    """docs/changelog.md includes the root CHANGELOG.md (one file to edit), which starts with
    [Unreleased] and has keep-a-changelog release headings: `## [x.y.z] - YYYY-MM-DD`."""
    page = (REPO / "docs" / "changelog.md").read_text(encoding="utf-8")
    assert '--8<-- "CHANGELOG.md"' in page
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"(?m)^## (.+)$", changelog)
    assert headings[0] == "[Unreleased]", headings
    for heading in headings[1:]:
        assert re.fullmatch(r"\[\d+\.\d+\.\d+\] - \d{4}-\d{2}-\d{2}", heading), heading


def test_ci_runs_the_readme_test_command():
    """.ci/run ends in `make test`, and `make test` builds the docs after the test suite."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.rstrip().splitlines()[-1] == "make test"
    dry = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "pytest" in dry.stdout and "mkdocs build --strict" in dry.stdout, dry.stdout
    demo = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True)
    assert "hamgraph run configs/quickstart.yaml" in demo.stdout, demo.stdout


# --- the README's blocks, run ------------------------------------------------------------------

_TABLE_VALUE = re.compile(r"(\d+\.\d+) ± (\d+\.\d+)")


def _assert_printed_table(shown: Block, printed: str) -> None:
    """The last lines `printed` are the console block's output: the same rows, labels and
    counts, and each mean within one point (another CPU may round a node or two differently)."""
    expected = [line for line in console_output(shown) if line.strip()]
    got = [line for line in printed.splitlines() if line.strip()][-len(expected):]
    assert [_TABLE_VALUE.sub("V", line).split() for line in got] == [
        _TABLE_VALUE.sub("V", line).split() for line in expected
    ], f"{shown.where} shows another table than the command prints:\n{printed}"
    for want, have in zip(expected, got, strict=True):
        for (w_mean, _), (h_mean, _) in zip(
            _TABLE_VALUE.findall(want), _TABLE_VALUE.findall(have), strict=True
        ):
            assert abs(float(w_mean) - float(h_mean)) <= 1.0, (shown.where, want, have)


def test_readme_grid_and_its_table(tmp_path: Path):
    """The README's grid trains as written and prints the table shown under it."""
    (grid,) = [b for b in marked_blocks("README.md", "test_readme_grid_and_its_table")
               if b.kind == "yaml"]
    (shown,) = [b for b in marked_blocks("README.md", "test_readme_grid_and_its_table")
                if b.kind == "console"]
    (command,) = commands(shown)
    grid_file = command.split()[-1]
    (tmp_path / grid_file).write_text(grid.text, encoding="utf-8")
    _assert_printed_table(shown, run_command(command, cwd=tmp_path).stdout)


def test_ham_training_loop_snippets():
    """The "HAM in your own training loop" snippets of the README and the API page run as
    written and train: the loss ends lower than the same model's (same seed) before any step."""
    from hamgraph.optim import HAM

    for doc in ("README.md", "docs/api.md"):
        (snippet,) = marked_blocks(doc, "test_ham_training_loop_snippets")
        code = compile(snippet.text, doc, "exec")  # the doc's own code

        def loss_after(epochs: int, code=code, where=snippet.where) -> float:
            torch.manual_seed(0)
            namespace: dict = {"range": lambda n: range(min(n, epochs))}
            exec(code, namespace)
            model, x, edge_index, y = (namespace[k] for k in ("model", "x", "edge_index", "y"))
            assert isinstance(namespace["opt"], HAM), where
            assert any(g["ham"] and g["params"] for g in namespace["opt"].param_groups)
            with torch.no_grad():
                return torch.nn.functional.cross_entropy(model(x, edge_index), y).item()

        assert loss_after(50) < 0.9 * loss_after(0), snippet.where


# --- the docs' blocks, run ---------------------------------------------------------------------


@pytest.mark.slow
def test_getting_started_commands(tmp_path: Path):
    """docs/getting-started.md: the demo grid prints the table shown, then its report and the
    dataset list, as written (in a copy of configs/, so results land in a temporary dir)."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    for block in marked_blocks("docs/getting-started.md", "test_getting_started_commands"):
        for command in commands(block):
            done = run_command(command, cwd=tmp_path, timeout=600)
            if block.kind == "console":
                _assert_printed_table(block, done.stdout)
    assert (tmp_path / "results" / "quickstart" / "runs.csv").is_file()
    assert (tmp_path / "results" / "quickstart" / "report" / "main.md").is_file()


def test_grid_examples_load(tmp_path: Path):
    """Every grid YAML of docs/grids.md is a valid grid: it loads as `hamgraph run` loads it
    and expands into runs (resolving every name, preset and override)."""
    from hamgraph.config import load_config
    from hamgraph.grid import expand

    for i, block in enumerate(marked_blocks("docs/grids.md", "test_grid_examples_load")):
        grid_file = tmp_path / f"grid{i}.yaml"
        grid_file.write_text(block.text, encoding="utf-8")
        config = load_config(grid_file)
        specs = expand(config)
        assert len(specs) == len(config.grid.dataset) * len(config.grid.model) * len(
            config.grid.optimizer) * config.runs, block.where


def test_paper_best_public_grid():
    """docs/reproducing.md's public-split grid is configs/paper-best-public.yaml, and it
    expands into Adam, HAM and nHAM runs with the paper's alpha / beta of the base datasets."""
    from hamgraph.config import load_config
    from hamgraph.grid import expand

    specs = expand(load_config(REPO / "configs/paper-best-public.yaml"))
    assert {s.dataset for s in specs} == {"cora-public", "citeseer-public", "pubmed-public"}
    kinds = {s.optimizer.kind for s in specs}
    assert kinds == {"adam", "ham", "nham"}
    assert all(s.optimizer.ham.alpha != 0 for s in specs if s.optimizer.ham is not None)


# --- examples/ -----------------------------------------------------------------------------

_EXAMPLES = sorted(
    p for p in (REPO / "examples").glob("*.py")
    if re.search(r"""^if __name__ == ["']__main__["']""", p.read_text(encoding="utf-8"), re.M)
) if (REPO / "examples").is_dir() else []


@pytest.mark.parametrize("script", _EXAMPLES, ids=[p.name for p in _EXAMPLES])
def test_example_script_runs(script: Path, tmp_path: Path):
    """Every examples/*.py script with a __main__ block runs to completion (offline; in a
    temporary working directory, so whatever it writes stays there)."""
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{script.name} exited {done.returncode}:\n{done.stderr[-3000:]}"
