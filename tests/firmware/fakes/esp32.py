# A stand-in for MicroPython's `esp32` module: NVS namespaces kept in nvs.json in the current
# directory (the board's flash), so the ESP32 HAL reads its meter key as on a board, and the fake
# mpremote's `run` stores it there as `meter flash` does.

import json

FILE = "nvs.json"


def _all():
    try:
        f = open(FILE)
    except OSError:
        return {}
    try:
        return json.loads(f.read())
    finally:
        f.close()


class NVS:
    def __init__(self, namespace):
        self.ns = namespace

    def get_blob(self, key, buf):
        v = _all().get(self.ns, {}).get(key)
        if v is None:
            raise OSError(-4354)  # ESP_ERR_NVS_NOT_FOUND
        b = bytes.fromhex(v)
        buf[:len(b)] = b
        return len(b)

    def set_blob(self, key, value):
        d = _all()
        d.setdefault(self.ns, {})[key] = bytes(value).hex()
        f = open(FILE, "w")
        f.write(json.dumps(d))
        f.close()

    def commit(self):
        pass
