# Meter time: integer seconds since 2024-01-01 00:00:00 local time (the meter epoch; day numbers
# count from the same midnight). A 32-bit board's small ints are 31 bits: from 2024 they hold
# every time until 2058-01-09 13:37:03, so no time value takes a heap block before then (from 2000
# they ran out in January 2034). DL/T 645 carries two-digit years; the meter accepts 2024..2099 and
# refuses earlier dates. The same integer works on every port (MicroPython's own epoch differs
# between ports, so the meter never asks time.localtime for arithmetic). Records saved by firmware
# that counted from 2000 are moved to this epoch when they are loaded (meter.core, meter.store).

DAY = 86400


def days_from_civil(y, m, d):
    # Howard Hinnant's algorithm, shifted so that 2024-01-01 is day 0.
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 739191


def civil_from_days(z):
    z += 739191
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


def from_fields(y, mo, d, h=0, mi=0, s=0):
    """Seconds since the meter epoch for a local date and time."""
    return days_from_civil(y, mo, d) * DAY + h * 3600 + mi * 60 + s


def to_fields(t):
    """(year, month, day, hour, minute, second, weekday 0=Sunday) for meter time t."""
    days = t // DAY
    sec = t - days * DAY
    y, mo, d = civil_from_days(days)
    # weekday 0 = Sunday: 2024-01-01 was a Monday (meter.tariff counts the same way)
    return y, mo, d, sec // 3600, sec // 60 % 60, sec % 60, (days + 1) % 7


def valid_date(y, mo, d):
    if not (2024 <= y <= 2099 and 1 <= mo <= 12 and d >= 1):  # the meter epoch's year on
        return False
    if mo == 2:
        return d <= (29 if y % 4 == 0 else 28)  # 2024..2099: every 4th year is leap
    return d <= (30 if mo in (4, 6, 9, 11) else 31)
