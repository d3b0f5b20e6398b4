# The upgrade from firmware that counted meter time in seconds since 2000-01-01 (meter.clock now
# counts from 2024-01-01): loaded only when the core finds a record of that firmware (meter.store
# Store.shift), so a meter that never needs it spends no heap on it.

from meter import clock
from meter.powerup import load_events


def to_epoch(m, d):
    """Move every time meter m restored from a 2000-based record d seconds back (day numbers by
    d // DAY; -1 and 0 mean "none" where they do) and mark the record to be written anew."""
    dd = d // clock.DAY
    m.last_t -= d
    if m.bc_day >= 0:
        m.bc_day -= dd
    m.frz_day -= dd
    r = m.relay
    if r.until:
        r.until -= d
    sec = m.sec
    if sec.fail_t:
        sec.fail_t -= d
    k = m.tok  # keypad tokens' bad-entry limit: [level, since] (meter.token)
    if k and k[1][1]:
        k[1][1] -= d
    tf = m.tariff
    tf.switch = [None if v is None else max(0, v - d) for v in tf.switch]
    tf.holidays = [h - dd * 8 for h in tf.holidays if h >= dd * 8]  # those before 2024 are past
    e = m.events
    load_events(e, [e.counts, [[(r[0] - d,) + r[1:] for r in e.records(k)] for k in range(len(e.logs))]])
    m._tlen = m._elen = -1  # nothing copied from the old record: all of it is written anew
    tf.dirty = True
    m.events.dirty = True
