"""The sustained benchmark's own logic: the rule that calls an outbox bounded or growing, and the
summary of py-spy's collapsed stacks. (The benchmark itself is run by `make bench-sustained`.)"""

from __future__ import annotations

import pytest

from loadtests.bench_sustained.profile import short, summarise
from loadtests.bench_sustained.watch import SLACK_ENTRIES, Sample, boundedness, thirds
from loadtests.procs import REPO_ROOT


def series(lengths: list[int], every_s: float = 2.0) -> list[Sample]:
    return [Sample(i * every_s, n, {}) for i, n in enumerate(lengths)]


def test_a_sawing_outbox_is_bounded() -> None:
    # Trimmed once a second: up to about a second of claims, then back near empty.
    saw = [500, 6_000, 900, 5_800, 400, 6_100, 700, 5_900, 600, 6_050, 800, 5_950] * 2
    verdict = boundedness(series(saw), duration_s=48.0)
    assert verdict.bounded is True
    assert verdict.middle_peak == 6_050
    assert verdict.last_peak == 6_100


def test_an_outbox_that_keeps_growing_is_not() -> None:
    # A fulfilment group 500 entries/s behind: +1,000 a sample of 2 s.
    growing = [1_000 * i for i in range(30)]
    verdict = boundedness(series(growing), duration_s=60.0)
    assert verdict.bounded is False
    assert verdict.last_peak > verdict.middle_peak


def test_a_near_empty_outbox_wobbling_is_not_growth() -> None:
    wobble = [10, 20, 15, 30, 12, 40, 25, 60, 30, 300, 50, SLACK_ENTRIES]
    assert boundedness(series(wobble), duration_s=24.0).bounded is True


def test_too_few_samples_are_not_judged() -> None:
    assert boundedness(series([0, 100, 200]), duration_s=6.0).bounded is None


def test_samples_fall_into_the_third_of_the_run_they_were_taken_in() -> None:
    first, middle, last = thirds(series([1, 2, 3, 4, 5, 6, 7], every_s=1.0), duration_s=6.0)
    assert (first, middle, last) == ([1, 2], [3, 4], [5, 6, 7])


def test_collapsed_stacks_are_summed_into_own_and_total_shares() -> None:
    site = "/x/.venv/lib/python3.11/site-packages"
    raw = "\n".join(
        [
            f"<module> (quanyi);run ({site}/uvloop/__init__.py);post_claim ({REPO_ROOT}/q/api.py)"
            f";_decide ({REPO_ROOT}/q/claims.py) 30",
            f"<module> (quanyi);run ({site}/uvloop/__init__.py);post_claim ({REPO_ROOT}/q/api.py) 10",
            f"<module> (quanyi);run ({site}/uvloop/__init__.py) 60",
            "a line py-spy never writes",
        ]
    )
    p = summarise(raw, "API", expected=200)
    assert p.samples == 100
    assert p.busy == pytest.approx(0.5)
    own = {f.name: (f.own, f.total) for f in p.by_own}
    assert own["run (uvloop/__init__.py)"] == pytest.approx((0.6, 1.0))
    assert own["_decide (q/claims.py)"] == pytest.approx((0.3, 0.3))
    assert own["post_claim (q/api.py)"] == pytest.approx((0.1, 0.4))
    # Frames on (nearly) every stack are left out of the total ranking.
    assert [f.name for f in p.by_total] == ["post_claim (q/api.py)", "_decide (q/claims.py)"]


def test_entry_frames_are_left_out_of_the_total_ranking_when_other_threads_sample_too() -> None:
    main = "<module> (quanyi);run (uvloop.py)"
    raw = f"{main};handle (api.py) 50\n{main} 30\nworker (thread.py) 20"
    p = summarise(raw, "API", expected=100)
    assert [f.name for f in p.by_total] == ["handle (api.py)", "worker (thread.py)"]


def test_a_recursive_frame_counts_once_per_sample() -> None:
    p = summarise("main (m.py);f (m.py);f (m.py);g (m.py) 4\nmain (m.py);h (m.py) 4", "x", 8)
    total = {f.name: f.total for f in p.by_own}
    assert total == {"g (m.py)": 0.5, "h (m.py)": 0.5}
    assert {f.name: f.total for f in p.by_total}["f (m.py)"] == pytest.approx(0.5)


def test_standard_library_paths_lose_their_version_folder() -> None:
    frame = "run (/root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/runners.py)"
    assert short(frame) == "run (asyncio/runners.py)"
