# ESP32: machine.UART takes pin numbers, and flush() waits until the last byte is on the wire,
# which is all hal/board.py assumes. UART0 carries the REPL; the config picks 1 or 2 for RS-485.

from hal import board


class Esp32(board.Board):
    @staticmethod
    def read_key():
        """The meter key from NVS (namespace prepaid645, blob "key": 32 hex digits), where
        `meter flash` wrote it; None when it is not there."""
        import esp32
        buf = bytearray(32)
        try:
            esp32.NVS("prepaid645").get_blob("key", buf)
        except OSError:
            return None
        return buf.decode()


def main(config_path="config.json", retry_ms=10000):
    board.main(Esp32, config_path, retry_ms)
