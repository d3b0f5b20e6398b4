# The meter's non-volatile store as the core sees it: a fixed-size byte region with read and write
# at an offset and sync() once a record is down. The core keeps two alternating records with
# sequence and CRC inside it, so this layer only has to put bytes where it is told and push them
# out on sync(). Here the region is one file of its size on a host disk (the simulator's
# --state FILE, the fleet); a board keeps one file per record slot (hal/slots.py).

import os

from hal.start import StateError, refuse_damaged  # noqa: F401 - StateError: the HAL's callers catch it here


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


class FileFlash:
    """A `size`-byte flash region kept in the file `path`.

    A missing file is created blank (a new meter) only when `create` is true. A file of the wrong
    size is refused: a truncated state file must never be mistaken for a new, empty meter.
    """

    def __init__(self, path, size, create=True, sync=True):
        self.path = path
        self._sync = sync  # fsync at each record: off only where many meters share one host disk
        self.size = size
        self.created = False
        n = _size(path)
        if n < 0:
            if not create:
                raise StateError("state file %s is missing; refusing to start a blank meter" % path)
            f = open(path, "wb")
            # 0xFF is erased flash: the core sees "no record", not a record of zeros
            chunk = b"\xff" * 256
            left = size
            while left > 0:
                f.write(chunk[:min(256, left)])
                left -= 256
            f.close()
            chmod = getattr(os, "chmod", None)
            if chmod is not None:
                chmod(path, 0o600)  # the core keeps the meter key in its state (key updates must survive)
            self.created = True
        elif n != size:
            raise StateError("state file %s is %d bytes, expected %d: it is truncated or not this meter's "
                             "state; restore it from a backup (the balance is in it) or move it away to "
                             "start a new meter" % (path, n, size))
        self._f = open(path, "r+b")

    def read(self, offset, n):
        if offset < 0 or offset + n > self.size:
            raise ValueError("flash read %d+%d outside %d bytes" % (offset, n, self.size))
        self._f.seek(offset)
        return self._f.read(n)

    def write(self, offset, data):
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError("flash write %d+%d outside %d bytes" % (offset, len(data), self.size))
        self._f.seek(offset)
        self._f.write(data)

    def sync(self):
        """Push the record written since the last sync out to the disk (once per record)."""
        f = self._f
        f.flush()
        fsync = getattr(os, "fsync", None)
        if self._sync and fsync is not None:
            fsync(f.fileno())

    def blank(self):
        """True when every byte is erased (0xFF): a meter that never saved its state."""
        for off in range(0, self.size, 256):
            chunk = self.read(off, min(256, self.size - off))
            if chunk.count(b"\xff") != len(chunk):
                return False
        return True

    def close(self):
        self._f.close()


def open_state(path, size, create=True, sync=True):
    """The state file as a flash object, refusing one whose records are all damaged.

    The core treats a flash without an intact record as a new meter with a zero balance; that is
    right for a blank flash and wrong for a damaged one, so a damaged file stops the start here.
    create=False (a meter in service): a missing or erased (all 0xFF) file is refused as well.
    """
    flash = FileFlash(path, size, create, sync)
    blank = flash.created or flash.blank()
    if blank and not create:
        flash.close()
        raise StateError("state file %s is erased (all 0xFF) but this meter is in service; refusing to "
                         "start with a zero balance. Restore the file from a backup" % path)
    refuse_damaged(flash, path, blank)
    return flash
