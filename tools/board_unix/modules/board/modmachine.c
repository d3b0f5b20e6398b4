// `machine` as a board's firmware has it, for the unix port: a C module whose types, methods and
// names are in ROM and take no heap, as on an ESP32 or RP2040. Only what the meter's HAL uses
// (firmware/hal/board.py, start.py, esp32.py) and what tests/firmware/fakes/machine.py does for
// it, so the heap the HAL's boot takes here is the heap a board's boot takes.
//
// Pins and the RTC and WDT are static objects (a board's are), their state in static C; a UART is
// made on the heap (ESP32 makes one per constructor call). The outside world is played by the
// bench_* functions: bytes arriving on the line, what the meter sent, an edge on a pin. Their
// buffers are static, never on the GC heap, so the harness costs the measured heap nothing.

#include <string.h>

#include "py/runtime.h"
#include "py/mphal.h"

#define PIN_COUNT (64)  // as the root pointer below says
#define LINE_BUF (4096)

#define PIN_IN (0)
#define PIN_OUT (1)
#define PIN_PULL_UP (1)
#define PIN_PULL_DOWN (2)
#define PIN_IRQ_FALLING (4)
#define PIN_IRQ_RISING (8)

// an irq handler is a heap object (the HAL's bound method): the GC must see it, as on esp32
MP_REGISTER_ROOT_POINTER(mp_obj_t board_pin_irq_handler[64]);

// ---- Pin ------------------------------------------------------------------------------------

typedef struct _board_pin_obj_t {
    mp_obj_base_t base;
    mp_uint_t id;
} board_pin_obj_t;

extern const mp_obj_type_t board_pin_type;
static board_pin_obj_t pin_obj[PIN_COUNT];
static uint8_t pin_level[PIN_COUNT];
static uint8_t pin_trigger[PIN_COUNT];

static board_pin_obj_t *pin_get(mp_int_t id) {
    if (id < 0 || id >= PIN_COUNT) {
        mp_raise_ValueError(MP_ERROR_TEXT("invalid pin"));
    }
    board_pin_obj_t *self = &pin_obj[id];
    self->base.type = &board_pin_type;
    self->id = id;
    return self;
}

static mp_obj_t pin_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 1, 3, true);
    enum { ARG_mode, ARG_pull, ARG_value };
    static const mp_arg_t allowed[] = {
        { MP_QSTR_mode, MP_ARG_INT, {.u_int = -1} },
        { MP_QSTR_pull, MP_ARG_INT, {.u_int = -1} },
        { MP_QSTR_value, MP_ARG_KW_ONLY | MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
    };
    mp_arg_val_t vals[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all_kw_array(n_args - 1, n_kw, args + 1, MP_ARRAY_SIZE(allowed), allowed, vals);
    board_pin_obj_t *self = pin_get(mp_obj_get_int(args[0]));
    // as the fake: an input with a pull-up reads 1, a given value is the level
    uint8_t v = vals[ARG_pull].u_int == PIN_PULL_UP;
    if (vals[ARG_value].u_obj != mp_const_none) {
        v = mp_obj_is_true(vals[ARG_value].u_obj);
    }
    pin_level[self->id] = v;
    return MP_OBJ_FROM_PTR(self);
}

static mp_obj_t pin_value(size_t n_args, const mp_obj_t *args) {
    board_pin_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    if (n_args == 1) {
        return MP_OBJ_NEW_SMALL_INT(pin_level[self->id]);
    }
    pin_level[self->id] = mp_obj_is_true(args[1]);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(pin_value_obj, 1, 2, pin_value);

static mp_obj_t pin_irq(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_handler, ARG_trigger };
    static const mp_arg_t allowed[] = {
        { MP_QSTR_handler, MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_trigger, MP_ARG_INT, {.u_int = PIN_IRQ_FALLING | PIN_IRQ_RISING} },
    };
    mp_arg_val_t vals[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all(n_args - 1, pos_args + 1, kw_args, MP_ARRAY_SIZE(allowed), allowed, vals);
    board_pin_obj_t *self = MP_OBJ_TO_PTR(pos_args[0]);
    MP_STATE_PORT(board_pin_irq_handler)[self->id] = vals[ARG_handler].u_obj;
    pin_trigger[self->id] = vals[ARG_trigger].u_int;
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_KW(pin_irq_obj, 1, pin_irq);

static const mp_rom_map_elem_t pin_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_value), MP_ROM_PTR(&pin_value_obj) },
    { MP_ROM_QSTR(MP_QSTR_irq), MP_ROM_PTR(&pin_irq_obj) },
    { MP_ROM_QSTR(MP_QSTR_IN), MP_ROM_INT(PIN_IN) },
    { MP_ROM_QSTR(MP_QSTR_OUT), MP_ROM_INT(PIN_OUT) },
    { MP_ROM_QSTR(MP_QSTR_PULL_UP), MP_ROM_INT(PIN_PULL_UP) },
    { MP_ROM_QSTR(MP_QSTR_PULL_DOWN), MP_ROM_INT(PIN_PULL_DOWN) },
    { MP_ROM_QSTR(MP_QSTR_IRQ_FALLING), MP_ROM_INT(PIN_IRQ_FALLING) },
    { MP_ROM_QSTR(MP_QSTR_IRQ_RISING), MP_ROM_INT(PIN_IRQ_RISING) },
};
static MP_DEFINE_CONST_DICT(pin_locals_dict, pin_locals_table);

MP_DEFINE_CONST_OBJ_TYPE(board_pin_type, MP_QSTR_Pin, MP_TYPE_FLAG_NONE,
    make_new, pin_make_new, locals_dict, &pin_locals_dict);

// ---- UART: one line, its buffers static -----------------------------------------------------

static uint8_t rx_buf[LINE_BUF];
static size_t rx_len;
static uint8_t tx_buf[LINE_BUF];
static size_t tx_len;

typedef struct _board_uart_obj_t {
    mp_obj_base_t base;
    mp_int_t id;
} board_uart_obj_t;

extern const mp_obj_type_t board_uart_type;

static mp_obj_t uart_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 1, MP_OBJ_FUN_ARGS_MAX, true);
    static const mp_arg_t allowed[] = {
        { MP_QSTR_baudrate, MP_ARG_INT, {.u_int = 9600} },
        { MP_QSTR_bits, MP_ARG_INT, {.u_int = 8} },
        { MP_QSTR_parity, MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_stop, MP_ARG_INT, {.u_int = 1} },
        { MP_QSTR_tx, MP_ARG_KW_ONLY | MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_rx, MP_ARG_KW_ONLY | MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_timeout, MP_ARG_KW_ONLY | MP_ARG_INT, {.u_int = 0} },
        { MP_QSTR_timeout_char, MP_ARG_KW_ONLY | MP_ARG_INT, {.u_int = 0} },
        { MP_QSTR_rxbuf, MP_ARG_KW_ONLY | MP_ARG_INT, {.u_int = 256} },
        { MP_QSTR_txbuf, MP_ARG_KW_ONLY | MP_ARG_INT, {.u_int = 256} },
    };
    mp_arg_val_t vals[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all_kw_array(n_args - 1, n_kw, args + 1, MP_ARRAY_SIZE(allowed), allowed, vals);
    board_uart_obj_t *self = mp_obj_malloc(board_uart_obj_t, &board_uart_type);
    self->id = mp_obj_get_int(args[0]);
    return MP_OBJ_FROM_PTR(self);
}

static mp_obj_t uart_any(mp_obj_t self_in) {
    return MP_OBJ_NEW_SMALL_INT(rx_len);
}
static MP_DEFINE_CONST_FUN_OBJ_1(uart_any_obj, uart_any);

static mp_obj_t uart_read(size_t n_args, const mp_obj_t *args) {
    if (rx_len == 0) {
        return mp_const_none;  // as a board's UART with timeout=0 and nothing waiting
    }
    size_t n = rx_len;
    if (n_args > 1) {
        mp_int_t want = mp_obj_get_int(args[1]);
        if (want >= 0 && (size_t)want < n) {
            n = want;
        }
    }
    mp_obj_t out = mp_obj_new_bytes(rx_buf, n);
    memmove(rx_buf, rx_buf + n, rx_len - n);
    rx_len -= n;
    return out;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(uart_read_obj, 1, 2, uart_read);

static mp_obj_t uart_write(mp_obj_t self_in, mp_obj_t data) {
    mp_buffer_info_t buf;
    mp_get_buffer_raise(data, &buf, MP_BUFFER_READ);
    if (buf.len > LINE_BUF - tx_len) {
        mp_raise_ValueError(MP_ERROR_TEXT("bench line full: take what was sent (machine.bench_take)"));
    }
    memcpy(tx_buf + tx_len, buf.buf, buf.len);
    tx_len += buf.len;
    return MP_OBJ_NEW_SMALL_INT(buf.len);
}
static MP_DEFINE_CONST_FUN_OBJ_2(uart_write_obj, uart_write);

static mp_obj_t uart_flush(mp_obj_t self_in) {
    return mp_const_none;  // every byte is out at once
}
static MP_DEFINE_CONST_FUN_OBJ_1(uart_flush_obj, uart_flush);

static mp_obj_t uart_txdone(mp_obj_t self_in) {
    return mp_const_true;
}
static MP_DEFINE_CONST_FUN_OBJ_1(uart_txdone_obj, uart_txdone);

static const mp_rom_map_elem_t uart_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_any), MP_ROM_PTR(&uart_any_obj) },
    { MP_ROM_QSTR(MP_QSTR_read), MP_ROM_PTR(&uart_read_obj) },
    { MP_ROM_QSTR(MP_QSTR_write), MP_ROM_PTR(&uart_write_obj) },
    { MP_ROM_QSTR(MP_QSTR_flush), MP_ROM_PTR(&uart_flush_obj) },
    { MP_ROM_QSTR(MP_QSTR_txdone), MP_ROM_PTR(&uart_txdone_obj) },
};
static MP_DEFINE_CONST_DICT(uart_locals_dict, uart_locals_table);

MP_DEFINE_CONST_OBJ_TYPE(board_uart_type, MP_QSTR_UART, MP_TYPE_FLAG_NONE,
    make_new, uart_make_new, locals_dict, &uart_locals_dict);

// ---- RTC: the fake's date, set as a board's is --------------------------------------------

static mp_int_t rtc_now[8] = {2026, 6, 1, 0, 12, 0, 0, 0};

typedef struct _board_rtc_obj_t {
    mp_obj_base_t base;
} board_rtc_obj_t;

extern const mp_obj_type_t board_rtc_type;
static const board_rtc_obj_t rtc_obj = {{&board_rtc_type}};

static mp_obj_t rtc_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    return MP_OBJ_FROM_PTR(&rtc_obj);
}

static mp_obj_t rtc_datetime(size_t n_args, const mp_obj_t *args) {
    if (n_args == 1) {
        mp_obj_t t[8];
        for (int i = 0; i < 8; i++) {
            t[i] = mp_obj_new_int(rtc_now[i]);
        }
        return mp_obj_new_tuple(8, t);
    }
    mp_obj_t *t;
    mp_obj_get_array_fixed_n(args[1], 8, &t);
    for (int i = 0; i < 8; i++) {
        rtc_now[i] = mp_obj_get_int(t[i]);
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(rtc_datetime_obj, 1, 2, rtc_datetime);

static const mp_rom_map_elem_t rtc_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_datetime), MP_ROM_PTR(&rtc_datetime_obj) },
};
static MP_DEFINE_CONST_DICT(rtc_locals_dict, rtc_locals_table);

MP_DEFINE_CONST_OBJ_TYPE(board_rtc_type, MP_QSTR_RTC, MP_TYPE_FLAG_NONE,
    make_new, rtc_make_new, locals_dict, &rtc_locals_dict);

// ---- WDT ------------------------------------------------------------------------------------

static mp_uint_t wdt_fed;

typedef struct _board_wdt_obj_t {
    mp_obj_base_t base;
} board_wdt_obj_t;

extern const mp_obj_type_t board_wdt_type;
static const board_wdt_obj_t wdt_obj = {{&board_wdt_type}};

static mp_obj_t wdt_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    static const mp_arg_t allowed[] = {
        { MP_QSTR_id, MP_ARG_INT, {.u_int = 0} },
        { MP_QSTR_timeout, MP_ARG_INT, {.u_int = 5000} },
    };
    mp_arg_val_t vals[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all_kw_array(n_args, n_kw, args, MP_ARRAY_SIZE(allowed), allowed, vals);
    return MP_OBJ_FROM_PTR(&wdt_obj);
}

static mp_obj_t wdt_feed(mp_obj_t self_in) {
    wdt_fed++;
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(wdt_feed_obj, wdt_feed);

static const mp_rom_map_elem_t wdt_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_feed), MP_ROM_PTR(&wdt_feed_obj) },
};
static MP_DEFINE_CONST_DICT(wdt_locals_dict, wdt_locals_table);

MP_DEFINE_CONST_OBJ_TYPE(board_wdt_type, MP_QSTR_WDT, MP_TYPE_FLAG_NONE,
    make_new, wdt_make_new, locals_dict, &wdt_locals_dict);

// ---- functions ------------------------------------------------------------------------------

static mp_int_t irq_state;

static mp_obj_t machine_disable_irq(void) {
    return MP_OBJ_NEW_SMALL_INT(++irq_state);
}
static MP_DEFINE_CONST_FUN_OBJ_0(machine_disable_irq_obj, machine_disable_irq);

static mp_obj_t machine_enable_irq(mp_obj_t state) {
    irq_state--;
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(machine_enable_irq_obj, machine_enable_irq);

static mp_obj_t machine_reset(void) {
    mp_raise_msg(&mp_type_SystemExit, MP_ERROR_TEXT("machine.reset()"));
}
static MP_DEFINE_CONST_FUN_OBJ_0(machine_reset_obj, machine_reset);

// ---- the outside world (the bench's hooks; a board has none) --------------------------------

static mp_obj_t bench_rx(mp_obj_t data) {
    // bytes arriving on the line
    mp_buffer_info_t buf;
    mp_get_buffer_raise(data, &buf, MP_BUFFER_READ);
    if (buf.len > LINE_BUF - rx_len) {
        mp_raise_ValueError(MP_ERROR_TEXT("bench line full: the meter has not read what arrived"));
    }
    memcpy(rx_buf + rx_len, buf.buf, buf.len);
    rx_len += buf.len;
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(bench_rx_obj, bench_rx);

static mp_obj_t bench_sent(void) {
    // how many bytes the meter has sent and the bench not yet taken
    return MP_OBJ_NEW_SMALL_INT(tx_len);
}
static MP_DEFINE_CONST_FUN_OBJ_0(bench_sent_obj, bench_sent);

static mp_obj_t bench_take(void) {
    // what the meter has sent, taken off the line
    mp_obj_t out = mp_obj_new_bytes(tx_buf, tx_len);
    tx_len = 0;
    return out;
}
static MP_DEFINE_CONST_FUN_OBJ_0(bench_take_obj, bench_take);

static mp_obj_t bench_level(mp_obj_t id_in, mp_obj_t v_in) {
    // an external level change on a pin: its handler runs as the hardware would run it
    board_pin_obj_t *pin = pin_get(mp_obj_get_int(id_in));
    uint8_t v = mp_obj_is_true(v_in);
    uint8_t old = pin_level[pin->id];
    pin_level[pin->id] = v;
    mp_obj_t handler = MP_STATE_PORT(board_pin_irq_handler)[pin->id];
    uint8_t trig = pin_trigger[pin->id];
    if (handler != MP_OBJ_NULL && handler != mp_const_none && old != v
        && ((v == 0 && (trig & PIN_IRQ_FALLING)) || (v == 1 && (trig & PIN_IRQ_RISING)))) {
        mp_call_function_1(handler, MP_OBJ_FROM_PTR(pin));
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(bench_level_obj, bench_level);

static mp_obj_t bench_fed(void) {
    // how often the watchdog was fed
    return mp_obj_new_int_from_uint(wdt_fed);
}
static MP_DEFINE_CONST_FUN_OBJ_0(bench_fed_obj, bench_fed);

static const mp_rom_map_elem_t machine_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_machine) },
    { MP_ROM_QSTR(MP_QSTR_Pin), MP_ROM_PTR(&board_pin_type) },
    { MP_ROM_QSTR(MP_QSTR_UART), MP_ROM_PTR(&board_uart_type) },
    { MP_ROM_QSTR(MP_QSTR_RTC), MP_ROM_PTR(&board_rtc_type) },
    { MP_ROM_QSTR(MP_QSTR_WDT), MP_ROM_PTR(&board_wdt_type) },
    { MP_ROM_QSTR(MP_QSTR_disable_irq), MP_ROM_PTR(&machine_disable_irq_obj) },
    { MP_ROM_QSTR(MP_QSTR_enable_irq), MP_ROM_PTR(&machine_enable_irq_obj) },
    { MP_ROM_QSTR(MP_QSTR_reset), MP_ROM_PTR(&machine_reset_obj) },
    { MP_ROM_QSTR(MP_QSTR_bench_rx), MP_ROM_PTR(&bench_rx_obj) },
    { MP_ROM_QSTR(MP_QSTR_bench_sent), MP_ROM_PTR(&bench_sent_obj) },
    { MP_ROM_QSTR(MP_QSTR_bench_take), MP_ROM_PTR(&bench_take_obj) },
    { MP_ROM_QSTR(MP_QSTR_bench_level), MP_ROM_PTR(&bench_level_obj) },
    { MP_ROM_QSTR(MP_QSTR_bench_fed), MP_ROM_PTR(&bench_fed_obj) },
};
static MP_DEFINE_CONST_DICT(machine_module_globals, machine_module_globals_table);

const mp_obj_module_t board_machine_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&machine_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR_machine, board_machine_module);
