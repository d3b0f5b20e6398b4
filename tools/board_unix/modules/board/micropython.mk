# The board's machine and esp32 modules in C (tools/board_unix/__init__.py builds them in)
BOARD_MOD_DIR := $(USERMOD_DIR)
SRC_USERMOD += $(BOARD_MOD_DIR)/modmachine.c $(BOARD_MOD_DIR)/modesp32.c
