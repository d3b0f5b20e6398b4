# Freezing the meter into a custom MicroPython firmware, for boards with little RAM: frozen
# bytecode runs from flash and leaves the heap to the meter. From a micropython checkout:
#
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/abs/path/firmware/manifest.py
#   make -C ports/rp2 BOARD=RPI_PICO FROZEN_MANIFEST=/abs/path/firmware/manifest.py
#
# Flash that firmware, then deploy only main.py and config.json (`meter flash --frozen`).
# `meter build --frozen` writes this file, with the sources beside it, into the image directory.
# The simulator's modules (hal/sim.py, hal/load.py, hal/flash.py) stay out: a board never imports them.

include("$(PORT_DIR)/boards/manifest.py")  # noqa: F821 - the port's own frozen modules

package("meter")  # noqa: F821
_HAL = ["__init__.py", "board.py", "config.py", "slots.py", "start.py", "faults.py", "rtc.py", "keypad.py", "esp32.py", "rp2.py"]
package("hal", files=_HAL)  # noqa: F821
