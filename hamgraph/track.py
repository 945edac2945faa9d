"""Optional experiment trackers (TensorBoard, Weights & Biases) fed from the run history.

    tracking = Tracking(parse_trackers(["tensorboard", "wandb"]), out_dir, project="hamgraph")
    tracker = tracking.start_run(spec, config)   # once per run (packed runs: once per run too)
    tracker.log_epochs(rows)                     # each batch of host rows, as the trainer syncs
    tracker.finish(result)                       # summary (status, val, test, best epoch); closes

The trackers only see `EpochStats` rows that the trainer already copies to the host (every few
epochs), so tracking adds no host sync to a training step. Both packages are optional extras
(`pip install 'hamgraph[tensorboard]'`, `'hamgraph[wandb]'`), imported only when asked; a
missing one is a `UserInputError` when `Tracking` is built, before any training.

Nothing is sent anywhere unless asked: W&B runs in offline mode (files under
`<out>/wandb/offline-run-*`, uploadable later with `wandb sync`) unless `WANDB_MODE` (or
`wandb_mode`) says otherwise. TensorBoard writes event files under
`<out>/tensorboard/[<group>/]<run key>/`.

A tracker never loses or fails a run: any exception it raises is logged once (a warning) and
that tracker is switched off for the rest of the run; the run goes on and is stored as usual.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from hamgraph.errors import UserInputError
from hamgraph.specs import EpochStats, RunResult, RunSpec

log = logging.getLogger(__name__)

TRACKERS: tuple[str, ...] = ("tensorboard", "wandb")
DEFAULT_PROJECT = "hamgraph"
# W&B modes ("dryrun" and "run", old spellings of offline and online, are accepted too).
WANDB_MODES: tuple[str, ...] = ("offline", "online", "disabled", "shared")

# EpochStats field -> scalar tag, the same in TensorBoard and W&B.
SCALARS: tuple[tuple[str, str], ...] = (
    ("loss", "loss"),
    ("train", "metric/train"),
    ("val", "metric/val"),
    ("test", "metric/test"),
    ("lr", "lr"),
    ("sign_flips", "ham/sign_flips"),
    ("mean_abs_weight", "ham/mean_abs_weight"),
)
# Modules that must import for each tracker, and the extra that installs them.
_REQUIRES = {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb"}


def parse_trackers(names: Sequence[str]) -> tuple[str, ...]:
    """Validate tracker names (repeatable, or comma separated); unique, in the order given."""
    out: list[str] = []
    for item in names:
        for name in str(item).split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in TRACKERS:
                raise UserInputError(
                    f"--track {name!r}: unknown tracker; choose from {', '.join(TRACKERS)}"
                )
            if name not in out:
                out.append(name)
    return tuple(out)


def epoch_scalars(row: EpochStats) -> dict[str, float]:
    """The tracked scalars of one epoch by tag. NaN (e.g. the train metric of graph runs, which
    is not evaluated) is left out rather than drawn as a gap."""
    out: dict[str, float] = {}
    for field_name, tag in SCALARS:
        value = float(getattr(row, field_name))
        if not math.isnan(value):
            out[tag] = value
    return out


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"spec": {"params": {"lr": 0.01}}} -> {"spec.params.lr": 0.01}; lists become JSON text."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_config(value, prefix=f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


class RunTracker(Protocol):
    """What a trainer (or the runner) calls for one run."""

    def log_epochs(self, rows: Sequence[EpochStats]) -> None:
        """Log rows that just reached the host, in epoch order."""

    def finish(self, result: RunResult) -> None:
        """Log the final summary (status, val, test, best epoch) and close. Idempotent."""

    def abandon(self) -> None:
        """Close without a result: the attempt raised (the run is retried or reported)."""


class _NullRun:
    """The tracker of a command without --track: does nothing."""

    def log_epochs(self, rows: Sequence[EpochStats]) -> None:
        pass

    def finish(self, result: RunResult) -> None:
        pass

    def abandon(self) -> None:
        pass


NULL_RUN = _NullRun()


def _summary(result: RunResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "val": result.val,
        "test": result.test,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "seconds": result.seconds,
        "reason": result.reason,
        "metric": result.metric,
    }


class _TensorBoardRun:
    """Event files under <log_dir>; scalars with global_step = epoch, the config as text and
    hparams (the HParams dashboard compares runs by their settings and final val / test)."""

    def __init__(self, log_dir: Path, key: str, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(log_dir=str(log_dir))
        text = json.dumps(dict(config), indent=2, sort_keys=True, default=str)
        # Markdown: a 4-space indented block keeps the JSON as is.
        self.writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)
        flat = {k: ("None" if v is None else v) for k, v in flatten_config(config).items()}
        flat["key"] = key
        exp, ssi, sei = hparams(flat, {"final/val": 0.0, "final/test": 0.0})
        for summary in (exp, ssi, sei):
            self.writer.file_writer.add_summary(summary)
        self.closed = False

    def log_epochs(self, rows: Sequence[EpochStats]) -> None:
        for row in rows:
            for tag, value in epoch_scalars(row).items():
                self.writer.add_scalar(tag, value, global_step=row.epoch)
        self.writer.flush()

    def finish(self, result: RunResult) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            step = result.best_epoch
            self.writer.add_scalar("final/val", result.val, global_step=step)
            self.writer.add_scalar("final/test", result.test, global_step=step)
            self.writer.add_scalar("final/best_epoch", result.best_epoch, global_step=step)
            summary = json.dumps(_summary(result), indent=2, default=str)
            self.writer.add_text("result", "    " + summary.replace("\n", "\n    "), step)
        finally:
            self.writer.close()


class _WandbRun:
    """One W&B run per RunSpec (several may be open at once: packed runs), step = epoch."""

    def __init__(
        self,
        directory: Path,
        project: str,
        group: str | None,
        key: str,
        config: Mapping[str, Any],
        mode: str,
    ) -> None:
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            group=group,
            name=key,
            config=dict(config),
            dir=str(directory),
            mode=mode,
            reinit="create_new",  # runs of one process are independent (wandb >= 0.19.10)
            # no console capture, no system-metrics sampler, no banner per run (Tracking logs
            # where the runs go once)
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
        )
        self.closed = False

    def log_epochs(self, rows: Sequence[EpochStats]) -> None:
        for row in rows:
            self.run.log(epoch_scalars(row), step=row.epoch)

    def finish(self, result: RunResult) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.run.summary.update(_summary(result))
        finally:
            self.run.finish(exit_code=0 if result.status == "ok" else 1)


class _GuardedRun:
    """Fans each call out to the run's trackers; a tracker that raises is logged and dropped."""

    def __init__(self, key: str, trackers: dict[str, RunTracker]) -> None:
        self.key = key
        self.trackers = trackers

    def _call(self, method: str, arg: Any) -> None:
        for name, tracker in list(self.trackers.items()):
            try:
                getattr(tracker, method)(arg)
            except Exception as exc:
                log.warning(
                    "%s: the %s tracker failed in %s and is off for this run (the run goes "
                    "on): %s: %s",
                    self.key,
                    name,
                    method,
                    type(exc).__name__,
                    exc,
                )
                del self.trackers[name]
                if method != "finish":
                    _close_quietly(tracker)

    def log_epochs(self, rows: Sequence[EpochStats]) -> None:
        if rows and self.trackers:
            self._call("log_epochs", rows)

    def finish(self, result: RunResult) -> None:
        self._call("finish", result)
        self.trackers.clear()

    def abandon(self) -> None:
        for tracker in self.trackers.values():
            _close_quietly(tracker)
        self.trackers.clear()


def _close_quietly(tracker: RunTracker) -> None:
    """Release a failed tracker's files / processes; errors here are only debug-logged."""
    try:
        if isinstance(tracker, _TensorBoardRun):
            tracker.closed = True
            tracker.writer.close()
        elif isinstance(tracker, _WandbRun):
            tracker.closed = True
            tracker.run.finish(exit_code=1)
    except Exception:
        log.debug("closing a failed tracker failed too", exc_info=True)


def _safe_dir(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", name).strip("_.") or "x"


class Tracking:
    """The trackers of one command. `Tracking()` (no names) is the null object: every run gets
    a tracker that does nothing.

    names: tracker names (`parse_trackers` output). log_dir: the result directory; TensorBoard
    writes under <log_dir>/tensorboard/, W&B under <log_dir>/wandb/. project: the W&B project.
    group: default group of every run (a sweep's study); `start_run(group=...)` overrides it.
    wandb_mode: "offline" / "online" / "disabled"; None: $WANDB_MODE, else "offline".
    """

    def __init__(
        self,
        names: Sequence[str] = (),
        log_dir: Path | str = ".",
        project: str = DEFAULT_PROJECT,
        group: str | None = None,
        wandb_mode: str | None = None,
    ) -> None:
        self.names = parse_trackers(names)
        self.log_dir = Path(log_dir)
        self.project = project
        self.group = group
        for name in self.names:
            _require(name)
        self.wandb_mode = _wandb_mode(wandb_mode) if "wandb" in self.names else "offline"
        if "wandb" in self.names:
            where = self.log_dir / "wandb"
            if self.wandb_mode == "offline":
                log.info(
                    "W&B runs are written offline to %s (upload: wandb sync %s)",
                    where,
                    where / "offline-run-*",
                )
            else:
                log.info("W&B mode %s; local files in %s", self.wandb_mode, where)

    @property
    def enabled(self) -> bool:
        return bool(self.names)

    def start_run(
        self, spec: RunSpec, config: Mapping[str, Any] | None = None, group: str | None = None
    ) -> RunTracker:
        """Open the trackers of one run. `config`: what to record as the run's settings (the
        resolved spec and provenance; default: the spec's dict). Never raises: a tracker that
        cannot start is logged and left out."""
        if not self.names:
            return NULL_RUN
        key = spec.key()
        group = group if group is not None else self.group
        config = dict(config) if config is not None else {"spec": spec.to_dict()}
        config.setdefault("key", key)
        trackers: dict[str, RunTracker] = {}
        for name in self.names:
            try:
                trackers[name] = self._open(name, key, config, group)
            except Exception as exc:
                log.warning(
                    "%s: the %s tracker could not start and is off for this run (the run goes "
                    "on): %s: %s",
                    key,
                    name,
                    type(exc).__name__,
                    exc,
                )
        return _GuardedRun(key, trackers)

    def _open(
        self, name: str, key: str, config: Mapping[str, Any], group: str | None
    ) -> RunTracker:
        if name == "tensorboard":
            run_dir = self.log_dir / "tensorboard"
            if group:
                run_dir = run_dir / _safe_dir(group)
            return _TensorBoardRun(run_dir / _safe_dir(key), key, config)
        if name == "wandb":
            return _WandbRun(self.log_dir, self.project, group, key, config, self.wandb_mode)
        raise AssertionError(name)  # parse_trackers keeps names within TRACKERS


def _require(name: str) -> None:
    """Import the tracker's package now, so a missing extra fails before training starts."""
    try:
        importlib.import_module(_REQUIRES[name])
    except Exception as exc:  # ImportError, or a broken install failing while it imports
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserInputError(
            f"--track {name}: the {name!r} package is not installed; "
            f"pip install 'hamgraph[{name}]' ({why})"
        ) from exc


def _wandb_mode(mode: str | None) -> str:
    """The mode passed to wandb.init: explicit > $WANDB_MODE > "offline". Always passed
    explicitly: wandb reads its environment once per process."""
    source = "wandb mode"
    if mode is None:
        mode = os.environ.get("WANDB_MODE")
        source = "WANDB_MODE"
        if mode is None:
            return "offline"
    value = {"dryrun": "offline", "run": "online"}.get(mode.strip().lower(), mode.strip().lower())
    if value not in WANDB_MODES:
        raise UserInputError(
            f"{source}={mode!r} is not a W&B mode; choose from {', '.join(WANDB_MODES)}"
        )
    return value
