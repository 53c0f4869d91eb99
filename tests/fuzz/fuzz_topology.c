/* libFuzzer target: the topology parser (topo_parse) and what the master does next with a parsed
 * topology: endpoints and a plan for a 24-layer model. */
#include <stdint.h>

#include "common/topology.h"
#include "master/planner.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    strata_err err = {{0}};
    topology *t = topo_parse((const char *)data, size, "fuzz.yml", &err);
    if (!t) return 0;
    char ep[300];
    for (int i = 0; i < t->n_workers; i++) (void)topo_endpoint(&t->workers[i], ep, sizeof ep);
    plan p;
    for (int strict = 0; strict < 2; strict++)
        if (!plan_from_topology(t, 24, strict, &p, &err)) plan_free(&p);
    topo_free(&t);
    return 0;
}
