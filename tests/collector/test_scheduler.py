"""Scheduling: --shard parsing, spread start times, no overlap, missed runs counted.

How shards split the pairs (coverage, movement, balance) is tests/test_sharding.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter

import pytest

from collector.config import Schedule
from collector.scheduler import Scheduler, Shard, _DueCounter, _trigger

UTC = dt.timezone.utc


def test_shard_parse() -> None:
    assert Shard.parse("1/3") == Shard(1, 3)
    assert Shard.parse("0/1") == Shard()
    for bad in ("3/3", "-1/2", "a/b", "1", "0/0", "1/2/3"):
        with pytest.raises(ValueError, match="invalid shard"):
            Shard.parse(bad)


def test_interval_start_times_are_spread_across_the_interval() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=UTC)
    firsts = [_trigger(Schedule(every=60), (f"wf-{i}", "prod"), now).get_next_fire_time(None, now) for i in range(600)]
    offsets = [(f - now).total_seconds() for f in firsts]
    assert all(0 <= o < 60 for o in offsets)
    per_ten_seconds = Counter(int(o // 10) for o in offsets)
    assert sorted(per_ten_seconds) == [0, 1, 2, 3, 4, 5]
    assert max(per_ten_seconds.values()) < 2 * min(per_ten_seconds.values())
    # Stable: the same pair gets the same offset in another process or after a reload.
    again = _trigger(Schedule(every=60), ("wf-7", "prod"), now).get_next_fire_time(None, now)
    assert again == firsts[7]


def test_due_counter_counts_fire_times_up_to_now() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=UTC)
    trigger = _trigger(Schedule(every=10), ("a", "b"), now)
    first = trigger.get_next_fire_time(None, now)
    counter = _DueCounter(trigger, first)
    assert counter.take(first - dt.timedelta(seconds=1)) == (0, None)
    assert counter.take(first) == (1, first)
    late = first + dt.timedelta(seconds=35)
    assert counter.take(late) == (3, first + dt.timedelta(seconds=30))
    cron = _trigger(Schedule(cron="*/5 * * * *"), ("a", "b"), now)
    counter = _DueCounter(cron, cron.get_next_fire_time(None, now))
    assert counter.take(now + dt.timedelta(minutes=16))[0] == 4  # :00 :05 :10 :15


def test_runs_never_overlap_and_skipped_ones_are_counted_as_missed() -> None:
    async def main() -> tuple[int, int, int]:
        active = peak = made = 0
        missed: Counter[tuple[str, str]] = Counter()

        async def execute(workflow: str, env: str) -> None:
            nonlocal active, peak, made
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(2.3)  # longer than the 1 s interval
            active -= 1
            made += 1

        scheduler = Scheduler(execute, on_missed=lambda pair, n: missed.update({pair: n}))
        scheduler.start()
        scheduler.apply({("slow", "prod"): Schedule(every=1)})
        await asyncio.sleep(5.5)
        await scheduler.shutdown(grace=5)
        return peak, made, missed[("slow", "prod")]

    started = time.monotonic()
    peak, made, missed = asyncio.run(main())
    assert peak == 1
    assert made >= 2
    # About 5 fire times came due while runs of 2.3 s held the slot; the ones not made are counted.
    assert missed >= 2
    assert time.monotonic() - started < 15


def test_shutdown_waits_for_runs_in_flight_within_grace() -> None:
    async def main() -> tuple[list[str], int]:
        finished: list[str] = []

        async def execute(workflow: str, env: str) -> None:
            await asyncio.sleep(0.5 if workflow == "quick" else 30)
            finished.append(workflow)

        scheduler = Scheduler(execute)
        scheduler.start()
        scheduler.apply({("quick", "prod"): Schedule(every=1), ("stuck", "prod"): Schedule(every=1)})
        while not scheduler._inflight or len(scheduler._inflight) < 2:
            await asyncio.sleep(0.05)
        cancelled = await scheduler.shutdown(grace=2)
        return finished, cancelled

    finished, cancelled = asyncio.run(main())
    assert "quick" in finished and "stuck" not in finished
    assert cancelled == 1


def test_workflow_crons_read_the_day_of_week_as_crontab_does() -> None:
    # APScheduler 3 alone would run "* * * * 1" on Tuesdays (it counts from Monday).
    monday = dt.datetime(2026, 11, 30, tzinfo=UTC)
    assert monday.weekday() == 0
    trigger = _trigger(Schedule(cron="0 6 * * 1"), ("a", "b"), monday - dt.timedelta(days=3))
    assert trigger.get_next_fire_time(None, monday - dt.timedelta(days=3)) == monday.replace(hour=6)
    sunday = _trigger(Schedule(cron="0 6 * * 7"), ("a", "b"), monday)
    assert sunday.get_next_fire_time(None, monday).weekday() == 6
