"""`hamgraph check DIR...`: read every file of a result dir and say what is wrong with it.

    result dir ──check_dir──► [Finding] (damaged | stale | orphaned | duplicated) ──► the CLI

- damaged: a record, history, checkpoint or runs.csv that cannot be read as what it should be
  (the same judgement as the store's, hamgraph.store.parse_record & co), a sweep journal with a
  torn or unreadable line.
- stale: a record written by another hamgraph version (or a newer record format).
- orphaned: a history without a record, a checkpoint of a finished run, a temp file of a dead
  writer, a claim of a dead process, a sweep trial RUNNING for a dead worker, a stray file.
- duplicated: two records for one cell, run and seed (different keys: the report keeps one);
  two COMPLETE trials of one cell in a study.

Without `repair` nothing is written. `repair=True` does what the commands do on the fly (damaged
files set aside under `damaged/<time>/`, derived files rebuilt from the records) and also
removes temp files of dead writers and claims of dead processes, sets aside orphaned files, cuts
a torn last line off the sweep journal (kept in damaged/) and fails the trials of dead workers
(a retry is queued). Stale records, duplicates and a journal unreadable in the middle are left
for a person to decide (`repaired` stays ""). Run `--repair` while no command writes the dir.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hamgraph.claims import Claims, parse_claim_name
from hamgraph.errors import UserInputError
from hamgraph.specs import RunResult
from hamgraph.store import (
    CHECKPOINTS_DIR,
    DAMAGED_DIR,
    PACK_PREFIX,
    RUN_COLUMNS,
    DamagedRecord,
    RecordFormatError,
    ResultStore,
    checkpoint_problem,
    history_problem,
    history_text,
    parse_record,
    run_row,
    temp_file_orphaned,
)
from hamgraph.sweep.storage import JOURNAL_FILE

FindingKind = Literal["damaged", "stale", "orphaned", "duplicated"]
KINDS: tuple[FindingKind, ...] = ("damaged", "stale", "orphaned", "duplicated")
# What marks a directory as a result dir of `run` or `sweep`.
_MARKERS = ("runs.csv", "records", "history", "config.yaml", JOURNAL_FILE)


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a result dir."""

    kind: FindingKind
    path: str  # the file or folder (under the dir as given) or the storage it is about
    problem: str
    repaired: str = ""  # what `repair` did about it ("" : nothing, or not asked)


@dataclass(frozen=True)
class CheckOutcome:
    """What `check_dir` found in one result dir."""

    root: Path
    files: int  # files read
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def clean(self) -> bool:
        return not self.findings

    @property
    def unrepaired(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.repaired)

    def counts(self) -> dict[str, int]:
        return {kind: sum(f.kind == kind for f in self.findings) for kind in KINDS}


def check_dir(root: str | os.PathLike[str], storage: str | None = None,
              repair: bool = False) -> CheckOutcome:
    """Read every file of the result dir `root` (and its sweep storage: the journal in the dir,
    or the RDB `storage` URL) and return what is wrong.

    Raises UserInputError when `root` is not a directory or not a result dir.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"check: {root}: not a directory (expected a result dir)")
    if not any((root / name).exists() for name in _MARKERS) and storage is None:
        raise UserInputError(
            f"check: {root}: not a hamgraph result dir (none of {', '.join(_MARKERS)})"
        )
    run = _Check(root, repair)
    run.records()
    run.histories()
    run.runs_csv()
    run.checkpoints()
    run.temp_files()
    run.claims()
    url = storage
    if url is None and (root / JOURNAL_FILE).is_file():
        url = f"journal:{(root / JOURNAL_FILE).resolve()}"
    if url is not None:
        run.storage(url)
    return CheckOutcome(root, run.files, tuple(run.findings))


class _Check:
    """The checks of one dir, in order; each adds findings (and repairs when asked)."""

    def __init__(self, root: Path, repair: bool) -> None:
        self.root = root
        self.repair = repair
        self.store = ResultStore(root)
        self.findings: list[Finding] = []
        self.files = 0
        self.results: dict[str, RunResult] = {}  # key -> the result of every readable record
        self.set_aside_keys: set[str] = set()

    def add(self, kind: FindingKind, path: Path | str, problem: str, repaired: str = "") -> None:
        self.findings.append(Finding(kind, str(path), problem, repaired if self.repair else ""))

    def set_aside(self, path: Path, problem: str, what: str = "damaged") -> str:
        if not self.repair:
            return ""
        entry = self.store.set_aside(path, problem, what=what)
        return f"set aside as {entry.moved_to}" if entry.moved_to else ""  # "": not repaired

    # --- records and histories ----------------------------------------------------------------
    def records(self) -> None:
        from hamgraph import __version__

        folder = self.store.records_dir
        if not folder.is_dir():
            return
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file() or path.suffix != ".json":
                continue
            self.files += 1
            key = path.stem
            try:
                raw = path.read_bytes()
            except OSError as exc:  # permissions, an I/O error of the disk
                self.add("damaged", path, f"cannot be read: {exc.strerror or exc}")
                continue
            try:
                result = parse_record(raw, key)
            except DamagedRecord as exc:
                self.add("damaged", path, str(exc), self.set_aside(path, str(exc)))
                self.set_aside_keys.add(key)
                history = self.store.history_path(key)
                if self.repair and history.is_file():  # it goes with its record
                    self.set_aside(history, "its record was damaged", what="set aside")
                continue
            except RecordFormatError as exc:
                self.add("stale", path, str(exc))
                continue
            self.results[key] = result
            version = result.provenance.get("hamgraph_version", "")
            if version != __version__:
                self.add("stale", path, f"recorded by hamgraph {version or '(unknown)'}, this is "
                         f"{__version__} (`run --rerun-stale` trains it again)")
            self._history_of(result)
        self._duplicates()

    def _history_of(self, result: RunResult) -> None:
        key = result.spec.key()
        path = self.store.history_path(key)
        if not path.is_file():
            self.add("damaged", path, "missing (its record has the history)",
                     self._rewrite_history(result))
            return
        self.files += 1
        raw = path.read_bytes()
        if raw != history_text(result).encode("utf-8"):
            problem = history_problem(raw)
            self.add("damaged", path, problem, self._rewrite_history(result))

    def _rewrite_history(self, result: RunResult) -> str:
        if not self.repair:
            return ""
        self.store.read(result.spec.key())  # sets a differing history aside and rewrites it
        return "rewritten from its record"

    def _duplicates(self) -> None:
        from hamgraph.cells import CELL_COLUMNS

        groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for key, result in self.results.items():
            row = run_row(result)
            groups[(*(row[c] for c in CELL_COLUMNS), row["run"], row["seed"])].append(key)
        for keys in groups.values():
            if len(keys) > 1:
                spec = self.results[keys[0]].spec
                self.add("duplicated", self.store.records_dir / f"{keys[0]}.json",
                         f"{len(keys)} records for one cell, run {spec.run} and seed {spec.seed} "
                         f"({', '.join(sorted(keys))}): they differ in other settings and the "
                         "report keeps one; move the unwanted ones out of records/")

    def histories(self) -> None:
        folder = self.store.history_dir
        if not folder.is_dir():
            return
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            if path.suffix == ".csv" and (self.store.record_path(path.stem)).is_file():
                continue  # judged with its record
            self.files += 1
            problem = "a history without a record (a run killed before its record was written)"
            self.add("orphaned", path, problem, self.set_aside(path, "no record", what="orphaned"))

    # --- runs.csv -----------------------------------------------------------------------------
    def runs_csv(self) -> None:
        path = self.store.runs_csv
        recorded = set(self.store.finished_keys())
        if not path.is_file():
            if recorded:
                self.add("damaged", path, "missing (it is rebuilt from the records)",
                         self._rebuild("missing"))
            return
        self.files += 1
        text = path.read_text(encoding="utf-8", errors="replace")
        problems: list[str] = []
        if text and not text.endswith("\n"):
            problems.append("truncated (no newline at the end)")
        seen: list[str] = []
        reader = csv.DictReader(io.StringIO(text))
        try:
            if reader.fieldnames != RUN_COLUMNS:
                problems.append("not this hamgraph's runs.csv header")
            else:
                for row in reader:
                    key = row.get("key") or ""
                    seen.append(key)
                    if None in row or None in row.values():
                        problems.append(f"row {reader.line_num}: wrong number of fields")
                    elif key not in recorded:
                        if key not in self.set_aside_keys:  # (else: counted as its record)
                            problems.append(f"row {reader.line_num}: {key} has no record")
                    elif key in self.results and row != run_row(self.results[key]):
                        problems.append(f"row {reader.line_num}: differs from the record of {key}")
        except csv.Error as exc:
            problems.append(f"not CSV ({exc})")
        duplicated = sorted({k for k in seen if seen.count(k) > 1})
        if duplicated:
            problems.append(f"{len(duplicated)} key(s) listed twice (first: {duplicated[0]})")
        unlisted = sorted(set(self.results) - set(seen))
        if unlisted:
            problems.append(f"{len(unlisted)} recorded run(s) not listed (first: {unlisted[0]})")
        if problems:
            more = f" and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
            self.add("damaged", path, problems[0] + more, self._rebuild(problems[0]))

    def _rebuild(self, problem: str) -> str:
        if not self.repair:
            return ""
        self.store.rebuild_runs_csv(problem)
        return "rebuilt from the records"

    # --- checkpoints, temp files, claims, strays ------------------------------------------------
    def checkpoints(self) -> None:
        folder = self.root / CHECKPOINTS_DIR
        if not folder.is_dir():
            return
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue  # temp files: judged below
            if entry.is_dir() and entry.name.startswith(PACK_PREFIX):
                self._pack_checkpoint(entry)
                continue
            if entry.is_dir() and self.store.record_path(entry.name).is_file():
                self.files += sum(1 for p in entry.rglob("*") if p.is_file())
                self.add("orphaned", entry, "checkpoints of a finished run (it has a record)",
                         self.set_aside(entry, "the run has a record", what="orphaned"))
                continue
            files = [entry] if entry.is_file() else sorted(
                p for p in entry.iterdir() if p.is_file() and not p.name.startswith("."))
            for path in files:
                self.files += 1
                problem = checkpoint_problem(path, entry.name if entry.is_dir() else "")
                if problem is not None and entry.is_file() and problem.startswith("it belongs"):
                    problem = None  # a file directly in checkpoints/ names no run by its folder
                if problem is not None:
                    self.add("damaged", path, problem, self.set_aside(path, problem))

    def _pack_checkpoint(self, entry: Path) -> None:
        """`checkpoints/pack-<hash>/`: members.json names the pack's runs, checkpoint.pt holds
        the pack (its key is the folder's name); orphaned once every member is recorded."""
        from hamgraph.train.checkpoint import CHECKPOINT_FILE, pack_members

        self.files += sum(1 for p in entry.iterdir() if p.is_file() and not p.name.startswith("."))
        read = pack_members(entry)
        if read is None:
            problem = "pack checkpoint without a readable members.json and checkpoint.pt"
            self.add("damaged", entry, problem, self.set_aside(entry, problem))
            return
        _key, members = read
        if all(self.store.record_path(key).is_file() for key in members):
            self.add("orphaned", entry, "checkpoint of a pack whose runs all have records",
                     self.set_aside(entry, "every run of the pack has a record", what="orphaned"))
            return
        path = entry / CHECKPOINT_FILE
        problem = checkpoint_problem(path, entry.name)
        if problem is not None:  # the pack's folder goes aside whole: members.json names it
            moved = self.set_aside(entry, f"{CHECKPOINT_FILE}: {problem}")
            self.add("damaged", path, problem, moved)

    def temp_files(self) -> None:
        for path in self.store.temp_files():
            self.files += 1
            if temp_file_orphaned(path):
                repaired = ""
                if self.repair:
                    path.unlink(missing_ok=True)
                    repaired = "removed"
                self.add("orphaned", path, "temp file of a writer that is gone", repaired)

    def claims(self) -> None:
        claims = Claims(self.root)
        if not claims.dir.is_dir():
            return
        for path in sorted(claims.dir.iterdir()):
            self.files += 1
            if parse_claim_name(path.name) is None:
                self.add("orphaned", path, "not a claim file",
                         self.set_aside(path, "not a claim file", what="orphaned"))
                continue
            owner = claims.owner(path)
            if claims.is_stale(path):
                who = owner.label() if owner else "an unknown process"
                repaired = ""
                if self.repair:
                    repaired = "removed" if claims.remove_if_stale(path) else "taken meanwhile"
                self.add("orphaned", path, f"claim of {who}, which is gone", repaired)

    # --- the sweep storage --------------------------------------------------------------------
    def storage(self, url: str) -> None:
        if url.startswith("journal:") and not self._journal(Path(url[len("journal:"):])):
            return  # unreadable: the studies cannot be loaded
        import optuna

        from hamgraph.errors import HamgraphError
        from hamgraph.sweep import coordination as co
        from hamgraph.sweep.storage import open_storage, redact

        try:
            storage = open_storage(url)
            summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
        except (HamgraphError, ValueError) as exc:
            raise UserInputError(f"check: --storage {redact(url)}: {exc}") from None
        for summary in summaries:
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            trials = study.get_trials(deepcopy=False)
            self.files += 1
            where = f"{redact(url)} study {study.study_name}"
            now = time.time()
            dead = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING
                    and co._is_stale(t, now)]
            if dead:
                repaired = ""
                if self.repair:
                    co.recover_stale(study)
                    repaired = "failed, a retry queued"
                numbers = ", ".join(str(t.number) for t in dead)
                self.add("orphaned", where, f"trial(s) {numbers} RUNNING for a worker that is "
                         "gone", repaired)
            complete: dict[str, list[int]] = defaultdict(list)
            for t in trials:
                if t.state == optuna.trial.TrialState.COMPLETE and co.cell_of(t) is not None:
                    complete[str(co.cell_of(t))].append(t.number)
            for cell, numbers in complete.items():
                if len(numbers) > 1:
                    self.add("duplicated", where, f"cell {cell} COMPLETE in trials "
                             f"{', '.join(map(str, numbers))}")

    def _journal(self, path: Path) -> bool:
        """Check the journal's lines; True when the studies can be loaded from it."""
        if not path.is_file():
            raise UserInputError(f"check: {path}: no such journal file")
        self.files += 1
        raw = path.read_bytes()
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        for number, line in enumerate(lines, start=1):
            try:
                json.loads(line)
            except ValueError:
                self.add("damaged", path, f"line {number} is not JSON: the journal cannot be "
                         "replayed past it (not repaired: move the journal aside to start the "
                         "sweep's trials over; its runs stay in the store)")
                return False
        if tail:
            repaired = ""
            if self.repair:
                keep = self.root / DAMAGED_DIR / "journal-tails" / f"{path.name}.{len(raw)}"
                keep.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, keep)
                os.truncate(path, len(raw) - len(tail))
                repaired = f"torn line cut off (the whole file kept as {keep})"
            self.add("damaged", path, f"torn last line ({len(tail)} bytes without a newline): "
                     "the next append would make it unreadable", repaired)
        return True
