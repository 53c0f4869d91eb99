#include "master/planner.h"

#include <stdlib.h>
#include <string.h>

/* "3" or "3-5" for [first, last) */
static const char *span(char *buf, size_t n, int first, int last) {
    if (last - first == 1) snprintf(buf, n, "%d", first);
    else snprintf(buf, n, "%d-%d", first, last - 1);
    return buf;
}

static int add_segment(plan *p, plan_segment s, strata_err *err) {
    plan_segment *g = realloc(p->segments, sizeof *g * (size_t)(p->n_segments + 1));
    if (!g) return err_set(err, "out of memory");
    p->segments = g;
    p->segments[p->n_segments++] = s;
    return 0;
}

int plan_from_topology(const topology *t, int n_layers, int strict, plan *out, strata_err *err) {
    memset(out, 0, sizeof *out);
    if (n_layers < 1) return err_set(err, "the model has no layers");
    int *owner = malloc(sizeof *owner * (size_t)n_layers);
    out->worker_segment = malloc(sizeof *out->worker_segment * (size_t)(t->n_workers ? t->n_workers : 1));
    if (!owner || !out->worker_segment) { free(owner); plan_free(out); return err_set(err, "out of memory"); }
    for (int l = 0; l < n_layers; l++) owner[l] = PLAN_MASTER;
    out->n_layers = n_layers;
    out->n_workers = t->n_workers;
    char a[32], b[32];
    int rc = 0;

    /* each layer at most once, none beyond the model */
    for (int w = 0; w < t->n_workers && !rc; w++) {
        const topo_worker *tw = &t->workers[w];
        for (int r = 0; r < tw->n_ranges && !rc; r++) {
            const topo_range *rg = &tw->ranges[r];
            if (rg->last > n_layers) {
                int bad = rg->first >= n_layers ? rg->first : n_layers;
                rc = err_set(err, "worker '%s' (line %d): layer %d is out of range: the model has %d layers (0-%d)",
                             tw->name, rg->line, bad, n_layers, n_layers - 1);
                break;
            }
            for (int l = rg->first; l < rg->last; l++) {
                if (owner[l] == w) {
                    rc = err_set(err, "worker '%s' (line %d): layer %d is listed twice", tw->name, rg->line, l);
                    break;
                }
                if (owner[l] != PLAN_MASTER) {
                    rc = err_set(err, "layer %d is duplicated: assigned to both '%s' and '%s'", l,
                                 t->workers[owner[l]].name, tw->name);
                    break;
                }
                owner[l] = w;
            }
        }
    }
    /* each worker one contiguous range */
    for (int w = 0; w < t->n_workers && !rc; w++) {
        int first = -1, last = -1;
        for (int l = 0; l < n_layers; l++)
            if (owner[l] == w) { if (first < 0) first = l; last = l + 1; }
        for (int l = first; l < last; l++)
            if (owner[l] != w) {
                int gap_end = l;
                while (gap_end < last && owner[gap_end] != w) gap_end++;
                rc = err_set(err, "worker '%s': layers %s and %s are not contiguous (layer%s %s between them %s); a "
                             "worker holds one contiguous range", t->workers[w].name, span(a, sizeof a, first, l),
                             span(b, sizeof b, gap_end, last), gap_end - l > 1 ? "s" : "",
                             span((char[32]){0}, 32, l, gap_end), owner[l] == PLAN_MASTER ? "are on no worker" : "belong to another worker");
                break;
            }
    }
    /* strict: no layer left to the master */
    for (int l = 0; l < n_layers && !rc && strict; l++)
        if (owner[l] == PLAN_MASTER) {
            int e = l;
            while (e < n_layers && owner[e] == PLAN_MASTER) e++;
            rc = err_set(err, "layer%s %s %s missing: no worker holds %s (strict plan)", e - l > 1 ? "s" : "",
                         span(a, sizeof a, l, e), e - l > 1 ? "are" : "is", e - l > 1 ? "them" : "it");
        }
    /* segments in forward order: runs of one owner; the master's front and back always exist */
    if (!rc && owner[0] != PLAN_MASTER) rc = add_segment(out, (plan_segment){PLAN_MASTER, 0, 0, 1, 0}, err);
    for (int l = 0; l < n_layers && !rc;) {
        int e = l;
        while (e < n_layers && owner[e] == owner[l]) e++;
        if (owner[l] == PLAN_MASTER) out->n_master_layers += e - l;
        else out->worker_segment[owner[l]] = out->n_segments;
        rc = add_segment(out, (plan_segment){owner[l], l, e, l == 0 && owner[l] == PLAN_MASTER, 0}, err);
        l = e;
    }
    if (!rc && owner[n_layers - 1] != PLAN_MASTER)
        rc = add_segment(out, (plan_segment){PLAN_MASTER, n_layers, n_layers, 0, 1}, err);
    if (!rc) out->segments[out->n_segments - 1].head = 1;
    free(owner);
    if (rc) plan_free(out);
    return rc;
}

void plan_free(plan *p) {
    free(p->segments);
    free(p->worker_segment);
    memset(p, 0, sizeof *p);
}

void plan_print(const plan *p, const topology *t, FILE *f) {
    char a[32];
    for (int i = 0; i < p->n_segments; i++) {
        const plan_segment *s = &p->segments[i];
        if (s->worker == PLAN_MASTER) {
            fprintf(f, "  master%s%s%s%s%s\n", s->embed ? "  embed" : "",
                    s->last_layer > s->first_layer ? (s->embed ? " + layers " : "  layers ") : "",
                    s->last_layer > s->first_layer ? span(a, sizeof a, s->first_layer, s->last_layer) : "",
                    s->head ? (s->embed || s->last_layer > s->first_layer ? " + " : "  ") : "", s->head ? "norm + lm_head" : "");
        } else {
            fprintf(f, "  worker %s  layers %s (%s)\n", t->workers[s->worker].name,
                    span(a, sizeof a, s->first_layer, s->last_layer), t->workers[s->worker].host);
        }
    }
}
