# RP2040 / RP2350: machine.UART wants Pin objects; txdone() turns true when the FIFO is empty,
# and Board.send then waits one more character for the shift register.

import time

import machine

from hal import board


class Rp2(board.Board):
    def make_uart(self, uart_id, baud, parity, tx, rx):
        return machine.UART(uart_id, baudrate=baud, bits=8, parity=board.PARITY[parity], stop=1,
                            tx=machine.Pin(tx), rx=machine.Pin(rx), timeout=0)

    def tx_done(self):
        t0 = time.ticks_ms()
        while not self.uart.txdone():
            if time.ticks_diff(time.ticks_ms(), t0) > 1000:
                break


def main(config_path="config.json", retry_ms=10000):
    board.main(Rp2, config_path, retry_ms)
