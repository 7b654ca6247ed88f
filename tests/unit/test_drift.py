"""PSI, KS, categorical scores, window drift and the drift monitor (learner/drift.py)."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from online_distill.learner.drift import (
    SIGNALS,
    DriftMonitor,
    TokenDrift,
    WindowDrift,
    categorical_psi,
    ks,
    psi,
    total_variation,
)


def _phi(x: float) -> float:
    """The standard normal CDF."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def test_psi_same_distribution_is_near_zero() -> None:
    rng = np.random.default_rng(0)
    assert psi(rng.normal(size=5000), rng.normal(size=5000)) < 0.01


def test_psi_of_a_unit_mean_shift_matches_its_binned_analytic_value() -> None:
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(size=5000), rng.normal(1.0, 1.0, size=5000)
    got = psi(ref, cur)
    edges = [-math.inf, *np.quantile(ref, np.linspace(0.1, 0.9, 9)).tolist(), math.inf]
    expected = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        r = _phi(hi) - _phi(lo)
        c = _phi(hi - 1.0) - _phi(lo - 1.0)
        expected += (c - r) * math.log(c / r)
    assert 0.8 < got < 1.3
    assert got == pytest.approx(expected, abs=0.08)


def test_psi_constant_and_tied_samples() -> None:
    assert psi(np.full(100, 7.0), np.full(50, 7.0)) == 0.0
    assert psi(np.full(100, 7.0), np.full(50, 9.0)) > 5.0  # all mass moved into the upper bin
    rng = np.random.default_rng(2)
    lengths = rng.integers(10, 14, size=2000)  # four distinct values: fewer than 10 bins
    assert psi(lengths, rng.integers(10, 14, size=2000)) < 0.01
    assert psi(lengths, rng.integers(12, 16, size=2000)) > 1.0


def test_psi_rejects_an_empty_sample() -> None:
    with pytest.raises(ValueError):
        psi(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError):
        psi(np.array([1.0]), np.array([]))


def test_ks() -> None:
    x = np.array([3.0, 1.0, 2.0, 2.0])
    assert ks(x, x) == 0.0
    assert ks(np.array([1.0, 2.0]), np.array([5.0, 6.0, 7.0])) == 1.0
    assert ks(np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.0, 4.0, 5.0, 6.0])) == 0.5
    # Ties: F_ref(1) = 3/4, F_cur(1) = 1/4.
    assert ks(np.array([1.0, 1.0, 1.0, 2.0]), np.array([1.0, 2.0, 2.0, 2.0])) == 0.5
    with pytest.raises(ValueError):
        ks(np.array([]), x)


def test_categorical_psi_and_total_variation_by_hand() -> None:
    ref, cur = {"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}
    assert total_variation(ref, cur) == pytest.approx(0.4)
    expected = 0.4 * math.log(0.9 / 0.5) - 0.4 * math.log(0.1 / 0.5)
    assert categorical_psi(ref, cur) == pytest.approx(expected, rel=1e-3)
    assert expected == pytest.approx(0.8789, abs=1e-4)
    # Counts are normalised; a category missing on one side counts as zero.
    assert total_variation({"a": 5, "b": 5}, {"a": 9, "b": 1}) == pytest.approx(0.4)
    assert total_variation({"a": 1}, {"b": 3}) == pytest.approx(1.0)
    assert categorical_psi({"a": 2, "b": 2}, {"a": 1, "b": 1}) == 0.0
    with pytest.raises(ValueError):
        total_variation({"a": 0}, {"a": 1})


def test_window_drift_is_none_until_two_windows() -> None:
    w = WindowDrift(window=10)
    w.observe(range(19))
    assert w.score is None and w.tail_share(0.9) is None and w.seen == 19
    w.observe([19.0])
    assert w.score is not None


def test_window_drift_stable_then_shift_then_settle() -> None:
    rng = np.random.default_rng(3)
    w = WindowDrift(window=500)
    assert w.stride == 125
    stable: list[float] = []
    for step in range(32):  # 8 windows of N(0, 1), 125 values at a time
        w.observe(rng.normal(size=125))
        if w.score is not None:
            stable.append(w.score)
            if step % 8 == 7:
                assert w.score < 0.1  # disjoint window pairs
    assert max(stable) < 0.2 and float(np.mean(stable)) < 0.06
    shifted: list[float] = []
    for _ in range(8):  # two windows of N(2, 1)
        w.observe(rng.normal(2.0, 1.0, size=125))
        shifted.append(w.score or 0.0)
    assert max(shifted) > 0.2
    assert shifted[1] > 0.2  # already a quarter window of new values is flagged
    w.observe(rng.normal(2.0, 1.0, size=1500))  # three more windows: both windows are new
    score = w.score
    assert score is not None and score < 0.1


def test_window_drift_ks_method() -> None:
    rng = np.random.default_rng(4)
    w = WindowDrift(window=500, method="ks")
    w.observe(rng.normal(size=1000))
    stable = w.score
    assert stable is not None and stable < 0.1
    w.observe(rng.normal(2.0, 1.0, size=500))
    shifted = w.score
    assert shifted is not None and 0.5 < shifted <= 1.0


def test_window_drift_stride_caches_the_score() -> None:
    w = WindowDrift(window=100, stride=30)
    w.observe(np.zeros(200))
    before = w.score
    assert before == 0.0
    w.observe(np.ones(29))
    assert w.score == before  # 29 < stride new values: not recomputed
    w.observe(np.ones(1))
    after = w.score
    assert after is not None and after > 1.0


def test_window_drift_tail_share() -> None:
    rng = np.random.default_rng(5)
    w = WindowDrift(window=500)
    w.observe(rng.normal(size=1000))
    share = w.tail_share(0.99)
    assert share is not None and 0.0 <= share < 0.05
    w.observe(rng.normal(3.0, 1.0, size=500))
    share = w.tail_share(0.99)
    assert share is not None and share > 0.3


def test_window_drift_ignores_non_finite_values() -> None:
    w = WindowDrift(window=2)
    w.observe([1.0, math.nan, 2.0, math.inf, -math.inf, 3.0, 4.0])
    assert w.seen == 4 and w.ignored == 3
    assert w.score == psi(np.array([1.0, 2.0]), np.array([3.0, 4.0]))


def _arithmetic_prompts(
    rng: np.random.Generator, n: int, p_minus: float
) -> list[list[int]]:
    """Prompts "a op b =": digits are ids 10..19, '+' is 5, '-' is 6, '=' is 7."""
    ops = np.where(rng.random(n) < p_minus, 6, 5)
    digits = rng.integers(10, 20, size=(n, 2))
    return [[int(a), int(op), int(b), 7] for (a, b), op in zip(digits, ops, strict=True)]


def test_token_drift_flags_a_change_of_operator_mix() -> None:
    rng = np.random.default_rng(6)
    for method, stable_bar, drift_bar in (("psi", 0.1, 0.2), ("ks", 0.08, 0.1)):
        t = TokenDrift(window=500, method=method)  # type: ignore[arg-type]
        t.observe(_arithmetic_prompts(rng, 999, p_minus=0.1))
        assert t.score is None and t.seen == 999
        t.observe(_arithmetic_prompts(rng, 1, p_minus=0.1))
        stable = t.score
        assert stable is not None and stable < stable_bar
        t.observe(_arithmetic_prompts(rng, 500, p_minus=0.6))
        drifted = t.score
        assert drifted is not None and drifted > drift_bar
        if method == "ks":  # total variation: 0.125 from the operators plus noise on the digits
            assert drifted < 0.25


def test_token_drift_other_bucket() -> None:
    t = TokenDrift(window=2, max_categories=1, stride=1)
    t.observe([[1, 1, 2], [1, 3], [1, 1, 4], [1, 5]])  # ids 2..5 all fall into 'other'
    assert t.score == 0.0
    t.observe([[9, 9, 9], [8]])  # window pair: [[1, 1, 4], [1, 5]] vs only 'other'
    assert t.score == pytest.approx(categorical_psi({1: 3, "o": 2}, {1: 0, "o": 4}))


class _FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_drift_monitor_raises_and_clears_alerts(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(7)
    clock = _FakeClock()
    mon = DriftMonitor(window=500, threshold=0.2, clock=clock)
    assert set(mon.scores()) == set(SIGNALS) and set(mon.detected()) == set(SIGNALS)
    assert all(s is None for s in mon.scores().values()) and mon.tail_share() is None

    def feed(n: int, mean: float) -> list:
        return mon.observe(
            energy=rng.normal(mean, 1.0, size=n).tolist(),
            length=rng.integers(20, 30, size=n).tolist(),
            tokens=_arithmetic_prompts(rng, n, p_minus=0.1),
            divergence=rng.exponential(1.0, size=n).tolist(),
        )

    with caplog.at_level(logging.INFO, logger="online_distill.learner.drift"):
        assert feed(1000, 0.0) == []
        assert all(s is not None for s in mon.scores().values())
        assert not any(mon.detected().values())
        clock.now = 1010.0
        started = feed(250, 3.0)
        assert [e.signal for e in started] == ["energy"]
        assert started[0].started_at == 1010.0 and started[0].ended_at is None
        assert mon.detected()["energy"] and not mon.detected()["length"]
        warning = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warning) == 1
        msg = warning[0].getMessage()
        assert "energy" in msg and "psi" in msg and "0.20" in msg and "500 prompts" in msg
        assert f"{started[0].peak:.2f}" in msg
        clock.now = 1020.0
        assert feed(250, 3.0) == []  # still in alert: no new event, peak may grow
        clock.now = 1042.5
        ended: list = []
        for _ in range(12):  # the reference window fills with the shifted traffic
            ended += feed(50, 3.0)
        assert ended == started and ended[0].ended_at == 1042.5
        assert not mon.detected()["energy"]
        info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert len(info) == 1
        assert "energy" in info[0] and "32.5 s" in info[0] and f"{ended[0].peak:.2f}" in info[0]
    assert mon.events == started
    snap = json.loads(json.dumps(mon.snapshot()))
    assert snap["method"] == "psi" and snap["threshold"] == 0.2 and snap["window"] == 500
    assert set(snap["scores"]) == set(SIGNALS) and snap["detected"]["energy"] is False
    assert 0.0 <= snap["tail_share"] < 0.05
    assert snap["events"][0]["signal"] == "energy" and snap["events"][0]["ended_at"] == 1042.5


def test_drift_monitor_events_are_bounded() -> None:
    clock = _FakeClock()
    mon = DriftMonitor(window=1, threshold=0.5, method="ks", clock=clock)
    for i in range(250):
        clock.now += 1.0
        # Values 0, 1, 1, 0, 0, 1, ...: ks of adjacent one-value windows alternates 1, 0, 1, ...
        mon.observe(divergence=[float((i + 1) // 2 % 2)])
    assert len(mon.events) == 100
    starts = [e.started_at for e in mon.events]
    assert starts == sorted(starts) and starts[0] > 1002.0  # the oldest ones were dropped
    assert all(e.ended_at == e.started_at + 1.0 for e in mon.events[:-1])
