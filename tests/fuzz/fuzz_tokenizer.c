/* libFuzzer target: the tokenizer.json loader (tok_load_files), on a whole file. A tokenizer that
 * loads must then encode and decode a fixed text without fault (the tables it built are used). */
#include <stdlib.h>
#include <string.h>

#include "common/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    strata_err err = {{0}};
    tokenizer *t = tok_load_files(path, NULL, &err);
    if (t) {
        static const char text[] = "Hello, world! 123 caf\xc3\xa9 <|im_start|>  \n\ttabs";
        int32_t *ids = NULL;
        int n = 0;
        if (!tok_encode(t, text, sizeof text - 1, TOK_ADD_SPECIAL, &ids, &n, &err)) {
            char *out = NULL;
            size_t out_len = 0;
            if (!tok_decode(t, ids, n, 0, &out, &out_len, &err)) free(out);
        }
        free(ids);
        tok_free(&t);
    }
    close(fd);
    return 0;
}
