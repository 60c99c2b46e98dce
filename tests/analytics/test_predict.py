"""The failure predictor: causal, delayed labels, rises under a ramp, skips what is no run, NaN-proof, picklable."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Iterator

import pytest

from analytics.predict import ALERT_THRESHOLD, FEATURES, FailurePredictor
from analytics.source import Run

T0 = 1_735_689_600.0  # 2025-01-01 00:00 UTC
EVERY = 60.0


def run(pair: tuple[str, str], i: int, duration: float = 0.2, outcome: str = "success", **fields: object) -> Run:
    return Run(pair[0], pair[1], T0 + i * EVERY, duration, outcome, **fields)  # type: ignore[arg-type]


def healthy(pair: tuple[str, str], start: int, count: int, rng: random.Random, base: float = 0.2) -> Iterator[Run]:
    for i in range(start, start + count):
        yield run(pair, i, base * math.exp(rng.gauss(0, 0.05)))


def ramp_then_outage(pair: tuple[str, str], start: int, rng: random.Random, base: float = 0.2, ramp: int = 25, outage: int = 6) -> Iterator[Run]:
    """Latency doubling and tripling over `ramp` runs, retries creeping in, then `outage` failed runs."""
    for k in range(ramp):
        f = (k + 1) / ramp
        attempts = 2 if rng.random() < 0.5 * f else 1
        yield run(pair, start + k, base * (1 + 3 * f) * math.exp(rng.gauss(0, 0.05)), attempts=attempts, flaky=attempts > 1)
    for k in range(outage):
        yield run(pair, start + ramp + k, 0.01, "failure", failed_step="pay", reason="status", attempts=3)


def history(seed: int = 1, episodes: int = 6) -> list[Run]:
    """Several pairs; now and then one of them ramps up to an outage while the others stay healthy."""
    rng = random.Random(seed)
    pairs = [(f"wf{i}", "prod") for i in range(4)]
    runs: list[Run] = []
    tick = 0
    for e in range(episodes):
        sick = pairs[e % len(pairs)]
        for pair in pairs:
            lead_in = list(healthy(pair, tick, 40, rng))
            tail = list(ramp_then_outage(pair, tick + 40, rng)) if pair == sick else list(healthy(pair, tick + 40, 31, rng))
            runs.extend(lead_in + tail)
        tick += 71
    runs.sort(key=lambda r: r.t)
    return runs


def feed(predictor: FailurePredictor, runs: list[Run]) -> list[float | None]:
    return [predictor.observe(r) for r in runs]


class Spy:
    """A model that remembers which run each feature vector was predicted at, and what it learned when."""

    def __init__(self) -> None:
        self.now = -1  # the index of the run being observed
        self.made_at: dict[int, int] = {}  # id(vector) -> index of the run it was predicted at
        self.vectors: list[dict[str, float]] = []  # kept alive, so ids stay unique
        self.learned: list[tuple[int, bool, int]] = []  # (run the vector was made at, label, run it was learned at)

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:
        self.made_at[id(x)] = self.now
        self.vectors.append(x)
        return {True: 0.5, False: 0.5}

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        self.learned.append((self.made_at[id(x)], y, self.now))


def test_a_prediction_never_sees_the_outcome_it_predicts() -> None:
    k = 3
    rng = random.Random(5)
    pair = ("checkout", "prod")
    outcomes = ["failure" if rng.random() < 0.2 else "success" for _ in range(200)]
    spy = Spy()
    predictor = FailurePredictor(horizon_runs=k, min_labels=0, model=spy)
    for i, outcome in enumerate(outcomes):
        spy.now = i
        predictor.observe(run(pair, i, 0.2, outcome))
    failed = [o == "failure" for o in outcomes]
    assert len(spy.learned) >= len(outcomes) - k
    for made, label, learned in spy.learned:
        window = failed[made + 1 : made + 1 + k]
        assert label == any(window)  # the right label...
        assert made < learned <= made + k  # ...learned after the run it was made at, within K runs...
        decided = made + 1 + window.index(True) if label else made + k
        assert learned == decided  # ...and not before the run that decides it (nor later)


def test_what_comes_later_cannot_change_what_was_said() -> None:
    pair = ("checkout", "prod")
    rng = random.Random(5)
    prefix = [r for r in history(2, episodes=3) if r.pair != pair] + list(healthy(pair, 1000, 30, rng))
    a, b = FailurePredictor(), FailurePredictor()
    said_a, said_b = feed(a, prefix), feed(b, prefix)
    assert said_a == said_b and said_a[-1] is not None
    feed(a, list(healthy(pair, 1030, 5, random.Random(1))))
    feed(b, [run(pair, 1030 + i, 0.01, "failure") for i in range(5)])
    assert a.probability(pair) != b.probability(pair)
    # And the same runs always get the same answers (the model is seeded).
    c = FailurePredictor()
    assert feed(c, prefix)[-1] == said_a[-1]


def test_labels_wait_for_k_runs_but_a_failure_settles_them_at_once() -> None:
    pair = ("login", "prod")
    predictor = FailurePredictor(horizon_runs=3, min_labels=0)
    for i in range(3):
        predictor.observe(run(pair, i))
    assert predictor.labels_learned == 0  # run 0 has seen only runs 1 and 2
    predictor.observe(run(pair, 3))
    assert (predictor.labels_learned, predictor.positives_learned) == (1, 0)  # runs 1-3 passed: run 0 is a 0
    predictor.observe(run(pair, 4, outcome="failure"))
    # Runs 1, 2 and 3 each have the failure among their next 3 runs: 1, learned now, not 3 runs later.
    assert (predictor.labels_learned, predictor.positives_learned) == (4, 3)
    for i in range(5, 8):
        predictor.observe(run(pair, i))
    assert (predictor.labels_learned, predictor.positives_learned) == (5, 3)  # run 4's window (5, 6, 7) passed: a 0


def test_the_probability_rises_under_a_degrading_ramp_and_stays_low_when_healthy() -> None:
    predictor = FailurePredictor()
    feed(predictor, history(1))
    assert predictor.positives_learned > 0
    rng = random.Random(9)
    start = 10_000
    sick, well = ("wf-sick", "prod"), ("wf-well", "prod")
    for r in sorted([*healthy(sick, start, 40, rng), *healthy(well, start, 40, rng)], key=lambda r: r.t):
        predictor.observe(r)
    calm = predictor.probability(sick)
    ramp = [r for r in ramp_then_outage(sick, start + 40, rng) if not r.failed]
    for r, other in zip(ramp, healthy(well, start + 40, len(ramp), rng), strict=True):
        predictor.observe(r)
        predictor.observe(other)
    sick_p, well_p = predictor.probability(sick), predictor.probability(well)
    assert calm is not None and sick_p is not None and well_p is not None
    assert sick_p > calm and sick_p > well_p
    assert sick_p >= ALERT_THRESHOLD > well_p


def test_skipped_runs_and_runs_read_twice_are_not_runs() -> None:
    pair = ("orders", "prod")
    predictor = FailurePredictor(horizon_runs=2, min_labels=0)
    p = predictor.observe(run(pair, 0))
    assert p is not None
    assert predictor.observe(run(pair, 1, 0.0, "skipped", skip_reason="dependency")) == p
    assert predictor.observe(run(pair, 0, 9.9, "failure")) == p  # at or before the last run: already learned
    assert predictor.labels_learned == 0
    predictor.observe(run(pair, 2))
    predictor.observe(run(pair, 3))
    assert predictor.labels_learned == 1  # run 0's next two runs are 2 and 3: the skipped one is not among them


def test_nothing_is_said_before_the_model_has_learned_anything() -> None:
    predictor = FailurePredictor(min_labels=5)
    only_skipped = ("new", "prod")
    predictor.observe(run(only_skipped, 0, outcome="skipped"))
    assert predictor.probability(only_skipped) is None
    assert predictor.probability(("unknown", "prod")) is None
    pair = ("fresh", "prod")
    said = feed(predictor, [run(pair, i) for i in range(10)])
    assert said[:10 - 5] == [None] * 5 and all(p is not None for p in said[-1:])
    assert set(predictor.pairs()) == {only_skipped, pair}
    predictor.forget(pair)
    assert predictor.pairs() == [only_skipped]
    with pytest.raises(ValueError):
        FailurePredictor(horizon_runs=0)


def test_bad_input_does_not_break_it() -> None:
    pair = ("odd", "prod")
    predictor = FailurePredictor(min_labels=0)
    odd = [
        run(pair, 0, math.nan),
        run(pair, 1, math.inf, "failure"),
        run(pair, 2, -3.0),
        run(pair, 3, 0.0, attempts=0),
        run(pair, 4, 0.2, attempts=10_000, flaky=True),
        Run("odd", "prod", math.nan, 0.2, "success"),
    ]
    scores: list[float | None] = [math.nan, math.inf, -1.0, None, 2.0, 0.5]
    for r, score in zip(odd, scores, strict=True):
        p = predictor.observe(r, anomaly_score=score)
        assert p is not None and 0.0 <= p <= 1.0
    x = predictor.features(pair)
    assert x is not None and set(x) == set(FEATURES) and all(math.isfinite(v) for v in x.values())
    assert 0.0 <= x["anomaly"] <= 1.0


def test_failures_that_recur_at_one_hour_of_the_day_mark_that_hour() -> None:
    pair = ("nightly", "prod")
    predictor = FailurePredictor(min_labels=0)
    hourly = 3600.0 / EVERY
    for i in range(int(3 * 24 * hourly)):
        at_two = int(i // hourly) % 24 == 2
        predictor.observe(run(pair, i, outcome="failure" if at_two and i % 2 == 0 else "success"))
        features = predictor.features(pair)
        assert features is not None
        if i >= 2 * 24 * hourly:  # the third day
            assert (features["hour_fail"] > 0.3) == at_two


def test_pickle_round_trip_goes_on_identically() -> None:
    runs = history(4)
    predictor = FailurePredictor()
    feed(predictor, runs[: len(runs) // 2])
    restored = pickle.loads(pickle.dumps(predictor))
    rest = runs[len(runs) // 2 :]
    assert feed(restored, rest) == feed(predictor, rest)
    assert restored.labels_learned == predictor.labels_learned
