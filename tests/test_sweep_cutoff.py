"""A sweep worker cut off from its storage longer than the stale limit (issue 21 item 5): another
worker failed its trial and queued a retry; its later tell must not crash it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from optuna.trial import TrialState
from sweep_helpers import assert_each_cell_once, grid_body, trials_of, write_sweep

import hamgraph.sweep.trials as trials_module
from hamgraph.cli import main
from hamgraph.sweep import coordination as co


def test_a_trial_failed_by_another_worker_meanwhile_is_not_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_sweep(tmp_path, grid_body("cutoff", alpha="[200]", beta="[0, 0.1]"))
    real = trials_module.execute_specs
    trained: list[str] = []
    failed_elsewhere: list[int] = []
    current: list = []  # the study of the batch in training

    def cut_off(specs, store, *args, **kwargs):
        # While this worker trains its first batch, another worker finds its trials stale (no
        # heartbeat got through) and does what recover_stale does: FAIL and queue a retry.
        if not failed_elsewhere:
            study = current[-1]
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                study._storage.set_trial_user_attr(trial._trial_id, co.A_OUTCOME, "stale")
                assert study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                co._enqueue_retry(study, trial)
                failed_elsewhere.append(trial.number)
        outcomes = real(specs, store, *args, **kwargs)
        trained.extend(o.spec.key() for o in outcomes if o.trained)
        return outcomes

    real_batch = trials_module.run_batch

    def run_batch(ctx, trials):
        current.append(ctx.study)
        return real_batch(ctx, trials)

    monkeypatch.setattr(trials_module, "execute_specs", cut_off)
    monkeypatch.setattr("hamgraph.sweep.workers.run_batch", run_batch)
    caplog.set_level(logging.WARNING, logger="hamgraph")
    out = tmp_path / "out"
    code = main(["sweep", str(path), "--out", str(out), "--device", "cpu"])
    assert code == 0  # used to raise "Cannot tell a FAIL trial" out of the worker

    assert failed_elsewhere  # the first batch's trials were failed meanwhile
    trials = trials_of(path, f"journal:{(out / 'optuna-journal.log').resolve()}")
    states = {t.number: t.state for t in trials}
    assert all(states[n] == TrialState.FAIL for n in failed_elsewhere)
    assert_each_cell_once(trials, ["adam", "a=200,b=0", "a=200,b=0.1"])
    assert len(trained) == len(set(trained)) == 3  # the retries reused the stored runs
    warned = [r.getMessage() for r in caplog.records if "by another worker" in r.getMessage()]
    assert len(warned) == len(failed_elsewhere)
