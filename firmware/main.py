# Wiring only: pick the HAL for where this runs and hand over. Boards name themselves in
# sys.platform; anything else (CPython, the MicroPython unix port) is the desktop simulator.

import sys


def main():
    if sys.platform == "esp32":
        from hal import esp32
        esp32.main()
    elif sys.platform == "rp2":
        from hal import rp2
        rp2.main()
    else:
        from hal import sim
        sys.exit(sim.main(sys.argv[1:]))


if __name__ == "__main__":
    main()
