/* The plan: which node runs which layers, in forward order. Built from a topology (a later
 * planner builds it from discovered workers' memory and speed; both end in this struct, which is
 * what the pipeline runs).
 *
 * Rules checked before anything is sent: every layer at most once (exactly once with `strict`),
 * each worker one contiguous range, no layer beyond the model. Layers no worker holds run on the
 * master: a front part (embedding + leading unassigned layers), a back part (trailing unassigned
 * layers + final norm + lm_head), and a local segment for each unassigned run in the middle. */
#ifndef STRATA_PLANNER_H
#define STRATA_PLANNER_H

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
/* The index of the segment that receives segment i's output: i + 1 (or -1 after the last). */
static inline int plan_next(const plan *p, int i) { return i + 1 < p->n_segments ? i + 1 : -1; }

#endif
