# DL/T 645 commands a meter seldom gets: the 08H broadcast time correction, the 15H address write
# and the 16H freeze command; and the host's status view (meter.core.Meter.status). Loaded when
# one comes and let go after it (meter.core), so their code is not on a running meter's heap.

from meter import clock, events
from meter.codec import addr_str, get_bcd, get_le
from meter.relaycmd import dt6

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_ERR_OTHER = const(1)
_ERR_AUTH = const(4)
_SLACK = const(300)  # broadcast time: largest correction, and distance from midnight

# meter.relay's sides (private names: mpy-cross folds them, so they cost no RAM)
_R_WAIT_TRIP = const(1)
_R_TRIP = const(2)
_R_PRE1 = const(3)
_R_PRE2 = const(4)
_R_PERMIT = const(5)
_LOC_PRETRIP = const(1)
_LOC_TRIP = const(2)


def freeze(m, t):
    """16H: 99999999 freezes now, 9999hhmm sets the daily freeze time; 0 or the ERR bit."""
    fr = m.fr
    d = fr.data
    if fr.n != 4 or d[2] != 0x99 or d[3] != 0x99:
        return _ERR_OTHER  # monthly and hourly freezes are not kept by this meter
    if d[0] == 0x99 and d[1] == 0x99:
        m.events.add(events.FREEZE, (t,) + tuple(m.energy))
    else:
        mi = get_bcd(d, 0, 1)
        h = get_bcd(d, 1, 1)
        if mi < 0 or h < 0 or mi > 59 or h > 23:
            return _ERR_OTHER
        m.frz_min = h * 60 + mi
        m._daily(t)  # a time already past today freezes today now, stamped with it
    m._save()
    return 0


def time_sync(m, t):
    """08H broadcast time: 0, or the ERR bits of a refused correction."""
    fr = m.fr
    if fr.n != 6:
        return _ERR_OTHER
    new = dt6(fr.data, 0)
    if new < 0:
        return _ERR_OTHER
    diff = new - t
    day = t % clock.DAY
    nday = new % clock.DAY
    # once a day, small, away from midnight, and never across a quarter hour (tariff
    # slots and freezes sit on quarter hours)
    if (diff > _SLACK or diff < -_SLACK or m.bc_day == t // clock.DAY or
            day < _SLACK or day >= clock.DAY - _SLACK or nday < _SLACK or
            nday >= clock.DAY - _SLACK or t // 900 != new // 900):
        return _ERR_AUTH
    m.offset += diff
    m.sec.expiry += diff  # the session window is real time
    m.bc_day = new // clock.DAY
    m._save()
    return 0


def write_address(m, t, raw, kind):
    """15H: the reply (None for a wildcard frame not wholly AA)."""
    # Re-addressing takes the key like any other change: addressed to this meter, the new
    # address + seq + MAC inside a session. The standard's plain all-AA form is for bench
    # images only (a wildcard frame would re-address every meter on the bus at once).
    fr = m.fr
    d = fr.data
    sec = m.sec
    seq = -1
    if kind == 2:
        for i in range(6):
            if fr.addr[i] != 0xAA:
                return None
        if fr.n != 6:
            return m._err(0x15, _ERR_OTHER)
        if not m.bench:
            return m._err(0x15, _ERR_AUTH)
    else:
        if fr.n != 14:
            return m._err(0x15, _ERR_OTHER)
        seq = get_le(d, 6, 4)
        mv = memoryview(d)
        from meter.protected import checked  # the session's checks (14H and 1CH use them too)
        bad = checked(m, t, raw, 0x15, b"\x00\x00\x00\x00", mv[0:6], seq, mv[10:14], 0, 0x04000401)
        if bad is not None:
            return bad
    ok = True
    for i in range(6):
        v = d[i]
        if v >> 4 > 9 or v & 15 > 9:
            ok = False
    if ok:
        for i in range(6):
            m.addr[i] = d[i]
        m.events.add(events.PROGRAM, (t, 0, 0x04000401))
        rep = m._reply(0x95, m.out, 0)
    else:
        rep = m._err(0x15, _ERR_OTHER)
    if seq >= 0:
        if ok:
            sec.end()  # the session's MACs bound the old address: a new one starts at the new
        else:
            from meter.security import remember  # loaded with meter.protected's checks above
            remember(sec, seq, raw, rep)
    m._save()
    return rep

def relay_state(r):
    """Relay r's (meter.relay.Relay) remote and local sides and power hold as one Wisdom-style
    state code: 0 closed, 1 closed under hold, 2 waiting to trip, 3 remote trip, 4 pre-trip 1,
    5 pre-trip 2, 6 close permitted, 7 close permitted under hold, 8 local pre-trip, 9 local
    trip."""
    if r.local_state == _LOC_TRIP:
        return 9
    s = r.remote
    if s == _R_TRIP:
        return 3
    if s == _R_PRE1:
        return 4
    if s == _R_PRE2:
        return 5
    if s == _R_PERMIT:
        return 7 if r.hold else 6
    if r.local_state == _LOC_PRETRIP:
        return 7 if r.hold else 8
    if s == _R_WAIT_TRIP:
        return 2
    return 1 if r.hold else 0


def status(m):
    """meter.core.Meter.status()."""
    w = m.wallet
    return {"balance_fen": w.balance, "rem": w.rem, "state": w.state, "count": w.count,
            "customer": w.customer, "opened": w.opened, "relay_open": m.relay.commanded_open,
            "relay": relay_state(m.relay), "hold": m.relay.hold, "rate": m.tariff.rate_at(m.last_t),
            "power_w": m.power_w, "energy_wh": m.energy[0], "rates_wh": m.energy[1:],
            "mode": "remote" if m.remote else "local", "bench": m.bench,
            "address": addr_str(m.addr), "krn": m.sec.krn, "mac_fails": m.sec.fails,
            "total_bought": w.total_bought}

