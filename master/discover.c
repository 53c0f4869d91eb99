/* The master's side of zero-config: see discover.h. */
#include "master/discover.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/curve.h"
#include "common/discovery.h"
#include "common/forward.h"
#include "common/safetensors.h"
#include "common/wire.h"
#include "master/bundler.h"
#include "master/planner.h"
#include "worker/executor.h"

#define DISCOVER_DEFAULT_MS 3000
#define DISCOVER_MIN_WAIT_MS 10000 /* --min-workers waits this long in all (or --discover-seconds) */

/* Weight bytes of each layer (tensors named model.layers.N.*) and of everything else (the
 * embedding, final norm and head, which stay on the master). */
static int layer_bytes(const char *model_dir, int n_layers, uint64_t *per_layer, uint64_t *rest, strata_err *err) {
    st_model *st = st_model_open(model_dir, err);
    if (!st) return -1;
    memset(per_layer, 0, sizeof *per_layer * (size_t)n_layers);
    *rest = 0;
    for (int i = 0; i < st_model_count(st); i++) {
        const st_tensor *t = st_model_at(st, i);
        int l, used = 0;
        if (sscanf(t->name, "model.layers.%d.%n", &l, &used) == 1 && used > 0 && l >= 0 && l < n_layers)
            per_layer[l] += t->nbytes;
        else
            *rest += t->nbytes;
    }
    st_model_close(&st);
    return 0;
}

static void human_bytes(char *out, size_t n, uint64_t b) {
    if (b >= 10ull << 30) snprintf(out, n, "%.1f GB", (double)b / (1u << 30));
    else snprintf(out, n, "%.0f MB", (double)b / (1u << 20));
}

static void print_table(FILE *f, const disc_service *s, int n, const char *impl, double seconds) {
    fprintf(f, "discovery (%s): %d worker%s found in %.1f s:\n", impl, n, n == 1 ? "" : "s", seconds);
    fprintf(f, "  %-24s %-21s %-8s %9s %10s  %s\n", "name", "address", "backend", "memory", "speed", "device");
    for (int i = 0; i < n; i++) {
        char addr[96], mem[32], speed[32];
        snprintf(addr, sizeof addr, "%s:%u", s[i].address, s[i].port);
        human_bytes(mem, sizeof mem, s[i].memory_bytes);
        if (s[i].speed > 0) snprintf(speed, sizeof speed, "%.2f Gw/s", s[i].speed);
        else snprintf(speed, sizeof speed, "?");
        fprintf(f, "  %-24s %-21s %-8s %9s %10s  %s\n", s[i].name, addr, s[i].backend[0] ? s[i].backend : "?", mem,
                speed, s[i].device);
    }
    fprintf(f, "  (speed: q4 matvec G weights/s measured by each worker at start; memory: offered for weights + KV)\n");
}

/* a YAML single-quoted scalar: quotes doubled, control bytes (from the network) replaced */
static void yaml_quoted(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputs("''", f);
        else fputc((unsigned char)*s < 0x20 ? ' ' : *s, f);
    }
    fputc('\'', f);
}

/* the topology.yml the plan amounts to (Cake's format, as topo_parse reads it) */
static char *topology_yaml(const topology *t) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    for (int i = 0; i < t->n_workers; i++) {
        const topo_worker *w = &t->workers[i];
        yaml_quoted(f, w->name);
        fputs(":\n  host: ", f);
        yaml_quoted(f, w->host);
        if (w->description && *w->description) {
            fputs("\n  description: ", f);
            yaml_quoted(f, w->description);
        }
        if (w->ranges[0].last - w->ranges[0].first == 1) fprintf(f, "\n  layers:\n    - 'model.layers.%d'\n", w->ranges[0].first);
        else fprintf(f, "\n  layers:\n    - 'model.layers.%d-%d'\n", w->ranges[0].first, w->ranges[0].last - 1);
    }
    if (fclose(f)) { free(buf); return NULL; }
    return buf;
}

/* The fingerprint of the key this master will use (empty with --insecure); 0 when it cannot be
 * told here (no key given, or an unreadable file: the cluster engine reports that itself). */
static int master_key_fingerprint(const cluster_opts *o, char fp[KEY_FINGERPRINT_BYTES]) {
    fp[0] = 0;
    if (o->insecure) return 1;
    const char *path = o->key_path ? o->key_path : getenv(CURVE_KEY_ENV);
    curve_key k;
    if (!path || !*path || curve_key_load(path, &k, NULL)) return 0;
    key_fingerprint(k.public_z85, fp);
    return fp[0] != 0;
}

static engine *run_local(const cluster_opts *o, const char *model_dir, const char *backend_name, int n_threads,
                         int ctx_len, int *dry_run_done, const char *why, strata_err *err) {
    if (o->dry_run) {
        printf("%s\nplan: the whole model on the master\n", why);
        *dry_run_done = 1;
        return NULL;
    }
    fprintf(stderr, "strata-master: %s\n", why);
    return engine_local_new(model_dir, backend_name, n_threads, ctx_len, err);
}

engine *discover_engine(const cluster_opts *o, const char *model_dir, const char *backend_name, int n_threads,
                        int ctx_len, int *dry_run_done, strata_err *err) {
    *dry_run_done = 0;
    model_config cfg;
    if (config_load(model_dir, &cfg, err)) return NULL;
    const char *impl = o->discovery ? o->discovery : disc_default_impl();
    int wait_ms = o->discover_ms > 0 ? o->discover_ms : DISCOVER_DEFAULT_MS;
    int max_ms = wait_ms > DISCOVER_MIN_WAIT_MS ? wait_ms : DISCOVER_MIN_WAIT_MS;
    disc_service *found = NULL;
    int n_found = 0;
    double t0 = progress_now_s();
    if (disc_browse(o->discovery, wait_ms, o->min_workers, max_ms, &found, &n_found, err)) {
        if (o->min_workers > 0 || (o->discovery && !disc_impl_available(o->discovery))) return NULL;
        char why[600];
        snprintf(why, sizeof why, "%s; running the whole model here (--local: no discovery)", err->msg);
        return run_local(o, model_dir, backend_name, n_threads, ctx_len, dry_run_done, why, err);
    }
    double seconds = progress_now_s() - t0;
    engine *e = NULL;
    FILE *out = o->dry_run ? stdout : stderr;
    if (n_found) print_table(out, found, n_found, impl, seconds);
    /* a worker of another protocol, or of another cluster (two clusters on one Wi-Fi), would fail
     * at hello: leave it out now, saying why. The key's fingerprint is in the TXT record. */
    char mine[KEY_FINGERPRINT_BYTES] = "";
    int key_known = master_key_fingerprint(o, mine);
    int n = 0;
    for (int i = 0; i < n_found; i++) {
        if (found[i].protocol != WIRE_PROTOCOL_VERSION) {
            fprintf(out, "note: worker '%s' speaks protocol %u, this master %u: left out\n", found[i].name,
                    found[i].protocol, WIRE_PROTOCOL_VERSION);
            continue;
        }
        if (key_known && strcmp(found[i].key_fingerprint, mine)) {
            if (!found[i].key_fingerprint[0])
                fprintf(out, "note: worker '%s' runs without a cluster key (--insecure), this master with key %s: "
                        "left out\n", found[i].name, mine);
            else if (!mine[0])
                fprintf(out, "note: worker '%s' demands cluster key %s, this master runs --insecure: left out\n",
                        found[i].name, found[i].key_fingerprint);
            else
                fprintf(out, "note: worker '%s' holds another cluster key (%s, this master %s): left out\n",
                        found[i].name, found[i].key_fingerprint, mine);
            continue;
        }
        found[n++] = found[i];
    }
    if (n < o->min_workers) {
        err_set(err, "discovery (%s): %d usable worker%s found in %.1f s, --min-workers asks for %d (are they started "
                "with --advertise on this network? or name them with --topology FILE)", impl, n, n == 1 ? "" : "s",
                seconds, o->min_workers);
        free(found);
        return NULL;
    }
    if (!n) {
        char why[200];
        snprintf(why, sizeof why, "discovery (%s): no strata worker found in %.1f s; running the whole model here "
                 "(--local: no discovery)", impl, seconds);
        free(found);
        return run_local(o, model_dir, backend_name, n_threads, ctx_len, dry_run_done, why, err);
    }

    /* plan: the master first (it holds the embedding), then the workers by name */
    int ctx = ctx_len < cfg.max_seq_len ? ctx_len : cfg.max_seq_len;
    uint64_t *per_layer = calloc((size_t)cfg.n_layers, sizeof *per_layer), rest = 0;
    plan_node *nodes = calloc((size_t)n + 1, sizeof *nodes);
    plan_range *ranges = calloc((size_t)n + 1, sizeof *ranges);
    char (*hosts)[96] = calloc((size_t)n, sizeof *hosts);
    topology *topo = NULL;
    plan p = {0};
    char notes[4096], *yaml = NULL;
    if (!per_layer || !nodes || !ranges || !hosts) { err_set(err, "out of memory"); goto out; }
    if (layer_bytes(model_dir, cfg.n_layers, per_layer, &rest, err)) goto out;
    int k = 0;
    if (o->keep_layers) {
        backend *be = backend_new(backend_name, n_threads, err);
        if (!be) goto out;
        uint64_t mem = disc_default_memory_bytes();
        nodes[k] = (plan_node){"master", NULL, NULL, mem > rest ? mem - rest : 0, exec_measure_speed(be, 30)};
        backend_destroy(&be);
        fprintf(out, "master: offers %.0f MB (after %.1f MB of embedding and head), %.2f G q4 weights/s\n",
                nodes[k].memory_bytes / 1e6, rest / 1e6, nodes[k].speed);
        k++;
    }
    for (int i = 0; i < n; i++, k++) {
        snprintf(hosts[i], sizeof hosts[i], "%s:%u", found[i].address, found[i].port);
        nodes[k] = (plan_node){found[i].name, hosts[i], found[i].device, found[i].memory_bytes, found[i].speed};
    }
    plan_model pm = {cfg.n_layers, per_layer, kv_bytes(&cfg, 1, ctx), ctx};
    if (plan_auto(nodes, k, &pm, ranges, &topo, &p, notes, sizeof notes, err)) {
        err_prefix(err, "automatic plan");
        goto out;
    }
    fputs(notes, out);
    if (!topo->n_workers) { /* only with --keep-layers: the master's share is all of it */
        char why[200];
        snprintf(why, sizeof why, "automatic plan: the master holds all %d layers; running the whole model here",
                 cfg.n_layers);
        e = run_local(o, model_dir, backend_name, n_threads, ctx_len, dry_run_done, why, err);
        goto out;
    }
    if (!(yaml = topology_yaml(topo))) { err_set(err, "out of memory"); goto out; }
    if (o->dry_run) {
        printf("plan for %d layers (KV cache for %d positions):\n", cfg.n_layers, ctx);
        plan_print(&p, topo, stdout);
        printf("# as topology.yml (--topology FILE runs this plan without discovery):\n%s", yaml);
        *dry_run_done = 1;
        goto out;
    }
    cluster_opts co = *o;
    co.topology_text = yaml;
    co.topology_path = "the discovered workers";
    e = engine_cluster_new(model_dir, backend_name, n_threads, ctx_len, &co, err);
out:
    free(yaml);
    plan_free(&p);
    topo_free(&topo);
    free(hosts);
    free(ranges);
    free(nodes);
    free(per_layer);
    free(found);
    return e;
}

int discover_dry_run_topology(const cluster_opts *o, const char *model_dir, strata_err *err) {
    model_config cfg;
    if (config_load(model_dir, &cfg, err)) return -1;
    topology *t = topo_load(o->topology_path, err);
    if (!t) return -1;
    plan p;
    int rc = plan_from_topology(t, cfg.n_layers, o->strict, &p, err);
    if (rc) err_prefix(err, "%s", o->topology_path);
    else {
        printf("plan for %d layers (from %s):\n", cfg.n_layers, o->topology_path);
        plan_print(&p, t, stdout);
        plan_free(&p);
    }
    topo_free(&t);
    return rc;
}
