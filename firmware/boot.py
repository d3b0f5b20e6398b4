# The meter needs nothing before main.py. This file is deployed anyway so that a boot.py left on
# the board by earlier experiments (Wi-Fi, a mounted SD card, a REPL on the RS-485 UART) cannot
# run before the meter and take its pins.
