#include "common/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* a header larger than this is a lie, not a checkpoint (real ones are a few MB at most) */
#define ST_MAX_HEADER_BYTES (256u << 20)

struct st_file {
    char *path;
    void *map;
    size_t map_bytes;
    int n;
    st_tensor *tensors; /* sorted by data offset */
    const st_tensor **by_name;
    json_t *meta;
};

int st_dtype_parse(const char *name, bk_dtype *out) {
    static const struct { const char *name; bk_dtype t; } table[] = {
        {"F32", BK_F32}, {"F16", BK_F16}, {"BF16", BK_BF16},
        {"U32", BK_U32}, {"I32", BK_I32}, {"U8", BK_U8},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(name, table[i].name)) { *out = table[i].t; return 0; }
    return -1;
}

static int cmp_offset(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    return x->file_offset < y->file_offset ? -1 : x->file_offset > y->file_offset;
}

static int cmp_name_ptr(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

/* Reads one header entry into t; data_bytes is the size of the data section. */
static int parse_entry(const char *key, json_t *v, size_t data_bytes, st_tensor *t, strata_err *err) {
    if (!json_is_object(v)) return err_set(err, "tensor '%s': entry is not an object", key);
    json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
           *offs = json_object_get(v, "data_offsets");
    if (!json_is_string(dt)) return err_set(err, "tensor '%s': missing dtype", key);
    if (st_dtype_parse(json_string_value(dt), &t->dtype))
        return err_set(err, "tensor '%s': unknown dtype '%s' (known: F32 F16 BF16 U32 I32 U8)", key,
                       json_string_value(dt));
    if (!json_is_array(shape)) return err_set(err, "tensor '%s': missing shape", key);
    if (json_array_size(shape) > ST_MAX_DIMS)
        return err_set(err, "tensor '%s': %zu dimensions (at most %d)", key, json_array_size(shape), ST_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    uint64_t elems = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return err_set(err, "tensor '%s': shape[%d] is not a non-negative integer", key, i);
        t->shape[i] = json_integer_value(d);
        if (t->shape[i] > 0 && elems > UINT64_MAX / (uint64_t)t->shape[i])
            return err_set(err, "tensor '%s': shape overflows", key);
        elems *= (uint64_t)t->shape[i];
    }
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        !json_is_integer(json_array_get(offs, 0)) || !json_is_integer(json_array_get(offs, 1)))
        return err_set(err, "tensor '%s': data_offsets must be [begin, end]", key);
    json_int_t b = json_integer_value(json_array_get(offs, 0)), e = json_integer_value(json_array_get(offs, 1));
    if (b < 0 || e < b || (uint64_t)e > data_bytes)
        return err_set(err, "tensor '%s': data_offsets [%lld, %lld] out of range (data section is %zu bytes)",
                       key, (long long)b, (long long)e, data_bytes);
    size_t esz = bk_dtype_size(t->dtype);
    if (elems > UINT64_MAX / esz || elems * esz != (uint64_t)(e - b))
        return err_set(err, "tensor '%s': shape holds %llu bytes of %s but data_offsets span %lld", key,
                       (unsigned long long)(elems * esz), bk_dtype_name(t->dtype), (long long)(e - b));
    t->nbytes = (size_t)(e - b);
    t->file_offset = (size_t)b; /* made absolute by the caller */
    return 0;
}

static int parse_header(st_file *f, const char *json_text, size_t json_len, size_t data_start,
                        strata_err *err) {
    json_error_t jerr;
    json_t *root = json_loadb(json_text, json_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return err_set(err, "invalid header JSON at byte %d: %s", jerr.position, jerr.text);
    if (!json_is_object(root)) { json_decref(root); return err_set(err, "header is not a JSON object"); }
    size_t n = json_object_size(root);
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    f->by_name = calloc(n ? n : 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name) { json_decref(root); return err_set(err, "out of memory"); }
    size_t data_bytes = f->map_bytes - data_start;
    const char *key;
    json_t *v;
    int rc = 0;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) { rc = err_set(err, "__metadata__ is not an object"); break; }
            f->meta = json_incref(v);
            continue;
        }
        st_tensor *t = &f->tensors[f->n];
        if (parse_entry(key, v, data_bytes, t, err)) { rc = -1; break; }
        t->name = strdup(key);
        if (!t->name) { rc = err_set(err, "out of memory"); break; }
        t->file_offset += data_start;
        t->data = (const char *)f->map + t->file_offset;
        f->n++;
    }
    json_decref(root);
    if (rc) return rc;
    qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, cmp_offset);
    for (int i = 1; i < f->n; i++)
        if (f->tensors[i].file_offset < f->tensors[i - 1].file_offset + f->tensors[i - 1].nbytes)
            return err_set(err, "tensors '%s' and '%s' overlap", f->tensors[i - 1].name, f->tensors[i].name);
    for (int i = 0; i < f->n; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_name_ptr);
    return 0;
}

st_file *st_open(const char *path, strata_err *err) {
    st_file *f = calloc(1, sizeof *f);
    if (!f) { err_set(err, "out of memory"); return NULL; }
    f->path = strdup(path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) { err_set(err, "%s: %s", path, strerror(errno)); goto fail; }
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) { close(fd); err_set(err, "%s: not a regular file", path); goto fail; }
    f->map_bytes = (size_t)sb.st_size;
    if (f->map_bytes < 8) { close(fd); err_set(err, "%s: truncated (%zu bytes, no header length)", path, f->map_bytes); goto fail; }
    f->map = mmap(NULL, f->map_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) { f->map = NULL; err_set(err, "%s: mmap: %s", path, strerror(errno)); goto fail; }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | ((const uint8_t *)f->map)[i];
    if (hlen > f->map_bytes - 8) {
        err_set(err, "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                (unsigned long long)hlen, f->map_bytes);
        goto fail;
    }
    if (hlen > ST_MAX_HEADER_BYTES) { err_set(err, "%s: header of %llu bytes is too large", path, (unsigned long long)hlen); goto fail; }
    if (parse_header(f, (const char *)f->map + 8, (size_t)hlen, 8 + (size_t)hlen, err)) {
        err_prefix(err, "%s", path);
        goto fail;
    }
    return f;
fail:
    st_close(&f);
    return NULL;
}

void st_close(st_file **pf) {
    st_file *f = pf ? *pf : NULL;
    if (!f) return;
    if (f->map) munmap(f->map, f->map_bytes);
    if (f->tensors)
        for (int i = 0; i < f->n; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    json_decref(f->meta);
    free(f->path);
    free(f);
    *pf = NULL;
}

int st_count(const st_file *f) { return f->n; }
const st_tensor *st_at(const st_file *f, int i) { return i >= 0 && i < f->n ? &f->tensors[i] : NULL; }
const char *st_path(const st_file *f) { return f->path; }

static const st_tensor *find_sorted(const st_tensor *const *by_name, int n, const char *name) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(by_name[mid]->name, name);
        if (!c) return by_name[mid];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

const st_tensor *st_find(const st_file *f, const char *name) { return find_sorted(f->by_name, f->n, name); }

const char *st_meta(const st_file *f, const char *key) {
    json_t *v = f->meta ? json_object_get(f->meta, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* ---- a model directory: one file or shards ---- */

struct st_model {
    int n_files;
    st_file **files;
    int n;
    const st_tensor **by_name;
};

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int add_file(st_model *m, const char *path, strata_err *err) {
    st_file **files = realloc(m->files, sizeof *files * (size_t)(m->n_files + 1));
    if (!files) return err_set(err, "out of memory");
    m->files = files;
    m->files[m->n_files] = st_open(path, err);
    if (!m->files[m->n_files]) return -1;
    m->n_files++;
    return 0;
}

/* Opens the shards named in index.json's weight_map and checks every name lies where it says. */
static int open_sharded(st_model *m, const char *dir, const char *index_path, strata_err *err) {
    json_error_t jerr;
    json_t *root = json_load_file(index_path, 0, &jerr);
    if (!root) return err_set(err, "%s: invalid JSON at line %d: %s", index_path, jerr.line, jerr.text);
    json_t *map = json_object_get(root, "weight_map");
    int rc = 0;
    if (!json_is_object(map)) { rc = err_set(err, "%s: missing weight_map", index_path); goto out; }
    const char *name;
    json_t *file;
    json_object_foreach(map, name, file) {
        if (!json_is_string(file) || strchr(json_string_value(file), '/')) {
            rc = err_set(err, "%s: weight_map['%s'] is not a file name in the model directory", index_path, name);
            goto out;
        }
        int found = -1;
        for (int i = 0; i < m->n_files && found < 0; i++) {
            const char *p = st_path(m->files[i]), *slash = strrchr(p, '/');
            if (!strcmp(slash ? slash + 1 : p, json_string_value(file))) found = i;
        }
        if (found < 0) {
            char *p = path_join(dir, json_string_value(file));
            if (!p) { rc = err_set(err, "out of memory"); goto out; }
            rc = add_file(m, p, err);
            free(p);
            if (rc) goto out;
            found = m->n_files - 1;
        }
        if (!st_find(m->files[found], name)) {
            rc = err_set(err, "%s: tensor '%s' is not in %s", index_path, name, json_string_value(file));
            goto out;
        }
    }
out:
    json_decref(root);
    return rc;
}

st_model *st_model_open(const char *dir, strata_err *err) {
    st_model *m = calloc(1, sizeof *m);
    if (!m) { err_set(err, "out of memory"); return NULL; }
    char *index = path_join(dir, "model.safetensors.index.json");
    char *single = path_join(dir, "model.safetensors");
    int rc;
    if (!index || !single) rc = err_set(err, "out of memory");
    else if (access(index, F_OK) == 0) rc = open_sharded(m, dir, index, err);
    else if (access(single, F_OK) == 0) rc = add_file(m, single, err);
    else rc = err_set(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
    free(index);
    free(single);
    if (rc) goto fail;
    for (int i = 0; i < m->n_files; i++) m->n += st_count(m->files[i]);
    m->by_name = calloc((size_t)(m->n ? m->n : 1), sizeof *m->by_name);
    if (!m->by_name) { err_set(err, "out of memory"); goto fail; }
    int k = 0;
    for (int i = 0; i < m->n_files; i++)
        for (int j = 0; j < st_count(m->files[i]); j++) m->by_name[k++] = st_at(m->files[i], j);
    qsort(m->by_name, (size_t)m->n, sizeof *m->by_name, cmp_name_ptr);
    for (int i = 1; i < m->n; i++)
        if (!strcmp(m->by_name[i]->name, m->by_name[i - 1]->name)) {
            err_set(err, "%s: tensor '%s' appears in two shards", dir, m->by_name[i]->name);
            goto fail;
        }
    return m;
fail:
    st_model_close(&m);
    return NULL;
}

void st_model_close(st_model **pm) {
    st_model *m = pm ? *pm : NULL;
    if (!m) return;
    for (int i = 0; i < m->n_files; i++) st_close(&m->files[i]);
    free(m->files);
    free(m->by_name);
    free(m);
    *pm = NULL;
}

const st_tensor *st_model_find(const st_model *m, const char *name) { return find_sorted(m->by_name, m->n, name); }
int st_model_count(const st_model *m) { return m->n; }
const st_tensor *st_model_at(const st_model *m, int i) { return i >= 0 && i < m->n ? m->by_name[i] : NULL; }
