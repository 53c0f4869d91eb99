#include "master/planner.h"

#include <stdarg.h>
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

/* ---- automatic plan ---- */

#define MB(x) ((double)(x) / 1e6)

static void note(char *notes, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(char *notes, size_t cap, const char *fmt, ...) {
    if (!notes || !cap) return;
    size_t used = strlen(notes);
    if (used + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(notes + used, cap - used, fmt, ap);
    va_end(ap);
}

static const char *node_name(const plan_node *n) { return n->host ? n->name : "master"; }

int plan_auto_ranges(const plan_node *nodes, int n_nodes, const plan_model *m, plan_range *ranges, char *notes,
                     size_t notes_bytes, strata_err *err) {
    if (notes && notes_bytes) notes[0] = 0;
    if (m->n_layers < 1) return err_set(err, "the model has no layers");
    if (n_nodes < 1) return err_set(err, "no node to place the model's %d layers on", m->n_layers);
    uint64_t max_layer = 0, weight_total = 0;
    for (int l = 0; l < m->n_layers; l++) {
        if (m->layer_bytes[l] > max_layer) max_layer = m->layer_bytes[l];
        weight_total += m->layer_bytes[l];
    }
    const uint64_t cost = max_layer + m->kv_bytes_per_layer;
    if (cost == 0) return err_set(err, "the model's layers have no weights");
    int *cap = calloc((size_t)n_nodes, sizeof *cap), *fixed = calloc((size_t)n_nodes, sizeof *fixed);
    double *w = calloc((size_t)n_nodes, sizeof *w), *t = calloc((size_t)n_nodes, sizeof *t);
    if (!cap || !fixed || !w || !t) { free(cap); free(fixed); free(w); free(t); return err_set(err, "out of memory"); }

    /* capacity in whole layers; a node that cannot hold one is out */
    long cap_total = 0;
    uint64_t offered = 0;
    double mem_sum = 0, speed_sum = 0, speed_known = 0;
    int n_known = 0;
    for (int i = 0; i < n_nodes; i++) {
        uint64_t c = nodes[i].memory_bytes / cost;
        cap[i] = c > (uint64_t)m->n_layers ? m->n_layers : (int)c;
        cap_total += cap[i];
        offered += nodes[i].memory_bytes;
        if (!cap[i]) {
            note(notes, notes_bytes, "%s '%s' skipped: it offers %.1f MB, one layer needs %.1f MB (weights %.1f + KV "
                 "cache %.1f for %d positions)\n", nodes[i].host ? "worker" : "node", node_name(&nodes[i]),
                 MB(nodes[i].memory_bytes), MB(cost), MB(max_layer), MB(m->kv_bytes_per_layer), m->ctx_len);
            continue;
        }
        mem_sum += (double)nodes[i].memory_bytes;
        if (nodes[i].speed > 0) { speed_known += nodes[i].speed; n_known++; }
    }
    int rc = 0;
    if (cap_total < m->n_layers) {
        uint64_t need = weight_total + (uint64_t)m->n_layers * m->kv_bytes_per_layer;
        uint64_t usable = 0;
        for (int i = 0; i < n_nodes; i++) usable += (uint64_t)cap[i] * cost;
        rc = err_set(err, "not enough memory for the model: its %d layers need %.1f MB (weights %.1f MB + KV cache "
                     "%.1f MB for %d positions); %d node%s offer %.1f MB, enough for %ld whole layer%s (%.1f MB): "
                     "%.1f MB short", m->n_layers, MB(need), MB(weight_total),
                     MB((uint64_t)m->n_layers * m->kv_bytes_per_layer), m->ctx_len, n_nodes, n_nodes > 1 ? "s" : "",
                     MB(offered), cap_total, cap_total == 1 ? "" : "s", MB(usable),
                     MB(need > usable ? need - usable : (uint64_t)(m->n_layers - cap_total) * cost));
        goto out;
    }
    /* share = min(memory share, speed share); an unknown speed counts as the mean of the known */
    double mean_speed = n_known ? speed_known / n_known : 1;
    for (int i = 0; i < n_nodes; i++)
        if (cap[i]) speed_sum += nodes[i].speed > 0 ? nodes[i].speed : mean_speed;
    for (int i = 0; i < n_nodes; i++) {
        if (!cap[i]) continue;
        double ms = (double)nodes[i].memory_bytes / mem_sum;
        double ss = (nodes[i].speed > 0 ? nodes[i].speed : mean_speed) / speed_sum;
        w[i] = ms < ss ? ms : ss;
    }
    /* water-filling: a node whose share exceeds its capacity is filled to it, the rest is shared
     * again among the others; Σcap >= n_layers guarantees the rest fits */
    double remaining = m->n_layers;
    for (;;) {
        double wsum = 0;
        for (int i = 0; i < n_nodes; i++)
            if (cap[i] && !fixed[i]) wsum += w[i];
        int changed = 0;
        for (int i = 0; i < n_nodes && wsum > 0; i++) {
            if (!cap[i] || fixed[i]) continue;
            t[i] = remaining * w[i] / wsum;
            if (t[i] >= cap[i]) { fixed[i] = 1; t[i] = cap[i]; remaining -= cap[i]; changed = 1; }
        }
        if (!changed || wsum <= 0) break;
    }
    /* whole layers: floors, then the leftover to the largest remainders (never over capacity) */
    int *n_of = fixed; /* reused: fixed[i] is no longer needed once t[] is final */
    int given = 0;
    for (int i = 0; i < n_nodes; i++) {
        n_of[i] = cap[i] ? (int)t[i] : 0;
        if (n_of[i] > cap[i]) n_of[i] = cap[i];
        given += n_of[i];
    }
    while (given < m->n_layers) {
        int best = -1;
        for (int i = 0; i < n_nodes; i++)
            if (n_of[i] < cap[i] && (best < 0 || t[i] - n_of[i] > t[best] - n_of[best])) best = i;
        if (best < 0) break;
        n_of[best]++;
        given++;
    }
    if (given < m->n_layers) { rc = err_set(err, "planner: %d layers left over (a bug)", m->n_layers - given); goto out; }
    int at = 0;
    for (int i = 0; i < n_nodes; i++) {
        ranges[i].first = at;
        ranges[i].last = at += n_of[i];
        if (cap[i] && !n_of[i])
            note(notes, notes_bytes, "%s '%s' gets no layer: its share of %d layers rounds to nothing (more nodes than "
                 "layers, or a small share)\n", nodes[i].host ? "worker" : "node", node_name(&nodes[i]), m->n_layers);
    }
out:
    free(cap);
    free(fixed);
    free(w);
    free(t);
    return rc;
}

static char *dup_str(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int plan_auto(const plan_node *nodes, int n_nodes, const plan_model *m, plan_range *ranges, topology **topo,
              plan *out, char *notes, size_t notes_bytes, strata_err *err) {
    *topo = NULL;
    memset(out, 0, sizeof *out);
    if (plan_auto_ranges(nodes, n_nodes, m, ranges, notes, notes_bytes, err)) return -1;
    topology *t = calloc(1, sizeof *t);
    if (!t || !(t->workers = calloc((size_t)n_nodes, sizeof *t->workers))) {
        free(t);
        return err_set(err, "out of memory");
    }
    for (int i = 0; i < n_nodes; i++) {
        if (!nodes[i].host || ranges[i].last == ranges[i].first) continue;
        topo_worker *tw = &t->workers[t->n_workers++];
        tw->name = dup_str(nodes[i].name);
        tw->host = dup_str(nodes[i].host);
        tw->description = dup_str(nodes[i].description);
        tw->ranges = malloc(sizeof *tw->ranges);
        if (!tw->name || !tw->host || (nodes[i].description && !tw->description) || !tw->ranges) {
            topo_free(&t);
            return err_set(err, "out of memory");
        }
        tw->n_ranges = 1;
        tw->ranges[0] = (topo_range){ranges[i].first, ranges[i].last, 0};
    }
    if (plan_from_topology(t, m->n_layers, 0, out, err)) { topo_free(&t); return -1; }
    *topo = t;
    return 0;
}
