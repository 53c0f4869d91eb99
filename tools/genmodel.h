/* Synthetic MLX checkpoints: config.json + model.safetensors (or shards with an index), with
 * uint32-packed 4/8-bit weights and f16/bf16 scales and biases, from a seed. Every value is a
 * function of (seed, tensor name, index): the same options give the same bytes on any machine. */
#ifndef STRATA_GENMODEL_H
#define STRATA_GENMODEL_H

#include <stdint.h>

#include "common/err.h"
#include "kernels/backend.h"

typedef struct {
    const char *shape;    /* qwen2.5-0.5b, qwen2.5-7b, llama-3.2-1b, llama-3.1-8b, tiny-qwen, tiny-llama */
    uint64_t seed;
    int bits;             /* 4 or 8; 0 writes a float checkpoint */
    int group_size;       /* 32, 64, 128 */
    bk_dtype float_dtype; /* scales/biases (or weights when bits == 0): BK_F16, BK_BF16, BK_F32 */
    int tied;             /* -1: the shape's own; 0 or 1 */
    int shards;           /* 1: model.safetensors; more: index + shards */
    int n_layers;         /* 0: the shape's own */
    int vocab_size;       /* 0: the shape's own */
    int mixed;            /* per-module overrides: down_proj of layer 0 at 8 bits, group 32 */
} gen_opts;

void gen_opts_default(gen_opts *o);
/* writes DIR (created if missing) */
int gen_model(const char *dir, const gen_opts *o, strata_err *err);
/* the names of the shapes, NULL-terminated */
extern const char *const gen_shape_names[];

#endif
