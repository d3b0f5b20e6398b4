# The standard variant's build (nothing frozen: the meter loads from .mpy files), with the
# board's machine and esp32 modules in C (mpconfigvariant.h).
