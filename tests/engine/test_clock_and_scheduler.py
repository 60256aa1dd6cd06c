"""Scheduler and clocks: exact times, stable order for equal times."""
import pytest

from pytest_flopynet.engine.clock import VirtualClock, WallClock
from pytest_flopynet.engine.scheduler import Scheduler


def test_equal_times_fire_in_the_order_they_were_added():
    clock, fired = VirtualClock(), []
    for label in "abc":
        clock.scheduler.at(5.0, lambda label=label: fired.append((label, clock.now())))
    clock.scheduler.at(1.0, lambda: fired.append(("first", clock.now())))
    clock.advance_to(10.0)
    assert fired == [("first", 1.0), ("a", 5.0), ("b", 5.0), ("c", 5.0)]
    assert clock.now() == 10.0


def test_callbacks_scheduled_while_firing_run_at_their_own_time():
    clock, fired = VirtualClock(), []
    clock.scheduler.at(2.0, lambda: clock.scheduler.at(2.5, lambda: fired.append(clock.now())))
    clock.advance_to(2.2)
    assert fired == [] and clock.now() == 2.2
    clock.advance_to(3.0)
    assert fired == [2.5]


def test_cancelled_entries_do_not_fire():
    sched = Scheduler()
    clock, fired = VirtualClock(sched), []
    entry = sched.at(1.0, lambda: fired.append("x"))
    entry.cancel()
    assert sched.next_time() == float("inf") and len(sched) == 0
    clock.advance_to(2.0)
    assert fired == []


def test_time_does_not_run_backwards():
    clock = VirtualClock()
    clock.advance_to(3.0)
    with pytest.raises(ValueError):
        clock.advance_to(2.0)
    with pytest.raises(ValueError):
        clock.scheduler.at(-1.0, lambda: None)


def test_wall_clock_compresses_scenario_time():
    clock, fired = WallClock(time_scale=2000.0), []
    clock.scheduler.at(20.0, lambda: fired.append(clock.now()))
    clock.advance_to(40.0)  # 40 scenario seconds are 20 ms of wall time
    assert len(fired) == 1 and fired[0] >= 20.0
    assert clock.now() >= 40.0


def test_a_wall_clock_runs_a_30_minute_schedule_in_a_minute_of_real_time_at_scale_30():
    import time
    clock, fired = WallClock(time_scale=30.0), []
    for t in (0.0, 15.0, 30.0):  # scenario seconds: 0, 0.5 and 1 s of real time
        clock.scheduler.at(t, lambda t=t: fired.append((t, time.monotonic())))
    clock.start()
    began = time.monotonic()
    clock.advance_to(30.0)
    real = [m - began for _, m in fired]
    assert [t for t, _ in fired] == [0.0, 15.0, 30.0]
    # never early: each fires once its scenario time has come in real time (how late is a benchmark's business)
    assert real[1] >= 0.5 - 1e-3 and real[2] >= 1.0 - 1e-3 and real[1] < real[2]
    assert clock.at(began + 2.0) == pytest.approx(60.0, abs=1.5)  # 2 real seconds after start are 60 scenario seconds


def test_scenario_time_stands_still_while_the_clock_is_held():
    import time
    clock = WallClock(time_scale=100.0)
    clock.start()
    with clock.hold():
        held = clock.now()
        time.sleep(0.2)  # 20 scenario seconds, were the clock running
        assert clock.now() == held
    assert clock.now() - held < 5.0
    virtual = VirtualClock()
    with virtual.hold():
        virtual.advance_to(3.0)
    assert virtual.now() == 3.0
