# A repeatable rand(n) for meters in tests, test vectors and benchmarks: the same seed gives the
# same session nonces on every run, so recorded frames and golden vectors stay byte-for-byte equal.
# MicroPython-clean (the life scenario and the replays import it from .mpy under micropython).


class Rand:
    """rand(n) -> n bytes from a 31-bit LCG; stands in for os.urandom where runs must repeat."""

    def __init__(self, seed=1):
        self.n = seed

    def __call__(self, n):
        out = bytearray(n)
        for i in range(n):
            self.n = (self.n * 1103515245 + 12345) & 0x7FFFFFFF
            out[i] = self.n >> 16 & 0xFF
        return bytes(out)
