# ESP32: machine.UART takes pin numbers; wait_tx_done() returns once the FIFO has drained.

import machine

from hal import board

_PARITY = {"E": 0, "O": 1, "N": None}


class Esp32(board.Board):
    def make_uart(self, uart_id, baud, parity, tx, rx):
        # UART0 carries the REPL; config picks 1 or 2 for the RS-485 line
        return machine.UART(uart_id, baudrate=baud, bits=8, parity=_PARITY[parity], stop=1,
                            tx=tx, rx=rx, timeout=0)

    def tx_done(self):
        self.uart.wait_tx_done(1000)


def main(config_path="config.json"):
    board.main(Esp32, config_path)
