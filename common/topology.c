#include "common/topology.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define TOPO_MAX_BYTES (1u << 20)
#define TOPO_MAX_WORKERS 1024
#define TOPO_MAX_LAYER 1000000

static int parse_uint(const char *s, const char **end, long max, long *out) {
    if (*s < '0' || *s > '9') return -1;
    long v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s++ - '0');
        if (v > max) return -1;
    }
    *end = s;
    *out = v;
    return 0;
}

int topo_parse_layers(const char *spec, topo_range *out, strata_err *err) {
    static const char prefix[] = "model.layers.";
    const char *p = spec, *end;
    long a, b;
    if (strncmp(p, prefix, sizeof prefix - 1))
        return err_set(err, "layer entry '%s' does not start with '%s'", spec, prefix);
    p += sizeof prefix - 1;
    if (parse_uint(p, &end, TOPO_MAX_LAYER, &a))
        return err_set(err, "layer entry '%s': expected a layer number after '%s'", spec, prefix);
    b = a;
    if (*end == '-' && parse_uint(end + 1, &end, TOPO_MAX_LAYER, &b))
        return err_set(err, "layer entry '%s': expected 'model.layers.FIRST-LAST'", spec);
    if (*end) return err_set(err, "layer entry '%s': unexpected '%s'", spec, end);
    if (b < a) return err_set(err, "layer entry '%s': range runs backwards", spec);
    out->first = (int)a;
    out->last = (int)b + 1;
    return 0;
}

static int check_host(const char *host, strata_err *err) {
    const char *h = strncmp(host, "tcp://", 6) ? host : host + 6;
    const char *colon = strrchr(h, ':'), *end;
    long port;
    if (!colon || colon == h) return err_set(err, "host '%s' is not 'address:port'", host);
    if (parse_uint(colon + 1, &end, 65535, &port) || *end || port == 0)
        return err_set(err, "host '%s': port '%s' is not a number in [1, 65535]", host, colon + 1);
    return 0;
}

int topo_endpoint(const topo_worker *w, char *out, size_t out_bytes) {
    int n = snprintf(out, out_bytes, "%s%s", strncmp(w->host, "tcp://", 6) ? "tcp://" : "", w->host);
    return n < 0 || (size_t)n >= out_bytes ? -1 : 0;
}

static void worker_clear(topo_worker *w) {
    free(w->name);
    free(w->host);
    free(w->description);
    free(w->ranges);
}

void topo_free(topology **pt) {
    topology *t = pt ? *pt : NULL;
    if (!t) return;
    for (int i = 0; i < t->n_workers; i++) worker_clear(&t->workers[i]);
    free(t->workers);
    free(t);
    *pt = NULL;
}

static const char *scalar(yaml_node_t *n) {
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int line_of(yaml_node_t *n) { return n ? (int)n->start_mark.line + 1 : 0; }

static int add_range(topo_worker *w, yaml_node_t *n, const char *src, strata_err *err) {
    const char *s = scalar(n);
    if (!s) return err_set(err, "%s:%d: worker '%s': each layers entry must be a string like 'model.layers.0-5'", src,
                           line_of(n), w->name);
    topo_range r;
    if (topo_parse_layers(s, &r, err)) return err_prefix(err, "%s:%d: worker '%s'", src, line_of(n), w->name);
    r.line = line_of(n);
    topo_range *g = realloc(w->ranges, sizeof *g * (size_t)(w->n_ranges + 1));
    if (!g) return err_set(err, "out of memory");
    w->ranges = g;
    w->ranges[w->n_ranges++] = r;
    return 0;
}

static int parse_worker(yaml_document_t *doc, const char *name, yaml_node_t *body, topo_worker *w, const char *src,
                        strata_err *err) {
    if (!(w->name = strdup(name))) return err_set(err, "out of memory");
    if (!body || body->type != YAML_MAPPING_NODE)
        return err_set(err, "%s:%d: worker '%s' must be a mapping with host and layers", src, line_of(body), name);
    for (yaml_node_pair_t *p = body->data.mapping.pairs.start; p < body->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key), *v = yaml_document_get_node(doc, p->value);
        const char *key = scalar(k);
        if (!key) return err_set(err, "%s:%d: worker '%s': keys must be strings", src, line_of(k), name);
        if (!strcmp(key, "host") || !strcmp(key, "description")) {
            const char *s = scalar(v);
            if (!s) return err_set(err, "%s:%d: worker '%s': %s must be a string", src, line_of(v), name, key);
            char **dst = key[0] == 'h' ? &w->host : &w->description;
            free(*dst);
            if (!(*dst = strdup(s))) return err_set(err, "out of memory");
        } else if (!strcmp(key, "layers")) {
            if (v && v->type == YAML_SEQUENCE_NODE) {
                for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++)
                    if (add_range(w, yaml_document_get_node(doc, *it), src, err)) return -1;
            } else if (add_range(w, v, src, err)) {
                return -1;
            }
        } else {
            return err_set(err, "%s:%d: worker '%s': unknown key '%s' (known: host, description, layers)", src,
                           line_of(k), name, key);
        }
    }
    if (!w->host) return err_set(err, "%s:%d: worker '%s' has no host ('address:port')", src, w->line, name);
    if (check_host(w->host, err)) return err_prefix(err, "%s:%d: worker '%s'", src, w->line, name);
    if (!w->n_ranges) return err_set(err, "%s:%d: worker '%s' has no layers (missing 'layers: [model.layers.A-B]')", src,
                                     w->line, name);
    return 0;
}

topology *topo_parse(const char *text, size_t len, const char *src, strata_err *err) {
    if (len > TOPO_MAX_BYTES) { err_set(err, "%s: %zu bytes is too large for a topology", src, len); return NULL; }
    yaml_parser_t parser;
    yaml_document_t doc;
    topology *t = calloc(1, sizeof *t);
    if (!t) { err_set(err, "out of memory"); return NULL; }
    if (!yaml_parser_initialize(&parser)) { free(t); err_set(err, "out of memory"); return NULL; }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        err_set(err, "%s:%zu:%zu: YAML: %s", src, parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                parser.problem ? parser.problem : "parse error");
        yaml_parser_delete(&parser);
        free(t);
        return NULL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    int rc = 0;
    if (!root || root->type != YAML_MAPPING_NODE) {
        rc = err_set(err, "%s: expected a map of worker names to {host, layers}", src);
        goto out;
    }
    int n = (int)(root->data.mapping.pairs.top - root->data.mapping.pairs.start);
    if (n == 0) { rc = err_set(err, "%s: no workers", src); goto out; }
    if (n > TOPO_MAX_WORKERS) { rc = err_set(err, "%s: %d workers (at most %d)", src, n, TOPO_MAX_WORKERS); goto out; }
    if (!(t->workers = calloc((size_t)n, sizeof *t->workers))) { rc = err_set(err, "out of memory"); goto out; }
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key);
        const char *name = scalar(k);
        if (!name || !*name) { rc = err_set(err, "%s:%d: worker names must be non-empty strings", src, line_of(k)); goto out; }
        for (int i = 0; i < t->n_workers; i++)
            if (!strcmp(t->workers[i].name, name)) {
                rc = err_set(err, "%s:%d: worker '%s' is listed twice (first at line %d)", src, line_of(k), name,
                             t->workers[i].line);
                goto out;
            }
        topo_worker *w = &t->workers[t->n_workers++];
        w->line = line_of(k);
        if ((rc = parse_worker(&doc, name, yaml_document_get_node(&doc, p->value), w, src, err))) goto out;
    }
out:
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (rc) topo_free(&t);
    return t;
}

topology *topo_load(const char *path, strata_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) { err_set(err, "%s: %s", path, strerror(errno)); return NULL; }
    char *buf = malloc(TOPO_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, TOPO_MAX_BYTES + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) { free(buf); err_set(err, "%s: cannot read", path); return NULL; }
    topology *t = topo_parse(buf, n, path, err);
    free(buf);
    return t;
}
