/* topology.yml, Cake's format: a map of worker name to its address and layers.
 *
 *   worker_a:
 *     host: '192.168.1.10:5601'
 *     description: 'the desk Mac'       # optional
 *     layers:
 *       - 'model.layers.0-5'            # inclusive range, or one layer 'model.layers.6'
 *
 * Parsing checks the form only (each worker has a host:port and at least one layer entry, names
 * are unique). Whether the layers make a plan for a given model is the planner's question
 * (master/planner.h), because only the planner knows the model's layer count. */
#ifndef STRATA_TOPOLOGY_H
#define STRATA_TOPOLOGY_H

#include <stddef.h>

#include "common/err.h"

typedef struct {
    int first, last; /* [first, last) */
    int line;        /* 1-based line of the entry, for messages */
} topo_range;

typedef struct {
    char *name, *host, *description; /* description may be NULL */
    int n_ranges;
    topo_range *ranges;              /* as written; the planner checks they join up */
    int line;
} topo_worker;

typedef struct {
    int n_workers;
    topo_worker *workers;            /* in file order */
} topology;

topology *topo_parse(const char *text, size_t len, const char *source, strata_err *err);
topology *topo_load(const char *path, strata_err *err);
void topo_free(topology **t);

/* "model.layers.3" -> [3, 4); "model.layers.0-5" -> [0, 6) */
int topo_parse_layers(const char *spec, topo_range *out, strata_err *err);
/* "tcp://host:port" for a worker's host entry */
int topo_endpoint(const topo_worker *w, char *out, size_t out_bytes);

#endif
