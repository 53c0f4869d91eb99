/* Reduced bundles: for one worker, a single-file safetensors holding exactly the tensors of its
 * part (names unchanged) and the model's config.json in __metadata__["config"].
 *
 * A bundle is never built in memory: it is a header (a few KB, in memory) followed by tensor
 * bytes read straight from the mmap'd source checkpoint (single file or shards), so any byte
 * range can be produced on demand (bundle_read) for a chunked, credit-paced transfer. The byte
 * stream is deterministic (sorted keys, fixed order), so the same part of the same model always
 * has the same SHA-256, which is what lets workers cache bundles by hash. */
#ifndef STRATA_BUNDLER_H
#define STRATA_BUNDLER_H

#include <stdint.h>

#include "common/model.h"
#include "common/sha256.h"

typedef struct bundle bundle;

bundle *bundle_new(const st_model *st, const model_config *cfg, const char *config_json, const model_part *part,
                   strata_err *err);
void bundle_free(bundle **b);
uint64_t bundle_size(const bundle *b);
int bundle_tensor_count(const bundle *b);
/* copies bytes [offset, offset + len) of the bundle into dst; fails outside the bundle */
int bundle_read(const bundle *b, uint64_t offset, void *dst, size_t len, strata_err *err);
/* SHA-256 of the whole stream, read in chunks; `label` names it in the progress lines (or NULL
 * for silence) */
int bundle_hash(const bundle *b, uint8_t out[SHA256_BYTES], const char *label, strata_err *err);
/* writes the bundle to a file (tests and tools) */
int bundle_write(const bundle *b, const char *path, strata_err *err);

/* Progress on stderr for long byte streams: bytes, MB/s and ETA, at most a line a second. */
typedef struct {
    const char *label;
    uint64_t total, done;
    double t0, last_print;
} progress;

void progress_start(progress *p, const char *label, uint64_t total);
void progress_add(progress *p, uint64_t bytes);
void progress_finish(progress *p);
double progress_now_s(void);

#endif
