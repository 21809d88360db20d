"""Schedule slots (time zones, daylight saving, alignment) and their configuration errors."""

from __future__ import annotations

from datetime import datetime, time, timezone

import pytest

from dwh.exceptions import ConfigError
from dwh.scheduler import Slot, parse_slots
from dwh.settings import SchedulerSettings

UTC = timezone.utc


def test_daily_slot_in_a_time_zone_follows_daylight_saving() -> None:
    slot = Slot("daily", at=time(2, 30), zone="America/New_York")
    # Winter: 02:30 EST = 07:30 UTC; summer: 02:30 EDT = 06:30 UTC.
    assert slot.next(datetime(2025, 1, 10, 12, 0, tzinfo=UTC)) == datetime(
        2025, 1, 11, 7, 30, tzinfo=UTC
    )
    assert slot.next(datetime(2025, 7, 10, 12, 0, tzinfo=UTC)) == datetime(
        2025, 7, 11, 6, 30, tzinfo=UTC
    )
    # latest: the slot of the same local day once it has passed, else the day before.
    assert slot.latest(datetime(2025, 7, 10, 6, 29, tzinfo=UTC)) == datetime(
        2025, 7, 9, 6, 30, tzinfo=UTC
    )
    assert slot.latest(datetime(2025, 7, 10, 6, 30, tzinfo=UTC)) == datetime(
        2025, 7, 10, 6, 30, tzinfo=UTC
    )


def test_every_n_minutes_is_aligned() -> None:
    slot = Slot("every", minutes=15)
    now = datetime(2025, 3, 1, 10, 7, 12, tzinfo=UTC)
    assert slot.latest(now) == datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
    assert slot.next(now) == datetime(2025, 3, 1, 10, 15, tzinfo=UTC)
    assert slot.next(datetime(2025, 3, 1, 10, 15, tzinfo=UTC)) == datetime(
        2025, 3, 1, 10, 30, tzinfo=UTC
    )


def test_parse_slots_reads_both_schedules() -> None:
    slots = parse_slots(
        SchedulerSettings(daily_at="23:05", timezone="Europe/Berlin", every_minutes=30)
    )
    assert [s.describe() for s in slots] == ["daily at 23:05 Europe/Berlin", "every 30 min"]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (SchedulerSettings(daily_at="120"), "quote it"),  # YAML read an unquoted 02:00 as 120
        (SchedulerSettings(daily_at="25:00"), "not a time HH:MM"),
        (SchedulerSettings(timezone="Mars/Olympus"), "not an IANA time zone"),
        (SchedulerSettings(daily_at="", every_minutes=0), "no schedule configured"),
        (SchedulerSettings(every_minutes=-5), "every_minutes"),
    ],
)
def test_bad_schedule_settings_are_config_errors(cfg: SchedulerSettings, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_slots(cfg)
