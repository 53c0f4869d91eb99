/* The engine a generation test runs on: the model on one node, or on the cluster a topology
 * file names (60 s reply timeout for slow sanitizer builds). insecure: the test's workers run
 * --insecure; else the master speaks CurveZMQ with the key STRATA_KEY names. */
#ifndef STRATA_TEST_ENGINE_H
#define STRATA_TEST_ENGINE_H

#include "master/engine.h"
#include "master/pipeline.h"

static inline engine *test_engine_open(const char *dir, const char *topo, int insecure, strata_err *err) {
    if (!topo) return engine_local_new(dir, "cpu", 1, 512, err);
    cluster_opts o;
    cluster_opts_default(&o);
    o.topology_path = topo;
    o.reply_timeout_ms = 60000;
    o.insecure = insecure;
    return engine_cluster_new(dir, "cpu", 1, 512, &o, err);
}

#endif
