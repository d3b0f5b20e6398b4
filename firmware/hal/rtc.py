# Battery-backed RTC chips on I2C ("rtc": "ds3231" or "pcf8563" in config.json), for boards whose
# own RTC forgets the time at every reset. Each offers machine.RTC's datetime() interface:
# (year, month, day, weekday 0=Monday, hour, minute, second, subsecond). A chip whose oscillator
# stopped (a flat or missing battery) reads as 2000-01-01: earlier than any time the meter saved,
# so the board resumes from its saved time instead, as it does without a chip.

_LOST = (2000, 1, 1, 5, 0, 0, 0, 0)


def _dec(b):
    return (b >> 4) * 10 + (b & 15)


def _bcd(v):
    return (v // 10) << 4 | v % 10


class DS3231:
    """Maxim DS3231 at 0x68: seconds..year in registers 0-6, oscillator-stop flag in 0x0F bit 7."""

    def __init__(self, i2c):
        self.i2c = i2c

    def datetime(self, dt=None):
        i2c = self.i2c
        if dt is None:
            if i2c.readfrom_mem(0x68, 0x0F, 1)[0] & 0x80:
                return _LOST
            r = i2c.readfrom_mem(0x68, 0, 7)
            return (2000 + _dec(r[6]), _dec(r[5] & 0x1F), _dec(r[4]), (r[3] - 1) % 7, _dec(r[2] & 0x3F),
                    _dec(r[1]), _dec(r[0] & 0x7F), 0)
        y, mo, d, wd, h, mi, s = dt[:7]
        i2c.writeto_mem(0x68, 0, bytes((_bcd(s), _bcd(mi), _bcd(h), wd + 1, _bcd(d), _bcd(mo), _bcd(y - 2000))))
        st = i2c.readfrom_mem(0x68, 0x0F, 1)[0]
        i2c.writeto_mem(0x68, 0x0F, bytes((st & 0x7F,)))  # the time is good again
        return None


class PCF8563:
    """NXP PCF8563 at 0x51: seconds..year in registers 2-8; seconds bit 7 = voltage low (time lost)."""

    def __init__(self, i2c):
        self.i2c = i2c

    def datetime(self, dt=None):
        i2c = self.i2c
        if dt is None:
            r = i2c.readfrom_mem(0x51, 2, 7)
            if r[0] & 0x80:
                return _LOST
            return (2000 + _dec(r[6]), _dec(r[5] & 0x1F), _dec(r[3] & 0x3F), (r[4] + 6) % 7, _dec(r[2] & 0x3F),
                    _dec(r[1] & 0x7F), _dec(r[0] & 0x7F), 0)
        y, mo, d, wd, h, mi, s = dt[:7]
        # the chip counts weekdays from Sunday = 0; writing seconds clears the voltage-low flag
        i2c.writeto_mem(0x51, 2, bytes((_bcd(s), _bcd(mi), _bcd(h), _bcd(d), (wd + 1) % 7, _bcd(mo), _bcd(y - 2000))))
        return None


CHIPS = {"ds3231": DS3231, "pcf8563": PCF8563}
