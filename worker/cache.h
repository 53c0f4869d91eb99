/* The worker's bundle cache: <dir>/<sha256 hex>/model.safetensors + config.json.
 *
 * A bundle is received into a temporary directory (<dir>/.tmp-<hex>-<pid>), hashed as it
 * arrives, checked against the announced SHA-256, opened as safetensors, and only then renamed
 * into place: a directory named by a hash always holds exactly the bytes of that hash. */
#ifndef STRATA_WORKER_CACHE_H
#define STRATA_WORKER_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/sha256.h"

#define CACHE_PATH_MAX 4096

int cache_init(const char *dir, strata_err *err);
/* 1 when <dir>/<hex>/model.safetensors exists with `bytes` bytes (bundle_dir is set), else 0 */
int cache_lookup(const char *dir, const uint8_t hash[SHA256_BYTES], uint64_t bytes, char *bundle_dir, size_t n);

typedef struct cache_rx cache_rx;

cache_rx *cache_rx_begin(const char *dir, const uint8_t hash[SHA256_BYTES], uint64_t bytes, strata_err *err);
/* chunks arrive in order: offset must be the number of bytes received so far */
int cache_rx_write(cache_rx *rx, uint64_t offset, const void *data, size_t len, strata_err *err);
uint64_t cache_rx_received(const cache_rx *rx);
uint64_t cache_rx_total(const cache_rx *rx);
/* Verifies and moves the bundle into place (bundle_dir is set). On a hash mismatch or an invalid
 * file the temporary files are removed, *mismatch says which, and nothing is left in the cache.
 * Frees rx in every case. */
int cache_rx_commit(cache_rx **rx, char *bundle_dir, size_t n, int *mismatch, strata_err *err);
void cache_rx_abort(cache_rx **rx);

#endif
