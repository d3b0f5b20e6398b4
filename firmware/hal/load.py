# A household's demand for the simulator: a daily profile of mean power per hour, interpolated
# minute by minute, times a noise factor drawn once per simulated minute. Integers throughout,
# so CPython and MicroPython give the same watts for the same seed and time.

# Mean W per hour of day: night base load, a breakfast peak, a quiet day, the evening peak.
RESIDENTIAL_W = (300, 250, 230, 220, 230, 300, 600, 1200, 1000, 600, 500, 600,
                 800, 600, 500, 500, 600, 1000, 1800, 2200, 2000, 1600, 1000, 500)


class LoadModel:
    """Power in W at meter time t (seconds; only the time of day matters).

    profile: 24 mean powers in W (hour 0..23); scale_pct scales them; noise_pct is the largest
    deviation of the per-minute factor; fixed_w, when not None, overrides everything (tests).
    """

    def __init__(self, profile=RESIDENTIAL_W, scale_pct=100, noise_pct=20, seed=1, fixed_w=None):
        if len(profile) != 24:
            raise ValueError("a load profile needs 24 hourly values in W, got %d" % len(profile))
        for w in profile:
            if not isinstance(w, int) or w < 0:
                raise ValueError("load profile values must be whole watts >= 0, got %r" % (w,))
        if not 0 <= noise_pct <= 100:
            raise ValueError("load noise must be 0..100 %%, got %r" % (noise_pct,))
        if not 0 <= scale_pct <= 10000:
            raise ValueError("load scale must be 0..10000 %%, got %r" % (scale_pct,))
        if fixed_w is not None and not 0 <= fixed_w <= 100000:
            raise ValueError("fixed load must be 0..100000 W, got %r" % (fixed_w,))
        self.profile = tuple(profile)
        self.scale_pct = scale_pct
        self.noise_pct = noise_pct
        self.fixed_w = fixed_w
        self._seed = seed & 0xFFFFFFFF or 1
        self._minute = None
        self._factor = 1000

    def _noise(self, minute):
        # xorshift32 seeded by (seed, minute): the same minute always gives the same factor
        x = (self._seed ^ (minute * 2654435761)) & 0xFFFFFFFF or 1
        for _ in range(3):
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
        span = self.noise_pct * 10  # per mille
        return 1000 - span + x % (2 * span + 1) if span else 1000

    def power_w(self, t):
        if self.fixed_w is not None:
            return self.fixed_w
        minute = t // 60
        if minute != self._minute:
            self._minute = minute
            self._factor = self._noise(minute)
        m = minute % 1440
        h, frac = m // 60, m % 60
        a, b = self.profile[h], self.profile[(h + 1) % 24]
        base = a + (b - a) * frac // 60
        return base * self.scale_pct * self._factor // 100000


class Energy:
    """Integrates power over meter time into whole Wh, carrying the remainder (no float)."""

    def __init__(self):
        self._acc = 0  # W*ms

    def add(self, watts, ms):
        self._acc += watts * ms
        wh = self._acc // 3600000
        self._acc -= wh * 3600000
        return wh
