"""Failure prediction: the probability that a (workflow, env) fails within its next K runs.

The value behind ``flowprobe_failure_probability{workflow,env}``. One online
model serves every pair, because nobody labels live series, and it is
shared by every pair: its features mean the same thing for a 5 ms health
check and a 3 s checkout, so one pair's failures teach every other pair, and
a pair new to the worker gets a useful probability from its first run. (On
the chaos benchmark one model per pair scored a ramp-up AUC of 0.72-0.83,
the shared one 0.93-0.94: a pair alone sees too few failures to learn from.)

The model (`default_model`) is the mean of two river models' probabilities:

- an Aggregated Mondrian Forest (5 trees of at most 300 nodes each, so its
  memory and time per run stay bounded): it learns the interactions a linear
  model cannot ("latency rising while nothing fails yet");
- a logistic regression on standardised features, with a constant step: it
  never stops adapting, where the forest's leaves, once its trees are full,
  move more slowly the more they have seen.

On bench/prediction_eval.py (the same three seeded runs for each) the
ramp-up AUC was 0.93-0.94 for the mean, 0.92-0.95 for the forest alone and
0.89-0.91 for the regression alone; on the no-warning outages the medians
were 0.69, 0.60 and 0.68. The forest without a node limit grew past 8 MB
pickled after 100,000 labels and slowed down; with 300 nodes a tree it stays
near 0.5 MB at the same AUC.

Features, per pair, from that pair's past runs only (causal):

- ``err_3``, ``err_10``: the share of the last 3 and 10 runs that failed
  (``failure`` or ``error``);
- ``lat_trend``: a short EWMA (about 3 runs) of log duration minus a long
  one (about 100 runs), over runs that passed (a failure's duration, a fast
  refusal or a timeout, says nothing of the latency); ``lat_z``: the same in
  standard deviations of the pair's log duration; ``lat_level``: the latest
  passed run's log duration minus the long EWMA;
- ``anomaly``: the anomaly score the caller passes in (the worker passes its
  latency score), 0 when none;
- ``retries``: the mean number of extra attempts over the last 10 runs
  (capped at 3 each), and ``flaky``: the share of them that passed only after
  a retry;
- ``since_fail``: ``exp(-runs since the last failure / 2K)``, 0 if the pair
  never failed: 1 just after a failure, fading over a few horizons;
- ``hour_fail``: the share of the pair's runs that failed in this hour of
  the day (UTC) on earlier days, shrunk towards 0 while there are few: a
  failure that recurs at 02:00 raises it at 02:00 only. Not the hour itself
  (sin and cos): one model for every pair would learn "failures happen at
  this hour" from whatever pair failed last, and warn every other pair;
- ``skipped``: the share of the pair's last 10 runs that were skipped (a
  dependency failing, an open circuit breaker).

Progressive validation, exactly as live: `FailurePredictor.observe` first
learns every label that `run` completes, then updates the pair's features
with `run`, then predicts. The feature vector made at run i waits for its
label: 1 as soon as one of runs i+1..i+K fails (the label can no longer
change, so it is learned at once), 0 once K more runs all passed. A
prediction therefore never uses the outcome it predicts.

Skipped runs are not runs of the target: they are not among the next K
runs, are not predicted, and move only the ``skipped`` feature. A run at or
before the pair's last one (a history read again after a restart) is
ignored. A NaN, infinite or negative duration still counts as an outcome but
leaves the latency features as they were.

The predictor pickles whole (the worker saves it with its detectors), and
a restored copy goes on exactly as the original would have.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from river import forest, linear_model, optim, preprocessing

from analytics.source import Run

__all__ = ["ALERT_THRESHOLD", "FEATURES", "FailurePredictor", "MeanProbability", "default_model"]

Pair = tuple[str, str]

# The probability at which a pair is worth a warning: the threshold of the
# alert rule and of the benchmark's precision, recall and lead. Chosen once on
# the chaos benchmark, for all pairs: from 0.2 to 0.3 the ramp-up F1 is within
# 0.02 of its best, and 0.2 warns earliest. There it warned of three ramp-up
# failures in four, a median 7 runs ahead, at a point precision of 0.44.
ALERT_THRESHOLD = 0.2

FEATURES = (
    "err_3", "err_10", "lat_trend", "lat_z", "lat_level", "anomaly", "retries", "flaky", "since_fail", "hour_fail", "skipped",
)

_SHORT_ALPHA = 0.3  # the short latency EWMA: about the last 3 runs
_LONG_ALPHA = 0.01  # the long one: about the last 100 runs (30 followed a 20-40 run ramp too closely)
_MIN_DURATION = 1e-3  # seconds: log() of a 0 s run stays finite
_MIN_VAR = 0.05**2  # a floor on the variance of log duration (5 %): a steady pair's z-score does not explode
_MAX_RETRIES = 3  # extra attempts counted per run: a runaway retry setting does not swamp the feature
_HOUR = 3600.0
_HOUR_PRIOR = 5  # runs of pretend success in each hour: one failure in one run is not yet a pattern


class Classifier(Protocol):
    def learn_one(self, x: dict[str, float], y: bool) -> Any: ...

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]: ...


class MeanProbability:
    """The mean of several classifiers' probabilities, each learning every example (river's
    VotingClassifier votes labels and gives no probability)."""

    def __init__(self, models: list[Classifier]) -> None:
        if not models:
            raise ValueError("at least one model is needed")
        self.models = models

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        for model in self.models:
            model.learn_one(x, y)

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:
        p = sum(model.predict_proba_one(x).get(True, 0.0) for model in self.models) / len(self.models)
        return {True: p, False: 1.0 - p}


def default_model() -> MeanProbability:
    """The shipped model, one configuration for every pair (chosen on bench/prediction_eval.py).

    The forest takes the features as they are: they share natural units (shares
    of runs, log ratios), and scaling them scored worse. The regression's small
    step (0.005) and starting intercept (p about 0.1) keep a fresh model from
    warning about everything after its first failure.
    """
    return MeanProbability([
        forest.AMFClassifier(n_estimators=5, dirichlet=0.5, max_nodes=300, seed=1),
        preprocessing.StandardScaler() | linear_model.LogisticRegression(
            optimizer=optim.SGD(0.005), intercept_init=-2.0, intercept_lr=0.005, l2=1e-4,
        ),
    ])


@dataclass
class _PairState:
    """What the predictor keeps of one pair: recent runs, latency EWMAs, and features waiting for their label."""

    horizon: int
    outcomes: deque[int] = field(default_factory=lambda: deque(maxlen=10))
    retries: deque[int] = field(default_factory=lambda: deque(maxlen=10))
    flaky: deque[int] = field(default_factory=lambda: deque(maxlen=10))
    skips: deque[int] = field(default_factory=lambda: deque(maxlen=10))  # 1 per skipped run, 0 per run
    timed: int = 0  # runs whose duration went into the EWMAs
    short: float = 0.0  # EWMAs of log duration
    long: float = 0.0
    var: float = 0.0  # the long EWMA's variance
    level: float = 0.0  # this run's log duration minus the long EWMA
    runs_since_fail: int | None = None  # None: never failed
    last_t: float = -math.inf
    pending: deque[dict[str, float]] = field(default_factory=deque)  # feature vectors of the last K runs, oldest first
    # Per hour of day (0-23): [failures, runs] on earlier days, and the same for the hour now under way,
    # which joins them once the pair's runs move on to another hour.
    hours: list[list[int]] = field(default_factory=lambda: [[0, 0] for _ in range(24)])
    hour_now: int | None = None
    hour_now_counts: list[int] = field(default_factory=lambda: [0, 0])
    x: dict[str, float] | None = None  # the features of the latest run
    probability: float | None = None

    def update(self, run: Run) -> None:
        failed = int(run.failed)
        self.skips.append(0)
        self.outcomes.append(failed)
        self.retries.append(_extra_attempts(run.attempts))
        self.flaky.append(int(bool(run.flaky)))
        self.runs_since_fail = 0 if failed else (None if self.runs_since_fail is None else self.runs_since_fail + 1)
        self.last_t = run.t
        self._count_hour(run.t, failed)
        duration = float(run.duration)
        if not failed and math.isfinite(duration) and duration >= 0:
            x = math.log(max(duration, _MIN_DURATION))
            self.timed += 1
            # Plain means until there are 1/alpha runs: the first run (a cold connection) does not linger for 100 runs.
            self.short += max(_SHORT_ALPHA, 1 / self.timed) * (x - self.short)
            a = max(_LONG_ALPHA, 1 / self.timed)
            diff = x - self.long
            self.long += a * diff
            self.var = (1 - a) * (self.var + a * diff * diff)
            self.level = x - self.long

    def _count_hour(self, t: float, failed: int) -> None:
        hour = int(t // _HOUR) % 24 if math.isfinite(t) else None
        if hour != self.hour_now:
            if self.hour_now is not None:
                past = self.hours[self.hour_now]
                past[0] += self.hour_now_counts[0]
                past[1] += self.hour_now_counts[1]
            self.hour_now, self.hour_now_counts = hour, [0, 0]
        self.hour_now_counts[0] += failed
        self.hour_now_counts[1] += 1

    def features(self, anomaly: float) -> dict[str, float]:
        recent = list(self.outcomes)
        failures, runs = self.hours[self.hour_now] if self.hour_now is not None else (0, 0)
        since = 0.0 if self.runs_since_fail is None else math.exp(-self.runs_since_fail / (2 * self.horizon))
        return {
            "err_3": sum(recent[-3:]) / len(recent[-3:]),
            "err_10": sum(recent) / len(recent),
            "lat_trend": self.short - self.long,
            "lat_z": (self.short - self.long) / math.sqrt(self.var + _MIN_VAR),
            "lat_level": self.level,
            "anomaly": anomaly,
            "retries": sum(self.retries) / len(self.retries),
            "flaky": sum(self.flaky) / len(self.flaky),
            "since_fail": since,
            "hour_fail": failures / (runs + _HOUR_PRIOR),
            "skipped": sum(self.skips) / len(self.skips),
        }


class FailurePredictor:
    """P(a pair fails within its next `horizon_runs` runs), learned online from every pair's runs.

    `observe` each run as it arrives (in time order within each pair); it
    returns the pair's new probability. `probability` reads it back; it is
    None until the pair has had a run that was not skipped and the model
    has learned `min_labels` labels (a model that has seen nothing says
    nothing).
    """

    def __init__(self, horizon_runs: int = 5, *, min_labels: int = 20, model: Classifier | None = None) -> None:
        if horizon_runs < 1:
            raise ValueError(f"horizon_runs must be at least 1, got {horizon_runs}")
        self.horizon_runs = horizon_runs
        self.min_labels = min_labels
        self.model = model if model is not None else default_model()
        self.labels_learned = 0
        self.positives_learned = 0
        self._pairs: dict[Pair, _PairState] = {}

    def observe(self, run: Run, anomaly_score: float | None = None) -> float | None:
        """Learn the labels `run` completes, take `run` into its pair's features, and predict again."""
        state = self._pairs.get(run.pair)
        if state is None:
            state = self._pairs[run.pair] = _PairState(self.horizon_runs)
        if not run.t > state.last_t:
            return state.probability
        if run.outcome == "skipped":
            state.skips.append(1)
            state.last_t = run.t
            return state.probability
        self._settle(state, failed=run.failed)
        state.update(run)
        x = state.x = state.features(_score(anomaly_score))
        state.pending.append(x)
        if self.labels_learned >= self.min_labels:
            state.probability = float(self.model.predict_proba_one(x).get(True, 0.0))
        return state.probability

    def probability(self, pair: Pair) -> float | None:
        state = self._pairs.get(pair)
        return None if state is None else state.probability

    def features(self, pair: Pair) -> dict[str, float] | None:
        """The features behind the pair's probability (see FEATURES), to explain it; None before its first run."""
        state = self._pairs.get(pair)
        return None if state is None or state.x is None else dict(state.x)

    def pairs(self) -> list[Pair]:
        return list(self._pairs)

    def forget(self, pair: Pair) -> None:
        """Drop a pair (its workflow was removed); what the shared model learned from it stays."""
        self._pairs.pop(pair, None)

    def _settle(self, state: _PairState, *, failed: bool) -> None:
        """The labels that the arrival of one more (non-skipped) run decides."""
        if failed:  # every waiting vector's next K runs include this failure
            while state.pending:
                self._learn(state.pending.popleft(), True)
        elif len(state.pending) >= self.horizon_runs:  # the oldest has now seen K runs, all passed
            self._learn(state.pending.popleft(), False)

    def _learn(self, x: dict[str, float], label: bool) -> None:
        self.model.learn_one(x, label)
        self.labels_learned += 1
        self.positives_learned += int(label)


def _score(value: float | None) -> float:
    """The caller's anomaly score in [0, 1]; missing or NaN is 0."""
    if value is None:
        return 0.0
    try:
        x = float(value)
    except (TypeError, ValueError):
        return 0.0
    return min(1.0, max(0.0, x)) if math.isfinite(x) else 0.0


def _extra_attempts(attempts: Any) -> int:
    """Attempts after the first, between 0 and _MAX_RETRIES; nonsense is 0."""
    try:
        extra = int(attempts) - 1
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(extra, 0), _MAX_RETRIES)
