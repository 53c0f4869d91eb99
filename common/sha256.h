/* SHA-256 through libsodium (crypto_hash_sha256_*): bundles are named and checked by it. */
#ifndef STRATA_SHA256_H
#define STRATA_SHA256_H

#include <stddef.h>
#include <stdint.h>
#include <sodium.h>

#define SHA256_BYTES 32
#define SHA256_HEX_BYTES 65 /* 64 hex digits and the terminator */

typedef struct {
    crypto_hash_sha256_state st;
} sha256_ctx;

/* 0, or -1 when libsodium cannot initialise (no entropy source: it never happens for hashing) */
int sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t bytes);
void sha256_final(sha256_ctx *c, uint8_t out[SHA256_BYTES]);
void sha256_hex(const uint8_t digest[SHA256_BYTES], char out[SHA256_HEX_BYTES]);
/* 64 hex digits -> 32 bytes; -1 on anything else */
int sha256_from_hex(const char *hex, uint8_t out[SHA256_BYTES]);

#endif
