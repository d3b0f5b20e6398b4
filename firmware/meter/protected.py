# The commands that change the meter under the key or the bench password: 03H (session,
# purchases, key update), 14H writes and 1CH relay control, with their common checks (session,
# sequence, MAC). Loaded for the command and let go after it (meter.core), like meter.rarecmd:
# a meter that is only read and metered keeps neither their code nor their names on its heap.

# meter.relaycmd and meter.topup load with this module, not in the middle of a command: the names a
# module brings are interned for good, and the one that takes them past a qstr pool's end needs one
# free block for the next pool (7 KB on a 64-bit port), which a heap mid-command may lack
from meter import codec, drop, events, relay, relaycmd, topup, wallet
from meter.codec import get_bcd, get_le, put_le
from meter.relaycmd import dt6
from meter.security import authenticate, challenge, ct_eq, mac, remember, replay, wrap_stream
from meter.store import collect

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# ERR byte bits (1-byte error replies) and SERR bits (03H error replies)
_ERR_OTHER = const(1)
_ERR_AUTH = const(4)
_S_OTHER = const(1)
_S_MAC = const(4)
_S_AUTH = const(8)

_DI_AUTH = const(0x070000FF)
_DI_CHALLENGE = const(0x070003FF)
_DI_VALIDITY = const(0x070001FF)
_DI_END = const(0x070002FF)
_DI_OPEN = const(0x070101FF)
_DI_RECHARGE = const(0x070102FF)
_DI_KEY = const(0x070301FF)
_DI_QUERY = const(0x078102FF)


def serr(m, bits):
    out = m.out
    out[0] = bits & 0xFF
    out[1] = bits >> 8
    return m._reply(0xC3, out, 2)


def _plain_ok(m, d, o):
    # bench images accept the plain levels 02/04 with the configured password
    pa = d[o]
    pw = m.bench_pw
    return m.bench and (pa == 2 or pa == 4) and d[o + 1] == pw[0] and \
        d[o + 2] == pw[1] and d[o + 3] == pw[2]


def _macfail(m, t, op, fn, di):
    m.sec.failure(t)
    m.events.add(events.MACFAIL, (t, op, fn, di))
    m._save()


def checked(m, t, raw, fn, di4, fields, seq, tag, op, di):
    """None when a 14H/15H/1CH in the session may run: its sequence and MAC are right; else
    the reply to send (a refusal, or the cached reply to a byte-identical retry)."""
    sec = m.sec
    if sec.locked(t) or not sec.active(t):
        return m._err(fn, _ERR_AUTH)
    if seq == sec.last:
        rep = replay(sec, raw)
        if rep is not None:
            return rep
    if seq != sec.last + 1:
        return m._err(fn, _ERR_AUTH)  # stale or skipped: not a MAC failure
    if not ct_eq(mac(sec, m.addr, fn, di4, fields, seq), tag):
        _macfail(m, t, op, fn, di)
        return m._err(fn, _ERR_AUTH)
    return None


# --- 14H write -------------------------------------------------------------------------
def write(m, t, raw):
    fr = m.fr
    d = fr.data
    n = fr.n
    if n < 12:
        return m._err(0x14, _ERR_OTHER)
    di = get_le(d, 0, 4)
    op = get_le(d, 8, 4)
    mv = memoryview(d)
    if d[4] == 0x99 and d[5] == 0 and d[6] == 0 and d[7] == 0:
        sec = m.sec
        if n < 20:
            return m._err(0x14, _ERR_AUTH)
        seq = get_le(d, n - 8, 4)
        bad = checked(m, t, raw, 0x14, mv[0:4], mv[4:n - 8], seq, mv[n - 4:n], op, di)
        if bad is not None:
            return bad
        err = _apply_write(m, di, mv[12:n - 8], t, op)
        if not err and not m._save():
            err = _ERR_OTHER  # the flash cannot hold it: refused, state as before
        rep = m._err(0x14, err) if err else m._reply(0x94, m.out, 0)
        remember(sec, seq, raw, rep)
        m._save()
        return rep
    if _plain_ok(m, d, 4):
        err = _apply_write(m, di, mv[12:n], t, op)
        if err:
            return m._err(0x14, err)
        if not m._save():
            return m._err(0x14, _ERR_OTHER)
        return m._reply(0x94, m.out, 0)
    return m._err(0x14, _ERR_AUTH)


def _apply_write(m, di, v, t, op):
    from meter import diwrite
    try:
        err = diwrite.write_item(m, di, v, t)
    except ValueError:
        err = _ERR_OTHER
    diwrite = None
    drop("meter.diwrite", "meter.tariffcheck")  # before the save: a record and the parser need not share the heap
    collect()
    if not err:
        m.events.add(events.PROGRAM, (t, op, di))
    return err


# --- 1CH control -----------------------------------------------------------------------
def control(m, t, raw):
    fr = m.fr
    d = fr.data
    n = fr.n
    mv = memoryview(d)
    sec = m.sec
    op = get_le(d, 4, 4) if n >= 8 else 0
    if n == 24 and d[0] == 0x99 and d[1] == 0 and d[2] == 0 and d[3] == 0:
        seq = get_le(d, 16, 4)
        bad = checked(m, t, raw, 0x1C, b"\x00\x00\x00\x00", mv[0:16], seq, mv[20:24], op, 0)
        if bad is not None:
            return bad
        rep = _do_control(m, d, t, op)
        remember(sec, seq, raw, rep)
    elif n == 16 and _plain_ok(m, d, 0):
        rep = _do_control(m, d, t, op)
    else:
        return m._err(0x1C, _ERR_AUTH)
    m._save()
    return rep


def _do_control(m, d, t, op):
    deadline = dt6(d, 10)
    if deadline < 0:
        return m._err(0x1C, _ERR_OTHER)
    if t > deadline:
        return m._err(0x1C, _ERR_AUTH)  # a stale command must not act late
    n1 = d[8]
    r = m.relay
    err = relaycmd.command(r, n1, d[9], t, op)
    if err:
        return m._err(0x1C, err)
    if not m.remote:
        if n1 == relay.HOLD_OFF:
            m._local(topup.release_cmd(m.wallet), t)
    m._relay_events()
    return m._reply(0x9C, m.out, 0)


# --- 03H security family ---------------------------------------------------------------
def security(m, t, raw):
    fr = m.fr
    d = fr.data
    n = fr.n
    if n < 8:
        return serr(m, _S_OTHER)
    di = get_le(d, 0, 4)
    op = get_le(d, 4, 4)
    sec = m.sec
    out = m.out
    for i in range(4):
        out[i] = d[i]
    if sec.locked(t):
        return serr(m, _S_AUTH)  # proofs go unchecked until the failure level leaks down
    if di == _DI_CHALLENGE:
        if n != 8:
            return serr(m, _S_OTHER)
        rm = challenge(sec)
        for i in range(8):
            out[4 + i] = rm[i]
        return m._reply(0x83, out, 12)
    if di == _DI_AUTH:
        if n != 32:
            return serr(m, _S_OTHER)
        num = m.number
        ok = d[24] == 0 and d[25] == 0 and sec.rm is not None
        for i in range(6):
            if d[26 + i] != num[i]:
                ok = False
        if not ok:
            return serr(m, _S_AUTH)  # another meter's, or no challenge: nothing checked
        mv = memoryview(d)
        c2 = authenticate(sec, mv[8:16], mv[16:24], mv[24:32], t)
        if c2 is None:
            _macfail(m, t, op, 0x03, di)
            return serr(m, _S_AUTH)
        for i in range(8):
            out[4 + i] = c2[i]
        out[12] = out[13] = 0
        for i in range(6):
            out[14 + i] = num[i]
        return m._reply(0x83, out, 20)
    if not sec.active(t):
        return serr(m, _S_AUTH)
    want = {_DI_VALIDITY: 14, _DI_END: 12, _DI_OPEN: 30, _DI_RECHARGE: 30, _DI_KEY: 32,
            _DI_QUERY: 12}.get(di)
    if want is None:
        return serr(m, _S_OTHER)
    rep = replay(sec, raw)
    if rep is not None:
        return rep  # a retry after a lost reply: answer again, execute nothing
    if n != want:
        return serr(m, _S_OTHER)
    seq = sec.last + 1
    mv = memoryview(d)
    di4 = mv[0:4]
    if di == _DI_OPEN or di == _DI_RECHARGE:
        ok = ct_eq(mac(sec, m.addr, 0x03, di4, mv[8:16], seq), mv[16:20])
        ok = ct_eq(mac(sec, m.addr, 0x03, di4, bytes(mv[8:16]) + bytes(mv[20:26]), seq),
                   mv[26:30]) and ok
    else:
        ok = ct_eq(mac(sec, m.addr, 0x03, di4, mv[8:n - 4], seq), mv[n - 4:n])
    if not ok:
        _macfail(m, t, op, 0x03, di)
        return serr(m, _S_MAC)
    bits = 0
    k = 4
    if di == _DI_VALIDITY:
        minutes = get_bcd(d, 8, 2)
        if minutes <= 0:
            bits = _S_OTHER
        else:
            sec.expiry = t + minutes * 60  # this session only: the next one starts at 5 minutes
    elif di == _DI_KEY:
        stream = wrap_stream(sec, d[8])
        key = bytearray(16)
        for i in range(16):
            key[i] = d[12 + i] ^ stream[i]
        sec.key = bytes(key)
        sec.krn = d[8]
        m.events.add(events.PROGRAM, (t, op, di))
    elif di == _DI_QUERY or di == _DI_END:
        w = m.wallet
        put_le(out, 4, w.balance & 0xFFFFFFFF, 4)
        put_le(out, 8, w.count, 4)
        _put_customer(out, 12, w.customer)
        out[18] = sec.krn
        out[19] = out[20] = out[21] = 0
        k = 22
    else:
        bits = _purchase(m, di, d, t)
    rep = _sealed(m, bits, k, di4, seq)
    if di == _DI_END:
        sec.end()
        return rep
    remember(sec, seq, raw, rep)
    m._save()
    return rep


def _sealed(m, bits, k, di4, seq):
    # Every answer to a MAC'd 03H command carries the meter's MAC over it and the request's
    # seq, so the head-end rejects an old reply played back (an old wallet, an old "repeat
    # recharge") or a made-up one. k: reply bytes so far (DI + body) when bits is 0.
    out = m.out
    o = 4
    ctrl = 0x83
    if bits:
        out[0] = bits & 0xFF
        out[1] = bits >> 8
        ctrl = 0xC3
        o = 0
        k = 2
    tag = mac(m.sec, m.addr, ctrl, di4, out[o:k], seq)
    for i in range(4):
        out[k + i] = tag[i]
    return m._reply(ctrl, out, k + 4)


def _purchase(m, di, d, t):
    """0 when the purchase is applied, else its SERR bits."""
    w = m.wallet
    amount = get_le(d, 8, 4)
    count = get_le(d, 12, 4)
    for i in range(20, 26):
        if d[i] >> 4 > 9 or d[i] & 15 > 9:
            return 1 << wallet.CUSTOMER_ERR  # a customer number is 12 BCD digits
    cust = codec.addr_str(memoryview(d)[20:26])
    before = w.balance
    if di == _DI_OPEN:
        res, cmd = topup.open_account(w, amount, count, cust)
    else:
        res, cmd = topup.recharge(w, amount, count, cust)
    if res != wallet.OK:
        return 1 << res
    m.events.add(events.PURCHASE, (t, w.count, amount, before, w.balance, w.total_bought))
    m._local(cmd, t)
    return 0


def _put_customer(b, o, s):
    if len(s) == 12:
        a = codec.addr_bytes(s)
        for i in range(6):
            b[o + i] = a[i]
    else:
        for i in range(6):
            b[o + i] = 0
