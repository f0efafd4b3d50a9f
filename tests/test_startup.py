"""harness.train.startup: an attempt's start-up in parts, from marks taken in order."""

from __future__ import annotations

import time

import pytest

from harness.train.startup import PARTS, Startup, attempt_began


def test_parts_are_the_gaps_between_marks_from_when_the_attempt_was_handed_to_ray():
    began = time.time() - 3.0
    startup = Startup(began, entered=began + 2.0)
    for part in PARTS[1:]:
        startup.mark(part)
    startup.step_done()  # a second first step is not marked again
    record = startup.record()
    assert list(PARTS) == sorted(record["parts_s"], key=PARTS.index) and record["began"] == round(began, 3)
    assert record["parts_s"]["worker_group"] == pytest.approx(2.0, abs=1e-3)
    assert record["parts_s"]["imports"] == pytest.approx(1.0, abs=0.5)
    assert record["to_first_step_s"] == pytest.approx(sum(record["parts_s"].values()), abs=1e-2)


def test_without_a_record_of_the_hand_off_the_start_up_counts_from_the_training_function():
    startup = Startup(None)
    startup.mark("imports")
    record = startup.record()
    assert list(record["parts_s"]) == ["imports"] and record["began"] > 0
    with pytest.raises(AssertionError):
        startup.mark("imports")  # each part ends once


def test_the_attempt_began_at_the_latest_submission_or_end_of_an_attempt():
    rows = [{"event": "submitted", "when": "2026-01-01T00:00:00+00:00"},
            {"event": "started", "when": "2026-01-01T00:00:30+00:00"},
            {"event": "ended", "when": "2026-01-01T00:01:00+00:00", "by": "ray train"}]
    assert attempt_began(rows[:2]) == 1767225600.0
    assert attempt_began(rows) == 1767225660.0
    assert attempt_began([]) is None
