"""The engine busy meter on a fake clock: the union of in-flight intervals over a sliding window."""

from __future__ import annotations

from workers.inference.busy import BusyMeter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_overlapping_batches_count_once() -> None:
    clock = Clock()
    meter = BusyMeter(window_s=100, clock=clock)
    clock.now += 10  # idle 10 s
    with meter.running(2):
        clock.now += 5
        with meter.running(3):  # a second batch in flight: still one busy interval
            clock.now += 5
            assert meter.in_flight == 5
        clock.now += 10
    clock.now += 20  # idle again
    assert meter.in_flight == 0
    assert meter.fraction() == 20 / 50


def test_window_forgets_old_work_and_counts_open_interval() -> None:
    clock = Clock()
    meter = BusyMeter(window_s=10, clock=clock)
    with meter.running():
        clock.now += 30
    clock.now += 5
    assert meter.fraction() == 5 / 10  # only the last 5 s of the 30 s busy span are in the window
    clock.now += 20
    assert meter.fraction() == 0.0
    with meter.running():
        clock.now += 4
        assert meter.fraction() == 4 / 10
