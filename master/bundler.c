#include "master/bundler.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUNDLE_ALIGN 64              /* data section starts on a cache line (zero-copy backends) */
#define BUNDLE_IO_BYTES (4u << 20)   /* hashing / writing reads this much at a time */

typedef struct {
    const st_tensor *t;
    uint64_t offset;                 /* of its first byte in the bundle */
} bundle_piece;

struct bundle {
    char *header;                    /* 8-byte length + JSON + padding */
    size_t header_bytes;
    int n;
    bundle_piece *pieces;            /* in data order */
    uint64_t size;
};

typedef struct {
    const st_model *st;
    const st_tensor **list;
    int n;
} collect_ctx;

static void collect(const char *name, void *user) {
    collect_ctx *c = user;
    c->list[c->n++] = st_model_find(c->st, name);
}

/* wider elements first keeps every tensor naturally aligned without holes between them (the
 * safetensors format forbids holes); names break ties so that the order is deterministic */
static int cmp_data_order(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    size_t ex = bk_dtype_size(x->dtype), ey = bk_dtype_size(y->dtype);
    if (ex != ey) return ex > ey ? -1 : 1;
    return strcmp(x->name, y->name);
}

bundle *bundle_new(const st_model *st, const model_config *cfg, const char *config_json, const model_part *part,
                   strata_err *err) {
    bundle *b = calloc(1, sizeof *b);
    json_t *hdr = json_object(), *meta = json_object();
    collect_ctx c = {st, NULL, 0};
    char *text = NULL;
    if (!b || !hdr || !meta) goto oom;
    int count = model_part_tensors(cfg, st, part, NULL, NULL);
    if (count <= 0) { err_set(err, "bundle: layers %d-%d hold no tensors", part->first_layer, part->last_layer - 1); goto fail; }
    if (!(c.list = calloc((size_t)count, sizeof *c.list)) || !(b->pieces = calloc((size_t)count, sizeof *b->pieces)))
        goto oom;
    model_part_tensors(cfg, st, part, collect, &c);
    qsort(c.list, (size_t)c.n, sizeof *c.list, cmp_data_order);
    uint64_t off = 0;
    for (int i = 0; i < c.n; i++) {
        const st_tensor *t = c.list[i];
        json_t *shape = json_array();
        if (!shape) goto oom;
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_t *e = json_pack("{s:s, s:o, s:[I, I]}", "dtype", bk_dtype_name(t->dtype), "shape", shape, "data_offsets",
                              (json_int_t)off, (json_int_t)(off + t->nbytes));
        if (!e || json_object_set_new(hdr, t->name, e)) goto oom;
        b->pieces[i] = (bundle_piece){t, off};
        off += t->nbytes;
    }
    b->n = c.n;
    char layers[48];
    snprintf(layers, sizeof layers, "%d-%d", part->first_layer, part->last_layer - 1);
    if (json_object_set_new(meta, "format", json_string("mlx")) ||
        json_object_set_new(meta, "config", json_string(config_json)) ||
        json_object_set_new(meta, "strata_layers", json_string(layers)) ||
        json_object_set_new(hdr, "__metadata__", meta))
        goto oom;
    meta = NULL;
    if (!(text = json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS))) goto oom;
    size_t json_len = strlen(text), total = 8 + json_len;
    total = (total + BUNDLE_ALIGN - 1) / BUNDLE_ALIGN * BUNDLE_ALIGN;
    if (!(b->header = malloc(total))) goto oom;
    uint64_t hlen = total - 8; /* trailing spaces are JSON whitespace: padding the format allows */
    for (int i = 0; i < 8; i++) b->header[i] = (char)(hlen >> (8 * i));
    memcpy(b->header + 8, text, json_len);
    memset(b->header + 8 + json_len, ' ', total - 8 - json_len);
    b->header_bytes = total;
    for (int i = 0; i < b->n; i++) b->pieces[i].offset += total;
    b->size = total + off;
    free(text);
    free(c.list);
    json_decref(hdr);
    return b;
oom:
    err_set(err, "out of memory building a bundle header");
fail:
    free(text);
    free(c.list);
    json_decref(hdr);
    json_decref(meta);
    bundle_free(&b);
    return NULL;
}

void bundle_free(bundle **pb) {
    bundle *b = pb ? *pb : NULL;
    if (!b) return;
    free(b->header);
    free(b->pieces);
    free(b);
    *pb = NULL;
}

uint64_t bundle_size(const bundle *b) { return b->size; }
int bundle_tensor_count(const bundle *b) { return b->n; }

int bundle_read(const bundle *b, uint64_t offset, void *dst, size_t len, strata_err *err) {
    if (offset > b->size || len > b->size - offset)
        return err_set(err, "bundle read [%llu, +%zu) outside its %llu bytes", (unsigned long long)offset, len,
                       (unsigned long long)b->size);
    uint8_t *out = dst;
    if (offset < b->header_bytes) {
        size_t k = b->header_bytes - offset < len ? (size_t)(b->header_bytes - offset) : len;
        memcpy(out, b->header + offset, k);
        out += k, offset += k, len -= k;
    }
    if (!len) return 0;
    /* the piece holding `offset`: the last one starting at or before it */
    int lo = 0, hi = b->n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (b->pieces[mid].offset <= offset) lo = mid; else hi = mid - 1;
    }
    for (int i = lo; len && i < b->n; i++) {
        const bundle_piece *p = &b->pieces[i];
        uint64_t in = offset - p->offset;
        size_t k = p->t->nbytes - in < len ? (size_t)(p->t->nbytes - in) : len;
        memcpy(out, (const uint8_t *)p->t->data + in, k);
        out += k, offset += k, len -= k;
    }
    return 0;
}

int bundle_hash(const bundle *b, uint8_t out[SHA256_BYTES], const char *label, strata_err *err) {
    sha256_ctx h;
    if (sha256_init(&h)) return err_set(err, "libsodium failed to initialise");
    uint8_t *buf = malloc(BUNDLE_IO_BYTES);
    if (!buf) return err_set(err, "out of memory");
    progress p;
    if (label) progress_start(&p, label, b->size);
    for (uint64_t off = 0; off < b->size;) {
        size_t k = b->size - off < BUNDLE_IO_BYTES ? (size_t)(b->size - off) : BUNDLE_IO_BYTES;
        bundle_read(b, off, buf, k, NULL);
        sha256_update(&h, buf, k);
        off += k;
        if (label) progress_add(&p, k);
    }
    if (label) progress_finish(&p);
    sha256_final(&h, out);
    free(buf);
    return 0;
}

int bundle_write(const bundle *b, const char *path, strata_err *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return err_set(err, "%s: %s", path, strerror(errno));
    uint8_t *buf = malloc(BUNDLE_IO_BYTES);
    int rc = buf ? 0 : err_set(err, "out of memory");
    for (uint64_t off = 0; !rc && off < b->size;) {
        size_t k = b->size - off < BUNDLE_IO_BYTES ? (size_t)(b->size - off) : BUNDLE_IO_BYTES;
        bundle_read(b, off, buf, k, NULL);
        if (fwrite(buf, 1, k, f) != k) rc = err_set(err, "%s: write failed", path);
        off += k;
    }
    free(buf);
    if (fclose(f) && !rc) rc = err_set(err, "%s: %s", path, strerror(errno));
    return rc;
}

double progress_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void progress_line(progress *p, int final) {
    double dt = progress_now_s() - p->t0, mbs = dt > 0 ? p->done / dt / 1e6 : 0;
    double eta = p->done && p->total > p->done ? dt * (double)(p->total - p->done) / (double)p->done : 0;
    fprintf(stderr, "%s: %.1f / %.1f MB  %.1f MB/s  %s %.1f s\n", p->label, p->done / 1e6, p->total / 1e6, mbs,
            final ? "done in" : "ETA", final ? dt : eta);
}

void progress_start(progress *p, const char *label, uint64_t total) {
    p->label = label;
    p->total = total;
    p->done = 0;
    p->t0 = p->last_print = progress_now_s();
}

void progress_add(progress *p, uint64_t bytes) {
    p->done += bytes;
    double now = progress_now_s();
    if (now - p->last_print >= 1.0 && p->done < p->total) {
        p->last_print = now;
        progress_line(p, 0);
    }
}

void progress_finish(progress *p) { progress_line(p, 1); }
