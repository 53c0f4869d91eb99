/* libFuzzer target: the safetensors header parser (st_open), on a whole file. Every tensor it
 * hands out must lie inside the file: the loop touches each tensor's first and last byte so that
 * ASan sees an out-of-bounds descriptor. */
#include "common/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    strata_err err = {{0}};
    st_file *f = st_open(path, &err);
    volatile uint8_t sink = 0;
    for (int i = 0; f && i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        if (t->nbytes) sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->nbytes - 1];
        if (st_find(f, t->name) == NULL) __builtin_trap(); /* every listed tensor is findable */
    }
    if (f) (void)st_meta(f, "config");
    (void)sink;
    st_close(&f);
    close(fd);
    return 0;
}
