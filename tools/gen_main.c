/* strata-gen: writes a synthetic MLX checkpoint at a named shape. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/genmodel.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: strata-gen --out DIR [--shape NAME] [--seed N] [--bits 4|8|0] [--group 32|64|128]\n"
            "                  [--dtype f16|bf16|f32] [--tied|--untied] [--shards N] [--layers N]\n"
            "                  [--vocab N] [--mixed]\n"
            "shapes:");
    for (int i = 0; gen_shape_names[i]; i++) fprintf(f, " %s", gen_shape_names[i]);
    fprintf(f, "\n");
}

static int parse_int(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (*v == '\0' || *end || x < lo || x > hi) {
        fprintf(stderr, "strata-gen: %s: '%s' is not an integer in [%ld, %ld]\n", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int main(int argc, char **argv) {
    gen_opts o;
    gen_opts_default(&o);
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        int takes = !strcmp(a, "--out") || !strcmp(a, "--shape") || !strcmp(a, "--seed") || !strcmp(a, "--bits") ||
                    !strcmp(a, "--group") || !strcmp(a, "--dtype") || !strcmp(a, "--shards") ||
                    !strcmp(a, "--layers") || !strcmp(a, "--vocab");
        if (takes && !v) { fprintf(stderr, "strata-gen: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--shape")) o.shape = v;
        else if (!strcmp(a, "--seed")) { if (parse_int(a, v, 0, 0x7fffffffL, &x)) return 2; o.seed = (uint64_t)x; }
        else if (!strcmp(a, "--bits")) { if (parse_int(a, v, 0, 8, &x)) return 2; o.bits = (int)x; }
        else if (!strcmp(a, "--group")) { if (parse_int(a, v, 1, 1024, &x)) return 2; o.group_size = (int)x; }
        else if (!strcmp(a, "--shards")) { if (parse_int(a, v, 1, 1000, &x)) return 2; o.shards = (int)x; }
        else if (!strcmp(a, "--layers")) { if (parse_int(a, v, 1, 4096, &x)) return 2; o.n_layers = (int)x; }
        else if (!strcmp(a, "--vocab")) { if (parse_int(a, v, 1, 1 << 22, &x)) return 2; o.vocab_size = (int)x; }
        else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "f16")) o.float_dtype = BK_F16;
            else if (!strcmp(v, "bf16")) o.float_dtype = BK_BF16;
            else if (!strcmp(v, "f32")) o.float_dtype = BK_F32;
            else { fprintf(stderr, "strata-gen: --dtype: '%s' is not f16, bf16 or f32\n", v); return 2; }
        } else if (!strcmp(a, "--tied")) { o.tied = 1; continue; }
        else if (!strcmp(a, "--untied")) { o.tied = 0; continue; }
        else if (!strcmp(a, "--mixed")) { o.mixed = 1; continue; }
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else { fprintf(stderr, "strata-gen: unknown option '%s' (see --help)\n", a); return 2; }
        i++;
    }
    if (!out) { usage(stderr); return 2; }
    strata_err err = {{0}};
    if (gen_model(out, &o, &err)) {
        fprintf(stderr, "strata-gen: %s\n", err.msg);
        return 1;
    }
    printf("strata-gen: wrote %s (%s, %d-bit, seed %llu)\n", out, o.shape, o.bits, (unsigned long long)o.seed);
    return 0;
}
