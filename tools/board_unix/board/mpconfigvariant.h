// The unix port's standard variant, with its own `machine` module left out: the board's
// machine module (tools/board_unix/modules/board/modmachine.c) takes its name.
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)
#include "ports/unix/variants/mpconfigvariant_common.h"
#undef MICROPY_PY_MACHINE
#undef MICROPY_PY_MACHINE_PULSE
#undef MICROPY_PY_MACHINE_PIN_BASE
#define MICROPY_PY_MACHINE             (0)
#define MICROPY_PY_MACHINE_PULSE       (0)
#define MICROPY_PY_MACHINE_PIN_BASE    (0)
