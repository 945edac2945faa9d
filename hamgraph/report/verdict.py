"""Does the optimizer help? Statistics across workloads: runs (the store's rows) -> `Verdict`.

Pure functions of the report's runs frame (and, for wall-clock, of per-run histories given as
frames); no I/O, no figures. The renderers and `report.figures` only draw what this returns.

Vocabulary (the same as the report's tables, `report.rows`):

- *workload*: a dataset x model.
- *configuration*: a cell of `hamgraph.cells`, grouped by every settings column of runs.csv
  (`cells.setting_columns`: the cell columns and any searched setting a newer run adds).
- *method*: the configurations that differ only in searched values ((alpha, beta), lr, ...):
  "adam", "ham", "nham", "ham (sign_source=previous)". A method's score on a workload is its
  chosen configuration (`cells.select_best`: best mean validation, no failed runs), as in the
  main tables.
- *setting*: a HAM / nHAM method; its *baseline* is the method of the same workload with the
  same base optimizer and options and no HAM. A workload is *comparable* for a setting when
  both sides have at least `MIN_RUNS` ok runs in their chosen configurations.

Statistics per setting, over its comparable workloads (metrics x100):

- win / tie / loss: per workload, the two-sided test of `report.rows.paired_test` (paired
  t-test over runs matched by (run, seed)), Welch's t-test when fewer than MIN_PAIRS runs
  match; tie = p >= SIGNIFICANCE_LEVEL or no difference at all.
- Wilcoxon signed-rank test (two-sided, scipy.stats.wilcoxon) of the per-workload differences
  of means; p = 1 when every difference is zero.
- normalized improvement = 100 * (setting - baseline) / baseline per workload (percent of the
  baseline's score); its mean and interquartile mean (IQM, rliable) over workloads, each with a
  95% percentile CI from a stratified bootstrap: runs resampled with replacement within each
  workload and side, `resamples` times (Agarwal et al. 2021).
- probability of improvement P(setting > baseline): per workload the Mann-Whitney statistic
  U / (n m) (ties count one half), averaged over workloads, with the same bootstrap CI.
- tuning budget (Dodge et al. 2019; the unbiased, without-replacement estimator of Dodge et
  al. 2021): the expected best validation score after k of the method's N configurations,
  E[max_k] = sum_i v_(i) C(i-1, k-1) / C(N, k) (v sorted ascending), and the expected test
  score of that choice (the same weights on the tests, sorted by validation); compared at equal
  k = min(N_setting, N_baseline) per workload.
- time-to-target (AlgoPerf): target = the baseline's median best validation; a run's time is the
  first cumulative training time (history column `train_seconds`, evaluation excluded) at which
  its validation reaches the target, a miss when it never does. A side's time on a workload is
  the lower median over its runs (the time by which half of its runs hit; inf when fewer did:
  a missed workload). Speedup = baseline time / setting time, geometric mean over the workloads
  both sides hit; misses are counted, never averaged.

Across every method (baselines included): mean ranks over the workloads that have all of them
(rank 1 = best mean score, ties averaged), the Friedman test (tie-corrected chi-square) and the
Nemenyi critical difference CD = q_alpha sqrt(k (k + 1) / (6 N)) (Demsar 2006; q_alpha from
scipy.stats.studentized_range), and a performance profile: per method, the fraction of those
workloads on which it is within tau points of the best method.

Implemented on numpy / scipy.stats: rliable (which pulls in arch and its plotting stack),
autorank and scikit-posthocs (both pull in statsmodels, patsy / formulaic, and baycomp or
seaborn) would add more dependencies than the few formulas they would replace here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hamgraph.cells import CELL_COLUMNS, TIE_COLUMNS, select_best, setting_columns
from hamgraph.cells import cell_label as _cell_label
from hamgraph.cells import optimizer_of_row as _optimizer_of_row
from hamgraph.errors import UserInputError
from hamgraph.report.rows import (
    METHOD_COLUMNS,
    MIN_PAIRS,
    SIGNIFICANCE_LEVEL,
    _protocol_base,
    method_text,
    paired_test,
)
from hamgraph.specs import OptimizerSpec

MIN_RUNS = 3  # ok runs per side for a workload to be comparable
MIN_WORKLOADS = 3  # comparable workloads for a verdict
RESAMPLES = 2000  # bootstrap resamples
CONFIDENCE = 0.95
CD_ALPHA = 0.05  # level of the Nemenyi critical difference


# ---------------------------------------------------------------------------------------------
# typed values


@dataclass(frozen=True)
class Config:
    """One configuration of a method on a workload (means over its ok runs, x100)."""

    label: str
    val: float
    test: float
    n: int
    failed: int


@dataclass(frozen=True)
class Side:
    """A method on one workload: its configurations and the chosen one's ok runs."""

    dataset: str
    model: str
    method: str  # "adam", "ham", "ham (sign_source=previous)"
    base: str  # the base optimizer's label ("adam", "sgd(momentum=0.9)")
    is_setting: bool  # HAM / nHAM
    configs: tuple[Config, ...]  # eligible configurations (ok runs, none failed)
    skipped: int  # configurations with failed runs or no ok run
    chosen: Config | None
    keys: tuple[str, ...]  # run keys of the chosen configuration's ok runs, (run, seed) order
    run_ids: tuple[tuple[int, int], ...]
    values: tuple[float, ...]  # the score per ok run (x100)
    best_vals: tuple[float, ...]  # each run's best validation (x100)
    failed: int  # failed runs of the chosen configuration

    @property
    def workload(self) -> tuple[str, str]:
        return (self.dataset, self.model)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan


@dataclass(frozen=True)
class BudgetCurve:
    """Expected best validation after k = 1..N configurations, and the test of that choice."""

    dataset: str
    model: str
    method: str
    k: tuple[int, ...]
    expected_val: tuple[float, ...]
    expected_test: tuple[float, ...]


@dataclass(frozen=True)
class TimeCurve:
    """Mean validation (x100) against mean cumulative training time, per epoch, of a side."""

    dataset: str
    model: str
    method: str
    seconds: tuple[float, ...]
    val: tuple[float, ...]


@dataclass(frozen=True)
class Pair:
    """One setting against its baseline on one comparable workload."""

    dataset: str
    model: str
    setting: str
    baseline: str
    n_setting: int
    n_baseline: int
    mean_setting: float
    mean_baseline: float
    delta: float  # mean_setting - mean_baseline (points x100)
    improvement: float  # 100 * delta / mean_baseline (percent)
    p_value: float
    test: str  # "paired t" | "Welch t" | "none (identical)"
    outcome: str  # "win" | "tie" | "loss"
    p_improvement: float  # U / (n m)
    configs_setting: int
    configs_baseline: int
    equal_k: int
    equal_k_setting: float  # expected test at k = equal_k
    equal_k_baseline: float
    target: float  # time-to-target: the target validation (x100); NaN without train_seconds
    time_setting: float  # lower median time to target (s); inf = missed; NaN = not measured
    time_baseline: float
    misses_setting: int  # runs that never reached the target
    misses_baseline: int


@dataclass(frozen=True)
class SettingVerdict:
    """One row of the verdict table."""

    setting: str
    baseline: str
    workloads: int
    runs_setting: int
    runs_baseline: int
    configs_setting: int  # configurations behind the chosen scores, summed over workloads
    configs_baseline: int
    wins: int
    ties: int
    losses: int
    wilcoxon_p: float
    mean_improvement: float  # percent
    mean_ci: tuple[float, float]
    iqm_improvement: float
    iqm_ci: tuple[float, float]
    p_improvement: float
    p_ci: tuple[float, float]
    mean_rank: float  # NaN when the method is not in the ranking
    equal_k: str  # "1" or "1-3": the equal budgets compared
    equal_k_delta: float  # mean over workloads of expected test(setting) - (baseline), points
    equal_k_wins: int  # workloads where the setting is ahead at equal k
    speedup: float  # geometric mean of baseline time / setting time; NaN when none measured
    time_workloads: int  # workloads where both sides hit the target
    time_misses: int  # workloads the setting missed (fewer than half of its runs hit)
    time_unmeasured: int  # workloads without train_seconds in the histories
    run_misses: str  # "setting a/n, baseline b/m" runs that never reached the target


@dataclass(frozen=True)
class Ranking:
    """Mean ranks of every method over the workloads that have all of them."""

    methods: tuple[str, ...]  # best mean rank first
    mean_ranks: tuple[float, ...]
    workloads: tuple[tuple[str, str], ...]
    friedman_chi2: float
    friedman_p: float
    cd: float  # Nemenyi critical difference at CD_ALPHA
    scores: pd.DataFrame = field(repr=False)  # workloads x methods, mean score (x100)


@dataclass(frozen=True)
class Profile:
    """Performance profile: per method, fraction of workloads within tau points of the best."""

    tau: tuple[float, ...]
    fractions: dict[str, tuple[float, ...]]


@dataclass(frozen=True)
class Verdict:
    metric: str  # "test" | "val": the score compared
    rows: tuple[SettingVerdict, ...]
    pairs: tuple[Pair, ...]
    ranking: Ranking | None
    profile: Profile | None
    budgets: tuple[BudgetCurve, ...]
    time_curves: tuple[TimeCurve, ...]
    notes: tuple[str, ...]
    resamples: int


# ---------------------------------------------------------------------------------------------
# sides: methods per workload


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _base_label(spec: OptimizerSpec) -> str:
    return OptimizerSpec(spec.base, spec.base_options, None).label()


def build_sides(runs: pd.DataFrame, metric: str = "test") -> list[Side]:
    """Every method on every workload, with its configurations and chosen runs.

    `runs`: the report's runs (one row per run key, status ok | failed, val / test as floats).
    """
    if runs.empty:
        return []
    if "higher_is_better" in runs.columns:
        lower = runs[runs["higher_is_better"].astype(str).str.lower() == "false"]
        if not lower.empty:
            names = ", ".join(sorted({str(m) for m in lower["metric"]}))
            raise UserInputError(
                f"verdict: the metric {names} is lower-is-better; the verdict's statistics "
                "(wins, improvements, ranks, expected best, time-to-target) compare "
                "higher-is-better scores only: report a higher-is-better metric to judge these "
                "runs (the tables without --verdict handle either direction)"
            )
    settings = setting_columns(list(runs.columns))
    frame = runs.copy()
    ok = frame["status"] == "ok"
    frame["_n"] = ok.astype(int)
    frame["_failed"] = (~ok).astype(int)
    for col in ("val", "test"):
        frame[f"_{col}"] = (100 * frame[col].astype(float)).where(ok)
    for col in settings:  # group keys: NaN and "" alike, so groupby keeps every configuration
        if frame[col].dtype == object:
            frame[col] = frame[col].fillna("")
    configs = frame.groupby(settings, sort=False, dropna=False).agg(
        n=("_n", "sum"), failed=("_failed", "sum"), val_mean=("_val", "mean"),
        test_mean=("_test", "mean"), first=("key", "first"),
    ).reset_index()  # fmt: skip
    by_key = frame.set_index("key")
    configs["label"] = [
        _cell_label(by_key.loc[k]) + _extra_label(by_key.loc[k], settings) for k in configs["first"]
    ]
    runs_of = {
        tuple(_norm(v) for v in key): group
        for key, group in frame.groupby(settings, sort=False, dropna=False)
    }
    sides = []
    method_cols = [c for c in METHOD_COLUMNS if c in settings]
    for _, group in configs.groupby(method_cols, sort=False, dropna=False):
        first = by_key.loc[group["first"].iloc[0]]
        spec = _optimizer_of_row(first)
        dataset, model = str(first["dataset"]), str(first["model"])
        eligible = group[(group["n"] > 0) & (group["failed"] == 0)]
        best = select_best(group)
        chosen_runs = (
            runs_of[tuple(_norm(best[c]) for c in settings)] if best is not None else None
        )
        ok_runs = (
            chosen_runs[chosen_runs["status"] == "ok"].sort_values(["run", "seed"])
            if chosen_runs is not None else frame.iloc[:0]
        )  # fmt: skip
        score = f"_{metric}"
        sides.append(
            Side(
                dataset=dataset,
                model=model,
                method=method_text(spec, _protocol_base(dataset)),
                base=_base_label(spec),
                is_setting=spec.ham is not None,
                configs=tuple(
                    Config(str(r["label"]), float(r["val_mean"]), float(r["test_mean"]),
                           int(r["n"]), int(r["failed"]))
                    for _, r in _rule_order(eligible).iterrows()
                ),
                skipped=len(group) - len(eligible),
                chosen=None if best is None else Config(
                    str(best["label"]), float(best["val_mean"]), float(best["test_mean"]),
                    int(best["n"]), int(best["failed"]),
                ),
                keys=tuple(ok_runs["key"]),
                run_ids=tuple(zip(ok_runs["run"].astype(int), ok_runs["seed"].astype(int),
                                  strict=True)),
                values=tuple(float(v) for v in ok_runs[score]),
                best_vals=tuple(float(v) for v in ok_runs["_val"]),
                failed=0 if chosen_runs is None else int(chosen_runs["_failed"].sum()),
            )
        )
    return sides


def _norm(value: object) -> object:
    return None if _missing(value) or value == "" else value


def _extra_label(row: pd.Series, settings: Sequence[str]) -> str:
    extra = [f"{c}={row[c]}" for c in settings if c not in CELL_COLUMNS and not _missing(row[c])
             and row[c] != ""]  # fmt: skip
    return f" [{', '.join(extra)}]" if extra else ""


def _rule_order(configs: pd.DataFrame) -> pd.DataFrame:
    """Configurations best first by the rule of `cells.select_best`."""
    ties = [c for c in TIE_COLUMNS if c in configs.columns]
    order = configs.assign(
        _neg_val=-configs["val_mean"],
        _abs_alpha=configs["alpha"].abs().fillna(0.0) if "alpha" in configs else 0.0,
        _beta=configs["beta"].fillna(0.0) if "beta" in configs else 0.0,
        **{f"_{c}": configs[c].fillna("").astype(str) for c in ties},
    ).sort_values(["_neg_val", "_abs_alpha", "_beta", "label", *(f"_{c}" for c in ties)],
                  kind="stable")
    return configs.loc[order.index]


# ---------------------------------------------------------------------------------------------
# the statistics, each a small pure function


def expected_best(vals: Sequence[float], tests: Sequence[float] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Expected best validation after k = 1..N configurations drawn without replacement, and
    the expected test score of that choice (Dodge et al.'s unbiased estimator).

    `vals` / `tests`: one value per configuration, best first by the selection rule (ties in
    validation go to the earlier one). Returns (expected_val[k-1], expected_test[k-1]).
    """
    v = np.asarray(vals, dtype=float)
    t = np.asarray(tests if tests is not None else vals, dtype=float)
    n = len(v)
    if n == 0:
        return np.array([]), np.array([])
    # ascending by validation; among equal ones the rule's preferred (earlier) comes last
    order = np.lexsort((-np.arange(n), v))
    v, t = v[order], t[order]
    i = np.arange(1, n + 1)
    ev, et = np.empty(n), np.empty(n)
    for k in range(1, n + 1):
        # P(the maximum of k draws is the i-th smallest) = C(i-1, k-1) / C(n, k)
        with np.errstate(divide="ignore"):
            logw = (_lcomb(i - 1, k - 1) - _lcomb(np.full(n, n), k))
        w = np.where(i >= k, np.exp(logw), 0.0)
        ev[k - 1] = float(np.dot(w, v))
        et[k - 1] = float(np.dot(w, t))
    return ev, et


def _lcomb(a: np.ndarray, b: int) -> np.ndarray:
    from scipy.special import gammaln

    a = np.asarray(a, dtype=float)
    out = gammaln(a + 1) - gammaln(b + 1) - gammaln(np.maximum(a - b, 0) + 1)
    return np.where(a >= b, out, -np.inf)


def compare_runs(
    a: dict[tuple[int, int], float], b: dict[tuple[int, int], float]
) -> tuple[float, str]:
    """Two-sided test of two sides' runs: paired t over (run, seed)-matched runs, Welch's t
    when fewer than MIN_PAIRS match. -> (p, test name); p NaN when the values are identical."""
    p, pairs = paired_test(a, b)
    if pairs >= MIN_PAIRS:
        return p, "paired t"
    from scipy.stats import ttest_ind

    x, y = list(a.values()), list(b.values())
    if sorted(x) == sorted(y) or len(x) < 2 or len(y) < 2:
        return math.nan, "Welch t"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(x, y, equal_var=False).pvalue), "Welch t"


def wilcoxon_p(deltas: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p of per-workload differences; 1.0 when all are zero."""
    from scipy.stats import wilcoxon

    d = np.asarray(deltas, dtype=float)
    if len(d) == 0 or not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon(d).pvalue)


def prob_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y) / 2 from samples; x (..., n), y (..., m) -> (...)."""
    gt = (x[..., :, None] > y[..., None, :]).mean(axis=(-1, -2))
    eq = (x[..., :, None] == y[..., None, :]).mean(axis=(-1, -2))
    return gt + 0.5 * eq


def iqm(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean (the mean of the middle 50%, scipy.stats.trim_mean(0.25))."""
    from scipy.stats import trim_mean

    return trim_mean(values, 0.25, axis=axis)


def stratified_bootstrap(
    setting: Sequence[np.ndarray],
    baseline: Sequence[np.ndarray],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, tuple[float, tuple[float, float]]]:
    """Point estimates and percentile CIs of the mean and IQM of the normalized improvement and
    of the probability of improvement; runs resampled within each workload and side.

    `setting[w]`, `baseline[w]`: the per-run scores of workload w. -> {"mean": (point, (lo, hi)),
    "iqm": ..., "p": ...}.
    """
    rng = np.random.default_rng(seed)
    improvements, probs = [], []
    point_imp, point_p = [], []
    for s, b in zip(setting, baseline, strict=True):
        s, b = np.asarray(s, dtype=float), np.asarray(b, dtype=float)
        rs = s[rng.integers(0, len(s), (resamples, len(s)))]
        rb = b[rng.integers(0, len(b), (resamples, len(b)))]
        improvements.append(_improvement(rs.mean(axis=1), rb.mean(axis=1)))
        probs.append(prob_improvement(rs, rb))
        point_imp.append(_improvement(s.mean(), b.mean()))
        point_p.append(float(prob_improvement(s, b)))
    imp = np.stack(improvements)  # workloads x resamples
    prob = np.stack(probs)
    lo, hi = 100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2

    def ci(samples: np.ndarray) -> tuple[float, float]:
        return float(np.percentile(samples, lo)), float(np.percentile(samples, hi))

    return {
        "mean": (float(np.mean(point_imp)), ci(imp.mean(axis=0))),
        "iqm": (float(iqm(np.asarray(point_imp))), ci(iqm(imp, axis=0))),
        "p": (float(np.mean(point_p)), ci(prob.mean(axis=0))),
    }


def _improvement(s: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100 * (np.asarray(s) - np.asarray(b)) / np.abs(np.asarray(b))


def friedman(scores: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Mean ranks (1 = best, higher score better, ties averaged), the tie-corrected Friedman
    chi-square and its p; `scores`: workloads x methods."""
    from scipy.stats import chi2, rankdata

    n, k = scores.shape
    ranks = rankdata(-scores, axis=1)
    mean_ranks = ranks.mean(axis=0)
    stat = 12 * n / (k * (k + 1)) * float(np.sum((mean_ranks - (k + 1) / 2) ** 2))
    ties = 0.0
    for row in scores:
        _, counts = np.unique(row, return_counts=True)
        ties += float(np.sum(counts**3 - counts))
    correction = 1 - ties / (n * k * (k * k - 1))
    if correction <= 0:  # every workload ties every method
        return mean_ranks, 0.0, 1.0
    stat /= correction
    return mean_ranks, float(stat), float(chi2.sf(stat, k - 1))


def nemenyi_cd(k: int, n: int, alpha: float = CD_ALPHA) -> float:
    """Critical difference of mean ranks (Demsar 2006): q_alpha sqrt(k (k + 1) / (6 n))."""
    from scipy.stats import studentized_range

    if k < 2 or n < 1:
        return math.nan
    q = float(studentized_range.ppf(1 - alpha, k, 1e6)) / math.sqrt(2)
    return q * math.sqrt(k * (k + 1) / (6 * n))


def performance_profile(scores: pd.DataFrame) -> Profile:
    """Fraction of workloads (rows) on which each method (column) is within tau points of the
    best method, at every tau where a fraction changes."""
    gaps = scores.max(axis=1).to_numpy()[:, None] - scores.to_numpy()
    taus = np.unique(np.concatenate([[0.0], gaps.ravel()]))
    return Profile(
        tau=tuple(float(t) for t in taus),
        fractions={
            str(m): tuple(float(np.mean(gaps[:, j] <= t + 1e-9)) for t in taus)
            for j, m in enumerate(scores.columns)
        },
    )


def time_to_target(
    history: pd.DataFrame, target: float
) -> float:
    """Training seconds at which a run's validation (x100) first reaches `target`; inf when it
    never does; NaN when the history has no finite `train_seconds`."""
    if "train_seconds" not in history or not np.isfinite(history["train_seconds"]).any():
        return math.nan
    hit = history[100 * history["val"].astype(float) >= target - 1e-9]
    if hit.empty:
        return math.inf
    return float(hit["train_seconds"].iloc[0])


def lower_median(times: Sequence[float]) -> float:
    """The time by which half of the runs hit (inf when fewer than half did)."""
    if not len(times):
        return math.nan
    return float(np.sort(np.asarray(times, dtype=float))[(len(times) - 1) // 2])


# ---------------------------------------------------------------------------------------------
# the verdict


def build_verdict(
    runs: pd.DataFrame,
    histories: Mapping[str, pd.DataFrame] | None = None,
    metric: str = "test",
    resamples: int = RESAMPLES,
    seed: int = 0,
    sides: Sequence[Side] | None = None,
) -> Verdict:
    """The verdict of every setting against its baseline across workloads.

    `histories`: run key -> the run's history (columns epoch, val, train_seconds, ...), for the
    runs of `history_keys(sides)`; None: no wall-clock statistics. Raises UserInputError (one
    line, why) when no setting has MIN_WORKLOADS comparable workloads.
    """
    sides = list(sides) if sides is not None else build_sides(runs, metric)
    notes: list[str] = []
    failed_total = int((runs["status"] != "ok").sum()) if not runs.empty else 0
    if failed_total:
        notes.append(f"{failed_total} failed runs in the input; a configuration with a failed "
                     "run is not chosen (cells rule)")  # fmt: skip
    for s in sides:
        if s.chosen is None:
            notes.append(f"{s.dataset} / {s.model}, {s.method}: no configuration without failed "
                         f"runs ({s.skipped} configurations), left out")  # fmt: skip
        elif s.skipped:
            notes.append(f"{s.dataset} / {s.model}, {s.method}: {s.skipped} of "
                         f"{s.skipped + len(s.configs)} configurations with failed runs not "
                         "considered")  # fmt: skip
    baselines = {
        (s.dataset, s.model, s.base): s for s in sides if not s.is_setting and s.chosen is not None
    }
    pairs_by_setting: dict[str, list[tuple[Side, Side]]] = {}
    for s in sides:
        if not s.is_setting or s.chosen is None:
            continue
        b = baselines.get((s.dataset, s.model, s.base))
        where = f"{s.dataset} / {s.model}, {s.method}"
        if b is None:
            notes.append(f"{where}: no baseline ({s.base} without HAM) on this workload, left out")
            continue
        if s.n < MIN_RUNS or b.n < MIN_RUNS:
            notes.append(f"{where}: {s.n} vs {b.n} ok runs (baseline {b.method}), fewer than "
                         f"{MIN_RUNS} per side, left out")  # fmt: skip
            continue
        if s.n != b.n:
            notes.append(f"{where}: unequal run counts, {s.n} vs {b.n} (baseline {b.method})")
        pairs_by_setting.setdefault(s.method, []).append((s, b))

    enough = {m: p for m, p in pairs_by_setting.items() if len(p) >= MIN_WORKLOADS}
    for m, p in pairs_by_setting.items():
        if m not in enough:
            notes.append(f"{m}: {len(p)} comparable workloads (< {MIN_WORKLOADS}), no verdict row")
    if not enough:
        most = max((len(p) for p in pairs_by_setting.values()), default=0)
        raise UserInputError(
            f"verdict: at most {most} comparable workload(s) per setting, need {MIN_WORKLOADS}: a "
            f"workload (dataset x model) needs a HAM / nHAM setting and its baseline with >= "
            f"{MIN_RUNS} ok runs each"
        )

    ranking, profile = _ranking(sides, notes)
    rank_of = dict(zip(ranking.methods, ranking.mean_ranks, strict=True)) if ranking else {}
    budgets = tuple(
        BudgetCurve(s.dataset, s.model, s.method, tuple(range(1, len(s.configs) + 1)),
                    *(tuple(map(float, a)) for a in expected_best(
                        [c.val for c in s.configs], [c.test for c in s.configs])))
        for s in sides if s.configs
    )  # fmt: skip
    budget_of = {(b.dataset, b.model, b.method): b for b in budgets}

    rows, all_pairs = [], []
    unmeasured_runs = packed_runs = 0
    for index, (method, members) in enumerate(sorted(enough.items())):
        pairs = []
        for s, b in members:
            pair, unmeasured, packed = _pair(s, b, metric, budget_of, histories)
            unmeasured_runs += unmeasured
            packed_runs += packed
            pairs.append(pair)
        all_pairs += pairs
        boot = stratified_bootstrap(
            [np.asarray(s.values) for s, _ in members], [np.asarray(b.values) for _, b in members],
            resamples=resamples, seed=seed + index,
        )  # fmt: skip
        ks = sorted({p.equal_k for p in pairs})
        measured = [p for p in pairs if not math.isnan(p.time_setting)]
        both = [p for p in measured if math.isfinite(p.time_setting)
                and math.isfinite(p.time_baseline) and p.time_setting > 0]  # fmt: skip
        speedup = (
            float(np.exp(np.mean([math.log(p.time_baseline / p.time_setting) for p in both])))
            if both else math.nan
        )  # fmt: skip
        rows.append(
            SettingVerdict(
                setting=method,
                baseline="/".join(sorted({p.baseline for p in pairs})),
                workloads=len(pairs),
                runs_setting=sum(p.n_setting for p in pairs),
                runs_baseline=sum(p.n_baseline for p in pairs),
                configs_setting=sum(p.configs_setting for p in pairs),
                configs_baseline=sum(p.configs_baseline for p in pairs),
                wins=sum(p.outcome == "win" for p in pairs),
                ties=sum(p.outcome == "tie" for p in pairs),
                losses=sum(p.outcome == "loss" for p in pairs),
                wilcoxon_p=wilcoxon_p([p.delta for p in pairs]),
                mean_improvement=boot["mean"][0],
                mean_ci=boot["mean"][1],
                iqm_improvement=boot["iqm"][0],
                iqm_ci=boot["iqm"][1],
                p_improvement=boot["p"][0],
                p_ci=boot["p"][1],
                mean_rank=rank_of.get(method, math.nan),
                equal_k=str(ks[0]) if len(ks) == 1 else f"{ks[0]}-{ks[-1]}",
                equal_k_delta=float(np.mean([p.equal_k_setting - p.equal_k_baseline
                                             for p in pairs])),
                equal_k_wins=sum(p.equal_k_setting > p.equal_k_baseline for p in pairs),
                speedup=speedup,
                time_workloads=len(both),
                time_misses=sum(math.isinf(p.time_setting) for p in measured),
                time_unmeasured=len(pairs) - len(measured),
                run_misses=(
                    f"setting {sum(p.misses_setting for p in measured)}/"
                    f"{sum(p.n_setting for p in measured)}, baseline "
                    f"{sum(p.misses_baseline for p in measured)}/"
                    f"{sum(p.n_baseline for p in measured)}"
                ),
            )
        )
    if histories is None:
        notes.append("wall-clock: not computed (no histories read)")
    else:
        if packed_runs:
            notes.append(
                f"wall-clock: {packed_runs} runs were trained in packs, whose runs share one "
                "clock (train_seconds is the pack's time / M): their workloads have no "
                "time-to-target; train with --pack off to compare training times"
            )
        if unmeasured_runs > packed_runs:
            notes.append(
                f"wall-clock: {unmeasured_runs - packed_runs} runs without train_seconds in "
                "their history (run by a hamgraph before the column existed, or no history): "
                "their workloads have no time-to-target"
            )
    time_curves = _time_curves(sides, enough, histories)
    return Verdict(
        metric=metric,
        rows=tuple(rows),
        pairs=tuple(all_pairs),
        ranking=ranking,
        profile=profile,
        budgets=budgets,
        time_curves=time_curves,
        notes=tuple(dict.fromkeys(notes)),
        resamples=resamples,
    )


def _pair(
    s: Side,
    b: Side,
    metric: str,
    budget_of: Mapping[tuple[str, str, str], BudgetCurve],
    histories: Mapping[str, pd.DataFrame] | None,
) -> tuple[Pair, int]:
    a_map = dict(zip(s.run_ids, s.values, strict=True))
    b_map = dict(zip(b.run_ids, b.values, strict=True))
    p, test = compare_runs(a_map, b_map)
    delta = s.mean - b.mean
    significant = p < SIGNIFICANCE_LEVEL
    outcome = "tie" if not significant else ("win" if delta > 0 else "loss")
    if math.isnan(p):
        test = "none (identical)" if sorted(a_map.values()) == sorted(b_map.values()) else test
    bs, bb = budget_of[(s.dataset, s.model, s.method)], budget_of[(b.dataset, b.model, b.method)]
    k = min(len(bs.k), len(bb.k))
    pick = (lambda c: c.expected_test) if metric == "test" else (lambda c: c.expected_val)
    target, ts, tb, ms, mb, unmeasured, packed = math.nan, math.nan, math.nan, 0, 0, 0, 0
    if histories is not None:
        packed = sum(_timed_in_pack(histories, key) for key in (*s.keys, *b.keys))
        target = float(np.median(b.best_vals))
        times_s = [_run_time(histories, key, target) for key in s.keys]
        times_b = [_run_time(histories, key, target) for key in b.keys]
        missing = sum(math.isnan(t) for t in times_s + times_b)
        if missing:
            unmeasured = missing
        else:
            ts, tb = lower_median(times_s), lower_median(times_b)
            ms, mb = sum(math.isinf(t) for t in times_s), sum(math.isinf(t) for t in times_b)
    pair = Pair(
        dataset=s.dataset, model=s.model, setting=s.method, baseline=b.method,
        n_setting=s.n, n_baseline=b.n, mean_setting=s.mean, mean_baseline=b.mean,
        delta=delta, improvement=float(_improvement(s.mean, b.mean)), p_value=p, test=test,
        outcome=outcome, p_improvement=float(prob_improvement(np.asarray(s.values),
                                                                np.asarray(b.values))),
        configs_setting=len(s.configs), configs_baseline=len(b.configs), equal_k=k,
        equal_k_setting=pick(bs)[k - 1], equal_k_baseline=pick(bb)[k - 1],
        target=target, time_setting=ts, time_baseline=tb, misses_setting=ms, misses_baseline=mb,
    )  # fmt: skip
    return pair, unmeasured, packed


def _run_time(histories: Mapping[str, pd.DataFrame], key: str, target: float) -> float:
    history = histories.get(key)
    if history is None or history.empty or _timed_in_pack(histories, key):
        return math.nan
    return time_to_target(history, target)


def _timed_in_pack(histories: Mapping[str, pd.DataFrame], key: str) -> bool:
    """Whether the run trained in a pack of several runs (its history's `pack_size`, from the
    record's provenance): they all got the pack's time / M, so no run's own time."""
    history = histories.get(key)
    return history is not None and "pack_size" in history and bool(
        (history["pack_size"] > 1).any())


def _ranking(sides: Sequence[Side], notes: list[str]) -> tuple[Ranking | None, Profile | None]:
    usable = [s for s in sides if s.chosen is not None and s.n >= MIN_RUNS]
    if not usable:
        return None, None
    table = pd.DataFrame(
        [{"dataset": s.dataset, "model": s.model, "method": s.method, "score": s.mean}
         for s in usable]
    ).pivot_table(index=["dataset", "model"], columns="method", values="score", aggfunc="first")
    methods = list(table.columns)
    complete = table.dropna()
    if len(methods) < 2 or len(complete) < MIN_WORKLOADS:
        notes.append(
            f"ranks: {len(complete)} workloads have all {len(methods)} methods with >= "
            f"{MIN_RUNS} runs (need {MIN_WORKLOADS} and 2 methods), no ranking"
        )
        return None, None
    if len(complete) < len(table):
        dropped = [f"{d} / {m}" for d, m in table.index.difference(complete.index)]
        notes.append(f"ranks and profile: {len(dropped)} workloads without every method left "
                     f"out ({', '.join(dropped[:5])}{' ...' if len(dropped) > 5 else ''})")
    mean_ranks, chi2, p = friedman(complete.to_numpy(dtype=float))
    order = np.argsort(mean_ranks, kind="stable")
    ranking = Ranking(
        methods=tuple(str(methods[i]) for i in order),
        mean_ranks=tuple(float(mean_ranks[i]) for i in order),
        workloads=tuple(tuple(w) for w in complete.index),
        friedman_chi2=chi2,
        friedman_p=p,
        cd=nemenyi_cd(len(methods), len(complete)),
        scores=complete,
    )
    return ranking, performance_profile(complete)


def _time_curves(
    sides: Sequence[Side],
    enough: Mapping[str, list[tuple[Side, Side]]],
    histories: Mapping[str, pd.DataFrame] | None,
) -> tuple[TimeCurve, ...]:
    if histories is None:
        return ()
    wanted: dict[tuple[str, str, str], Side] = {}
    for members in enough.values():
        for s, b in members:
            wanted[(s.dataset, s.model, s.method)] = s
            wanted[(b.dataset, b.model, b.method)] = b
    curves = []
    for (dataset, model, method), side in wanted.items():
        frames = [histories[k] for k in side.keys if k in histories]
        frames = [
            f for f in frames if "train_seconds" in f and np.isfinite(f["train_seconds"]).all()
            and not ("pack_size" in f and (f["pack_size"] > 1).any())
        ]
        if len(frames) != len(side.keys) or not frames:
            continue
        data = pd.concat(frames, ignore_index=True)
        agg = data.groupby("epoch")[["train_seconds", "val"]].mean()
        curves.append(TimeCurve(dataset, model, method, tuple(map(float, agg["train_seconds"])),
                                tuple(float(100 * v) for v in agg["val"])))  # fmt: skip
    return tuple(curves)


def history_keys(sides: Sequence[Side]) -> list[str]:
    """The run keys whose histories the wall-clock statistics read (chosen runs of every side
    with a chosen configuration)."""
    return [k for s in sides if s.chosen is not None for k in s.keys]
