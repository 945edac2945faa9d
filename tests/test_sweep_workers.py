"""`hamgraph sweep --workers 4` on a real PostgreSQL server: every cell exactly once.

Needs $HAMGRAPH_TEST_POSTGRES_URL (.ci/postgres.sh). Unset: skipped. Set but unreachable: fails.
"""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path

import pytest
from optuna.trial import TrialState
from sweep_helpers import assert_each_cell_once, grid_body, trials_of, write_sweep

from hamgraph import sweep as sw
from hamgraph.sweep import coordination as co

# --- PostgreSQL, several workers ----------------------------------------------------------------


@pytest.fixture
def postgres_url() -> str:
    """$HAMGRAPH_TEST_POSTGRES_URL (.ci/postgres.sh). Unset: skip. Set but unreachable: FAIL."""
    url = os.environ.get("HAMGRAPH_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("HAMGRAPH_TEST_POSTGRES_URL is not set (.ci/postgres.sh sets it)")
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(sw.storage_url(url, Path(".")))
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as exc:
        pytest.fail(f"HAMGRAPH_TEST_POSTGRES_URL={url} is set but unreachable: {exc}")
    return url


@pytest.mark.postgres
def test_four_workers_on_postgres_each_cell_once(tmp_path: Path, postgres_url: str) -> None:
    name = f"pg{uuid.uuid4().hex[:8]}"
    path = write_sweep(tmp_path, grid_body(name, alpha="[1, 10, -10, -100]",
                                           beta="[0, 0.01, 0.1]", epochs=5, baseline=False))
    out = tmp_path / "out"
    assert sw.run_sweep(path, storage=postgres_url, workers=4, out=out, device="cpu").finished
    trials = trials_of(path, sw.storage_url(postgres_url, out))
    cells = [c.label for c in sw.load_sweep(path).search.cells()]
    assert len(cells) == 12
    assert_each_cell_once(trials, cells)
    assert not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    for t in trials:
        if t.state == TrialState.PRUNED:
            assert t.user_attrs["reason"].startswith("duplicate of trial")
        else:
            assert t.state == TrialState.COMPLETE
    owners = {t.system_attrs[co.S_OWNER]["pid"] for t in trials}
    assert len(owners) >= 2, "the trials were not shared between worker processes"
    with open(out / "best.csv") as f:
        assert [r["optimizer"] for r in csv.DictReader(f)] == ["ham", "nham"]
