"""Experiment trackers: TensorBoard event files and W&B offline runs, read back from disk."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hamgraph.errors import UserInputError
from hamgraph.specs import EpochStats, HamSettings, NodeParams, RunResult, RunSpec
from hamgraph.track import (
    NULL_RUN,
    SCALARS,
    TRACKERS,
    Tracking,
    _GuardedRun,
    epoch_scalars,
    flatten_config,
    parse_trackers,
)

PARAMS = NodeParams(lr=0.01, hidden=16, layers=2, dropout=0.5, weight_decay=5e-4, epochs=5)


def make_spec(ham: HamSettings | None, run: int) -> RunSpec:
    # through a record, so the test does not depend on how RunSpec holds its optimizer
    return RunSpec.from_dict(
        {
            "dataset": "csbm-h0.8",
            "model": "gcn",
            "params": dataclasses.asdict(PARAMS),
            "params_kind": "NodeParams",
            "ham": None if ham is None else dataclasses.asdict(ham),
            "run": run,
            "seed": run + 6,
        }
    )


SPEC = make_spec(HamSettings(alpha=0.5, beta=1e-3), run=1)


def make_rows(epochs: int = 5, train_nan: bool = False) -> list[EpochStats]:
    return [
        EpochStats(
            epoch=e,
            loss=1.0 / e,
            train=math.nan if train_nan else 0.5 + 0.01 * e,
            val=0.4 + 0.02 * e,
            test=0.3 + 0.03 * e,
            lr=0.01 * (0.9**e),
            sign_flips=10 * e,
            mean_abs_weight=0.1 + 0.001 * e,
        )
        for e in range(1, epochs + 1)
    ]


def make_result(rows: list[EpochStats], status: str = "ok") -> RunResult:
    return RunResult(
        spec=SPEC,
        metric="accuracy",
        status=status,  # type: ignore[arg-type]
        val=0.48,
        test=0.42,
        best_epoch=4,
        epochs=len(rows),
        seconds=1.5,
        history=rows,
    )


CONFIG = {"spec": SPEC.to_dict(), "provenance": {"git": "abc123", "torch": "2.13"}, "cell": 3}


# -- names --------------------------------------------------------------------------------------


def test_parse_trackers_accepts_repeats_commas_and_case() -> None:
    assert parse_trackers(["wandb", "TensorBoard,wandb", " "]) == ("wandb", "tensorboard")
    assert parse_trackers([]) == ()
    assert TRACKERS == ("tensorboard", "wandb")


def test_parse_trackers_names_the_bad_value_and_the_choices() -> None:
    with pytest.raises(UserInputError, match=r"'mlflow'.*tensorboard, wandb"):
        parse_trackers(["tensorboard", "mlflow"])


def test_epoch_scalars_leave_nan_out() -> None:
    row = make_rows(1, train_nan=True)[0]
    scalars = epoch_scalars(row)
    assert "metric/train" not in scalars
    assert scalars["loss"] == 1.0
    assert scalars["ham/sign_flips"] == 10.0
    assert set(scalars) == {tag for _, tag in SCALARS} - {"metric/train"}


def test_flatten_config() -> None:
    flat = flatten_config({"a": {"b": 1, "c": [1, 2]}, "d": None})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "d": None}


# -- null object and missing extras -------------------------------------------------------------


def test_no_trackers_is_a_null_object(tmp_path: Path) -> None:
    tracking = Tracking((), tmp_path)
    assert not tracking.enabled
    tracker = tracking.start_run(SPEC, CONFIG)
    assert tracker is NULL_RUN
    tracker.log_epochs(make_rows())
    tracker.finish(make_result(make_rows()))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "modules"),
    [("wandb", ["wandb"]), ("tensorboard", ["tensorboard", "torch.utils.tensorboard"])],
)
def test_missing_extra_is_a_one_line_user_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, modules: list[str]
) -> None:
    for module in modules:  # None in sys.modules makes `import module` raise ImportError
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UserInputError) as info:
        Tracking([name], tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"--track {name}: the '{name}' package is not installed; pip install 'hamgraph[{name}]'"
    )


def test_wandb_mode_comes_from_the_argument_then_the_environment_then_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert Tracking(["wandb"], tmp_path).wandb_mode == "offline"  # nothing sent unless asked
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert Tracking(["wandb"], tmp_path).wandb_mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert Tracking(["wandb"], tmp_path).wandb_mode == "online"
    assert Tracking(["wandb"], tmp_path, wandb_mode="disabled").wandb_mode == "disabled"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(UserInputError, match=r"WANDB_MODE='sometimes'.*offline, online"):
        Tracking(["wandb"], tmp_path)
    Tracking(["tensorboard"], tmp_path)  # W&B's variable is not W&B-less commands' business
    with pytest.raises(UserInputError, match="wandb mode='loud'"):
        Tracking(["wandb"], tmp_path, wandb_mode="loud")


# -- failures never reach the run ---------------------------------------------------------------


class Exploding:
    def __init__(self) -> None:
        self.calls = 0

    def log_epochs(self, rows: Any) -> None:
        self.calls += 1
        raise RuntimeError("disk full")

    def finish(self, result: RunResult) -> None:
        self.calls += 1
        raise RuntimeError("disk full")


class Recording:
    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.finished: list[str] = []

    def log_epochs(self, rows: Any) -> None:
        self.epochs += [row.epoch for row in rows]

    def finish(self, result: RunResult) -> None:
        self.finished.append(result.status)


def test_a_failing_tracker_is_logged_once_and_switched_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad, good = Exploding(), Recording()
    run = _GuardedRun("key-1", {"wandb": bad, "tensorboard": good})
    rows = make_rows()
    with caplog.at_level(logging.WARNING, logger="hamgraph.track"):
        run.log_epochs(rows[:2])
        run.log_epochs(rows[2:])
        run.finish(make_result(rows))
    assert bad.calls == 1  # switched off after the first failure
    assert good.epochs == [1, 2, 3, 4, 5] and good.finished == ["ok"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "key-1" in warnings[0].getMessage() and "disk full" in warnings[0].getMessage()


def test_a_tracker_failing_at_finish_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class FailsAtFinish(Recording):
        def finish(self, result: RunResult) -> None:
            raise ValueError("upload refused")

    tracker = FailsAtFinish()
    run = _GuardedRun("key-2", {"wandb": tracker})
    run.log_epochs(make_rows(2))
    with caplog.at_level(logging.WARNING, logger="hamgraph.track"):
        run.finish(make_result(make_rows(2)))
        run.finish(make_result(make_rows(2)))  # idempotent: the tracker is gone
    assert tracker.epochs == [1, 2]
    assert [r.getMessage().count("upload refused") for r in caplog.records] == [1]


def test_importing_the_module_imports_no_tracker_package() -> None:
    code = "import sys, hamgraph.track; print('wandb' in sys.modules, 'tensorboard' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]


def test_a_tracker_that_cannot_start_does_not_raise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("torch.utils.tensorboard")
    tracking = Tracking(["tensorboard"], tmp_path)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("read-only file system")

    monkeypatch.setattr("hamgraph.track._TensorBoardRun", broken)
    with caplog.at_level(logging.WARNING, logger="hamgraph.track"):
        tracker = tracking.start_run(SPEC, CONFIG)
        tracker.log_epochs(make_rows())
        tracker.finish(make_result(make_rows()))
    assert any("read-only file system" in r.getMessage() for r in caplog.records)


# -- TensorBoard --------------------------------------------------------------------------------


def _read_events(run_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_writes_every_scalar_at_its_epoch(tmp_path: Path) -> None:
    pytest.importorskip("torch.utils.tensorboard")
    tracking = Tracking(["tensorboard"], tmp_path)
    tracker = tracking.start_run(SPEC, CONFIG, group="study-A")
    rows = make_rows(7)
    tracker.log_epochs(rows[:3])  # batches as the trainer syncs them
    tracker.log_epochs(rows[3:])
    tracker.finish(make_result(rows))

    run_dir = tmp_path / "tensorboard" / "study-A" / SPEC.key()
    assert run_dir.is_dir(), sorted(p.name for p in (tmp_path / "tensorboard").rglob("*"))
    acc = _read_events(run_dir)
    tags = set(acc.Tags()["scalars"])
    assert {tag for _, tag in SCALARS} <= tags
    for field_name, tag in SCALARS:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == list(range(1, 8)), tag
        want = [float(getattr(r, field_name)) for r in rows]
        assert [e.value for e in events] == pytest.approx(want, rel=1e-6), tag
    final = acc.Scalars("final/test")
    assert [(e.step, round(e.value, 6)) for e in final] == [(4, 0.42)]
    # the config is stored as text, the settings as hparams
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"git": "abc123"' in text and '"alpha": 0.5' in text
    assert acc.summary_metadata  # hparams plugin data present
    assert any(m.plugin_data.plugin_name == "hparams" for m in acc.summary_metadata.values())


def test_tensorboard_graph_rows_have_no_train_metric(tmp_path: Path) -> None:
    pytest.importorskip("torch.utils.tensorboard")
    tracker = Tracking(["tensorboard"], tmp_path).start_run(SPEC, CONFIG)
    rows = make_rows(3, train_nan=True)
    tracker.log_epochs(rows)
    tracker.finish(make_result(rows, status="failed"))
    acc = _read_events(tmp_path / "tensorboard" / SPEC.key())
    assert "metric/train" not in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("metric/val")] == [1, 2, 3]


# -- Weights & Biases (offline) -----------------------------------------------------------------


def _wandb_records(path: Path) -> list[Any]:
    """Records of a `run-*.wandb` file: W&B's LevelDB-style log (7-byte header, 32 KiB blocks,
    chunks of checksum u32 | length u16 | type u8, type 1 full, 2 first, 3 middle, 4 last),
    each record a `wandb_internal_pb2.Record`."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, pending, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        chunk = data[pos : pos + length]
        pos += length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def _finished_records(path: Path, timeout: float = 30.0) -> list[Any]:
    """The records of a finished run. wandb's service may still be writing the file when
    `finish()` returns (seen with several runs in one process): wait for its exit record."""
    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no exit record after {timeout:g} s")
        time.sleep(0.1)


def _item_key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


@pytest.fixture
def wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))  # ours wins: the result dir
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    return tmp_path / "out"


@pytest.mark.parametrize("env_mode", [None, "offline"])
def test_wandb_offline_run_holds_config_history_and_summary(
    monkeypatch: pytest.MonkeyPatch, wandb_env: Path, env_mode: str | None
) -> None:
    # no WANDB_MODE: hamgraph defaults to offline; WANDB_MODE=offline is honoured
    if env_mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env_mode)
    tracking = Tracking(["wandb"], wandb_env, project="hamgraph-test", group="study-A")
    rows = make_rows(6)
    # two runs open at once, as packed runs are
    first = tracking.start_run(SPEC, CONFIG)
    other_spec = make_spec(None, run=2)
    second = tracking.start_run(other_spec, {"spec": other_spec.to_dict()}, group="study-B")
    first.log_epochs(rows[:4])
    second.log_epochs(rows[:2])
    first.log_epochs(rows[4:])
    second.finish(make_result(rows[:2], status="failed"))
    first.finish(make_result(rows))

    files = sorted((wandb_env / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2, sorted(p.name for p in wandb_env.rglob("*"))
    by_name = {}
    for path in files:
        records = _finished_records(path)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        by_name[run.display_name] = (run, records)
    assert set(by_name) == {SPEC.key(), other_spec.key()}

    run, records = by_name[SPEC.key()]
    assert run.project == "hamgraph-test" and run.run_group == "study-A"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["provenance"] == {"git": "abc123", "torch": "2.13"}
    assert config["spec"] == json.loads(json.dumps(SPEC.to_dict())) and config["cell"] == 3
    assert config["key"] == SPEC.key()

    history = [
        {_item_key(i): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert [h["_step"] for h in history] == [1, 2, 3, 4, 5, 6]
    for row, logged in zip(rows, history, strict=True):
        for field_name, tag in SCALARS:
            assert logged[tag] == pytest.approx(float(getattr(row, field_name))), tag

    summary: dict[str, Any] = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({_item_key(u): json.loads(u.value_json) for u in r.summary.update})
    assert summary["status"] == "ok" and summary["best_epoch"] == 4
    assert summary["test"] == pytest.approx(0.42)
    exit_code = next(r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit")
    assert exit_code == 0

    other, other_records = by_name[other_spec.key()]
    assert other.run_group == "study-B"
    exit_code = next(
        r.exit.exit_code for r in other_records if r.WhichOneof("record_type") == "exit"
    )
    assert exit_code == 1  # a failed hamgraph run is a failed W&B run
    assert not (wandb_env.parent / "elsewhere").exists()


def test_wandb_disabled_mode_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, wandb_env: Path
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = Tracking(["wandb"], wandb_env).start_run(SPEC, CONFIG)
    tracker.log_epochs(make_rows())
    tracker.finish(make_result(make_rows()))
    assert not list(wandb_env.rglob("*.wandb"))


def test_an_abandoned_run_closes_its_trackers(tmp_path: Path):
    """A run whose attempt raised (an out-of-memory pack is retried in halves) closes its
    trackers instead of leaving writers open until exit."""
    pytest.importorskip("torch.utils.tensorboard")
    run = Tracking(["tensorboard"], tmp_path).start_run(make_spec(None, 0))
    writer = run.trackers["tensorboard"].writer
    run.abandon()
    assert run.trackers == {}
    assert writer.all_writers is None  # SummaryWriter.close() ran
