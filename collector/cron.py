"""Cron expressions read the way crontab(5) reads them.

APScheduler 3 numbers the days of the week from Monday, also in
``CronTrigger.from_crontab`` (agronholm/apscheduler#286, not fixable in 3.x),
so ``0 6 * * 1`` would run on Tuesdays and ``7`` (Sunday) is refused. Every
cron in flowprobe (workflow schedules, report schedules) goes through
`crontab_trigger`, which turns the day-of-week field into day names, which
mean the same to both.
"""

from __future__ import annotations

from datetime import UTC

from apscheduler.triggers.cron import CronTrigger

__all__ = ["crontab_days", "crontab_trigger"]


_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_day(text: str) -> int:
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    if text in _CRON_DAYS:
        return _CRON_DAYS.index(text)
    raise ValueError(f"invalid day of week {text!r}")


def crontab_days(field_text: str) -> str:
    """A crontab day-of-week field (0 or 7 Sunday, 1 Monday ... 6 Saturday; names too) as APScheduler 3 day names.

    APScheduler 3 numbers days from Monday, also in ``CronTrigger.from_crontab``
    (agronholm/apscheduler#286, not fixable in 3.x), so ``0 6 * * 1`` would run
    on Tuesdays. Names mean the same to both, so the field becomes names."""
    if field_text == "*":
        return field_text
    days: set[int] = set()
    for item in field_text.lower().split(","):
        body, slash, step_text = item.partition("/")
        step = int(step_text) if slash else 1
        if step < 1:
            raise ValueError(f"invalid step in {item!r}")
        if body == "*":
            low, high = 0, 6
        elif "-" in body:
            first, _, last = body.partition("-")
            low, high = _cron_day(first), _cron_day(last)
            high += 7 if high < low else 0
        else:
            low = _cron_day(body)
            high = 6 if slash else low  # 1/2: from Monday, every other day
        days.update(day % 7 for day in range(low, high + 1, step))
    return ",".join(_CRON_DAYS[day] for day in sorted(days))


def crontab_trigger(expression: str) -> CronTrigger:
    """A CronTrigger (UTC) that reads `expression` the way crontab(5) does, day of week included."""
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(f"wrong number of fields; got {len(parts)}, expected 5")
    minute, hour, day, month, day_of_week = parts
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=crontab_days(day_of_week), timezone=UTC)
