#include "worker/cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/safetensors.h"

struct cache_rx {
    char dir[CACHE_PATH_MAX];     /* the cache */
    char tmp[CACHE_PATH_MAX];     /* the temporary bundle directory */
    char part[CACHE_PATH_MAX];    /* the file being written */
    char hex[SHA256_HEX_BYTES];
    uint8_t hash[SHA256_BYTES];
    uint64_t total, received;
    int fd;
    sha256_ctx h;
};

int cache_init(const char *dir, strata_err *err) {
    char path[CACHE_PATH_MAX];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) return err_set(err, "cache dir path too long");
    /* mkdir -p */
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(path, 0755) && errno != EEXIST) return err_set(err, "%s: %s", path, strerror(errno));
            *p = '/';
        }
    if (mkdir(path, 0755) && errno != EEXIST) return err_set(err, "%s: %s", path, strerror(errno));
    return 0;
}

int cache_lookup(const char *dir, const uint8_t hash[SHA256_BYTES], uint64_t bytes, char *bundle_dir, size_t n) {
    char hex[SHA256_HEX_BYTES], file[CACHE_PATH_MAX + 32];
    sha256_hex(hash, hex);
    struct stat sb;
    snprintf(file, sizeof file, "%s/%s/model.safetensors", dir, hex);
    if (stat(file, &sb) || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != bytes) return 0;
    snprintf(file, sizeof file, "%s/%s/config.json", dir, hex);
    if (stat(file, &sb)) return 0;
    return snprintf(bundle_dir, n, "%s/%s", dir, hex) < (int)n;
}

static void remove_tmp(cache_rx *rx) {
    char p[CACHE_PATH_MAX + 32];
    unlink(rx->part);
    snprintf(p, sizeof p, "%s/model.safetensors", rx->tmp);
    unlink(p);
    snprintf(p, sizeof p, "%s/config.json", rx->tmp);
    unlink(p);
    rmdir(rx->tmp);
}

cache_rx *cache_rx_begin(const char *dir, const uint8_t hash[SHA256_BYTES], uint64_t bytes, strata_err *err) {
    cache_rx *rx = calloc(1, sizeof *rx);
    if (!rx) { err_set(err, "out of memory"); return NULL; }
    rx->fd = -1;
    memcpy(rx->hash, hash, SHA256_BYTES);
    sha256_hex(hash, rx->hex);
    rx->total = bytes;
    if (sha256_init(&rx->h)) { err_set(err, "libsodium failed to initialise"); free(rx); return NULL; }
    if (snprintf(rx->dir, sizeof rx->dir, "%s", dir) >= (int)sizeof rx->dir ||
        snprintf(rx->tmp, sizeof rx->tmp, "%s/.tmp-%s-%ld", dir, rx->hex, (long)getpid()) >= (int)sizeof rx->tmp ||
        snprintf(rx->part, sizeof rx->part, "%s/model.safetensors.part", rx->tmp) >= (int)sizeof rx->part) {
        err_set(err, "cache path too long");
        free(rx);
        return NULL;
    }
    remove_tmp(rx); /* a previous attempt of this process that was cut short */
    if (mkdir(rx->tmp, 0755)) { err_set(err, "%s: %s", rx->tmp, strerror(errno)); free(rx); return NULL; }
    rx->fd = open(rx->part, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (rx->fd < 0) {
        err_set(err, "%s: %s", rx->part, strerror(errno));
        rmdir(rx->tmp);
        free(rx);
        return NULL;
    }
    return rx;
}

int cache_rx_write(cache_rx *rx, uint64_t offset, const void *data, size_t len, strata_err *err) {
    if (offset != rx->received)
        return err_set(err, "bundle chunk at offset %llu, expected %llu (chunks arrive in order)",
                       (unsigned long long)offset, (unsigned long long)rx->received);
    if (len > rx->total - rx->received)
        return err_set(err, "bundle chunk of %zu bytes at %llu runs past the announced %llu bytes", len,
                       (unsigned long long)offset, (unsigned long long)rx->total);
    for (size_t done = 0; done < len;) {
        ssize_t k = write(rx->fd, (const char *)data + done, len - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return err_set(err, "%s: %s", rx->part, k < 0 ? strerror(errno) : "short write");
        done += (size_t)k;
    }
    sha256_update(&rx->h, data, len);
    rx->received += len;
    return 0;
}

uint64_t cache_rx_received(const cache_rx *rx) { return rx->received; }
uint64_t cache_rx_total(const cache_rx *rx) { return rx->total; }

void cache_rx_abort(cache_rx **prx) {
    cache_rx *rx = prx ? *prx : NULL;
    if (!rx) return;
    if (rx->fd >= 0) close(rx->fd);
    remove_tmp(rx);
    free(rx);
    *prx = NULL;
}

static int write_text(const char *path, const char *text, strata_err *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return err_set(err, "%s: %s", path, strerror(errno));
    size_t n = strlen(text);
    int bad = fwrite(text, 1, n, f) != n;
    if (fclose(f) || bad) return err_set(err, "%s: write failed", path);
    return 0;
}

int cache_rx_commit(cache_rx **prx, char *bundle_dir, size_t n, int *mismatch, strata_err *err) {
    cache_rx *rx = *prx;
    *mismatch = 0;
    int rc = 0;
    char file[CACHE_PATH_MAX + 32], final_dir[CACHE_PATH_MAX + 80];
    uint8_t got[SHA256_BYTES];
    char got_hex[SHA256_HEX_BYTES];
    st_file *st = NULL;
    if (rx->received != rx->total) {
        rc = err_set(err, "bundle incomplete: %llu of %llu bytes", (unsigned long long)rx->received,
                     (unsigned long long)rx->total);
        goto out;
    }
    sha256_final(&rx->h, got);
    if (memcmp(got, rx->hash, SHA256_BYTES)) {
        sha256_hex(got, got_hex);
        *mismatch = 1;
        rc = err_set(err, "bundle hash mismatch: announced sha256 %s, received bytes hash to %s; bundle rejected, "
                     "nothing loaded", rx->hex, got_hex);
        goto out;
    }
    if (close(rx->fd)) { rx->fd = -1; rc = err_set(err, "%s: %s", rx->part, strerror(errno)); goto out; }
    rx->fd = -1;
    snprintf(file, sizeof file, "%s/model.safetensors", rx->tmp);
    if (rename(rx->part, file)) { rc = err_set(err, "%s: %s", file, strerror(errno)); goto out; }
    /* the bundle carries its config: a hash names one self-contained model part */
    if (!(st = st_open(file, err))) { *mismatch = 1; rc = err_prefix(err, "received bundle is not valid safetensors"); goto out; }
    const char *cfg = st_meta(st, "config");
    if (!cfg) { *mismatch = 1; rc = err_set(err, "received bundle has no __metadata__ config"); goto out; }
    snprintf(file, sizeof file, "%s/config.json", rx->tmp);
    if ((rc = write_text(file, cfg, err))) goto out;
    snprintf(final_dir, sizeof final_dir, "%s/%s", rx->dir, rx->hex);
    if (rename(rx->tmp, final_dir)) {
        /* another receiver of the same hash got there first: its bytes are the same */
        if (errno != ENOTEMPTY && errno != EEXIST) { rc = err_set(err, "%s: %s", final_dir, strerror(errno)); goto out; }
        remove_tmp(rx);
    }
    if (snprintf(bundle_dir, n, "%s", final_dir) >= (int)n) rc = err_set(err, "cache path too long");
out:
    st_close(&st);
    if (rc) cache_rx_abort(prx);
    else { free(rx); *prx = NULL; }
    return rc;
}
