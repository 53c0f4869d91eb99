/* The master's cluster options, kept out of main.c so that the CLI stays one small file. */
#ifndef STRATA_CLUSTER_CLI_H
#define STRATA_CLUSTER_CLI_H

#include <stdio.h>

#include "master/pipeline.h"

/* Consumes a cluster flag: returns how many argv entries it used (1 or 2), 0 when the flag is not
 * a cluster one, -1 after printing why a value is bad. */
int cluster_cli_option(cluster_opts *o, const char *flag, const char *value);
void cluster_cli_usage(FILE *f);
/* The engine the options ask for: the cluster with --topology; with --local (or a build without
 * mDNS) the whole model here; else the workers found over mDNS (master/discover.h), planned
 * automatically, or the whole model here when none is found (saying so in one line). --dry-run
 * prints the plan and exits. */
engine *cluster_cli_engine(const cluster_opts *o, const char *model_dir, const char *backend_name, int n_threads,
                           int ctx_len, strata_err *err);
/* `strata-master keygen --out FILE` (common/curve.h): returns the exit code, or -1 when argv is
 * not a cluster command (main goes on). */
int cluster_cli_command(int argc, char **argv);
/* One line of cluster figures on stderr (nothing for a local engine). */
void cluster_cli_report(const engine *e);

#endif
