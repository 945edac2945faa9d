"""Helpers shared by the sweep tests (test_sweep*.py): sweep files on a tiny graph, their trials."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hamgraph import sweep as sw

TINY = "csbm-h0.8-n200"


def write_sweep(tmp_path: Path, body: str, name: str = "t") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return path


def grid_body(name: str, alpha: str = "[200, -10]", beta: str = "[0, 0.1]", epochs: int = 5,
              baseline: bool = True) -> str:
    return f"""
name: {name}
datasets: [{TINY}]
models: [gcn]
epochs: {epochs}
runs: 1
search:
  kind: grid
  alpha: {alpha}
  beta: {beta}
  include_baseline: {str(baseline).lower()}
"""


def trials_of(path: Path, storage: str | None = None) -> list[optuna.trial.FrozenTrial]:
    sweep = sw.load_sweep(path)
    url = storage or sw.storage_url(None, Path(path).parent / "out")
    study = optuna.load_study(
        study_name=sw.study_name(sweep, TINY, "gcn"), storage=sw.open_storage(url)
    )
    return study.get_trials(deepcopy=False)


def assert_each_cell_once(trials: list, cells: list[str]) -> None:
    complete = Counter(t.user_attrs["cell"] for t in trials if t.state == TrialState.COMPLETE)
    assert sorted(complete) == sorted(cells), complete
    assert set(complete.values()) == {1}, f"a cell completed twice: {complete}"
