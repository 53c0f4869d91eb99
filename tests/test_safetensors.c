#define _GNU_SOURCE /* memmem */
/* safetensors and model loading on good and bad input: each bad case is named, and must fail
 * with the message it names (never crash, never succeed silently).
 * usage: test_safetensors TMP_DIR */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "common/forward.h"
#include "tools/genmodel.h"

static char tmp[1024];

/* writes an 8-byte length (which may lie), the header text, then data_bytes bytes */
static const char *write_st(const char *name, long long claimed_len, const char *header, size_t data_bytes) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s.safetensors", tmp, name);
    FILE *f = fopen(path, "wb");
    unsigned long long len = claimed_len >= 0 ? (unsigned long long)claimed_len : strlen(header);
    for (int i = 0; i < 8; i++) fputc((int)((len >> (8 * i)) & 0xff), f);
    fputs(header, f);
    for (size_t i = 0; i < data_bytes; i++) fputc((int)(i * 7 + 1), f);
    fclose(f);
    return path;
}

static void expect_open_error(const char *what, const char *path, const char *needle) {
    strata_err err = {{0}};
    st_file *f = st_open(path, &err);
    CHECK(f == NULL, "%s: opened a bad file", what);
    CHECK(strstr(err.msg, needle) != NULL, "%s: error '%s' does not mention '%s'", what, err.msg, needle);
    st_close(&f);
}

static void test_good_file(void) {
    const char *p = write_st("good", -1,
                             "{\"a\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                             "\"b\":{\"dtype\":\"U32\",\"shape\":[2],\"data_offsets\":[12,20]},"
                             "\"__metadata__\":{\"format\":\"mlx\"}}",
                             20);
    strata_err err = {{0}};
    st_file *f = st_open(p, &err);
    CHECK(f != NULL, "good file: %s", err.msg);
    if (!f) return;
    CHECK(st_count(f) == 2, "two tensors, got %d", st_count(f));
    const st_tensor *a = st_find(f, "a"), *b = st_find(f, "b");
    CHECK(a && a->dtype == BK_F16 && a->ndim == 2 && a->shape[1] == 3 && a->nbytes == 12, "tensor a parsed");
    CHECK(b && b->dtype == BK_U32 && b->nbytes == 8 && (const char *)b->data - (const char *)a->data == 12, "tensor b parsed");
    CHECK(st_meta(f, "format") && !strcmp(st_meta(f, "format"), "mlx"), "metadata read");
    CHECK(st_find(f, "c") == NULL, "absent tensor is NULL");
    st_close(&f);
    CHECK(f == NULL, "st_close nulls the handle");
}

static void test_bad_files(void) {
    const char *ok_entry = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    char path[4096];
    snprintf(path, sizeof path, "%s/tiny.safetensors", tmp);
    FILE *f = fopen(path, "wb");
    fputs("abc", f);
    fclose(f);
    expect_open_error("truncated file", path, "truncated");
    expect_open_error("header length past EOF", write_st("hlen", 1000, ok_entry, 8), "runs past the end");
    expect_open_error("invalid JSON", write_st("json", -1, "{\"a\": [1, 2", 8), "invalid header JSON");
    expect_open_error("header not an object", write_st("arr", -1, "[1,2,3]", 0), "not a JSON object");
    expect_open_error("offsets out of range",
                      write_st("range", -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8),
                      "out of range");
    expect_open_error("offsets reversed",
                      write_st("rev", -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8),
                      "out of range");
    expect_open_error("overlapping tensors",
                      write_st("overlap", -1,
                               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                               12),
                      "overlap");
    expect_open_error("unknown dtype",
                      write_st("dtype", -1, "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8),
                      "unknown dtype 'F8_E4M3'");
    expect_open_error("shape disagrees with bytes",
                      write_st("shape", -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8),
                      "shape holds 12 bytes");
    expect_open_error("negative dimension",
                      write_st("neg", -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8),
                      "non-negative");
    expect_open_error("overflowing shape",
                      write_st("ovf", -1,
                               "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8),
                      "overflow");
    expect_open_error("missing data_offsets", write_st("nooff", -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8),
                      "data_offsets");
    expect_open_error("duplicate key",
                      write_st("dup", -1,
                               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                               "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                               8),
                      "invalid header JSON");
    snprintf(path, sizeof path, "%s/does-not-exist.safetensors", tmp);
    expect_open_error("missing file", path, "No such file");
}

/* Loads a generated model after `edit` has damaged it; expects an error naming `needle`. */
static void expect_model_error(const char *what, const char *dir, const char *needle) {
    strata_err err = {{0}};
    model_config cfg;
    st_model *st = NULL;
    model *m = NULL;
    int failed = config_load(dir, &cfg, &err) != 0;
    if (!failed) failed = (st = st_model_open(dir, &err)) == NULL;
    if (!failed) {
        backend *be = backend_cpu_ref_new();
        model_part all = {0, cfg.n_layers, 1, 1};
        m = model_load(st, &cfg, &all, be, &err);
        failed = m == NULL;
        model_free(&m);
        backend_destroy(&be);
    }
    st_model_close(&st);
    CHECK(failed, "%s: loaded a bad model", what);
    CHECK(strstr(err.msg, needle) != NULL, "%s: error '%s' does not mention '%s'", what, err.msg, needle);
}

static void gen(const char *dir, int group, int shards) {
    gen_opts o;
    gen_opts_default(&o);
    o.group_size = group;
    o.shards = shards;
    strata_err err = {{0}};
    CHECK(gen_model(dir, &o, &err) == 0, "generate %s: %s", dir, err.msg);
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void replace_in_file(const char *dir, const char *name, const char *from, const char *to) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *at = strstr(buf, from);
    CHECK(at != NULL, "'%s' in %s", from, name);
    if (!at) return;
    static char out[1 << 16];
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - buf), buf, to, at + strlen(from));
    write_file(dir, name, out);
}

static void test_bad_models(void) {
    char dir[2048];
    /* scales written for group 32, config claims 64 */
    snprintf(dir, sizeof dir, "%s/m_group", tmp);
    gen(dir, 32, 1);
    replace_in_file(dir, "config.json", "\"group_size\": 32", "\"group_size\": 64");
    expect_model_error("q4 scales that do not match the group size", dir, "group size 64");

    snprintf(dir, sizeof dir, "%s/m_cfg", tmp);
    gen(dir, 64, 1);
    replace_in_file(dir, "config.json", "\"hidden_size\"", "\"hidden_sizes\"");
    expect_model_error("config missing a required field", dir, "missing required field 'hidden_size'");

    snprintf(dir, sizeof dir, "%s/m_type", tmp);
    gen(dir, 64, 1);
    replace_in_file(dir, "config.json", "\"qwen2\"", "\"gpt2\"");
    expect_model_error("unsupported model type", dir, "model_type 'gpt2' is not supported");

    /* a shard index naming a tensor the shard does not hold */
    snprintf(dir, sizeof dir, "%s/m_missing", tmp);
    gen(dir, 64, 2);
    replace_in_file(dir, "model.safetensors.index.json", "\"model.norm.weight\"", "\"model.norm.weightx\"");
    expect_model_error("index naming an absent tensor", dir, "'model.norm.weightx' is not in");

    /* a tensor the model needs is absent: take the index entry and the shard's copy away by
     * renaming it in the shard header (same length keeps the offsets valid) */
    snprintf(dir, sizeof dir, "%s/m_absent", tmp);
    gen(dir, 64, 1);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "r+b");
    static char head[1 << 16];
    size_t n = fread(head, 1, sizeof head - 1, f);
    head[n] = 0;
    char *at = memmem(head, n, "model.norm.weight", 17);
    CHECK(at != NULL, "norm in header");
    if (at) {
        fseek(f, at - head, SEEK_SET);
        fputs("model.norm.weighz", f);
    }
    fclose(f);
    expect_model_error("missing tensor", dir, "missing tensor 'model.norm.weight'");

    snprintf(dir, sizeof dir, "%s/m_nocfg", tmp);
    gen(dir, 64, 1);
    write_file(dir, "config.json", "{\"model_type\": \"qwen2\", ");
    expect_model_error("config with invalid JSON", dir, "invalid JSON");
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_safetensors TMP_DIR\n"); return 2; }
    snprintf(tmp, sizeof tmp, "%s", argv[1]);
    mkdir(tmp, 0755);
    test_good_file();
    test_bad_files();
    test_bad_models();
    return TEST_END();
}
