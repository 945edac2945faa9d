"""The result store of a grid: one directory, written only through `ResultStore`.

    ROOT/records/<key>.json     the full RunResult (RunSpec.to_dict() included); the source of truth
    ROOT/history/<key>.csv      per-epoch EpochStats of the run
    ROOT/runs.csv               one row per recorded run, regenerated from records/
    ROOT/checkpoints/<key>/     for trainers that checkpoint (graph runs)

What "finished" means: a run is finished iff `records/<key>.json` exists. `add()` writes the
history first, then the record, each to a temp file renamed into place (`os.replace`), so a
`kill -9` at any moment leaves either no record (the run is trained again on resume; a
history file without a record is simply overwritten) or a complete one. Temp files end in
`.tmp` and are never read; `clean_temp_files()` removes those left by dead processes.

runs.csv is derived data: after each `add()` it is rewritten (temp file + rename) under a
file lock (`ROOT/.runs.lock`) from its previous rows plus any record that has no row yet, so
several processes (sweep workers, several `hamgraph run` on one dir) can add results at the
same time without losing rows, and a crash between the record and the CSV is repaired by the
next `add()` / `sync()` / `frame()`. Rows keep their text (floats are written with `repr`,
exactly) and their order: finished first, first listed.

Failed runs (status "failed": the loss diverged) are results too: recorded, listed in
runs.csv, and final for that exact spec like finished ones (training is deterministic, a
rerun would diverge again). To retry one, delete its record (or use `hamgraph run --fresh`).

Known limits: the lock is a `filelock.FileLock` (an OS file lock); on network file systems
without working locks, concurrent writers on different hosts may drop a runs.csv row, which
the next `sync()` restores from the records (the records themselves are never lost).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from hamgraph.atomic import TEMP_SUFFIX, atomic_write_text, host_tag, pid_alive
from hamgraph.errors import HamgraphError
from hamgraph.specs import EpochStats, RunResult, RunSpec

RUN_COLUMNS = [
    "key",
    "dataset",
    "model",
    "optimizer",  # "ham" | "nham" | the base's short name for a baseline ("adam", "sgd")
    "base",  # the base optimizer: "adam", "adamw", "sgd" or a dotted path
    "base_options",  # JSON of the base's options ("" when none)
    "alpha",  # the HAM settings ("" for a baseline)
    "beta",
    "clamp",
    "mask_beta",
    "sign_source",
    "run",
    "seed",
    "metric",
    "val",
    "test",
    "best_epoch",
    "epochs",
    "seconds",
    "status",
    "reason",
    "hamgraph_version",
    "device",
    "history",
]
# The columns that tell runs.csv rows apart as settings; the rest are outcomes.
_TEXT_COLUMNS = ("key", "dataset", "model", "optimizer", "base", "base_options", "mask_beta",
                 "sign_source",
                 "metric", "status", "reason", "hamgraph_version", "device", "history")
HISTORY_COLUMNS = [f.name for f in dataclasses.fields(EpochStats)]
# 1: the first release (HAM settings at the top of the spec); 2: the optimizer as a value and
# the provenance. Both are read; a newer format is refused instead of misread.
RECORD_FORMAT = 2
_STALE_TEMP_SECONDS = 24 * 3600  # temp files of other hosts are removed after a day


class RecordFormatError(HamgraphError):
    """A record written by a newer hamgraph than this one."""


def _num(value: float | int) -> str:
    """Exact text of a number (repr round-trips); non-finite floats as nan / inf / -inf."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _to_json(value: Any) -> Any:
    """Non-finite floats -> None, so records are standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    return value


def _float(value: Any) -> float:
    # math.nan itself, not a new NaN: a loaded EpochStats with an unmeasured field (NaN) then
    # compares equal to the one that was stored (tuples compare items by identity first)
    return math.nan if value is None else float(value)


def run_row(result: RunResult) -> dict[str, str]:
    """The runs.csv row of a result (all values as text)."""
    spec = result.spec
    key = spec.key()
    ham = spec.ham
    options = spec.optimizer.to_dict()["base_options"]
    return {
        "key": key,
        "dataset": spec.dataset,
        "model": spec.model,
        "optimizer": spec.optimizer.kind,
        "base": spec.optimizer.base,
        "base_options": json.dumps(options, sort_keys=True) if options else "",
        "alpha": "" if ham is None else _num(ham.alpha),
        "beta": "" if ham is None else _num(ham.beta),
        "clamp": "" if ham is None else _num(ham.clamp),
        "mask_beta": "" if ham is None else str(ham.mask_beta).lower(),
        "sign_source": "" if ham is None else ham.sign_source,
        "run": _num(spec.run),
        "seed": _num(spec.seed),
        "metric": result.metric,
        "val": _num(result.val),
        "test": _num(result.test),
        "best_epoch": _num(result.best_epoch),
        "epochs": _num(result.epochs),
        "seconds": _num(round(result.seconds, 3)),
        "status": result.status,
        "reason": " ".join(result.reason.split()),  # one line
        "hamgraph_version": result.provenance.get("hamgraph_version", ""),
        "device": result.provenance.get("device", ""),
        "history": f"history/{key}.csv",
    }


def _csv_text(columns: list[str], rows: Iterable[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class ResultStore:
    """Results of one grid (or sweep) under `root`; see the module docstring for the layout.

    Nothing is created until something is written; reading a missing root gives no results.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # --- layout ---
    @property
    def runs_csv(self) -> Path:
        return self.root / "runs.csv"

    @property
    def records_dir(self) -> Path:
        return self.root / "records"

    @property
    def history_dir(self) -> Path:
        return self.root / "history"

    def record_path(self, key: str) -> Path:
        return self.records_dir / f"{key}.json"

    def history_path(self, key: str) -> Path:
        return self.history_dir / f"{key}.csv"

    def checkpoint_dir(self, spec: RunSpec) -> Path:
        """`ROOT/checkpoints/<key>/` (created; removed by `add()` if the trainer left it empty)."""
        path = self.root / "checkpoints" / spec.key()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def prepare(self) -> None:
        """Create the directories, remove dead temp files and repair runs.csv (start of a grid)."""
        for path in (self.root, self.records_dir, self.history_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.clean_temp_files()
        self.sync()

    def write_text(self, name: str, text: str) -> Path:
        """An auxiliary file under root (e.g. the resolved config), written atomically."""
        path = self.root / name
        atomic_write_text(path, text, fsync=True)
        return path

    # --- reading ---
    def finished_keys(self) -> set[str]:
        """Keys of every recorded run (ok or failed). Temp files do not count."""
        if not self.records_dir.is_dir():
            return set()
        return {path.stem for path in self.records_dir.glob("*.json") if path.is_file()}

    def load(self, key: str) -> RunResult:
        """The RunResult of a recorded run (history included).

        Raises RecordFormatError for a record written by a newer hamgraph.
        """
        path = self.record_path(key)
        data = json.loads(path.read_text(encoding="utf-8"))
        if int(data.get("format", 1)) > RECORD_FORMAT:
            raise RecordFormatError(
                f"{path}: record format {data['format']} is newer than this hamgraph reads "
                f"({RECORD_FORMAT}); upgrade hamgraph"
            )
        provenance = data.get("provenance")
        if provenance is None:  # format 1 kept the version and the time at the top level
            provenance = {
                "hamgraph_version": data.get("hamgraph_version", ""),
                "finished_at": data.get("finished_at", ""),
            }
        history = [
            EpochStats(**{name: _float(v) if isinstance(v, float) or v is None else v
                          for name, v in epoch.items()})
            for epoch in data["history"]
        ]
        return RunResult(
            spec=RunSpec.from_dict(data["spec"]),
            metric=data["metric"],
            status=data["status"],
            val=_float(data["val"]),
            test=_float(data["test"]),
            best_epoch=int(data["best_epoch"]),
            epochs=int(data["epochs"]),
            seconds=float(data["seconds"]),
            reason=data.get("reason", ""),
            history=history,
            provenance={k: str(v) for k, v in provenance.items()},
        )

    def frame(self) -> pd.DataFrame:
        """runs.csv as a DataFrame (with the RUN_COLUMNS; empty if nothing is recorded).

        alpha/beta/clamp are NaN for baseline rows; text columns are "" when empty.
        """
        if not self.runs_csv.exists() and not self.finished_keys():
            return pd.DataFrame({column: [] for column in RUN_COLUMNS})
        try:
            self.sync()
            text = self.runs_csv.read_text(encoding="utf-8")
        except OSError:  # a read-only copy: build the table in memory
            text = _csv_text(RUN_COLUMNS, self._rows_from_records(sorted(self.finished_keys())))
        frame = pd.read_csv(
            io.StringIO(text),
            dtype={**dict.fromkeys(_TEXT_COLUMNS, str), "alpha": float, "beta": float,
                   "clamp": float},
            keep_default_na=False,
            na_values={"alpha": [""], "beta": [""], "clamp": [""], "val": ["nan"],
                       "test": ["nan"]},
        )
        return frame

    # --- writing ---
    def add(self, result: RunResult) -> None:
        """Record one result: history, then the record (this makes it finished), then runs.csv.

        Safe to call from several processes at once. Adding a key again replaces its record
        and row.
        """
        key = result.spec.key()
        atomic_write_text(
            self.history_path(key),
            _csv_text(
                HISTORY_COLUMNS,
                ({k: _num(v) for k, v in dataclasses.asdict(e).items()} for e in result.history),
            ),
            fsync=True,
        )
        record = {
            "format": RECORD_FORMAT,
            "provenance": result.provenance,
            "key": key,
            "spec": result.spec.to_dict(),
            "metric": result.metric,
            "status": result.status,
            "val": result.val,
            "test": result.test,
            "best_epoch": result.best_epoch,
            "epochs": result.epochs,
            "seconds": result.seconds,
            "reason": result.reason,
            "history": [dataclasses.asdict(e) for e in result.history],
            "host": socket.gethostname(),
        }
        text = json.dumps(_to_json(record), indent=1, allow_nan=False)
        atomic_write_text(self.record_path(key), text + "\n", fsync=True)
        self.sync(new={key: run_row(result)})
        self.discard_empty_checkpoint_dir(key)

    def discard_empty_checkpoint_dir(self, key: str) -> None:
        """Remove `checkpoints/<key>/` (and `checkpoints/`) if the trainer left them empty."""
        try:
            (self.root / "checkpoints" / key).rmdir()
            (self.root / "checkpoints").rmdir()
        except OSError:  # missing, or not empty: keep it
            pass

    def sync(self, new: dict[str, dict[str, str]] | None = None) -> None:
        """Make runs.csv list exactly the recorded runs (under the lock; rewrites only on change).

        `new`: rows of just-added results (replace their old rows, or are appended). Without
        `new` every row whose record is newer than runs.csv is rebuilt from its record.
        """
        new = new or {}
        if not self.records_dir.is_dir():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / ".runs.lock")):
            recorded = self.finished_keys()
            old_text = self.runs_csv.read_text(encoding="utf-8") if self.runs_csv.exists() else ""
            rows: dict[str, dict[str, str]] = {}
            reader = csv.DictReader(io.StringIO(old_text))
            if reader.fieldnames == RUN_COLUMNS:  # else: an old or broken file, rebuilt below
                for row in reader:
                    if row.get("key") in recorded and None not in row and None not in row.values():
                        rows[row["key"]] = row
            if not new and rows:  # a full check (start, report): records replaced after the
                # last rewrite (a process died between the record and runs.csv) are re-read
                written = self.runs_csv.stat().st_mtime_ns
                for key in list(rows):
                    try:
                        if self.record_path(key).stat().st_mtime_ns > written:
                            del rows[key]
                    except FileNotFoundError:
                        del rows[key]
            for key, row in new.items():
                if key in recorded:
                    rows[key] = row
            missing = sorted(recorded - rows.keys())
            for row in self._rows_from_records(missing):
                rows[row["key"]] = row
            text = _csv_text(RUN_COLUMNS, rows.values())
            if text != old_text:
                atomic_write_text(self.runs_csv, text, fsync=True)

    def _rows_from_records(self, keys: Iterable[str]) -> list[dict[str, str]]:
        rows = []
        for key in keys:
            try:
                rows.append(run_row(self.load(key)))
            except FileNotFoundError:  # removed meanwhile
                continue
        return rows

    def clean_temp_files(self) -> int:
        """Remove temp files of dead processes on this host (or older than a day). -> count."""
        if not self.root.is_dir():
            return 0
        host = host_tag()
        removed = 0
        for folder in (self.root, self.records_dir, self.history_dir):
            if not folder.is_dir():
                continue
            for path in folder.glob(f".*{TEMP_SUFFIX}"):
                parts = path.name[: -len(TEMP_SUFFIX)].split(".")
                try:
                    temp_host, pid = parts[-3], int(parts[-2])
                    stale = time.time() - path.stat().st_mtime > _STALE_TEMP_SECONDS
                except (IndexError, ValueError, OSError):
                    continue
                if stale or (temp_host == host and not pid_alive(pid)):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed


