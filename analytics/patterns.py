"""Failure patterns and root causes, from the runs of every (workflow, env).

The worker feeds `PatternFinder.observe` the runs its source read (in time
order within each pair, in batches); the finder keeps a little state per pair
and answers four questions:

- **Recurring failures** (`PatternFinder.recurring`): a pair whose failure
  onsets come every N seconds (``period``), at the same hour of the day
  (``hour_of_day``, UTC) or on the same day of the week (``day_of_week``),
  with the period in seconds and a confidence in [0, 1]. An *onset* is a
  failed run whose previous run (skips aside) passed: a long outage is one
  onset, a flapping pair many.
- **Correlated failures** (`PatternFinder.correlations`): two pairs whose
  onsets co-occur within ``window`` seconds, counted as onsets arrive, with
  the share of the rarer pair's onsets that co-occur, the lift over chance
  (two independent pairs failing as often) and the median lag.
- **Cascades** (`PatternFinder.cascades`): groups of correlated pairs in
  onset order, each with its offset from the leader and every lead/lag
  between members. (Granger tests would need statsmodels; the consistency of
  the lead, the share of co-occurrences in which the leader came first, is
  given instead.)
- **Incidents and their root cause** (`PatternFinder.incidents`): failures at
  the same time are one incident. It opens at a pair's first failed run, so
  it is found at the run of its onset. A pair that starts failing while an
  incident of its env is failing (a member's last run failed, or a member it
  depends on has not recovered) joins it; in another env, only within
  ``window`` of the incident's start. An incident whose members all pass
  again takes no newcomer, so a blip just before a fault does not swallow
  the fault. A member recovers after ``recover_runs`` passed runs in a row;
  the incident is resolved when every member has recovered, or when none
  has failed for ``close_after`` seconds. Its id is its first run's time
  (UTC) and pair, ``20250101T020000Z-health-check-prod``: the same on every
  replay of the same history. Runs skipped because a dependency fails
  (``skip_reason: dependency``) go to the incident of that dependency.

Ranking the causes of an incident
---------------------------------
The pairs an incident *affects* are its failing members and the pairs skipped
behind one of them (this needs the `Topology`: without it a skip says nothing
about whom it waits for). Each is weighted by how broken it was: its failed
and skipped runs over all its runs during the incident, so a pair that
failed once and then passed weighs little beside one that failed throughout.
Each candidate cause *explains* a share (0 to 1) of each affected pair:

- a failing workflow explains its own failed runs and, through the
  ``depends_on`` edges (direct or not, same env), the failed and skipped runs
  of its dependents that fell while it was failing (from its first failure,
  less one of its run intervals, as a dependent running a moment earlier
  could not know yet, to its next pass). With such dependents it is of kind
  ``dependency``, else ``workflow``;
- a step (kind ``step``) explains the share of a member's runs that failed
  there, and half of the runs of a pair skipped before it could reach the same
  step. Steps are the same when the topology gives them the same request
  (`Topology.step_keys`), else when their names match ignoring case and
  punctuation, so the ``login`` step of every authenticated workflow is one
  cause;
- a target host (kind ``host``) explains the share of a member's runs that
  failed after reaching it: in full for connection and TLS failures (the host
  itself is down, so it explains the dependents stopped behind that member
  too), by half otherwise (it answered).

A cause's score is ``0.8 * coverage + 0.2 * earliness``. Coverage is the
weighted share of the affected pairs it explains; earliness is
``exp(-lead / window)``, lead being how long after the incident's first onset
the first onset it explains came. Coverage is scaled by 0.9 for a workflow
with more than one step (the step where nearly all its failures are, above
90 %, is the more specific answer), by 0.9 for a step of one-step workflows
only (the other way round), and, for a host, by its specificity: the share of
the pairs seen on it lately that the incident affects (a host everything goes
through is no news). Ties go to host, step, dependency, workflow in that
order, then to the name. The top cause is the incident's root cause.

The gauge
---------
`PatternFinder.root_cause_info` gives the label sets of
``flowprobe_root_cause_info{incident,workflow,env,cause,kind} 1``: one series
per failing member of each *open* incident, with that incident's top cause,
so a workflow's own panels and alerts can join on ``workflow, env``. A
resolved incident's series disappear; its record stays in `incidents` for
``resolved_ttl`` seconds (at most ``keep_resolved`` of them). The labels are
bounded by the pairs, their steps and hosts.

Time is the runs' time (the finder's clock is the latest run seen), so a
replay of a history gives the same answers as it did live. A run at or before
the last one seen of its pair is ignored, so reading a history again after a
restart learns nothing twice. The finder is picklable (the worker saves it
with its state) and thread-safe: queries may run while `observe` learns.
"""

from __future__ import annotations

import bisect
import cmath
import math
import re
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from analytics.guarded import Guarded
from analytics.source import Run

__all__ = ["KINDS", "PatternFinder", "Topology", "find_period"]

Pair = tuple[str, str]  # (workflow, env)

KINDS = ("host", "step", "dependency", "workflow")  # cause kinds, in the order that breaks ties
NETWORK_REASONS = frozenset({"connect", "tls"})  # the host did not answer: the host is the news
DAY = 86400.0
WEEK = 7 * DAY
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _norm(name: str) -> str:
    """A step's identity by name: ``Log-In`` and ``login`` are the same step."""
    return re.sub(r"[^a-z0-9]", "", name.lower()) or name


def _pair(pair: Pair) -> dict[str, str]:
    return {"workflow": pair[0], "env": pair[1]}


def _round(x: float, digits: int = 3) -> float:
    return round(float(x), digits)


# ---------------------------------------------------------------- topology


@dataclass(frozen=True)
class Topology:
    """What the workflows say about each other: ``depends_on`` edges and step names.

    `from_api` takes the body of the collector's ``GET /api/workflows``.
    ``step_keys`` optionally names each (workflow, step) by what it requests
    (say ``POST /api/auth/login``), so steps named differently in two
    workflows are still one step; without it, steps match by name.
    """

    depends_on: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    steps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    step_keys: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_upstream", {w: self._closure(w) for w in self.depends_on})

    def _closure(self, workflow: str) -> frozenset[str]:
        seen: set[str] = set()
        todo = list(self.depends_on.get(workflow, ()))
        while todo:
            name = todo.pop()
            if name not in seen and name != workflow:  # a cycle is refused by the collector; be safe anyway
                seen.add(name)
                todo.extend(self.depends_on.get(name, ()))
        return frozenset(seen)

    @classmethod
    def from_api(cls, body: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Topology:
        """From ``{"items": [{"workflow", "env", "depends_on", "steps"}, ...]}`` or the items alone.

        A step is a name, or ``{"name": ..., "request": "POST /api/auth/login"}``;
        an item may instead carry ``step_requests``, a list parallel to ``steps``.
        """
        items = body.get("items", []) if isinstance(body, Mapping) else body
        depends_on: dict[str, tuple[str, ...]] = {}
        steps: dict[str, tuple[str, ...]] = {}
        keys: dict[tuple[str, str], str] = {}
        for item in items:
            name = str(item["workflow"])
            depends_on[name] = tuple(str(d) for d in item.get("depends_on") or ())
            names: list[str] = []
            requests = list(item.get("step_requests") or ())
            for i, step in enumerate(item.get("steps") or ()):
                step_name = str(step["name"]) if isinstance(step, Mapping) else str(step)
                request = step.get("request") if isinstance(step, Mapping) else (requests[i] if i < len(requests) else None)
                names.append(step_name)
                if request:
                    keys[(name, step_name)] = str(request)
            steps[name] = tuple(names)
        return cls(depends_on, steps, keys)

    def upstream(self, workflow: str) -> frozenset[str]:
        """Every workflow `workflow` depends on, directly or through another."""
        return self._upstream.get(workflow, frozenset())  # type: ignore[attr-defined,no-any-return]

    def step_key(self, workflow: str, step: str) -> str:
        return self.step_keys.get((workflow, step)) or _norm(step)


# ---------------------------------------------------------------- recurrence


def find_period(onsets: Sequence[float], *, min_occurrences: int = 5) -> tuple[float, float] | None:
    """The period (seconds) the onsets recur at, and a confidence in [0, 1]; None with too few.

    Candidates are the clusters of gaps between consecutive onsets (a period
    is a gap that recurs; a missed occurrence makes a gap of two periods).
    Each is refined by least squares over the onsets' slot numbers, then
    scored: the phase coherence of the onsets on that grid (the Rayleigh
    statistic, 1 when every onset is on it), times its coverage (the share
    of the grid's slots between the first and last onset that had one),
    times one over the onsets per filled slot, times the significance of the
    coherence (Rayleigh's test over that many onsets, Bonferroni-corrected
    for the candidates tried).
    """
    ts = sorted(set(onsets))
    if len(ts) < max(min_occurrences, 3):
        return None
    gaps = sorted(b - a for a, b in zip(ts, ts[1:]))
    clusters: list[list[float]] = []
    for gap in gaps:
        if clusters and gap <= clusters[-1][0] * 1.1:
            clusters[-1].append(gap)
        else:
            clusters.append([gap])
    best: tuple[float, float] | None = None
    tried = clusters[:12]  # the period is among the shortest gaps that recur
    for cluster in tried:
        fitted = _fit_period(ts, median(cluster))
        if fitted is None:
            continue
        period, coherence, coverage, unique = fitted
        # Rayleigh's test, Bonferroni over the candidates: four onsets on a grid are weak evidence, ten are strong.
        chance = min(1.0, len(tried) * math.exp(-len(ts) * coherence**2))
        confidence = coherence * coverage * unique * (1.0 - chance)
        if best is None or confidence > best[1] + 1e-9:
            best = (period, confidence)
    return best


def _fit_period(ts: Sequence[float], period: float) -> tuple[float, float, float, float] | None:
    """The refined period; the onsets' phase coherence on its grid; the share of its slots filled; onsets per slot, inverted."""
    if period <= 0:
        return None
    origin = ts[0]
    for _ in range(3):
        slots = [round((t - origin) / period) for t in ts]
        mean_k, mean_t = sum(slots) / len(slots), sum(ts) / len(ts)
        spread = sum((k - mean_k) ** 2 for k in slots)
        if spread == 0:
            return None
        refined = sum((k - mean_k) * (t - mean_t) for k, t in zip(slots, ts)) / spread
        if refined <= 0 or abs(refined - period) < 1e-9 * period:
            break
        period, origin = refined, mean_t - refined * mean_k
    slots = [round((t - origin) / period) for t in ts]
    phase = sum(cmath.exp(2j * math.pi * (t - origin - period * k) / period) for k, t in zip(slots, ts))
    coherence = abs(phase) / len(ts)
    filled = len(set(slots))
    return period, coherence, filled / (max(slots) - min(slots) + 1), filled / len(ts)


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    p = min(max(p, 1e-12), 1.0)
    return min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


# ---------------------------------------------------------------- state


@dataclass
class _PairState:
    last_t: float = -math.inf
    interval: float = 0.0  # the usual time between its runs (a moving average)
    failing: bool = False  # the last run that was not skipped failed
    passes: int = 0  # passed runs in a row since the last failure
    onsets: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    onset_count: int = 0
    by_hour: list[int] = field(default_factory=lambda: [0] * 24)  # runs (not skipped) per hour of the day, UTC
    by_weekday: list[int] = field(default_factory=lambda: [0] * 7)
    period: tuple[int, tuple[float, float] | None] = (0, None)  # (onset_count, find_period's answer) from the last query


@dataclass
class _Affected:
    """What one pair did during one incident: a failing member, or a pair skipped behind one."""

    first: float  # its first failed or skipped run in the incident
    onset: float | None = None  # its first failed run: None while it has only been skipped
    failed: int = 0
    skipped: int = 0
    passed: int = 0
    times: deque[float] = field(default_factory=lambda: deque(maxlen=512))  # its failed and skipped runs
    spans: deque[list[float]] = field(default_factory=lambda: deque(maxlen=256))  # [first failure, first pass after it]
    last_failure: float = -math.inf
    steps: Counter[str] = field(default_factory=Counter)  # failed step -> failed runs
    reasons: Counter[str] = field(default_factory=Counter)
    hosts: Counter[str] = field(default_factory=Counter)  # host -> failed runs that reached it
    network: Counter[str] = field(default_factory=Counter)  # host -> of those, connection or TLS failures
    recovered_at: float | None = None

    @property
    def weight(self) -> float:
        """How broken the pair was during the incident: its failed and skipped runs over all its runs."""
        hit = self.failed + self.skipped
        return hit / (hit + self.passed) if hit else 0.0

    def failing_at(self, t: float, slack: float) -> bool:
        """Whether the pair was failing at `t`; `slack` early, as a run a moment before the first failure did not know yet."""
        return any(start - slack <= t and (end is None or t < end) for start, end in self.spans)


@dataclass
class _Incident:
    id: str
    pairs: dict[Pair, _Affected] = field(default_factory=dict)
    ended_at: float | None = None
    last_failure: float = -math.inf

    @property
    def members(self) -> dict[Pair, _Affected]:
        return {p: a for p, a in self.pairs.items() if a.onset is not None}

    @property
    def started_at(self) -> float:
        return min(a.onset for a in self.pairs.values() if a.onset is not None)


@dataclass
class _CoOccurrence:
    count: int = 0
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=64))  # onset of the second pair minus the first's


@dataclass
class _Cause:
    kind: str
    name: str
    explains: dict[Pair, float] = field(default_factory=dict)  # affected pair -> how much of it (0..1)
    related: set[Pair] = field(default_factory=set)  # a dependency's dependents; a step's (workflow, "")
    network: int = 0  # a host's connection and TLS failures
    score: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)

    def add(self, pair: Pair, weight: float) -> None:
        self.explains[pair] = min(1.0, max(self.explains.get(pair, 0.0), weight))

    def as_json(self) -> dict[str, Any]:
        return {"cause": self.name, "kind": self.kind, "score": _round(self.score), "evidence": self.evidence}


# ---------------------------------------------------------------- the finder


class PatternFinder(Guarded):
    """Recurring failures, correlations, cascades and incidents with ranked root causes.

    >>> finder = PatternFinder(Topology({"health-check": (), "user-login": ("health-check",)}))
    >>> finder.observe([Run("health-check", "prod", 0.0, 0.1, "failure", failed_step="health", reason="status"),
    ...                 Run("user-login", "prod", 1.0, 0.0, "skipped", skip_reason="dependency")])
    >>> [(i["status"], i["top"]) for i in finder.incidents()]
    [('open', {'cause': 'health-check', 'kind': 'dependency'})]
    """

    def __init__(
        self,
        topology: Topology | None = None,
        *,
        window: float = 300.0,
        recover_runs: int = 3,
        close_after: float = 1800.0,
        keep_resolved: int = 20,
        resolved_ttl: float = 3600.0,
        min_occurrences: int = 5,
        min_confidence: float = 0.6,
        max_causes: int = 5,
        host_ttl: float = 6 * 3600.0,
        max_correlations: int = 10_000,
    ) -> None:
        self.topology = topology
        self.window = window
        self.recover_runs = recover_runs
        self.close_after = close_after
        self.keep_resolved = keep_resolved
        self.resolved_ttl = resolved_ttl
        self.min_occurrences = min_occurrences
        self.min_confidence = min_confidence
        self.max_causes = max_causes
        self.host_ttl = host_ttl
        self.max_correlations = max_correlations
        self.now = -math.inf  # the latest run time seen
        self.first_t = math.inf
        self._pairs: dict[Pair, _PairState] = {}
        self._open: dict[str, _Incident] = {}
        self._resolved: deque[_Incident] = deque()
        self._onset_index: list[tuple[float, str, str]] = []  # recent onsets (t, workflow, env), sorted
        self._co: dict[tuple[Pair, Pair], _CoOccurrence] = {}
        self._hosts: dict[str, dict[Pair, float]] = {}  # host -> pair -> last run that reached it
        Guarded.__init__(self)  # self._lock: the API reads while the worker's thread learns

    # ------------------------------------------------------------ learning

    def observe(self, runs: Iterable[Run]) -> None:
        """Learn a batch of runs (in time order within each pair; pairs may interleave)."""
        with self._lock:
            for run in sorted(runs, key=lambda r: r.t):  # stable: each pair's order is kept
                self._observe(run)
            self._housekeeping()

    def _observe(self, run: Run) -> None:
        state = self._pairs.setdefault(run.pair, _PairState())
        if run.t <= state.last_t:
            return  # seen already (a history read again after a restart)
        if state.last_t > -math.inf:
            gap = run.t - state.last_t
            state.interval = gap if state.interval == 0 else 0.8 * state.interval + 0.2 * gap
        state.last_t = run.t
        self.now = max(self.now, run.t)
        self.first_t = min(self.first_t, run.t)
        self._expire()
        if run.outcome == "skipped":
            if run.skip_reason == "dependency":
                self._skipped(run)
            return
        for host in run.hosts:
            self._hosts.setdefault(host, {})[run.pair] = run.t
        when = time.gmtime(run.t)
        state.by_hour[when.tm_hour] += 1
        state.by_weekday[when.tm_wday] += 1
        if run.failed:
            if not state.failing:
                self._onset(run, state)
            state.failing, state.passes = True, 0
            self._failed(run)
        else:
            state.failing = False
            state.passes += 1
            self._passed(run, state)

    def _onset(self, run: Run, state: _PairState) -> None:
        state.onsets.append(run.t)
        state.onset_count += 1
        index = self._onset_index
        lo = bisect.bisect_left(index, (run.t - self.window,))
        hi = bisect.bisect_right(index, (run.t + self.window, "\uffff"))
        for t, workflow, env in index[lo:hi]:
            other = (workflow, env)
            if other != run.pair:
                # Counted once, by whichever onset arrives second.
                first, second = sorted([(other, t), (run.pair, run.t)])
                entry = self._co.setdefault((first[0], second[0]), _CoOccurrence())
                entry.count += 1
                entry.lags.append(second[1] - first[1])
        bisect.insort(index, (run.t, run.workflow, run.env))

    def _incident_of(self, pair: Pair) -> _Incident | None:
        for incident in self._open.values():
            if pair in incident.pairs:
                return incident
        return None

    def _failed(self, run: Run) -> None:
        incident = self._incident_of(run.pair) or self._joinable(run) or self._new_incident(run)
        member = incident.pairs.setdefault(run.pair, _Affected(first=run.t))
        if member.onset is None:
            member.onset = run.t
        if not member.spans or member.spans[-1][1] is not None:
            member.spans.append([run.t, None])  # type: ignore[list-item]
        member.recovered_at = None
        member.failed += 1
        member.times.append(run.t)
        member.last_failure = run.t
        if run.failed_step:
            member.steps[run.failed_step] += 1
        member.reasons[run.reason or run.outcome] += 1
        for host in run.hosts:
            member.hosts[host] += 1
            if run.reason in NETWORK_REASONS:
                member.network[host] += 1
        incident.last_failure = max(incident.last_failure, run.t)

    def _joinable(self, run: Run) -> _Incident | None:
        """The open incident a pair's new failure belongs to, if any.

        One that is failing now: a member's last run failed, or a member this
        workflow depends on has not recovered. In the pair's env; in another
        env only within the window of its start. An incident whose members
        are all passing again, though not yet recovered, takes no newcomer:
        a blip before a fault must not swallow the fault.
        """
        upstream = self.topology.upstream(run.workflow) if self.topology is not None else frozenset()

        def failing(incident: _Incident, env: str | None) -> bool:
            return any(
                (env is None or e == env) and (self._pairs[(w, e)].failing or (w in upstream and m.recovered_at is None))
                for (w, e), m in incident.members.items()
            )

        same_env = [i for i in self._open.values() if failing(i, run.env)]
        near = [i for i in self._open.values() if abs(run.t - i.started_at) <= self.window and failing(i, None)]
        chosen = same_env or near
        return max(chosen, key=lambda i: i.last_failure) if chosen else None

    def _new_incident(self, run: Run) -> _Incident:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(run.t))
        incident = _Incident(f"{stamp}-{run.workflow}-{run.env}")
        self._open[incident.id] = incident
        return incident

    def _passed(self, run: Run, state: _PairState) -> None:
        incident = self._incident_of(run.pair)
        if incident is None:
            return
        entry = incident.pairs[run.pair]
        entry.passed += 1
        if entry.spans and entry.spans[-1][1] is None:
            entry.spans[-1][1] = run.t
        if entry.onset is None:
            return  # only ever skipped: it has nothing to recover from
        if entry.recovered_at is None and state.passes >= self.recover_runs:
            entry.recovered_at = run.t
        members = incident.members.values()
        if all(m.recovered_at is not None for m in members):
            self._resolve(incident, max(m.recovered_at or run.t for m in members))

    def _skipped(self, run: Run) -> None:
        """A run skipped because a dependency fails: recorded with that dependency's incident."""
        upstream = self.topology.upstream(run.workflow) if self.topology is not None else None
        # The incident the pair is already in first, then the most recently failing.
        for incident in sorted(self._open.values(), key=lambda i: (run.pair not in i.pairs, -i.last_failure)):
            failing = [p for p, m in incident.members.items() if p[1] == run.env and m.recovered_at is None]
            if failing and (upstream is None or any(w in upstream for w, _ in failing)):
                entry = incident.pairs.setdefault(run.pair, _Affected(first=run.t))
                entry.skipped += 1
                entry.times.append(run.t)
                return

    def _resolve(self, incident: _Incident, ended_at: float) -> None:
        incident.ended_at = ended_at
        del self._open[incident.id]
        self._resolved.append(incident)

    def _expire(self) -> None:
        """Resolve the open incidents with no failure for close_after: before a new failure could join one."""
        for incident in list(self._open.values()):
            if self.now - incident.last_failure >= self.close_after:
                self._resolve(incident, incident.last_failure + self.close_after)

    def _housekeeping(self) -> None:
        now = self.now
        while self._resolved and (len(self._resolved) > self.keep_resolved or (self._resolved[0].ended_at or now) < now - self.resolved_ttl):
            self._resolved.popleft()
        horizon = max(self.window, 3600.0)
        cut = bisect.bisect_left(self._onset_index, (now - horizon,))
        del self._onset_index[:cut]
        for host in list(self._hosts):
            seen = {p: t for p, t in self._hosts[host].items() if t >= now - self.host_ttl}
            if seen:
                self._hosts[host] = seen
            else:
                del self._hosts[host]
        if len(self._co) > self.max_correlations:
            # Keep the pairs that co-occurred most; the rest start again from zero.
            keep = sorted(self._co.items(), key=lambda kv: -kv[1].count)[: self.max_correlations // 2]
            self._co = dict(keep)

    # ------------------------------------------------------------ recurring failures

    def recurring(self, min_confidence: float | None = None) -> list[dict[str, Any]]:
        """Pairs whose failures recur: every N seconds, at an hour of the day, on a day of the week."""
        floor = self.min_confidence if min_confidence is None else min_confidence
        found: list[dict[str, Any]] = []
        with self._lock:
            for pair, state in sorted(self._pairs.items()):
                found.extend(p for p in self._recurrences(pair, state) if p["confidence"] >= floor)
        return sorted(found, key=lambda p: (-p["confidence"], p["workflow"], p["env"], p["kind"]))

    def _recurrences(self, pair: Pair, state: _PairState) -> list[dict[str, Any]]:
        onsets = list(state.onsets)
        if len(onsets) < 3:
            return []
        found: list[dict[str, Any]] = []
        calendar = [
            self._calendar(onsets, state.by_hour, lambda t: time.gmtime(t).tm_hour, "hour_of_day", DAY, lambda t: int(t // DAY)),
            self._calendar(onsets, state.by_weekday, lambda t: time.gmtime(t).tm_wday, "day_of_week", WEEK,
                           lambda t: int((t + 3 * DAY) // WEEK)),  # 1970-01-01 was a Thursday: weeks from Monday
        ]
        for pattern in calendar:
            if pattern is not None:
                found.append({**_pair(pair), **pattern})
        if state.period[0] != state.onset_count:  # the onsets changed since the last query
            state.period = (state.onset_count, find_period(onsets, min_occurrences=self.min_occurrences))
        period = state.period[1]
        if period is not None:
            seconds, confidence = period
            # A daily or weekly period that the calendar already names is not news twice.
            covered = any(abs(seconds - p["period_s"]) <= 0.02 * p["period_s"] for p in found)
            if not covered:
                found.append({**_pair(pair), "kind": "period", "period_s": _round(seconds), "confidence": _round(confidence),
                              "occurrences": len(onsets), "last": onsets[-1], "next_expected": _round(onsets[-1] + seconds)})
        return found

    def _calendar(self, onsets: list[float], exposure: list[int], bin_of: Any, kind: str, period: float, cycle_of: Any) -> dict[str, Any] | None:
        """Onsets packed into one bin of the day (or week) far beyond chance, over several cycles."""
        counts = Counter(bin_of(t) for t in onsets)
        top, k = counts.most_common(1)[0]
        cycles = {cycle_of(t) for t in onsets if bin_of(t) == top}
        if len(cycles) < 3:  # one bad night is not a habit
            return None
        runs = sum(exposure)
        p = exposure[top] / runs if runs else 1 / len(exposure)
        significance = 1.0 - min(1.0, len(exposure) * _binomial_tail(k, len(onsets), p))  # Bonferroni over the bins
        confidence = significance * k / len(onsets)
        where = {"hour": top} if kind == "hour_of_day" else {"weekday": _WEEKDAYS[top]}
        return {"kind": kind, "period_s": period, "confidence": _round(confidence), "occurrences": k, **where, "last": onsets[-1]}

    # ------------------------------------------------------------ correlations and cascades

    def correlations(self, min_score: float = 0.5, min_count: int = 2, min_lift: float = 3.0) -> list[dict[str, Any]]:
        """Pairs whose failure onsets co-occur within the window, leader first.

        `min_score`: the share of the rarer pair's onsets that co-occur;
        `min_lift`: co-occurrences over those chance gives two pairs failing
        that often, independently, over the time seen.
        """
        with self._lock:
            return self._correlations(min_score, min_count, min_lift)

    def _correlations(self, min_score: float, min_count: int, min_lift: float) -> list[dict[str, Any]]:
        span = max(self.now - self.first_t, self.window)
        found = []
        for (a, b), entry in self._co.items():
            na, nb = self._pairs[a].onset_count, self._pairs[b].onset_count
            score = min(1.0, entry.count / max(1, min(na, nb)))
            if entry.count < min_count or score < min_score:
                continue
            lag = median(entry.lags)
            leads = sum(1 for x in entry.lags if x > 0) / len(entry.lags)
            if lag < 0 or (lag == 0 and leads < 0.5):  # the leader first
                a, b, na, nb, lag, leads = b, a, nb, na, -lag, sum(1 for x in entry.lags if x < 0) / len(entry.lags)
            chance = na * nb * 2 * self.window / span
            lift = entry.count / chance if chance else math.inf
            if lift < min_lift:
                continue
            found.append({
                "a": _pair(a), "b": _pair(b), "co_occurrences": entry.count, "a_onsets": na, "b_onsets": nb,
                "score": _round(score), "lift": _round(lift),
                "lag_s": _round(lag), "lead_consistency": _round(leads),
            })
        return sorted(found, key=lambda c: (-c["score"], -c["co_occurrences"], c["a"]["workflow"], c["b"]["workflow"]))

    def cascades(self, min_score: float = 0.5, min_count: int = 2, min_lift: float = 3.0) -> list[dict[str, Any]]:
        """Connected groups of correlated pairs, in onset order, with each member's offset from the leader."""
        with self._lock:
            links = self._correlations(min_score, min_count, min_lift)
        neighbours: dict[Pair, dict[Pair, float]] = {}
        for link in links:
            a, b = (link["a"]["workflow"], link["a"]["env"]), (link["b"]["workflow"], link["b"]["env"])
            neighbours.setdefault(a, {})[b] = link["lag_s"]
            neighbours.setdefault(b, {})[a] = -link["lag_s"]
        groups, seen = [], set()
        for start in sorted(neighbours):
            if start in seen:
                continue
            # Offsets by breadth-first walk from one member, then shifted so the leader is at 0.
            offsets, todo = {start: 0.0}, [start]
            while todo:
                node = todo.pop(0)
                for other, lag in sorted(neighbours[node].items()):
                    if other not in offsets:
                        offsets[other] = offsets[node] + lag
                        todo.append(other)
            seen.update(offsets)
            lead = min(offsets.values())
            order = sorted(offsets, key=lambda p: (offsets[p], p))
            members = set(offsets)
            groups.append({
                "members": [{**_pair(p), "offset_s": _round(offsets[p] - lead)} for p in order],
                "links": [link for link in links if (link["a"]["workflow"], link["a"]["env"]) in members],
            })
        return sorted(groups, key=lambda g: -len(g["members"]))

    # ------------------------------------------------------------ incidents

    def incidents(self, open_only: bool = False) -> list[dict[str, Any]]:
        """Open incidents, then the recently resolved ones, newest first, as JSON-ready dicts."""
        with self._lock:
            chosen = list(self._open.values()) + ([] if open_only else list(self._resolved))
            return [self._describe(i) for i in sorted(chosen, key=lambda i: (i.ended_at is not None, -i.started_at, i.id))]

    def root_cause_info(self) -> list[dict[str, str]]:
        """Label sets of ``flowprobe_root_cause_info`` (value 1): each failing member of each open incident."""
        rows = []
        with self._lock:
            for incident in sorted(self._open.values(), key=lambda i: i.id):
                causes = self._rank(incident)
                if not causes:
                    continue
                top = causes[0]
                for workflow, env in sorted(incident.members):
                    rows.append({"incident": incident.id, "workflow": workflow, "env": env, "cause": top.name, "kind": top.kind})
        return rows

    def _describe(self, incident: _Incident) -> dict[str, Any]:
        start = incident.started_at
        causes = [c.as_json() for c in self._rank(incident)[: self.max_causes]]
        members = sorted(incident.members.items(), key=lambda kv: (kv[1].onset, kv[0]))
        return {
            "id": incident.id,
            "status": "open" if incident.ended_at is None else "resolved",
            "started_at": start,
            "ended_at": incident.ended_at,
            "members": [
                {
                    **_pair(pair), "onset": m.onset, "lag_s": _round((m.onset or start) - start),
                    "failed_runs": m.failed, "skipped_runs": m.skipped, "passed_runs": m.passed,
                    "failed_step": m.steps.most_common(1)[0][0] if m.steps else None,
                    "reason": m.reasons.most_common(1)[0][0] if m.reasons else None,
                    "recovered_at": m.recovered_at,
                }
                for pair, m in members
            ],
            "skipped": [
                {**_pair(pair), "since": a.first, "runs": a.skipped} for pair, a in sorted(incident.pairs.items()) if a.onset is None
            ],
            "causes": causes,
            "top": {"cause": causes[0]["cause"], "kind": causes[0]["kind"]} if causes else None,
        }

    def _affected(self, incident: _Incident) -> dict[Pair, float]:
        """The pairs the incident affects, each with how broken it was.

        The failing members, and the pairs skipped behind one of them (known
        only with a topology: without one, a skip says nothing about whom).
        """
        affected = {}
        for pair, entry in incident.pairs.items():
            if entry.onset is not None or (
                self.topology is not None
                and any(env == pair[1] and w in self.topology.upstream(pair[0]) for w, env in incident.members)
            ):
                affected[pair] = entry.weight
        return affected

    def _rank(self, incident: _Incident) -> list[_Cause]:
        affected = self._affected(incident)
        topology = self.topology
        causes: dict[tuple[str, str], _Cause] = {}
        names: dict[str, Counter[str]] = {}  # step key -> the names it goes by

        def cause(kind: str, key: str) -> _Cause:
            return causes.setdefault((kind, key), _Cause(kind, key))

        def steps_of(workflow: str) -> tuple[str, ...]:
            return topology.steps.get(workflow, ()) if topology is not None else ()

        def key_of(workflow: str, step: str) -> str:
            return topology.step_key(workflow, step) if topology is not None else _norm(step)

        for pair, member in incident.members.items():
            workflow, env = pair
            runs = member.failed + member.skipped
            mine = cause("workflow", workflow)
            mine.add(pair, member.failed / runs)
            dependents: dict[Pair, float] = {}
            if topology is not None:
                slack = self._pairs[pair].interval
                for other in affected:
                    if other != pair and other[1] == env and workflow in topology.upstream(other[0]):
                        # A dependent is explained by the runs it failed or skipped while this one was failing.
                        times = incident.pairs[other].times
                        share = sum(1 for t in times if member.failing_at(t, slack)) / len(times) if times else 0.0
                        if share > 0:
                            dependents[other] = share
                            mine.add(other, share)
                            mine.related.add(other)
            for step, n in member.steps.items():
                key = key_of(workflow, step)
                names.setdefault(key, Counter())[step] += n
                found = cause("step", key)
                found.add(pair, n / runs)
                found.related.add((workflow, ""))
            for host, n in member.hosts.items():
                network = member.network[host]
                found = cause("host", host)
                found.add(pair, (network + 0.5 * (n - network)) / runs)
                found.network += network
                if network:  # an unreachable host also stopped what depends on the pairs that reach it
                    for other, share in dependents.items():
                        found.add(other, share * network / member.failed)
        if topology is not None:
            # A pair skipped before it could reach a step the incident fails at: half the evidence of a failure there.
            for pair in affected:
                entry = incident.pairs[pair]
                if not entry.skipped:
                    continue
                for step in steps_of(pair[0]):
                    found = causes.get(("step", key_of(pair[0], step)))
                    if found is not None:
                        at = sum(n for s, n in entry.steps.items() if key_of(pair[0], s) == found.name)
                        found.add(pair, (at + 0.5 * entry.skipped) / (entry.failed + entry.skipped))

        start = incident.started_at
        total = sum(affected.values())
        ranked = []
        for (group, key), found in causes.items():
            explained = {p: w for p, w in found.explains.items() if w > 0 and p in affected}
            coverage = sum(affected[p] * w for p, w in explained.items()) / total
            evidence: dict[str, Any] = {}
            if group == "workflow":
                found.kind = "dependency" if found.related else "workflow"
                if found.kind == "dependency":
                    evidence["dependents"] = [_pair(p) for p in sorted(found.related)]
                elif len(steps_of(key)) != 1:
                    coverage *= 0.9  # one of its steps, where every failure is, would be more specific
            elif group == "step":
                found.name = names[key].most_common(1)[0][0]
                workflows = sorted(w for w, _ in found.related)
                evidence["workflows"] = workflows
                if all(len(steps_of(w)) == 1 for w in workflows):
                    coverage *= 0.9  # the step of a one-step workflow is no more specific than the workflow
            else:
                seen = set(self._hosts.get(key, {})) | set(explained)
                specificity = len(seen & set(affected)) / len(seen)
                coverage *= specificity
                evidence.update(specificity=_round(specificity), network_failures=found.network)
            onset = min(a.onset for p, a in incident.members.items() if p in explained and a.onset is not None)
            lead = onset - start
            found.score = 0.8 * coverage + 0.2 * math.exp(-lead / self.window)
            found.evidence = {
                "coverage": _round(coverage), "explains": [_pair(p) for p in sorted(explained)], "affected": len(affected),
                "onset": onset, "lead_s": _round(lead), **evidence,
            }
            ranked.append(found)
        ranked.sort(key=lambda c: (-round(c.score, 9), KINDS.index(c.kind), c.name))
        return ranked
