# A meter's power-up: its fields set (start: meter.core.Meter's __init__), the newest intact
# record found on flash (meter.store's layout) and read back into the core's state piece by piece.
# A running meter needs none of it until the next power-up (or a save that does not fit, which
# restores the last record): loaded for that and let go after it (meter.drop), so the heap a fully
# programmed meter runs in holds none of this code.

import json
import struct
from array import array
from binascii import unhexlify

from meter import clock, events
from meter.store import HEAD, MAGIC, crc32, collect

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_FORMAT = const(2)  # the first payload byte of a record with a binary head, times from 2024
_SHIFT_2000 = const(757382400)  # seconds from 2000-01-01 to 2024-01-01: records before _FORMAT
_CHUNK = const(128)  # bytes per CRC read step
_SAVE_WH = const(100)     # energy save policy: unsaved Wh that force a save
_SAVE_S = const(900)      # ... and the longest an unsaved Wh waits
# meter.relay's remote states and its operator code (private names: mpy-cross folds them)
_R_CLOSED = const(0)
_R_WAIT_TRIP = const(1)
_R_TRIP = const(2)
_R_PRE1 = const(3)
_R_PRE2 = const(4)
_R_PERMIT = const(5)
_LOC_TRIP = const(2)
_METER = const(0xFFFFFFFF)


def _read_slot(st, slot):
    # (seq, payload length) of the slot's record, (-1, 0) when it is not intact. The CRC
    # is checked in small reads: no copy of the whole record is made
    off = slot * st.half
    fl = st.flash
    h = fl.read(off, HEAD)
    if len(h) < HEAD or h[0:2] != MAGIC:
        return -1, 0
    seq = h[2] | h[3] << 8 | h[4] << 16 | h[5] << 24
    n = h[6] | h[7] << 8
    if HEAD + n + 4 > st.half:
        return -1, 0
    c = crc32(h)
    o = off + HEAD
    k = n
    while k > 0:
        m = k if k < _CHUNK else _CHUNK
        c = crc32(fl.read(o, m), c)
        o += m
        k -= m
    e = fl.read(o, 4)
    if len(e) < 4 or c & 0xFFFFFFFF != e[0] | e[1] << 8 | e[2] << 16 | e[3] << 24:
        return -1, 0
    return seq, n


def load(st):
    """meter.store.Store.load: the newest intact record of st's flash, st made ready to save after
    it."""
    s0, n0 = _read_slot(st, 0)
    s1, n1 = _read_slot(st, 1)
    if s0 < 0 and s1 < 0:
        return None
    if s0 > s1:
        st.seq, st.slot, n = s0, 0, n0
    else:
        st.seq, st.slot, n = s1, 1, n1
    # the other slot holds a record that is not intact: the newest may be lost (a bit flip,
    # a write torn by a power cut on a layout that can tear); the owner records the fallback
    st.fell_back = min(s0, s1) < 0 and st.flash.read((1 - st.slot) * st.half, 2) == MAGIC
    h = st.payload(0, 3)
    if h[0] != _FORMAT:
        st.shift = _SHIFT_2000
    elif st.shift:
        st.shift = 0
    if h[0] == 0x7B:  # "{": all JSON
        return json.loads(st.payload(0, n))
    if h[0] > _FORMAT or h[0] < 1 or len(h) < 3:
        raise ValueError("state record of unknown format %d: written by newer firmware? "
                         "Refusing it rather than starting from an empty state" % h[0])
    b = 3 + (h[1] | h[2] << 8)
    return json.loads(st.payload(b, n - b))


def ints_reader(st, off, n):
    """read() for the packed tables (the sequences of Store.put_ints) in the n bytes at off of st's
    newest record's payload: the next sequence as a tuple, read from flash on its own. Read at once,
    the event log's ~760 bytes and the tariff's ~620 were two more blocks the power-up's peak needed
    whole."""
    pos = [off]

    def read():
        o = pos[0]
        h = st.payload(o, 1)[0]
        f = "<%d%s" % (h & 63, "hiq"[h >> 6])
        k = struct.calcsize(f)
        pos[0] = o + 1 + k
        return struct.unpack(f, st.payload(o + 1, k))
    return read


def start(m, config, flash, now, rand):
    """Meter m's fields (meter.core.Meter(config, flash, now, rand)), then its power-up."""
    from meter import codec, wallet
    from meter.core import Security
    from meter.events import Events
    from meter.relay import Relay
    from meter.store import Store
    from meter.tariff import Tariff
    m.addr = bytearray(codec.addr_bytes(config["address"]))
    m.number = bytearray(codec.addr_bytes(config.get("meter_number") or config["address"]))
    m.remote = config.get("mode", "local") == "remote"
    m.bench = bool(config.get("bench", False))
    m.bench_pw = bytes(config.get("bench_password", b"\x00\x00\x00"))
    m.rand = rand
    m.fr = codec.Frame()
    m.tx = bytearray(codec.FRAME_MAX)
    m._txv = memoryview(m.tx)
    # replies are built where they are sent: encode_into adds 33H in place (no second buffer)
    m.out = m._txv[10:10 + codec.MAX_DATA]
    m.blk = None  # block reads' snapshot, made by the first block read
    m.blk_n = 0
    m.blk_di = -1
    # the line's frame buffer, the largest block a running meter holds, is made before the
    # power-up leaves the heap in holes: made at the first feed(), a fully programmed meter
    # found no 512-byte hole for it below 72 KB
    m.deframer = codec.Deframer(512)  # two longest frames: enough for a half-duplex line
    m.store = Store(flash)
    m.sec = Security(config["key"], config.get("krn", 0), rand)
    m.tariff = Tariff()
    m.wallet = wallet.Wallet()
    m.relay = Relay()
    m.events = Events()
    m.energy = [0, 0, 0, 0, 0]  # Wh: total, then rate slots 0..3 (T1..T4)
    m.ladder_wh = 0
    m.last_t = now
    m.seen_t = now      # the latest meter time the core was given
    m.offset = 0        # meter clock minus the `now` the HAL passes in
    m.bc_day = -1       # day of the last broadcast time correction
    m.frz_min = 0       # daily freeze time, minutes after midnight (16H 9999hhmm)
    m.frz_day = -1      # the last day whose daily freeze is taken (day n freezes at n * DAY + frz_min)
    m.power_w = 0
    m.voltage_dv = 2200  # 220.0 V until a HAL says otherwise
    m.actual_open = None
    m._tlen = -1  # bytes of the tariff's and the event log's packed binary at the start
    m._elen = -1  # of the newest record (-1: unknown), copied from there while they stand
    m._policy = (config.get("save_wh", _SAVE_WH), config.get("save_s", _SAVE_S))
    m._unsaved = [0, 0]  # Wh metered since the last save, meter time of the first of them
    m.tok = None  # keypad token state (meter.token.enter), made by the first token typed
    power_up(m, now)


def power_up(m, now):
    """Meter m (meter.core), its fields at their defaults, brought up from its flash at HAL time
    now: the newest record restored, the days the power was off for frozen, timers and the
    tariff's switch-overs caught up (the caller saves the result)."""
    state = m.store.load()
    loaded = state is not None
    if loaded:
        restore(m, state)
    state = None  # the parsed record: let it go before the first save rebuilds the text
    t = m.time(now)
    m.last_t = max(m.last_t, t) if loaded else t
    if m.store.fell_back:  # the head-end must learn that state may be one operation back
        m.events.add(events.FAULT, (t, events.FALLBACK, m.store.seq))
    if m.frz_day < 0:  # a new meter: no day before it existed is frozen
        m.frz_day = (t - m.frz_min * 60) // clock.DAY
    m._daily(t)  # the days the power was off for, each stamped with its own freeze time
    m.sec.locked(t)  # a new day clears the MAC-failure count at power-up
    m.tariff.roll(t)  # a switch-over that fell due while the power was off
    relay_up(m.relay, t)
    m._relay_events()


def restore(m, s):
    """Meter m's state from record s (the JSON object Store.load gave; its binary head read from
    m.store)."""
    from meter import codec
    m.addr = bytearray(codec.addr_bytes(s["a"]))
    m.number = bytearray(codec.addr_bytes(s["n"]))
    m.wallet = wallet_from(s["w"])
    m.relay = relay_from(s["r"])
    st = m.store
    m._tlen = m._elen = -1
    if "t" in s:
        # a record from before the binary head: its JSON holds the tables (the next save
        # rewrites them packed); they go as soon as they are restored
        m.tariff = tariff_from(s.pop("t"))
        load_events(m.events, s.pop("e"))
    else:
        # read piece by piece from flash into their final packed form: no parse tree
        tl = s["tl"]
        m.tariff = None  # the tables it held go before the record's are read
        collect()
        m.tariff = unpack_tariff(ints_reader(st, 3, tl[0]))
        collect()
        unpack_events(m.events, ints_reader(st, 3 + tl[0], tl[1]))
        collect()
        # unchanged: the next save copies them from this record
        m._tlen, m._elen = tl
        m.tariff.dirty = False
        m.events.dirty = False
    sec = m.sec
    w = s["s"]
    sec.key = bytes(unhexlify(w[0]))
    sec.krn = w[1]
    if len(w) == 4:
        sec.fails, sec.fail_t = w[2], w[3]
    # a record from before the leaking level kept a day count: the new rule has forgiven it
    m.energy = list(s["E"])
    m.ladder_wh = s["L"]
    m.last_t = s["lt"]
    m.offset = s["o"]
    m.bc_day = s["b"]
    # records written before freezes existed: midnight, and nothing frozen after the last save
    m.frz_min, m.frz_day = s.get("fz") or (0, s["lt"] // clock.DAY)
    m.tok = s.get("k")
    if st.shift:  # a record of the firmware that counted from 2000: once, at the upgrade
        from meter.epoch2000 import to_epoch
        to_epoch(m, st.shift)


def wallet_from(obj):
    """A meter.wallet.Wallet from its record (Wallet.dump), checked."""
    from meter import wallet
    w = wallet.Wallet(obj[6], obj[7], obj[8], obj[9], obj[10])
    w.balance, w.rem, w.count, w.customer = obj[0], obj[1], obj[2], obj[3]
    w.opened = bool(obj[4])
    w.total_bought = obj[5]
    w.state = obj[11]
    w.last_cmd = obj[12] or None
    if not (0 <= w.rem < wallet.SUBFEN and wallet.NORMAL <= w.state <= wallet.OVERDRAFT):
        raise ValueError("bad wallet record")
    return w


def relay_from(obj):
    """A meter.relay.Relay from its record (Relay.dump), checked."""
    from meter.relay import Relay
    r = Relay(obj[5], bool(obj[7]))
    r.remote, r.local_state = obj[0], obj[1]
    r.hold, r.alarm = bool(obj[2]), bool(obj[3])
    r.until, r.pending_op = obj[4], obj[6]
    if not (_R_CLOSED <= r.remote <= _R_PERMIT and 0 <= r.local_state <= _LOC_TRIP):
        raise ValueError("bad relay record")
    return r


def relay_up(r, now):
    """Relay r's transient states resolved after a power cut (spec section 6): waiting-to-trip ->
    tripped, pre-trip 1 -> closed, pre-trip 2 -> close permitted."""
    s = r.remote
    was = r.commanded_open
    if s == _R_WAIT_TRIP:
        r.remote = _R_TRIP
        r._record(was, now, r.pending_op)
    elif s == _R_PRE1:
        r.remote = _R_CLOSED
        r._record(was, now, _METER)
    elif s == _R_PRE2:
        r.remote = _R_PERMIT
        r._record(was, now, _METER)


def tariff_from(obj):
    """A meter.tariff.Tariff from the JSON form of records written before the binary head
    (meter.desktop tariff_dump), checked by meter.tariffcheck's setters."""
    from meter import tariffcheck
    from meter.tariff import Tariff
    return tariffcheck.load(Tariff(), obj)


def unpack_tariff(read):
    """A meter.tariff.Tariff from its packed sequences (Tariff.pack), read() giving each in turn."""
    from meter.tariff import Tariff, ladder_mode
    t = Tariff()
    for s in range(2):
        t.prices[s] = list(read())
        days = t._days[s]
        for k in range(len(days)):
            days[k] = array("H", read())  # as meter.tariffcheck packs them
        t._zones[s] = array("H", read())
        t.thresholds[s] = list(read())
        t.increments[s] = list(read())
    t.switch = [None if v < 0 else v for v in read()]
    t.weekend, t.weekend_table, n = read()
    v = read()
    t.settlement = [v[i:i + 3] for i in range(0, len(v), 3)]
    t.mode = ladder_mode(t.settlement)
    h = t.holidays
    while len(h) < n:
        h.extend(read())
    return t


def unpack_events(e, read):
    """Event log e (meter.events.Events) from its packed sequences (Events.pack)."""
    c = list(read())
    k = len(c)  # kinds in the record: one written before a kind existed has fewer
    n = len(e.logs)
    while len(c) < n:
        c.append(0)
    e.counts = c
    e.wide = 0
    for i in range(n):
        r = read()[0] if i < k else 0
        # the kind's records get their room at once (MicroPython keeps a bytearray's block when
        # it is emptied): appended one by one, each grew the log into a new block and left the
        # old one as a hole, and a fully programmed meter's power-up ran out of heap in them
        b = e.logs[i] = bytearray(r * struct.calcsize(e._fmt(i)))
        b[:] = b""
        for _ in range(r):
            e._put(i, read(), False)
    e.dirty = True


def load_events(e, obj):
    """Event log e from [counts, records of each kind] (a JSON record's, records() of each)."""
    q = [obj[0]]
    for r in obj[1]:
        q.append((len(r),))
        q.extend(r)
    q.reverse()
    unpack_events(e, q.pop)
