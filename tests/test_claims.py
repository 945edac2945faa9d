"""Run claims (hamgraph.claims): pid reuse, and a generation 0 made from an old listing.

The basic claim tests (exclusive, takeover, heartbeat, races) live in test_scaleout.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hamgraph.atomic import host_tag, process_start
from hamgraph.claims import Claims

REPO = Path(__file__).resolve().parents[1]
HOUR = 3600.0

needs_proc = pytest.mark.skipif(not process_start(os.getpid()), reason="no /proc/<pid>/stat")


def _plant(claims: Claims, key: str, gen: int, pid: int, *, start: str | None = None,
           age: float = 0) -> Path:
    """A claim file of this host for `pid` (`start` None: an old file without a start time)."""
    claims.dir.mkdir(parents=True, exist_ok=True)
    path = claims.dir / f"{key}.{gen}.json"
    owner: dict[str, object] = {"host": host_tag(), "pid": pid, "started": "", "key": key}
    if start is not None:
        owner["start"] = start
    path.write_text(json.dumps(owner) + "\n")
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


@pytest.fixture
def sleeper() -> Iterator[int]:
    """The pid of a live process of this host (not this one)."""
    process = subprocess.Popen(["sleep", "60"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


# --- pid reuse -------------------------------------------------------------------------------


def test_an_old_claim_with_our_pid_that_we_do_not_hold_is_stale(tmp_path: Path) -> None:
    """A container restart gave us the pid (and host) of a process that died holding a claim:
    the claim file (old format, no start time) is an hour old, so it is taken over."""
    claims = Claims(tmp_path)
    path = _plant(claims, "k", 0, os.getpid(), age=HOUR)
    assert claims.is_stale(path)
    assert claims.busy(["k"]) == {}
    assert Claims(tmp_path).prune() == 1
    _plant(claims, "k", 0, os.getpid(), age=HOUR)
    assert claims.try_claim("k")
    assert sorted(p.name for p in claims.dir.iterdir()) == ["k.1.json"]
    claims.release(["k"])


@needs_proc
def test_a_claim_with_our_pid_but_another_start_time_is_stale_at_once(tmp_path: Path) -> None:
    claims = Claims(tmp_path)
    path = _plant(claims, "k", 0, os.getpid(), start="1")  # fresh, but another process's
    assert claims.is_stale(path)
    assert claims.busy(["k"]) == {}
    assert claims.try_claim("k")
    claims.release(["k"])


@needs_proc
def test_a_reused_pid_of_another_process_does_not_keep_a_claim(
    tmp_path: Path, sleeper: int
) -> None:
    claims = Claims(tmp_path)
    reused = _plant(claims, "reused", 0, sleeper, start="1")  # its owner died; pid reused
    alive = _plant(claims, "alive", 0, sleeper, start=process_start(sleeper))
    old_format = _plant(claims, "old", 0, sleeper)  # no start time: the pid alone decides
    assert claims.is_stale(reused)
    assert not claims.is_stale(alive) and not claims.is_stale(old_format)
    busy = claims.busy(["reused", "alive", "old"])
    assert set(busy) == {"alive", "old"}
    owner = busy["alive"]
    assert owner is not None and (owner.pid, owner.start) == (sleeper, process_start(sleeper))
    assert Claims(tmp_path).prune() == 1
    assert sorted(p.name for p in claims.dir.iterdir()) == ["alive.0.json", "old.0.json"]


def test_a_claim_is_ours_only_while_we_hold_it(tmp_path: Path) -> None:
    mine, other = Claims(tmp_path), Claims(tmp_path)
    assert mine.try_claim("k")
    path = mine.dir / "k.0.json"
    owner = mine.owner(path)
    assert owner is not None and (owner.host, owner.pid) == (host_tag(), os.getpid())
    assert owner.start == process_start(os.getpid())
    os.utime(path, (time.time() - HOUR, time.time() - HOUR))  # heartbeat missed
    assert not mine.is_stale(path) and mine.prune() == 0  # held: ours
    assert other.is_stale(path)  # not held by `other`: the age decides
    mine.release(["k"])


_EXEC_RUN = """
import sys
from hamgraph.claims import Claims
claims = Claims(sys.argv[1])
print(claims.try_claim("k"), flush=True)
"""


def test_a_process_that_got_the_dead_owners_pid_takes_its_claim(tmp_path: Path) -> None:
    """The reviewer's reproduction: plant an hour-old claim with this host and a pid, then exec
    a process in that very pid (pid and host equal: a container restart)."""
    planter = (
        "import json, os, sys, time\n"
        "from pathlib import Path\n"
        "from hamgraph.atomic import host_tag\n"
        "d = Path(sys.argv[1]) / 'claims'; d.mkdir(parents=True)\n"
        "p = d / 'k.0.json'\n"
        "p.write_text(json.dumps({'host': host_tag(), 'pid': os.getpid(), 'started': ''}))\n"
        "os.utime(p, (time.time() - 3600, time.time() - 3600))\n"
        "os.execv(sys.executable, [sys.executable, '-c', sys.argv[2], sys.argv[1]])\n"
    )
    result = subprocess.run([sys.executable, "-c", planter, str(tmp_path), _EXEC_RUN],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


# --- a generation made from an old listing ------------------------------------------------------


def test_generation_0_from_an_old_listing_backs_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """G lists (nothing); D creates generation 0 and dies; A takes it over as generation 1
    (deleting 0); G creates generation 0 from its old listing: G must back off."""
    late, taker = Claims(tmp_path), Claims(tmp_path)
    late.dir.mkdir(parents=True)
    listed = late._current()  # G lists: nothing
    assert listed == {}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _plant(late, "k", 0, dead.pid)  # D creates generation 0 and dies
    assert taker.try_claim("k")  # A takes over: generation 1, generation 0 deleted
    assert sorted(p.name for p in late.dir.iterdir()) == ["k.1.json"]

    real_current = Claims._current
    looks: list[dict[str, tuple[int, Path]]] = [listed]  # G's first look: the old listing

    def current(self: Claims) -> dict[str, tuple[int, Path]]:
        return looks.pop() if looks else real_current(self)

    monkeypatch.setattr(Claims, "_current", current)
    assert not late.try_claim("k")  # G creates generation 0, sees generation 1, backs off
    assert sorted(p.name for p in late.dir.iterdir()) == ["k.1.json"]
    assert set(late.busy(["k"])) == {"k"}
    taker.release(["k"])


# --- compare before delete (issue 21 item 4) ------------------------------------------------------


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


def test_a_takeover_does_not_delete_a_fresh_generation_made_after_its_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A judges the dead owner's generation 0 stale; before A creates generation 1, B takes the
    claim over (generation 1, deleting 0), trains and releases, and C claims the run afresh as
    generation 0. A's takeover must neither delete C's live claim nor hold the run beside C."""
    a, b, c = Claims(tmp_path), Claims(tmp_path), Claims(tmp_path)
    _plant(a, "k", 0, _dead_pid())
    real_create = Claims._create
    steps: list[str] = []

    def create(self: Claims, key: str, gen: int) -> Path | None:
        if self is a and not steps:  # A has looked (generation 0 stale) and is about to create
            steps.append("b takes over")
            assert b.try_claim("k")
            assert sorted(p.name for p in a.dir.iterdir()) == ["k.1.json"]
            b.release(["k"])
            steps.append("c claims afresh")
            assert c.try_claim("k")
            assert sorted(p.name for p in a.dir.iterdir()) == ["k.0.json"]
        return real_create(self, key, gen)

    monkeypatch.setattr(Claims, "_create", create)
    assert not a.try_claim("k")  # C holds it: A backs off
    assert steps == ["b takes over", "c claims afresh"]
    assert sorted(p.name for p in a.dir.iterdir()) == ["k.0.json"]  # C's claim is still there
    owner = a.owner(a.dir / "k.0.json")
    assert owner is not None and owner.pid == os.getpid()
    assert set(a.busy(["k"])) == {"k"} and not b.try_claim("k")
    c.release(["k"])
    assert list(a.dir.iterdir()) == []


def test_the_steps_of_a_takeover_can_be_interleaved(tmp_path: Path) -> None:
    """The same interleaving driven through the two steps of a claim directly."""
    a, b, c = Claims(tmp_path), Claims(tmp_path), Claims(tmp_path)
    _plant(a, "k", 0, _dead_pid())
    look = a._look("k")
    assert look is not None and look.gen == 1
    assert b.try_claim("k")
    b.release(["k"])
    assert c.try_claim("k")
    assert not a._take("k", look)
    assert [p.name for p in a.dir.iterdir()] == ["k.0.json"] and "k" in c._held


def test_prune_does_not_delete_a_claim_made_after_it_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pruner judges the dead generation 0 stale; meanwhile another process removes it and a
    third claims the run afresh as generation 0 (same path): prune must leave that one alone."""
    pruner, other, fresh = Claims(tmp_path), Claims(tmp_path), Claims(tmp_path)
    _plant(pruner, "k", 0, _dead_pid())
    real_is_stale = Claims.is_stale

    def is_stale(self: Claims, path: Path) -> bool:
        stale = real_is_stale(self, path)
        if self is pruner and stale and not fresh._held:
            assert other.prune() == 1
            assert fresh.try_claim("k")
        return stale

    monkeypatch.setattr(Claims, "is_stale", is_stale)
    assert pruner.prune() == 0
    assert [p.name for p in pruner.dir.iterdir()] == ["k.0.json"] and "k" in fresh._held
    fresh.release(["k"])
