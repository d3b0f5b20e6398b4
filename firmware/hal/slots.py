# A board's state store: the core's flash region (two record slots, meter.store) as two files on
# the board's littlefs, PATH.0 and PATH.1, each rewritten whole for every record. littlefs copies a
# file from its first changed block to its end on every flush, and a read elsewhere in a file being
# written flushes it; the one-file layout (hal/flash.py) so cost tens of block erases per record.
# A slot file written front to back and closed once costs about one erase per record (none while
# the record fits inline in littlefs's metadata), on blocks littlefs takes in turn from its free
# space, so the wear is spread. littlefs commits a file only when it is closed: until then the
# slot's previous record stands whole, and the other slot holds the one before it. Opening and
# checking the files at start is hal.start's (open_slots).


class SlotFiles:
    """The flash object of meter.store over PATH.0 and PATH.1 (`size` bytes: half each). A
    missing slot file reads as erased flash.

    defer (set by meter.app.MeterApp): sync() leaves the record's commit to commit(), which the
    main loop calls in its next pass. Writing a slot file costs a block erase; closing it costs
    another whenever littlefs compacts the directory's metadata (every dozen or so records): in
    one pass that was two erases, ~92 ms with interrupts off on a Pico. Until the commit the slot's
    previous record stands, so the loop holds every reply and relay move that depends on the new
    one (MeterApp.poll). A read of the record, or a write of the other slot, commits it first."""

    def __init__(self, path, size):
        self.path = path
        self.size = size
        self.half = size // 2
        self._r = [None, None]  # read handles, opened when first read
        self._w = None          # the slot file being written: its record ends at sync()
        self.slot = -1
        self._pos = 0
        self.defer = False
        self.due = False  # a record is written and not yet committed

    def read(self, offset, n):
        slot = offset // self.half
        if slot == self.slot and self._w is not None:
            self.commit()  # a separate handle reads what littlefs has committed: commit first
        f = self._r[slot]
        if f is None:
            try:
                f = self._r[slot] = open("%s.%d" % (self.path, slot), "rb")
            except OSError:
                return b"\xff" * n
        f.seek(offset - slot * self.half)
        b = f.read(n)
        return b + b"\xff" * (n - len(b)) if len(b) < n else b  # past the record: erased

    def write(self, offset, data):
        slot = offset // self.half
        rel = offset - slot * self.half
        if offset < 0 or rel + len(data) > self.half:
            raise ValueError("flash write %d+%d outside its record slot" % (offset, len(data)))
        if self._w is None or slot != self.slot:
            if rel:
                raise ValueError("a record is written from its slot's start, not at %d" % rel)
            self.commit()
            r = self._r[slot]
            if r is not None:
                r.close()
                self._r[slot] = None
            self._w = open("%s.%d" % (self.path, slot), "wb")
            self.slot = slot
            self._pos = 0
        elif rel != self._pos:
            raise ValueError("a record is written front to back: %d after %d" % (rel, self._pos))
        self._w.write(data)
        self._pos = rel + len(data)

    def sync(self):
        """The record is written: commit it now, or (defer) in the loop's next pass."""
        if self.defer and self._w is not None:
            self.due = True
        else:
            self.commit()

    def commit(self):
        """Close the slot being written: littlefs commits it now, whole."""
        self.due = False
        w = self._w
        if w is not None:
            self._w = None
            w.close()

    def close(self):
        self.commit()
        for slot in (0, 1):
            r = self._r[slot]
            if r is not None:
                r.close()
                self._r[slot] = None
