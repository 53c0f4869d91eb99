/* The master with no topology file: browse for workers over mDNS (common/discovery.h), print
 * what was found, plan automatically (plan_auto in master/planner.h) and run the cluster along
 * that plan. The plan is handed to the pipeline as the topology.yml it amounts to, which
 * --dry-run prints, so a discovered cluster can be frozen into a file and edited. */
#ifndef STRATA_DISCOVER_H
#define STRATA_DISCOVER_H

#include "master/pipeline.h"

/* The engine for o when o has no topology_path: the cluster over the discovered workers, or the
 * whole model here when none is found (or no daemon runs) and o->min_workers is 0. With
 * o->dry_run, prints the table and the plan on stdout, sets *dry_run_done and returns NULL. */
engine *discover_engine(const cluster_opts *o, const char *model_dir, const char *backend_name, int n_threads,
                        int ctx_len, int *dry_run_done, strata_err *err);

/* --dry-run with a topology file: checks it against the model and prints the plan on stdout. */
int discover_dry_run_topology(const cluster_opts *o, const char *model_dir, strata_err *err);

#endif
