"""`hamgraph sweep`: Optuna studies over HAM's alpha and beta and any other run setting, one
study per (dataset, model) (two with `search.budget: equal`: + a tuned baseline study).

    sweep YAML ──► Sweep (schema) ──► one study per (dataset, model) ──► a batch of trials, one
    cell each ──► RunSpecs of the protocol ──► runner.execute_specs (packed) ──► result store
    (<out>/runs.csv) ──► trial value = the cell's mean validation metric (x100, hamgraph.cells)
    ──► best.csv (hamgraph.cells.select_best, the report's rule)

One concept per module:

    schema        the sweep file (Sweep, load_sweep) and study names (study_name)
    settings      the names a search space may vary and the one function that applies them
    spaces        the search kinds behind one interface (SearchSpace: GridSpace, TpeSpace), Cell
    storage       storage URLs (journal file by default, any Optuna RDB URL) -> Optuna storage
    coordination  owners, dead workers (stale trials), heartbeat, the duplicate-cell guard
    trials        a batch: ask N trials, train their runs together, tell every result
    workers       worker processes driving the studies
    summary       best.csv and its table
    command       run_sweep: the `hamgraph sweep` command

The objective is the mean validation metric over the protocol's runs; the test mean is stored
as a user attribute and never optimized. A cell = the sweep's base optimizer (`base:`, the
protocol's by default) + HAM settings or none (the baseline) + the values of the other searched
settings (lr, dropout, base.momentum, ...); all of it is part of every run's key.
Study names are `<sweep>.<dataset>.<model>.<hash>`, where the hash covers the search space,
the base optimizer and everything that changes a run (epochs, runs, seed, overrides):
rerunning the same command resumes, an edited space starts a new study (the tuned baseline
study of `budget: equal` is `<...>.<hash>.baseline`). User documentation: docs/sweeps.md.

Watching: `optuna-dashboard results/<name>/optuna-journal.log` for the default journal file,
or `optuna-dashboard postgresql://...` / `sqlite:///f.db`.
"""

from hamgraph.sweep.command import SweepOutcome, prepare_studies, run_sweep
from hamgraph.sweep.coordination import recover_stale, study_progress
from hamgraph.sweep.schema import Sweep, load_sweep, study_name
from hamgraph.sweep.spaces import Cell, GridSpace, SearchSpace, TpeSpace
from hamgraph.sweep.storage import open_storage, storage_url
from hamgraph.sweep.summary import BEST_COLUMNS, best_cells, format_best, sweep_cells

__all__ = [
    "BEST_COLUMNS", "Cell", "GridSpace", "SearchSpace", "Sweep", "SweepOutcome", "TpeSpace",
    "best_cells", "format_best", "load_sweep", "open_storage", "prepare_studies",
    "recover_stale", "run_sweep", "storage_url", "study_name", "study_progress", "sweep_cells",
]
