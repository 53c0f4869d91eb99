/* The plan: which node runs which layers, in forward order. Built from a topology, or by
 * plan_auto from discovered workers' memory and speed; both end in this struct, which is what
 * the pipeline runs.
 *
 * Rules checked before anything is sent: every layer at most once (exactly once with `strict`),
 * each worker one contiguous range, no layer beyond the model. Layers no worker holds run on the
 * master: a front part (embedding + leading unassigned layers), a back part (trailing unassigned
 * layers + final norm + lm_head), and a local segment for each unassigned run in the middle. */
#ifndef STRATA_PLANNER_H
#define STRATA_PLANNER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"
#include "common/topology.h"

#define PLAN_MASTER (-1)

typedef struct {
    int worker;                  /* index into the topology's workers, or PLAN_MASTER */
    int first_layer, last_layer; /* [first, last); may be empty for the master's front/back */
    int embed, head;             /* master segments only: first has the embedding, last the head */
} plan_segment;

typedef struct {
    int n_layers;
    int n_segments;
    plan_segment *segments;      /* in forward order: master front, ..., master back */
    int n_workers;
    int *worker_segment;         /* [n_workers]: each worker's segment index */
    int n_master_layers;
} plan;

/* strict: a layer held by no worker is an error instead of running on the master. */
int plan_from_topology(const topology *t, int n_layers, int strict, plan *out, strata_err *err);
void plan_free(plan *p);
/* One line a segment: "master  embed + layers 0-1", "worker a  layers 2-3 (127.0.0.1:5601)". */
void plan_print(const plan *p, const topology *t, FILE *f);
/* ---- the automatic plan, from discovered workers (issue 5) ----
 * Each node gets one contiguous range, in node order, sized in proportion to
 * min(memory share, speed share) and never beyond what fits in its memory: a layer costs its
 * weight bytes (the largest layer's, so a range of any layers fits) plus one session's KV cache
 * for that layer at the context length. A node too small for one layer is skipped, a node whose
 * share rounds to nothing gets no layer (more nodes than layers); both are named in `notes`. */
typedef struct {
    const char *name;
    const char *host;            /* "addr:port"; NULL for the master itself (its layers run locally) */
    const char *description;     /* may be NULL */
    uint64_t memory_bytes;       /* what the node offers for weights and KV cache */
    double speed;                /* any unit shared by all nodes; <= 0: unknown (counts as the mean) */
} plan_node;

typedef struct {
    int n_layers;
    const uint64_t *layer_bytes; /* [n_layers]: weight bytes of each layer */
    uint64_t kv_bytes_per_layer; /* one session's KV cache of one layer (kv_bytes(cfg, 1, ctx)) */
    int ctx_len;                 /* for messages */
} plan_model;

typedef struct {
    int first, last;             /* [first, last); first == last: no layer */
} plan_range;

/* Fills ranges[n_nodes]; fails naming the shortfall in MB when the nodes cannot hold the model.
 * notes (may be NULL) gets one line per skipped or idle node. */
int plan_auto_ranges(const plan_node *nodes, int n_nodes, const plan_model *m, plan_range *ranges, char *notes,
                     size_t notes_bytes, strata_err *err);
/* plan_auto_ranges, then the topology of the workers that got layers (*topo, topo_free it) and
 * its plan (plan_from_topology: the master's range and nothing else is left to the master). */
int plan_auto(const plan_node *nodes, int n_nodes, const plan_model *m, plan_range *ranges, topology **topo,
              plan *out, char *notes, size_t notes_bytes, strata_err *err);

/* The index of the segment that receives segment i's output: i + 1 (or -1 after the last). */
static inline int plan_next(const plan *p, int i) { return i + 1 < p->n_segments ? i + 1 : -1; }

#endif
