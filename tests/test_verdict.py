"""`report.verdict`: statistics across workloads on result sets whose answer is known, the
tuning-budget estimator, time-to-target, the honest edges, and `hamgraph report --verdict`."""

from __future__ import annotations

import itertools
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report_factory import cell_results, run_result, write_results

from hamgraph.cli import main as cli_main
from hamgraph.errors import UserInputError
from hamgraph.report import load_runs, write_report
from hamgraph.report.verdict import (
    build_verdict,
    expected_best,
    friedman,
    nemenyi_cd,
    performance_profile,
    time_to_target,
)
from hamgraph.specs import EpochStats, RunResult

WORKLOADS = [(d, m) for d in ("cora", "citeseer", "pubmed", "squirrel") for m in ("gcn", "gat")]
NOISE = [0.004, -0.006, 0.001, 0.007, -0.003]  # per run, shared by the baseline
NOISE2 = [-0.002, 0.005, 0.003, -0.004, 0.001]
BETTER, IDENTICAL, MIXED = "ham", "nham", "ham (sign_source=previous)"


def _known_results() -> list[RunResult]:
    """8 workloads x 5 runs: Adam; HAM better everywhere by 6+ points; nHAM identical to Adam;
    HAM (sign_source=previous) 5 points better on the first half, 5 worse on the second."""
    results = []
    for w, (dataset, model) in enumerate(WORKLOADS):
        base = 0.6 + 0.03 * (w % 4)  # workloads w and w + 4 share a baseline level
        adam = [base + e for e in NOISE]
        better = [base + 0.06 + 0.002 * w + e for e in NOISE2]  # distinct per-workload gains
        sign = 1 if w < len(WORKLOADS) // 2 else -1
        mixed = [base + sign * (0.05 + 0.002 * (w % 4)) + e for e in NOISE2]
        results += cell_results(dataset, model, "adam", adam, adam)
        results += cell_results(dataset, model, "ham", better, better, 200, 0.1)
        results += cell_results(dataset, model, "nham", adam, adam, -10, 0.01)
        results += cell_results(dataset, model, "ham", mixed, mixed, 200, 0.1,
                                ham={"sign_source": "previous"})  # fmt: skip
    return results


@pytest.fixture(scope="module")
def known_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_results(tmp_path_factory.mktemp("verdict") / "res", _known_results(),
                         histories=False)  # fmt: skip


@pytest.fixture(scope="module")
def known(known_dir: Path):
    return build_verdict(load_runs([known_dir]), resamples=500)


def _row(verdict, setting: str):
    rows = [r for r in verdict.rows if r.setting == setting]
    assert len(rows) == 1, [r.setting for r in verdict.rows]
    return rows[0]


def test_better_everywhere(known) -> None:
    row = _row(known, BETTER)
    assert (row.wins, row.ties, row.losses) == (8, 0, 0)
    assert row.workloads == 8 and row.runs_setting == 40 and row.runs_baseline == 40
    assert row.baseline == "adam"
    assert row.wilcoxon_p == pytest.approx(2 / 2**8)  # exact two-sided: all 8 signs positive
    assert row.mean_ci[0] > 0 and row.mean_improvement > 0 and row.iqm_ci[0] > 0
    assert row.p_improvement == 1.0 and row.p_ci[0] > 0.5


def test_identical_to_the_baseline(known) -> None:
    row = _row(known, IDENTICAL)
    assert (row.wins, row.ties, row.losses) == (0, 8, 0)
    assert row.wilcoxon_p == 1.0
    assert row.mean_improvement == 0.0 and row.mean_ci[0] < 0 < row.mean_ci[1]
    assert row.p_improvement == 0.5 and row.p_ci[0] < 0.5 < row.p_ci[1]
    assert all(p.test == "none (identical)" for p in known.pairs if p.setting == IDENTICAL)


def test_worse_on_half(known) -> None:
    row = _row(known, MIXED)
    assert (row.wins, row.ties, row.losses) == (4, 0, 4)
    assert row.wilcoxon_p > 0.5
    assert row.mean_ci[0] < 0 < row.mean_ci[1]
    assert row.p_improvement == 0.5 and row.p_ci[0] <= 0.5 <= row.p_ci[1]


def test_ranks_friedman_and_profile(known) -> None:
    ranking = known.ranking
    assert ranking is not None and len(ranking.workloads) == 8
    assert ranking.methods[0] == BETTER and ranking.mean_ranks[0] == 1.0
    ranks = dict(zip(ranking.methods, ranking.mean_ranks, strict=True))
    assert ranks["adam"] == ranks[IDENTICAL]  # tied everywhere: equal mean ranks
    assert sum(ranking.mean_ranks) == pytest.approx(8 * 4 * 5 / 2 / 8)  # k (k + 1) / 2
    assert ranking.friedman_p < 0.01
    assert ranking.cd == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 8)), rel=1e-3)  # Demsar
    profile = known.profile
    assert profile is not None and profile.tau[0] == 0.0
    assert profile.fractions[BETTER][0] == 1.0  # best on every workload
    assert profile.fractions["adam"][0] == 0.0 and profile.fractions["adam"][-1] == 1.0


def test_friedman_matches_scipy_without_ties() -> None:
    from scipy.stats import friedmanchisquare

    rng = np.random.default_rng(3)
    scores = rng.normal(size=(9, 4))
    _, stat, p = friedman(scores)
    ref = friedmanchisquare(*scores.T)
    assert stat == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert nemenyi_cd(2, 10) == pytest.approx(1.960 * math.sqrt(2 * 3 / 60), rel=1e-3)


def test_performance_profile_fractions() -> None:
    scores = pd.DataFrame({"a": [80.0, 70.0, 60.0], "b": [79.0, 72.0, 60.0]})
    profile = performance_profile(scores)
    assert profile.tau == (0.0, 1.0, 2.0)
    assert profile.fractions == {"a": (2 / 3, 2 / 3, 1.0), "b": (2 / 3, 1.0, 1.0)}


def test_expected_best_is_the_mean_over_all_subsets() -> None:
    vals = [71.0, 75.0, 73.0, 75.0, 60.0, 78.0]
    tests = [70.0, 72.0, 74.0, 69.0, 61.0, 77.0]
    # best first by the rule (equal validations: the earlier one is preferred)
    ev, et = expected_best(vals, tests)
    for k in range(1, len(vals) + 1):
        subsets = list(itertools.combinations(range(len(vals)), k))
        best = [max(s, key=lambda i: (vals[i], -i)) for s in subsets]
        assert ev[k - 1] == pytest.approx(np.mean([vals[i] for i in best]))
        assert et[k - 1] == pytest.approx(np.mean([tests[i] for i in best]))
    assert ev[0] == pytest.approx(np.mean(vals)) and ev[-1] == 78.0


def test_budget_curves_and_equal_k(tmp_path: Path) -> None:
    """HAM swept over 4 (alpha, beta) cells, Adam 1: the verdict compares at k = 1, where HAM's
    expected test is the mean over its cells, not its best cell."""
    results = []
    for dataset, model in WORKLOADS[:4]:
        results += cell_results(dataset, model, "adam", [0.70] * 3, [0.70, 0.71, 0.69])
        for alpha, score in ((1, 0.60), (10, 0.65), (100, 0.68), (200, 0.75)):
            results += cell_results(dataset, model, "ham", [score] * 3,
                                    [score, score + 0.01, score - 0.01], alpha, 0.1)  # fmt: skip
    verdict = build_verdict(load_runs([write_results(tmp_path / "r", results, False)]),
                            resamples=200)  # fmt: skip
    row = _row(verdict, "ham")
    assert row.wins == 4 and row.configs_setting == 16 and row.configs_baseline == 4
    assert row.equal_k == "1"
    assert row.equal_k_delta == pytest.approx(100 * (0.67 - 0.70))  # a random cell loses
    assert row.equal_k_wins == 0
    curve = next(b for b in verdict.budgets if b.method == "ham")
    assert curve.k == (1, 2, 3, 4)
    assert curve.expected_val[0] == pytest.approx(67.0) and curve.expected_val[-1] == 75.0
    assert list(curve.expected_val) == sorted(curve.expected_val)


def _timed(result: RunResult, per_epoch: float | None, final: float) -> RunResult:
    """The run's history with val rising linearly to `final` and train_seconds = epoch x
    per_epoch (None: not measured, as in histories before the column existed)."""
    epochs = 10
    history = [
        EpochStats(epoch=e, loss=1.0 / e, train=final, val=final * e / epochs,
                   test=final * e / epochs, lr=1e-3, sign_flips=0, mean_abs_weight=0.1,
                   train_seconds=math.nan if per_epoch is None else e * per_epoch)
        for e in range(1, epochs + 1)
    ]  # fmt: skip
    return RunResult(**{**result.__dict__, "history": history, "val": final})


def _timed_results(per_epoch_ham: float | None) -> list[RunResult]:
    results = []
    for w, (dataset, model) in enumerate(WORKLOADS[:4]):
        for run in range(4):
            adam = run_result(dataset, model, "adam", run, 0.8, 0.8)
            results.append(_timed(adam, 1.0, 0.8 + 0.001 * run))
            ham = run_result(dataset, model, "ham", run, 0.8, 0.8, 200, 0.1)
            # HAM: the same curve, twice as fast per epoch; on the last workload it tops out
            # below the target on 3 of 4 runs (a missed workload)
            final = 0.7 if (w == 3 and run < 3) else 0.8 + 0.001 * run
            results.append(_timed(ham, per_epoch_ham, final))
    return results


def _histories(root: Path) -> dict[str, pd.DataFrame]:
    from hamgraph.store import ResultStore

    store = ResultStore(root)
    return {k: pd.DataFrame([vars(e) for e in store.load(k).history])
            for k in store.finished_keys()}  # fmt: skip


def test_time_to_target_speedup_and_misses(tmp_path: Path) -> None:
    root = write_results(tmp_path / "r", _timed_results(0.5))
    verdict = build_verdict(load_runs([root]), histories=_histories(root), resamples=100)
    row = _row(verdict, "ham")
    # target = Adam's median best validation 80.15: Adam's lower-median run hits it at epoch 10
    # (10 s), HAM at epoch 10 too but at 0.5 s per epoch (5 s) -> speedup 2 on 3 workloads
    assert row.time_workloads == 3 and row.time_misses == 1 and row.time_unmeasured == 0
    assert row.speedup == pytest.approx(2.0)
    assert row.run_misses == "setting 9/16, baseline 8/16"
    assert {c.method for c in verdict.time_curves} == {"adam", "ham"}


def test_time_to_target_of_one_run() -> None:
    history = pd.DataFrame({"epoch": [1, 2, 3], "val": [0.5, 0.7, 0.6],
                            "train_seconds": [1.0, 2.5, 4.0]})  # fmt: skip
    assert time_to_target(history, 70.0) == 2.5
    assert time_to_target(history, 71.0) == math.inf
    assert math.isnan(time_to_target(history.assign(train_seconds=math.nan), 50.0))


def test_old_histories_without_train_seconds_are_noted(tmp_path: Path) -> None:
    root = write_results(tmp_path / "r", _timed_results(None))
    verdict = build_verdict(load_runs([root]), histories=_histories(root), resamples=100)
    row = _row(verdict, "ham")
    assert math.isnan(row.speedup) and row.time_unmeasured == 4
    assert any("without train_seconds" in n for n in verdict.notes)


def test_honest_edges_are_listed(known_dir: Path, tmp_path: Path) -> None:
    # a workload with 2 runs per side, a setting without a baseline, a failed run, unequal counts
    results = cell_results("texas", "gcn", "adam", [0.5, 0.6], [0.5, 0.6])
    results += cell_results("texas", "gcn", "ham", [0.5, 0.6], [0.5, 0.6], 200, 0.1)
    results += cell_results("wisconsin", "gcn", "ham", [0.5] * 3, [0.5] * 3, 200, 0.1)
    results.append(run_result("cornell", "gcn", "adam", 9, 0, 0, status="failed", reason="nan"))
    results += cell_results("cornell", "gcn", "adam", [0.5] * 4, [0.5] * 4)
    results += cell_results("cornell", "gcn", "ham", [0.6] * 3, [0.6] * 3, 200, 0.1)
    edges = write_results(tmp_path / "edges", results, False)
    verdict = build_verdict(load_runs([known_dir, edges]), resamples=100)
    notes = "\n".join(verdict.notes)
    assert "texas / gcn, ham: 2 vs 2 ok runs" in notes
    assert "wisconsin / gcn, ham: no baseline" in notes
    assert "1 failed runs" in notes
    assert "cornell / gcn, adam: no configuration without failed runs" in notes
    assert _row(verdict, BETTER).workloads == 8  # the edges are left out, the rest stands
    runs = load_runs([known_dir])
    dropped = (runs["dataset"] == "cora") & (runs["model"] == "gcn") & (runs["run"] == 4)
    dropped &= runs["optimizer"] == "adam"
    verdict = build_verdict(runs[~dropped], resamples=100)
    assert "cora / gcn, ham: unequal run counts, 5 vs 4" in "\n".join(verdict.notes)


def test_refuses_with_fewer_than_three_workloads(tmp_path: Path) -> None:
    results = [r for r in _known_results() if r.spec.dataset == "cora"]  # 2 workloads
    root = write_results(tmp_path / "r", results, False)
    with pytest.raises(UserInputError, match="at most 2 comparable workload"):
        build_verdict(load_runs([root]))


def test_cli_verdict_refusal_exit_2_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_results(tmp_path / "r", [r for r in _known_results()
                                          if r.spec.dataset == "cora"], False)  # fmt: skip
    assert cli_main(["report", str(root), "--verdict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "need 3" in err[0]
    assert not (root / "report").exists()


def test_searched_settings_are_configurations(known_dir: Path) -> None:
    """A settings column the cell columns do not know (a searched lr) tells configurations
    apart: the method is swept over it, the best lr is chosen."""
    runs = load_runs([known_dir])
    slow = runs.copy()
    slow["lr"] = 0.01
    slow["key"] = slow["key"] + "-lr"
    slow.loc[slow["optimizer"] == "ham", "test"] -= 0.5
    runs = pd.concat([runs.assign(lr=0.001), slow], ignore_index=True)
    verdict = build_verdict(runs, resamples=100)
    row = _row(verdict, BETTER)
    assert row.configs_setting == 16 and row.wins == 8  # 2 lr configurations per workload


def test_report_writes_verdict_files(known_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    outcome = write_report([known_dir], ["csv", "latex", "md", "html"], out, verdict=True,
                           figures="none")  # fmt: skip
    assert outcome.figures == ()
    table = pd.read_csv(out / "verdict.csv")
    assert list(table["setting"]) == sorted([BETTER, IDENTICAL, MIXED])
    assert set(pd.read_csv(out / "verdict_workloads.csv")["outcome"]) == {"win", "tie", "loss"}
    assert (out / "verdict_budget.csv").is_file() and (out / "verdict_ranks.csv").is_file()
    tex = (out / "verdict.tex").read_text()
    assert r"\toprule" in tex and "8/0/0" in tex
    assert r"Friedman $\chi$$^2$ = " in tex and r"($\alpha$ = 0.05)" in tex
    page = (out / "report.html").read_text()
    assert "Verdict" in page and "8/0/0" in page
    assert "8/0/0" in (out / "verdict.md").read_text()
    engine = next((e for e in ("pdflatex", "lualatex") if shutil.which(e)), None)
    if engine is None:
        pytest.skip("no TeX engine on PATH")
    doc = tmp_path / "doc.tex"
    tex_input = (out / "verdict.tex").as_posix()
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs,graphicx}\n"
                   "\\begin{document}\n"
                   f"\\input{{{tex_input}}}\n\\end{{document}}\n")  # fmt: skip
    proc = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Overfull \\hbox" not in (tmp_path / "doc.log").read_text()  # fits the page


def test_verdict_figures_drawn_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--figures png: the verdict's figures beside the tables' (PNG only); a second report
    with unchanged inputs draws nothing again."""
    pytest.importorskip("matplotlib")
    from hamgraph.report import figures as figure_module

    every = figure_module.figure_jobs
    keep = ("verdict_", "budget_cora_gcn", "wallclock_cora_gcn", "curves_cora_gcn")

    def fewer(*args, **kwargs):  # the tables' figures have their own tests: draw fewer here
        jobs = every(*args, **kwargs)
        assert {"heatmap_cora_gcn", "budget_citeseer_gcn"} <= {j.stem for j in jobs}
        return [j for j in jobs if j.stem.startswith(keep)]

    monkeypatch.setattr(figure_module, "figure_jobs", fewer)
    results = []
    for dataset, model in WORKLOADS[:3]:
        results += cell_results(dataset, model, "adam", [0.70, 0.71, 0.69], [0.70, 0.71, 0.69])
        for alpha, score in ((10, 0.65), (200, 0.75)):
            results += cell_results(dataset, model, "ham", [score, score + 0.01, score - 0.01],
                                    [score] * 3, alpha, 0.1)  # fmt: skip
    root = write_results(tmp_path / "r", results)  # histories with train_seconds
    outcome = write_report([root], ["html"], verdict=True, figures="png", processes=2)  # a pool
    figures = root / "report" / "figures"
    stems = {p.stem for p in figures.glob("*.png")}
    assert stems == {"verdict_intervals", "verdict_cd", "verdict_profile", "budget_cora_gcn",
                     "wallclock_cora_gcn", "curves_cora_gcn"}  # fmt: skip
    assert not list(figures.glob("*.pdf"))
    assert {p.stem for p in outcome.figures} == stems
    assert outcome.verdict is not None and outcome.verdict.rows[0].time_workloads == 3
    page = (root / "report" / "report.html").read_text()
    assert 'src="figures/verdict_cd.png"' in page and "Verdict across workloads" in page
    before = {p.name: p.stat().st_mtime_ns for p in figures.glob("*.png")}
    write_report([root], ["html"], verdict=True, figures="png", processes=1)
    assert {p.name: p.stat().st_mtime_ns for p in figures.glob("*.png")} == before


def test_cli_verdict_as_in_the_docs(known_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The commands of docs/reports.md, on the known result set."""
    commands = [
        "hamgraph report results/verdict-csbm --verdict",
        "hamgraph report results/verdict-csbm --verdict --figures none",
        "hamgraph report results/verdict-csbm --verdict --figures all --format csv,latex",
    ]
    for i, command in enumerate(commands):
        argv = command.split()[1:]
        argv[1] = str(known_dir)
        out = tmp_path / f"out{i}"
        assert cli_main([*argv, "--out", str(out)]) == 0
        assert (out / "verdict.csv").is_file()
    assert (tmp_path / "out0" / "report.html").is_file()
    assert not (tmp_path / "out1" / "figures").exists()
    assert list((tmp_path / "out2" / "figures").glob("verdict_cd.pdf"))
    assert not (tmp_path / "out2" / "report.html").exists()
    assert "verdict.tex" in capsys.readouterr().out


def test_runs_timed_in_packs_have_no_time_to_target(tmp_path: Path) -> None:
    """A pack's runs share one clock (train_seconds = the pack's time / M, so a HAM run and its
    Adam baseline in one pack get the same times): the report reads the pack size from the
    records and compares training times only of runs timed alone, and says so."""
    results = _timed_results(0.5)
    for result in results:
        if result.spec.ham is not None:
            result.provenance = {**result.provenance, "pack_size": "4"}
    root = write_results(tmp_path / "r", results)
    outcome = write_report([root], formats=["csv"], out=tmp_path / "rep", verdict=True,
                           figures="none")
    row = _row(outcome.verdict, "ham")
    assert math.isnan(row.speedup) and row.time_workloads == 0 and row.time_unmeasured == 4
    assert any("16 runs were trained in packs" in n for n in outcome.verdict.notes)
    assert {c.method for c in outcome.verdict.time_curves} == {"adam"}
    # the same runs timed alone (pack_size 1, or records from before the field) are compared
    alone = write_results(tmp_path / "alone", _timed_results(0.5))
    outcome = write_report([alone], formats=["csv"], out=tmp_path / "rep2", verdict=True,
                           figures="none")
    assert _row(outcome.verdict, "ham").speedup == pytest.approx(2.0)


def test_a_lower_is_better_metric_is_refused(known_dir: Path) -> None:
    """The statistics compare higher-is-better scores (wins, improvements, ranks, expected best,
    time-to-target): runs of a user's lower-is-better metric are refused with one line, not
    judged upside down."""
    runs = load_runs([known_dir]).assign(higher_is_better="false", metric="error_rate")
    with pytest.raises(UserInputError, match="metric error_rate is lower-is-better"):
        build_verdict(runs, resamples=100)
    assert build_verdict(runs.assign(higher_is_better="true"), resamples=100).rows
