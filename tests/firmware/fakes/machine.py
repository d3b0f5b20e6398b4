# A stand-in for MicroPython's `machine` module, so the board HALs run under the micropython unix
# binary with no board attached. It keeps what the HAL did (pin writes, UART bytes, the DE level
# while each byte block went out) and lets a test play the outside world (bytes arriving on the
# line, pulse edges, the button, the relay's sense contact).

pins = {}
levels = {}  # pin id -> the level the outside world holds it at when the HAL makes the Pin
uarts = []
wdts = []
_irq_state = [0]


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = mode
        self.pull = pull
        self._v = 1 if pull == Pin.PULL_UP else 0
        if value is not None:
            self._v = 1 if value else 0
        if id in levels and mode != Pin.OUT:
            self._v = levels[id]
        self.writes = []
        self.handler = None
        self.trigger = 0
        pins[id] = self

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0
        self.writes.append(self._v)
        return None

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING):
        self.handler = handler
        self.trigger = trigger

    # --- the outside world -------------------------------------------------------------------
    def level(self, v):
        """An external level change; runs the handler as the hardware would."""
        old, self._v = self._v, v
        if self.handler and old != v:
            if (v == 0 and self.trigger & Pin.IRQ_FALLING) or (v == 1 and self.trigger & Pin.IRQ_RISING):
                self.handler(self)


class UART:
    def __init__(self, id, baudrate=9600, bits=8, parity=None, stop=1, tx=None, rx=None, timeout=0, **kw):
        self.id = id
        self.args = (baudrate, bits, parity, stop, tx, rx)
        self.rx = bytearray()
        self.tx = bytearray()
        self.blocks = []  # (DE level while writing, bytes)
        self.de = None    # the test names the DE pin id so writes record its level
        self.waits = 0
        uarts.append(self)

    def any(self):
        return len(self.rx)

    def read(self, n=-1):
        if not self.rx:
            return None
        n = len(self.rx) if n < 0 else min(n, len(self.rx))
        out = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return out

    def write(self, data):
        self.tx.extend(data)
        self.blocks.append((pins[self.de].value() if self.de is not None else None, bytes(data)))
        return len(data)

    def flush(self):  # esp32 (hal.board default): returns when the last byte has gone
        self.waits += 1

    def txdone(self):  # rp2
        self.waits += 1
        return True


class RTC:
    now = (2026, 6, 1, 0, 12, 0, 0, 0)

    def datetime(self, dt=None):
        if dt is None:
            return RTC.now
        RTC.now = dt


class I2C:
    """An I2C bus whose devices are register files: devices[address] = bytearray(256)."""
    devices = {}

    def __init__(self, id, scl=None, sda=None, freq=400000):
        self.id = id
        self.pins = (scl, sda)

    def readfrom_mem(self, addr, reg, n):
        if addr not in I2C.devices:
            raise OSError(19)  # ENODEV, as a port says for a device that does not answer
        return bytes(I2C.devices[addr][reg:reg + n])

    def writeto_mem(self, addr, reg, buf):
        if addr not in I2C.devices:
            raise OSError(19)
        I2C.devices[addr][reg:reg + len(buf)] = buf


class WDT:
    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.fed = 0
        wdts.append(self)

    def feed(self):
        self.fed += 1


def disable_irq():
    _irq_state[0] += 1
    return _irq_state[0]


def enable_irq(state):
    _irq_state[0] -= 1


def reset():
    raise SystemExit("machine.reset()")
