# The meter: DL/T 645 command dispatch over the wallet, relay, tariff, events and the
# power-safe store. Sans-I/O: frames and time in, reply frames and the relay command out.
# Every state change is saved before its reply is returned, so a reply the head-end sees
# always describes state that survives a power cut.


from binascii import hexlify  # every port has binascii; its names cost no heap

from meter import clock, codec
from meter import events, wallet
from meter import drop
from meter.events import Events
from meter.relay import Relay
from meter.store import Store, collect, ints_size, text_pieces
from meter.tariff import Tariff

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# ERR byte bits (1-byte error replies)
ERR_OTHER = const(1)
ERR_NODATA = const(2)
_ERR_AUTH = const(4)
_ERR_BAUD = const(8)

_LOCK_AFTER = const(5)  # failed proofs in a burst before proofs are refused unchecked
_LEAK = const(600)  # seconds: one failed proof is forgiven every 10 minutes


class Security:
    """Session and failed-proof state (meter.security holds the cryptography that uses it).
    key/krn and the failure level persist (dump/load); the session, its validity window and an
    outstanding challenge do not: a power cycle ends them."""

    def __init__(self, key, krn, rand):
        self.key = bytes(key)
        self.krn = krn
        self.rand = rand
        self.fails = 0  # the failure level: +1 per failed proof, -1 per _LEAK seconds
        self.fail_t = 0  # meter time the level last leaked from
        self.rm = None  # the challenge handed out and not yet used
        self.end()

    def dump(self):
        return [hexlify(self.key).decode(), self.krn, self.fails, self.fail_t]

    # --- failed-proof limit -----------------------------------------------------------
    def locked(self, t):
        """True while proofs are refused unchecked (the level is at the limit)."""
        n = self.fails
        if n:
            k = (t - self.fail_t) // _LEAK
            if k > 0:
                n = self.fails = max(0, n - k)
                self.fail_t += k * _LEAK
            elif t < self.fail_t:
                self.fail_t = t  # the clock went back: leak from now
        return n >= _LOCK_AFTER

    def failure(self, t):
        self.locked(t)  # what has leaked away first
        if self.fails == 0:
            self.fail_t = t
        if self.fails < _LOCK_AFTER:  # at the limit proofs go unchecked: nothing more to count
            self.fails += 1

    # --- session ----------------------------------------------------------------------
    def end(self):
        self.s = None
        self.last = 0
        self.expiry = 0
        self.req = None
        self.rep = None

    def active(self, t):
        if self.s is not None and t >= self.expiry:
            self.end()
        return self.s is not None


class Meter:
    """One meter. Meter(config, flash, now, rand):
    config  {"address": 12 digits, "key": 16 bytes, "krn": int, "mode": "local"|"remote",
             "bench": bool, "bench_password": 3 bytes (default 000000), "meter_number": 12 digits,
             "save_wh": Wh, "save_s": seconds (energy save policy, below)}
    flash   .size, .read(offset, n) -> bytes, .write(offset, bytes-like), .sync(); state lives here
            (two records of up to size/2 bytes each; 16 KB holds a fully programmed meter)
    now     meter time at power-up (meter.clock); rand(n) -> n random bytes
    Inputs: handle(frame, now) / handle_view(frame, now) / feed(chunk, now), add_energy(wh, now),
    set_power(w), set_voltage(dV), button(now), tick(now), relay_sense(open).
    Outputs: the replies, relay_open (drive the contacts to it), status().

    Saving: money, purchase count, relay state, keys and every command's effect are saved
    before the reply (or the relay move) they cause. Energy alone is saved by a policy that
    bounds flash wear: once save_wh Wh are unsaved (default 100), or save_s seconds after the
    first unsaved Wh (default 900), whichever comes first; persist() saves at once (a supply-loss
    interrupt, a clean stop). A power cut without that save loses at most save_wh Wh of the
    register (and, in local mode, their cost) - never money paid in or a relay command."""

    # the fields, set by meter.powerup.start (power-up code, let go after it; annotations only:
    # no heap on a board)
    addr: bytearray
    number: bytearray  # the meter number (DI 04000402), the address unless the config gives one
    remote: bool
    bench: bool
    bench_pw: bytes
    rand: "object"
    fr: codec.Frame
    tx: bytearray
    _txv: memoryview
    out: memoryview  # replies are built where they are sent: encode_into adds 33H in place
    blk: "object"  # block reads' snapshot, made by the first block read
    blk_n: int
    blk_di: int
    deframer: codec.Deframer  # the line's frame buffer
    store: Store
    sec: Security
    tariff: Tariff
    wallet: wallet.Wallet
    relay: Relay
    events: Events
    energy: list  # Wh: total, then rate slots 0..3 (T1..T4)
    ladder_wh: int
    last_t: int
    seen_t: int  # the latest meter time the core was given
    offset: int  # meter clock minus the `now` the HAL passes in
    bc_day: int  # day of the last broadcast time correction
    frz_min: int  # daily freeze time, minutes after midnight (16H 9999hhmm)
    frz_day: int  # the last day whose daily freeze is taken (day n freezes at n * DAY + frz_min)
    power_w: int
    voltage_dv: int
    actual_open: "bool | None"
    _tlen: int  # bytes of the tariff's and the event log's packed binary at the start
    _elen: int  # of the newest record (-1: unknown), copied from there while they stand
    _policy: tuple  # (save_wh, save_s)
    _unsaved: list  # Wh metered since the last save, meter time of the first of them
    tok: "object"  # keypad token state (meter.token.enter), made by the first token typed

    def __init__(self, config, flash, now, rand):
        # the fields, the record read back and the time caught up: meter.powerup (power-up
        # code, let go after it)
        from meter import powerup
        powerup.start(self, config, flash, now, rand)
        powerup = None
        drop("meter.powerup")
        collect()
        self._save()

    # --- persistence -------------------------------------------------------------------
    def _small_state(self):
        return {"a": codec.addr_str(self.addr), "n": codec.addr_str(self.number),
                "w": self.wallet.dump(), "r": self.relay.dump(), "s": self.sec.dump(), "E": self.energy,
                "L": self.ladder_wh, "lt": self.last_t, "ts": self.seen_t, "o": self.offset, "b": self.bc_day,
                "fz": [self.frz_min, self.frz_day], "k": self.tok}

    def _save(self):
        """Persist the state; False (and the last saved state back in RAM) when the record
        does not fit the flash object, so nothing the meter acts on is unsaved."""
        try:
            self._write_record()
            self._unsaved[0] = 0
            return True
        except ValueError:  # state too big for this flash: undo whatever grew it
            self._tlen = self._elen = -1
            from meter import powerup
            state = self.store.load()
            if state is not None:
                powerup.restore(self, state)
            state = powerup = None
            drop("meter.powerup")
            return False

    def _write_record(self):
        # The binary head (meter.store): the tariff's packed tables, then the event log's, then
        # the small state as JSON text, streamed to flash as they are packed (Store.begin); the
        # tables' length is counted first (ints_size), so no part of the record is gathered in
        # RAM. The tariff and the event log change rarely: while they stand, their bytes are
        # copied from the newest record in flash (Store.copy), not kept in RAM.
        tlen = self._tlen
        elen = self._elen
        tf = self.tariff
        ev_ = self.events
        pack_t = tlen < 0 or tf.dirty
        pack_e = elen < 0 or ev_.dirty
        if pack_t:
            self._count = 0
            tf.pack(self._count_ints)
            tlen = self._count
        if pack_e:
            self._count = 0
            ev_.pack(self._count_ints)
            elen = self._count
        ss = self._small_state()
        ss["tl"] = [tlen, elen]
        text = text_pieces(ss)
        ss = None
        n = 3 + tlen + elen
        for p in text:
            n += len(p)
        st = self.store
        st.begin(n)
        n = tlen + elen
        st.put(bytes((2, n & 0xFF, n >> 8)))  # a binary head, times from 2024 (meter.powerup _FORMAT)
        if pack_t:
            tf.pack(st.put_ints)
        else:
            st.copy(3, self._tlen)
        if pack_e:
            ev_.pack(st.put_ints)
        else:
            st.copy(3 + self._tlen, elen)
        for p in text:
            st.put(p)
        st.end()
        self._tlen = tlen
        self._elen = elen
        tf.dirty = False
        ev_.dirty = False

    def _count_ints(self, seq):
        self._count += ints_size(seq)

    # --- clock ---------------------------------------------------------------------------
    def time(self, now):
        t = now + self.offset
        self.seen_t = t  # saved with the record: a board whose RTC forgot resumes from it
        return t

    # --- HAL inputs ----------------------------------------------------------------------
    def add_energy(self, wh, now):
        """Register `wh` metered Wh; in local mode deduct its cost and follow the wallet."""
        if wh <= 0:
            return
        t = self.time(now)
        changed = self._daily(t)  # before the new Wh: the freeze holds the registers as they were at its time
        if self.tariff.roll(t):
            changed = True
        tf = self.tariff
        lw = tf.settle(t, self.last_t, self.ladder_wh)
        subfen, lw, rate = tf.charge(wh, t, lw)
        self.ladder_wh = lw
        e = self.energy
        e[0] += wh
        e[1 + rate] += wh
        self.last_t = t
        cmd = None
        if not self.remote and self.wallet.opened:
            # no customer before account opening, so nobody to charge: the meter only meters
            cmd = self.wallet.deduct(subfen)
            self._local(cmd, t)
        u = self._unsaved
        if not u[0]:
            u[1] = t
        u[0] += wh
        # a relay or alarm change is saved at once; energy alone when the policy says so
        if changed or cmd is not None or u[0] >= self._policy[0]:
            self._save()

    def fault(self, now, info):
        """The HAL's main loop failed (info: CRC-32 of its fault log line): a FAULT event, saved."""
        self.events.add(events.FAULT, (self.time(now), events.CRASH, info))
        self._save()

    def persist(self):
        """Save the energy not yet saved, now (supply lost, clean stop). False if none was."""
        if self._unsaved[0]:
            return self._save()
        return False

    def set_power(self, watts):
        self.power_w = watts

    def set_voltage(self, decivolts):
        self.voltage_dv = decivolts

    def button(self, now):
        """Customer pressed the button >= 3 s."""
        t = self.time(now)
        if self.relay.button(t):
            self._relay_events()
            self._save()
            return True
        return False

    def token(self, digits, now):
        """A token typed on the keypad (its digits as text): meter.token's result (OK, USED,
        INVALID, LOCKED, REFUSED, PART), its effect saved before it is returned."""
        from meter import token
        r = token.enter(self, digits, self.time(now))
        # the decoder is let go before the save and loaded again by the next token (a keypad is
        # slow): a fully programmed meter has no heap for both, nor a meter nobody types on
        token = None
        drop("meter.token", "meter.topup", "meter.security")
        collect()
        # USED, LOCKED and REFUSED change nothing worth a flash write (the bad-entry level leaks
        # the same from its saved start): an entry hammered on the keypad wears no flash
        return r if r in (1, 3, 4) or self._save() else 4  # meter.token.REFUSED

    def tick(self, now):
        """Timers: trip delay, pre-trips, session expiry, MAC lock at midnight, set switch-over,
        daily freeze."""
        t = self.time(now)
        r = self.relay
        before = (r.remote, r.local_state)
        r.tick(t)
        changed = self._daily(t)
        changed = before != (r.remote, r.local_state) or changed
        self.sec.active(t)
        f = self.sec.fails
        self.sec.locked(t)
        changed = changed or f != self.sec.fails
        if self.tariff.roll(t):
            changed = True
        u = self._unsaved
        if changed or u[0] and t - u[1] >= self._policy[1]:
            self._relay_events()
            self._save()

    @property
    def relay_open(self):
        return self.relay.commanded_open

    def relay_sense(self, is_open):
        self.actual_open = is_open

    def status(self):
        """The meter's state as a dict (hal.sim's view of a simulated meter, the tests); built by
        meter.rarecmd, loaded for it and let go after it, so a board's heap holds neither the
        code nor the keys' names."""
        from meter import rarecmd
        r = rarecmd.status(self)
        rarecmd = None
        drop("meter.rarecmd")
        return r

    # --- freezes (DIs 0506): forward active energy, total and T1..T4 ----------------------
    def _daily(self, t):
        """Take the daily freezes due by t: one per day at the freeze time; days that passed
        while the power was off (or the clock jumped) are frozen now with their own freeze
        time. True when one was taken."""
        fm = self.frz_min * 60
        day = (t - fm) // clock.DAY
        d = self.frz_day
        if day <= d:
            return False
        d = max(d, day - 10)  # only the newest ten are kept
        while d < day:
            d += 1
            self.events.add(events.FREEZE, (d * clock.DAY + fm,) + tuple(self.energy))
        self.frz_day = day
        return True

    def _rare(self, fn, t, raw=None, kind=0):
        # 08H, 15H, 16H (meter.rarecmd): loaded for the command, let go after it
        from meter import rarecmd
        if fn == 0x08:
            r = rarecmd.time_sync(self, t)
        elif fn == 0x16:
            r = rarecmd.freeze(self, t)
        else:
            r = rarecmd.write_address(self, t, raw, kind)
        rarecmd = None
        # 15H's session: meter.protected, and meter.security with it
        drop("meter.rarecmd", "meter.protected", "meter.topup", "meter.relaycmd", "meter.security")
        return r

    def _protected(self, fn, t, raw):
        # 03H, 14H, 1CH (meter.protected): loaded for the command, let go after it
        from meter import protected
        if fn == 0x03:
            r = protected.security(self, t, raw)
        elif fn == 0x14:
            r = protected.write(self, t, raw)
        else:
            r = protected.control(self, t, raw)
        protected = None
        drop("meter.protected", "meter.topup", "meter.relaycmd", "meter.security")  # and the modules it loads
        return r

    def _local(self, cmd, t):
        if cmd is None or self.remote:
            return
        self.relay.local(cmd, t)
        self._relay_events()

    def _relay_events(self):
        for kind, t, op in self.relay.pop_events():
            self.events.add(events.TRIP if kind == "trip" else events.CLOSE, (t, op, self.energy[0], 0))

    # --- the line ------------------------------------------------------------------------
    def feed(self, chunk, now):
        """Bytes from the line in; the replies to every whole frame they complete out."""
        d = self.deframer
        out = []
        mv = memoryview(chunk)
        for i in range(0, len(chunk), 256):  # drain between pieces: no frame lost to overflow
            d.feed(mv[i:i + 256])
            while True:
                f = d.next_frame()
                if f is None:
                    break
                r = self.handle(f, now)
                if r is not None:
                    out.append(r)
        return out

    def handle(self, frame, now):
        """One whole raw frame in; the reply frame (bytes) or None."""
        r = self.handle_view(frame, now)
        return None if r is None else bytes(r)

    def handle_view(self, frame, now):
        """As handle(), but the reply is a memoryview into the meter's transmit buffer, valid
        until the next call: a HAL that writes it straight to the line copies nothing."""
        fr = self.fr
        if codec.decode(frame, fr):
            return None
        c = fr.ctrl
        if c & 0x80:
            return None  # a reply from another meter on the bus
        fn = c & 0x1F
        kind = self._match(fr.addr)
        if kind == 0:
            return None
        t = self.time(now)
        if kind == 3:  # broadcast 99..99: no reply, ever
            if fn == 0x08 or fn == 0x16:
                self._rare(fn, t)
            return None
        if kind == 2 and fn != 0x11 and fn != 0x12 and fn != 0x13 and fn != 0x15:
            return None  # wildcards address reads only
        if fn == 0x11:
            from meter.dis import read
            r = read(self, t)
            drop("meter.disrec")  # a record or table read's (meter.dis): the reply is in self.tx
            return r
        if fn == 0x12:
            from meter.dis import follow
            return follow(self, t)
        if fn == 0x13:
            return self._reply(0x93, self.addr, 6) if fr.n == 0 else None
        raw = memoryview(frame)[fr.preamble:fr.preamble + fr.size]
        if fn == 0x15:
            return self._rare(fn, t, raw, kind)
        if fn == 0x03 or fn == 0x14 or fn == 0x1C:
            return self._protected(fn, t, raw)
        if fn == 0x08:
            err = self._rare(fn, t)
            return self._err(0x08, err) if err else None
        if fn == 0x16:
            err = self._rare(fn, t)
            return self._err(0x16, err) if err else self._reply(0x96, self.out, 0)
        if fn == 0x17:
            return self._err(fn, _ERR_BAUD)
        if fn == 0x18 or fn == 0x19 or fn == 0x1A or fn == 0x1B:
            return self._err(fn, _ERR_AUTH)
        return self._err(fn, ERR_OTHER)

    def _match(self, a):
        # 1 own address, 2 wildcard (AA bytes, reads only), 3 broadcast, 0 not for us
        me = self.addr
        wild = False
        bc = True
        for i in range(6):
            b = a[i]
            if b != 0x99:
                bc = False
            if b != me[i]:
                if b == 0xAA:
                    wild = True
                elif not bc:
                    return 0
        if bc:
            return 3
        for i in range(6):
            if a[i] != me[i] and a[i] != 0xAA:
                return 0
        return 2 if wild else 1

    def _reply(self, ctrl, data, n):
        k = codec.encode_into(self.tx, self.addr, ctrl, data, n)
        return self._txv[:k]

    def _err(self, fn, err):
        self.out[0] = err
        return self._reply(fn | 0xC0, self.out, 1)

