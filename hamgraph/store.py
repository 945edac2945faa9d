"""The result store of a grid: one directory, written only through `ResultStore`.

    ROOT/records/<key>.json     the full RunResult (RunSpec.to_dict() included); the source of truth
    ROOT/history/<key>.csv      per-epoch EpochStats of the run
    ROOT/runs.csv               one row per recorded run, regenerated from records/
    ROOT/checkpoints/<key>/     the checkpoint of a run in training (hamgraph.train.checkpoint)
    ROOT/checkpoints/pack-<h>/  the checkpoint of a pack in training, h = hash of its run keys

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

Damage (a file that cannot be read: empty, truncated, not JSON / CSV, fields missing, a record
whose key does not match its file name or its own settings, a checkpoint torch cannot load) is a
state of a file, handled here and nowhere else: the file is moved to
`ROOT/damaged/<time>/<its relative path>` with one warning line naming it and what was wrong
(`set_aside`), and the store goes on as if it were missing: `read()` gives None, so `run` and
`sweep` train that run again and `report` leaves it out. A history that differs from its record
and a broken runs.csv are derived data: set aside the same way and rewritten from the record(s).
Nothing is deleted. A record written by a newer hamgraph is not damage (RecordFormatError).

Known limits: the lock is a `filelock.FileLock` (an OS file lock); on network file systems
without working locks, concurrent writers on different hosts may drop a runs.csv row, which
the next `sync()` restores from the records (the records themselves are never lost).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from hamgraph.atomic import TEMP_SUFFIX, atomic_write_text, fsync_dir, host_tag, pid_alive
from hamgraph.errors import HamgraphError
from hamgraph.specs import EpochStats, GraphParams, RunResult, RunSpec

log = logging.getLogger(__name__)

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
    "params",  # JSON of the run's NodeParams / GraphParams (lr, hidden, dropout, epochs, ...)
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
    # a user's plug-ins (hamgraph.plugins; "" for built-ins): what a report needs without
    # importing them
    "dataset_display",  # the label of a user's dataset / model
    "model_display",
    "dataset_target",  # the import path (entry point value) of a user's dataset / model / metric
    "model_target",
    "metric_target",
    "plugin_options",  # JSON {"dataset" | "model" | "metric": {options, settings}}
    "plugin_sources",  # "dataset=<sha256 12> model=<...>": a change marks the run stale
    "higher_is_better",  # "true" | "false": the direction of the metric
]
PLUGIN_COLUMNS = ("dataset_display", "model_display", "dataset_target", "model_target",
                  "metric_target", "plugin_options", "plugin_sources", "higher_is_better")
# The columns that tell runs.csv rows apart as settings; the rest are outcomes.
_TEXT_COLUMNS = ("key", "dataset", "model", "optimizer", "base", "base_options", "mask_beta",
                 "sign_source", "params",
                 "metric", "status", "reason", "hamgraph_version", "device", "history",
                 *PLUGIN_COLUMNS)
HISTORY_COLUMNS = [f.name for f in dataclasses.fields(EpochStats)]
# 1: the first release (HAM settings at the top of the spec); 2: the optimizer as a value and
# the provenance. Both are read; a newer format is refused instead of misread.
RECORD_FORMAT = 2
_STALE_TEMP_SECONDS = 24 * 3600  # temp files of other hosts are removed after a day
DAMAGED_DIR = "damaged"  # ROOT/damaged/<time>/<relative path>: files set aside, never deleted
PACK_PREFIX = "pack-"  # checkpoints/pack-<hash>/: a pack's checkpoint, not a run's
CHECKPOINTS_DIR = "checkpoints"
_NUMERIC_COLUMNS = ("alpha", "beta", "clamp", "run", "seed", "val", "test", "best_epoch",
                    "epochs", "seconds")


class RecordFormatError(HamgraphError):
    """A record written by a newer hamgraph than this one."""


class DamagedRecord(ValueError):
    """A record that cannot be read as a RunResult of its key (the message says why)."""


@dataclass(frozen=True)
class SetAside:
    """A damaged file moved out of the way (`moved_to` None: it could not be moved)."""

    path: Path  # where it was
    moved_to: Path | None
    problem: str


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


def params_json(spec: RunSpec) -> str:
    """The runs.csv text of a run's params: sorted JSON, so equal params give equal text."""
    return json.dumps(dataclasses.asdict(spec.params), sort_keys=True)


def plugin_sources(spec: RunSpec) -> str:
    """"dataset=<hash> model=<hash> metric=<hash>" of the run's plug-ins ("" for none)."""
    return " ".join(f"{kind}={ref.source_hash}" for kind, ref in spec.plugins.items())


def _plugin_columns(spec: RunSpec) -> dict[str, str]:
    plugins = spec.plugins
    options: dict[str, Any] = {
        kind: {"options": ref.kwargs, "settings": ref.setting,
               **({"entry_point": ref.entry_point} if ref.entry_point else {})}
        for kind, ref in plugins.items()
    }
    if "dataset" in options:  # a report labels by the protocol of the task
        options["dataset"]["task"] = "graph" if isinstance(spec.params, GraphParams) else "node"
    metric = plugins.get("metric")
    return {
        "dataset_display": plugins["dataset"].display if "dataset" in plugins else "",
        "model_display": plugins["model"].display if "model" in plugins else "",
        "dataset_target": plugins["dataset"].target if "dataset" in plugins else "",
        "model_target": plugins["model"].target if "model" in plugins else "",
        "metric_target": metric.target if metric is not None else "",
        "plugin_options": json.dumps(options, sort_keys=True, default=str) if options else "",
        "plugin_sources": plugin_sources(spec),
        "higher_is_better": "false" if metric is not None
        and metric.setting.get("higher_is_better") is False else "true",
    }


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
        "params": params_json(spec),
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
        **_plugin_columns(spec),
    }


def _csv_text(columns: list[str], rows: Iterable[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def history_text(result: RunResult) -> str:
    """The text of `history/<key>.csv` for a result (derived from the record's history)."""
    return _csv_text(
        HISTORY_COLUMNS,
        ({k: _num(v) for k, v in dataclasses.asdict(e).items()} for e in result.history),
    )


def parse_record(raw: bytes, key: str) -> RunResult:
    """The RunResult in the bytes of `records/<key>.json`.

    Raises DamagedRecord (saying what is wrong) for bytes that are not a complete record of
    `key`: empty, not UTF-8, not JSON (truncated), fields missing or of the wrong type, a key
    field or settings that hash to another key than the file name. RecordFormatError for a
    record of a newer format (not damage: a newer hamgraph wrote it).
    """
    if not raw.strip():
        raise DamagedRecord("empty file")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DamagedRecord("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise DamagedRecord(f"not JSON (truncated?): {exc.msg}: char {exc.pos}") from None
    if not isinstance(data, dict):
        raise DamagedRecord(f"not a record: a JSON {type(data).__name__}, not an object")
    try:
        version = int(data.get("format", 1))
    except (TypeError, ValueError):
        raise DamagedRecord(f"format {data.get('format')!r} is not a number") from None
    if version > RECORD_FORMAT:
        raise RecordFormatError(
            f"record format {version} is newer than this hamgraph reads ({RECORD_FORMAT}); "
            "upgrade hamgraph"
        )
    try:
        result = _result_from(data)
    except KeyError as exc:
        raise DamagedRecord(f"field missing: {exc.args[0]}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DamagedRecord(f"a field has the wrong type or value ({first})") from None
    if "key" in data and data["key"] != key:
        raise DamagedRecord(f"its key field is {data['key']!r}, not its file name")
    actual = result.spec.key()
    if actual != key:
        raise DamagedRecord(f"its settings hash to key {actual}, not its file name")
    return result


def _result_from(data: dict[str, Any]) -> RunResult:
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
    status = data["status"]
    if status not in ("ok", "failed"):
        raise ValueError(f"status {status!r}")
    return RunResult(
        spec=RunSpec.from_dict(data["spec"]),
        metric=str(data["metric"]),
        status=status,
        val=_float(data["val"]),
        test=_float(data["test"]),
        best_epoch=int(data["best_epoch"]),
        epochs=int(data["epochs"]),
        seconds=float(data["seconds"]),
        reason=str(data.get("reason", "")),
        history=history,
        provenance={k: str(v) for k, v in dict(provenance).items()},
    )


def history_problem(raw: bytes) -> str:
    """What is wrong with a history file that does not match its record (for the warning)."""
    if not raw.strip():
        return "empty file"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    lines = text.splitlines()
    if lines[0].split(",") != HISTORY_COLUMNS:
        return "not a history CSV (wrong header)"
    if not text.endswith("\n"):
        return "truncated (no newline at the end)"
    if any(len(line.split(",")) != len(HISTORY_COLUMNS) for line in lines[1:]):
        return "truncated or garbled rows"
    return "differs from the history in its record"


def checkpoint_problem(path: Path, key: str) -> str | None:
    """Why `path` is not a loadable checkpoint of run `key` (None: it is one)."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        import torch

        with warnings.catch_warnings():  # a torn pickle: torch warns before it raises
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"torch cannot load it ({first[:120]})"
    if not isinstance(state, dict):
        return f"not a checkpoint: a {type(state).__name__}"
    if "key" in state and state["key"] != key:
        return f"it belongs to run {state['key']}"
    return None


def _row_problem(row: dict[str, Any], recorded: set[str]) -> str | None:
    """Why a runs.csv row cannot be kept (None: it can)."""
    if None in row or None in row.values():
        return "wrong number of fields"
    key = row["key"]
    if key not in recorded:
        return "no record"
    if row["history"] != f"history/{key}.csv" or row["status"] not in ("ok", "failed"):
        return "garbled"
    for column in _NUMERIC_COLUMNS:
        if row[column] != "":
            try:
                float(row[column])
            except ValueError:
                return "garbled"
    return None


class ResultStore:
    """Results of one grid (or sweep) under `root`; see the module docstring for the layout.

    Nothing is created until something is written; reading a missing root gives no results.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.set_aside_files: list[SetAside] = []  # damaged files this object moved aside
        self._stamp: str | None = None  # damaged/<stamp>/ of this object

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
        """`ROOT/checkpoints/<key>/` (created; removed by `add()` if the trainer left it empty).

        Damaged checkpoint files in it are set aside first (`check_checkpoints`)."""
        key = spec.key()
        path = self.root / CHECKPOINTS_DIR / key
        path.mkdir(parents=True, exist_ok=True)
        self.check_checkpoints(key)
        return path

    def pack_checkpoint_dir(self, keys: Iterable[str]) -> Path:
        """`ROOT/checkpoints/pack-<hash of the sorted run keys>/` of a pack (not created): the
        same set of runs finds the same directory whatever their order."""
        digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]
        return self.root / CHECKPOINTS_DIR / f"{PACK_PREFIX}{digest}"

    def prepare(self) -> None:
        """Create the directories, remove dead temp files and repair runs.csv (start of a grid)."""
        for path in (self.root, self.records_dir, self.history_dir):
            path.mkdir(parents=True, exist_ok=True)
        for path in (self.root.parent, self.root):  # the new folders' entries, durably
            fsync_dir(path)
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

    def read(self, key: str) -> RunResult | None:
        """The RunResult of a recorded run (history included); None when it has no record.

        A damaged record is set aside (see the module docstring) and gives None; so does a
        record that vanished meanwhile. A history file that differs from its record is set
        aside and rewritten from the record. Raises RecordFormatError for a record written by
        a newer hamgraph.
        """
        path = self.record_path(key)
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
                seen = os.fstat(handle.fileno())
        except FileNotFoundError:
            return None
        try:
            result = parse_record(raw, key)
        except DamagedRecord as exc:
            self.set_aside(path, str(exc), seen)
            return None
        except RecordFormatError as exc:
            raise RecordFormatError(f"{path}: {exc}") from None
        self._check_history(result)
        return result

    def load(self, key: str) -> RunResult:
        """`read(key)` for a run known to be recorded: FileNotFoundError when it has no readable
        record (missing, or damaged and set aside)."""
        result = self.read(key)
        if result is None:
            raise FileNotFoundError(f"{self.record_path(key)}: no readable record")
        return result

    def _check_history(self, result: RunResult) -> None:
        """Make history/<key>.csv equal to what the record says (it is derived from it)."""
        path = self.history_path(result.spec.key())
        expected = history_text(result)
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
                seen = os.fstat(handle.fileno())
        except FileNotFoundError:
            raw, seen = None, None
        if raw is not None and raw == expected.encode("utf-8"):
            return
        if raw is not None:
            self.set_aside(path, history_problem(raw), seen)
        else:
            log.warning("%s: missing; rewritten from its record", path)
        try:
            atomic_write_text(path, expected, fsync=True)
        except OSError as exc:  # a read-only copy: the record still has the history
            log.debug("cannot rewrite %s: %s", path, exc)

    # --- damage ------------------------------------------------------------------------------
    def set_aside(self, path: Path, problem: str, seen: os.stat_result | None = None,
                  what: str = "damaged") -> SetAside:
        """Move a damaged file under root to `damaged/<time>/<its relative path>`, with one
        warning line naming it and what was wrong; the store then treats it as missing.

        `seen`: the stat of the file as it was judged; if another process replaced it with a
        new file meanwhile (a rerun storing the run again), the new file is put back.
        A file that cannot be moved (a read-only copy) stays where it is (`moved_to` None).
        """
        path = Path(path)
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            relative = Path(path.name)
        target = self._damaged_root() / relative
        n = 0
        while target.exists() or target.is_symlink():
            n += 1
            target = target.with_name(f"{relative.name}.{n}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, target)
        except FileNotFoundError:  # moved or removed by another process meanwhile
            return SetAside(path, None, problem)
        except OSError as exc:
            log.warning("%s: %s (%s); left in place: cannot move it: %s", path, what, problem,
                        exc)
            entry = SetAside(path, None, problem)
            self.set_aside_files.append(entry)
            return entry
        moved = target.stat()
        if seen is not None and (moved.st_ino, moved.st_dev) != (seen.st_ino, seen.st_dev):
            # we judged an older file: the one we moved was written after it; put it back
            try:
                os.link(target, path)
                target.unlink()
            except OSError:
                pass  # an even newer one is in place: the moved copy stays in damaged/
            return SetAside(path, None, problem)
        log.warning("%s: %s (%s); set aside as %s", path, what, problem, target)
        entry = SetAside(path, target, problem)
        self.set_aside_files.append(entry)
        return entry

    def _damaged_root(self) -> Path:
        if self._stamp is None:
            self._stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return self.root / DAMAGED_DIR / self._stamp

    def verify(self) -> list[SetAside]:
        """Read every record (and its history): damaged ones are set aside, histories that
        differ from their record rewritten. -> what this call set aside."""
        before = len(self.set_aside_files)
        for key in sorted(self.finished_keys()):
            self.read(key)
        return self.set_aside_files[before:]

    def damaged_keys(self) -> list[str]:
        """Keys of runs whose record was set aside as damaged (now or earlier) and that have no
        record again yet: the runs `report` leaves out."""
        folder = self.root / DAMAGED_DIR
        if not folder.is_dir():
            return []
        finished = self.finished_keys()
        keys = {p.name.split(".json")[0] for p in folder.glob("*/records/*.json*")}
        return sorted(keys - finished)

    def check_checkpoints(self, key: str) -> list[SetAside]:
        """Set aside every file of `checkpoints/<key>/` that torch cannot load as a checkpoint
        of `key` (so the trainer starts the run over instead of crashing on it)."""
        folder = self.root / CHECKPOINTS_DIR / key
        found = []
        if not folder.is_dir():
            return found
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            problem = checkpoint_problem(path, key)
            if problem is not None:
                found.append(self.set_aside(path, problem))
        return found

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
        atomic_write_text(self.history_path(key), history_text(result), fsync=True)
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
            (self.root / CHECKPOINTS_DIR / key).rmdir()
            (self.root / CHECKPOINTS_DIR).rmdir()
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
            old_text = self.runs_csv.read_text(encoding="utf-8", errors="replace") \
                if self.runs_csv.exists() else ""
            rows: dict[str, dict[str, str]] = {}
            bad: list[str] = []  # why rows (or the whole file) could not be kept
            reader = csv.DictReader(io.StringIO(old_text))
            try:
                header_ok = reader.fieldnames == RUN_COLUMNS
                if header_ok:
                    for row in reader:
                        problem = _row_problem(row, recorded)
                        if problem is None:
                            rows[row["key"]] = row
                        elif problem != "no record":  # a record removed by hand: not damage
                            bad.append(f"row {reader.line_num}: {problem}")
                elif old_text:  # an old or broken file, rebuilt below
                    bad.append("not this hamgraph's runs.csv header")
            except csv.Error as exc:
                bad.append(f"not CSV ({exc})")
            if old_text and not old_text.endswith("\n"):
                bad.append("truncated (no newline at the end)")
                if rows:  # its last row may be cut short inside a field
                    rows.popitem()
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
                if bad:  # derived data: rebuilt from the records, the old file kept aside
                    self._keep_copy(self.runs_csv, f"{bad[0]}; rebuilt from the records"
                                    + (f" ({len(bad)} problems)" if len(bad) > 1 else ""))
                atomic_write_text(self.runs_csv, text, fsync=True)

    def rebuild_runs_csv(self, problem: str) -> None:
        """Rewrite runs.csv from the records (its rows' order kept where it can be read), a copy
        of the old file kept in damaged/ (`problem`: why, for the warning)."""
        self.verify()
        with FileLock(str(self.root / ".runs.lock")):
            order: list[str] = []
            if self.runs_csv.exists():
                text = self.runs_csv.read_text(encoding="utf-8", errors="replace")
                with contextlib.suppress(csv.Error):
                    order = [row.get("key") or "" for row in csv.DictReader(io.StringIO(text))]
                self._keep_copy(self.runs_csv, f"{problem}; rebuilt from the records")
            recorded = self.finished_keys()
            keys = [k for k in dict.fromkeys(order) if k in recorded]
            keys += sorted(recorded - set(keys))
            atomic_write_text(self.runs_csv, _csv_text(RUN_COLUMNS, self._rows_from_records(keys)),
                              fsync=True)

    def _keep_copy(self, path: Path, problem: str) -> None:
        """Copy a damaged derived file to damaged/ before it is rewritten (one warning line)."""
        target = self._damaged_root() / path.relative_to(self.root)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
        except OSError as exc:
            log.warning("%s: damaged (%s); cannot keep a copy: %s", path, problem, exc)
            return
        log.warning("%s: damaged (%s); old file kept as %s", path, problem, target)
        self.set_aside_files.append(SetAside(path, target, problem))

    def _rows_from_records(self, keys: Iterable[str]) -> list[dict[str, str]]:
        results = (self.read(key) for key in keys)  # None: removed meanwhile, or damaged
        return [run_row(result) for result in results if result is not None]

    def temp_files(self) -> list[Path]:
        """Every temp file (atomic.temp_path) in the store's folders, of live writers too."""
        folders = [self.root, self.records_dir, self.history_dir]
        checkpoints = self.root / CHECKPOINTS_DIR
        if checkpoints.is_dir():
            folders += [checkpoints, *(p for p in checkpoints.iterdir() if p.is_dir())]
        return sorted(path for folder in folders if folder.is_dir()
                      for path in folder.glob(f".*{TEMP_SUFFIX}"))

    def clean_temp_files(self) -> int:
        """Remove temp files of dead processes on this host (or older than a day). -> count."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for path in self.temp_files():
            if temp_file_orphaned(path):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def temp_file_orphaned(path: Path) -> bool:
    """Whether a temp file's writer is gone: a dead pid of this host, or older than a day."""
    parts = path.name[: -len(TEMP_SUFFIX)].split(".")
    try:
        temp_host, pid = parts[-3], int(parts[-2])
        stale = time.time() - path.stat().st_mtime > _STALE_TEMP_SECONDS
    except (IndexError, ValueError, OSError):
        return False
    return stale or (temp_host == host_tag() and not pid_alive(pid))
