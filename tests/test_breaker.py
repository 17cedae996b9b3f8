"""The circuit breaker's states on a clock the test moves (the gateway test drives it for real)."""

from smallfleet.tiers.breaker import CLOSED, HALF_OPEN, OPEN, Breaker


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_open_the_circuit_for_its_cool_down_then_one_trial_decides():
    clock = Clock()
    b = Breaker(3, 30, clock)
    for _ in range(2):
        assert b.admit() is None
        b.failed()
    b.succeeded()  # an answer in between resets the count
    for _ in range(3):
        assert b.admit() is None
        b.failed()
    assert b.state == OPEN and b.admit() == 30
    clock.now += 29
    assert b.admit() == 1
    clock.now += 1
    assert b.state == HALF_OPEN
    assert b.admit() is None  # the trial
    assert b.admit() is not None and b.state == OPEN  # others wait while it runs
    b.failed()  # the trial failed: another full cool-down
    assert b.admit() == 30
    clock.now += 30
    assert b.admit() is None
    b.abandoned()  # a cancelled trial says nothing: the next request is the trial
    assert b.state == HALF_OPEN and b.admit() is None
    b.succeeded()
    assert b.state == CLOSED and b.consecutive == 0 and b.admit() is None


def test_zero_failures_never_opens():
    b = Breaker(0, 30, Clock())
    for _ in range(100):
        b.failed()
    assert b.state == CLOSED and b.admit() is None
