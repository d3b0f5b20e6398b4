// `esp32` as the ESP32 firmware has it, for the unix port: NVS in C, its type and names in ROM.
// The namespaces are the file nvs.json in the current directory, in the form the Python fake
// (tests/firmware/fakes/esp32.py) and the harness write: {"ns": {"key": "hex of the blob"}}.
// It is read and written with C stdio into static buffers: nothing of it is on the GC heap, as
// on a board, where NVS lives in flash and the IDF's own memory.

#include <stdio.h>
#include <string.h>

#include "py/runtime.h"
#include "py/mperrno.h"

#define NVS_FILE "nvs.json"
#define NVS_ENTRIES (8)
#define NVS_NAME (16)  // NVS names are at most 15 characters
#define NVS_BLOB (256)
#define ESP_ERR_NVS_NOT_FOUND (-4354)

typedef struct {
    char ns[NVS_NAME];
    char key[NVS_NAME];
    uint8_t blob[NVS_BLOB];
    size_t len;
} nvs_entry_t;

static nvs_entry_t nvs[NVS_ENTRIES];
static size_t nvs_n;
static char nvs_text[NVS_ENTRIES * (2 * NVS_BLOB + 3 * NVS_NAME) + 64];

static int hex_digit(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void nvs_load(void) {
    // the small fixed form only: names at depth 1 are namespaces, at depth 2 keys, each key's
    // value a string of hex digits
    nvs_n = 0;
    FILE *f = fopen(NVS_FILE, "r");
    if (f == NULL) {
        return;
    }
    size_t n = fread(nvs_text, 1, sizeof(nvs_text) - 1, f);
    fclose(f);
    nvs_text[n] = 0;
    int depth = 0;
    bool value = false;
    char ns[NVS_NAME] = "";
    char key[NVS_NAME] = "";
    for (char *p = nvs_text; *p; p++) {
        if (*p == '{') {
            depth++;
        } else if (*p == '}') {
            depth--;
        } else if (*p == '"') {
            char *s = p + 1;
            char *e = strchr(s, '"');
            if (e == NULL) {
                return;
            }
            size_t len = e - s;
            p = e;
            if (value) {
                value = false;
                if (nvs_n == NVS_ENTRIES || len / 2 > NVS_BLOB) {
                    continue;
                }
                nvs_entry_t *ent = &nvs[nvs_n++];
                strcpy(ent->ns, ns);
                strcpy(ent->key, key);
                ent->len = len / 2;
                for (size_t i = 0; i < ent->len; i++) {
                    ent->blob[i] = hex_digit(s[2 * i]) << 4 | hex_digit(s[2 * i + 1]);
                }
            } else if (len < NVS_NAME && (depth == 1 || depth == 2)) {
                char *name = depth == 1 ? ns : key;
                memcpy(name, s, len);
                name[len] = 0;
                value = depth == 2;
            }
        }
    }
}

static void nvs_save(void) {
    FILE *f = fopen(NVS_FILE, "w");
    if (f == NULL) {
        mp_raise_OSError(MP_EIO);
    }
    fputc('{', f);
    for (size_t i = 0; i < nvs_n; i++) {
        bool first = true;
        for (size_t j = 0; j < i; j++) {
            first = first && strcmp(nvs[j].ns, nvs[i].ns) != 0;
        }
        if (!first) {
            continue;  // written with the first entry of its namespace
        }
        fprintf(f, "%s\"%s\": {", i ? ", " : "", nvs[i].ns);
        bool sep = false;
        for (size_t j = i; j < nvs_n; j++) {
            if (strcmp(nvs[j].ns, nvs[i].ns) == 0) {
                fprintf(f, "%s\"%s\": \"", sep ? ", " : "", nvs[j].key);
                for (size_t k = 0; k < nvs[j].len; k++) {
                    fprintf(f, "%02x", nvs[j].blob[k]);
                }
                fputc('"', f);
                sep = true;
            }
        }
        fputc('}', f);
    }
    fputc('}', f);
    fclose(f);
}

static nvs_entry_t *nvs_find(const char *ns, const char *key) {
    for (size_t i = 0; i < nvs_n; i++) {
        if (strcmp(nvs[i].ns, ns) == 0 && strcmp(nvs[i].key, key) == 0) {
            return &nvs[i];
        }
    }
    return NULL;
}

typedef struct _board_nvs_obj_t {
    mp_obj_base_t base;
    char ns[NVS_NAME];
} board_nvs_obj_t;

extern const mp_obj_type_t board_nvs_type;

static mp_obj_t nvs_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 1, 1, false);
    size_t len;
    const char *ns = mp_obj_str_get_data(args[0], &len);
    if (len >= NVS_NAME) {
        mp_raise_ValueError(MP_ERROR_TEXT("NVS namespace longer than 15 characters"));
    }
    board_nvs_obj_t *self = mp_obj_malloc(board_nvs_obj_t, &board_nvs_type);  // as the IDF port's NVS
    memcpy(self->ns, ns, len);
    self->ns[len] = 0;
    return MP_OBJ_FROM_PTR(self);
}

static mp_obj_t nvs_get_blob(mp_obj_t self_in, mp_obj_t key_in, mp_obj_t buf_in) {
    board_nvs_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mp_buffer_info_t buf;
    mp_get_buffer_raise(buf_in, &buf, MP_BUFFER_WRITE);
    nvs_load();
    nvs_entry_t *ent = nvs_find(self->ns, mp_obj_str_get_str(key_in));
    if (ent == NULL) {
        mp_raise_OSError(ESP_ERR_NVS_NOT_FOUND);
    }
    size_t n = ent->len < buf.len ? ent->len : buf.len;
    memcpy(buf.buf, ent->blob, n);
    return MP_OBJ_NEW_SMALL_INT(ent->len);
}
static MP_DEFINE_CONST_FUN_OBJ_3(nvs_get_blob_obj, nvs_get_blob);

static mp_obj_t nvs_set_blob(mp_obj_t self_in, mp_obj_t key_in, mp_obj_t value_in) {
    board_nvs_obj_t *self = MP_OBJ_TO_PTR(self_in);
    size_t klen;
    const char *key = mp_obj_str_get_data(key_in, &klen);
    mp_buffer_info_t value;
    mp_get_buffer_raise(value_in, &value, MP_BUFFER_READ);
    if (klen >= NVS_NAME || value.len > NVS_BLOB) {
        mp_raise_ValueError(MP_ERROR_TEXT("NVS key longer than 15 characters or blob over 256 bytes"));
    }
    nvs_load();
    nvs_entry_t *ent = nvs_find(self->ns, key);
    if (ent == NULL) {
        if (nvs_n == NVS_ENTRIES) {
            mp_raise_OSError(MP_ENOSPC);
        }
        ent = &nvs[nvs_n++];
        strcpy(ent->ns, self->ns);
        strcpy(ent->key, key);
    }
    memcpy(ent->blob, value.buf, value.len);
    ent->len = value.len;
    nvs_save();
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_3(nvs_set_blob_obj, nvs_set_blob);

static mp_obj_t nvs_commit(mp_obj_t self_in) {
    return mp_const_none;  // set_blob wrote the file already
}
static MP_DEFINE_CONST_FUN_OBJ_1(nvs_commit_obj, nvs_commit);

static const mp_rom_map_elem_t nvs_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_get_blob), MP_ROM_PTR(&nvs_get_blob_obj) },
    { MP_ROM_QSTR(MP_QSTR_set_blob), MP_ROM_PTR(&nvs_set_blob_obj) },
    { MP_ROM_QSTR(MP_QSTR_commit), MP_ROM_PTR(&nvs_commit_obj) },
};
static MP_DEFINE_CONST_DICT(nvs_locals_dict, nvs_locals_table);

MP_DEFINE_CONST_OBJ_TYPE(board_nvs_type, MP_QSTR_NVS, MP_TYPE_FLAG_NONE,
    make_new, nvs_make_new, locals_dict, &nvs_locals_dict);

static const mp_rom_map_elem_t esp32_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_esp32) },
    { MP_ROM_QSTR(MP_QSTR_NVS), MP_ROM_PTR(&board_nvs_type) },
};
static MP_DEFINE_CONST_DICT(esp32_module_globals, esp32_module_globals_table);

const mp_obj_module_t board_esp32_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&esp32_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR_esp32, board_esp32_module);
