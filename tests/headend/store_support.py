"""Shared pieces of the store tests."""


class Clock:
    """A store clock the test sets by hand (``clock.t += 60``): times in rows are exact."""

    def __init__(self, t: int = 1_700_000_000) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
