/* safetensors checkpoints, mmap'd: one file (st_file) or a model directory that is either a
 * single model.safetensors or shards listed by model.safetensors.index.json (st_model).
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
 * then the data; offsets are relative to the end of the header. Every field is checked against
 * the file size before use: a tensor handed out always lies inside the file. */
#ifndef STRATA_SAFETENSORS_H
#define STRATA_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "kernels/backend.h"

#define ST_MAX_DIMS 8

typedef struct {
    const char *name;
    bk_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;       /* inside the mmap */
    size_t nbytes;
    size_t file_offset;     /* of the first data byte, from the start of the file */
} st_tensor;

/* "F32" etc. -> dtype; -1 for an unknown name */
int st_dtype_parse(const char *name, bk_dtype *out);

typedef struct st_file st_file;

st_file *st_open(const char *path, strata_err *err);
void st_close(st_file **f);
int st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, int i);       /* in data-offset order */
const st_tensor *st_find(const st_file *f, const char *name);
const char *st_meta(const st_file *f, const char *key); /* __metadata__ string, or NULL */
const char *st_path(const st_file *f);

typedef struct st_model st_model;

/* dir holds model.safetensors, or model.safetensors.index.json and its shards */
st_model *st_model_open(const char *dir, strata_err *err);
void st_model_close(st_model **m);
const st_tensor *st_model_find(const st_model *m, const char *name);
int st_model_count(const st_model *m);
const st_tensor *st_model_at(const st_model *m, int i); /* sorted by name */

#endif
