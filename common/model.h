/* A model's weights for one layer range, wrapped into a backend: the unit the cluster splits.
 *
 * Names follow the checkpoint: model.embed_tokens, model.layers.N.{input_layernorm,
 * self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}, model.norm,
 * lm_head (absent when tied to the embeddings). A q4/q8 module has .weight (uint32), .scales and
 * .biases; a float module has .weight alone. Every shape is checked against the config. */
#ifndef STRATA_MODEL_H
#define STRATA_MODEL_H

#include "common/config.h"
#include "common/safetensors.h"
#include "kernels/backend.h"

typedef struct {
    bk_vec attn_norm, ffn_norm;
    bk_weight wq, wk, wv, wo;
    bk_weight w_gate, w_up, w_down;
} layer_weights;

typedef struct {
    model_config cfg;
    backend *be;
    int first_layer, last_layer; /* the range [first, last) held here */
    int has_embed, has_head;
    bk_weight embed;             /* when has_embed, or when has_head and tied */
    bk_vec final_norm;           /* when has_head */
    bk_weight lm_head;           /* when has_head (aliases embed's buffers when tied) */
    layer_weights *layers;       /* last - first entries */
    bk_buf *inv_freq;
    int n_bufs;
    bk_buf **bufs; /* every buffer wrapped, freed with the model */
} model;

typedef struct {
    int first_layer, last_layer;
    int embed, head;
} model_part;

/* Wraps the tensors of `part` from `st` (which must outlive the model). */
model *model_load(const st_model *st, const model_config *cfg, const model_part *part, backend *be,
                  strata_err *err);
void model_free(model **m);

/* Tensor names a part needs, for bundling: calls fn(name, user) for each; returns how many. */
int model_part_tensors(const model_config *cfg, const st_model *st, const model_part *part,
                       void (*fn)(const char *name, void *user), void *user);

#endif
