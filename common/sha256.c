#include "common/sha256.h"

#include <string.h>

int sha256_init(sha256_ctx *c) {
    if (sodium_init() < 0) return -1;
    crypto_hash_sha256_init(&c->st);
    return 0;
}

void sha256_update(sha256_ctx *c, const void *data, size_t bytes) {
    crypto_hash_sha256_update(&c->st, data, bytes);
}

void sha256_final(sha256_ctx *c, uint8_t out[SHA256_BYTES]) { crypto_hash_sha256_final(&c->st, out); }

void sha256_hex(const uint8_t digest[SHA256_BYTES], char out[SHA256_HEX_BYTES]) {
    sodium_bin2hex(out, SHA256_HEX_BYTES, digest, SHA256_BYTES);
}

int sha256_from_hex(const char *hex, uint8_t out[SHA256_BYTES]) {
    size_t n = 0;
    if (strlen(hex) != 2 * SHA256_BYTES) return -1;
    if (sodium_hex2bin(out, SHA256_BYTES, hex, strlen(hex), NULL, &n, NULL) || n != SHA256_BYTES) return -1;
    return 0;
}
