# ESP32: machine.UART takes pin numbers, and flush() waits until the last byte is on the wire,
# which is all hal/board.py assumes. UART0 carries the REPL; the config picks 1 or 2 for RS-485.

from hal import board


class Esp32(board.Board):
    pass


def main(config_path="config.json", retry_ms=10000):
    board.main(Esp32, config_path, retry_ms)
