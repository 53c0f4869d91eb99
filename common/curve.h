/* CurveZMQ for every strata socket: one cluster key pair, made once (`strata-master keygen --out
 * FILE`) and copied to the master and every worker.
 *
 * Workers are CURVE servers holding the cluster secret key. Whoever connects to a worker (the
 * master, the previous worker of a chain) is a CURVE client that uses the same pair as its own
 * long-term key. The CURVE handshake makes a client prove it holds the secret of the public key
 * it presents, and the worker's ZAP handler (worker/zap.c) admits only the cluster's public key:
 * so only a holder of the key file gets a single message through. Everything on the wire is
 * encrypted and authenticated.
 *
 * Key file (text, mode 0600; FILE.pub holds only the public line):
 *   # strata cluster key ...
 *   public = <40 z85 characters>
 *   secret = <40 z85 characters>
 */
#ifndef STRATA_CURVE_H
#define STRATA_CURVE_H

#include <stddef.h>

#include "common/err.h"

#define CURVE_Z85_BYTES 41          /* 40 characters + NUL */
#define KEY_FINGERPRINT_BYTES 17    /* 16 hex characters + NUL */
#define CURVE_ZAP_DOMAIN "strata"
#define CURVE_KEY_ENV "STRATA_KEY"  /* default for --key when the flag is not given */

typedef struct {
    char public_z85[CURVE_Z85_BYTES];
    char secret_z85[CURVE_Z85_BYTES]; /* empty when only a .pub file was read */
} curve_key;

/* Makes a new cluster key pair and writes it to path (0600, refusing to overwrite an existing
 * file) and its public half to path.pub. */
int curve_keygen(const char *path, curve_key *out, strata_err *err);
/* Reads a key file written by curve_keygen (a .pub file gives the public key only). */
int curve_key_load(const char *path, curve_key *out, strata_err *err);

/* Socket roles. Call before bind/connect. */
int curve_server_setup(void *sock, const curve_key *k, strata_err *err);
int curve_client_setup(void *sock, const curve_key *k, strata_err *err);

/* A short stable name for a public key (the first 8 bytes of SHA-256 over its 32 raw bytes, in
 * hex), for logs and the mDNS TXT record: two nodes show the same fingerprint iff they hold the
 * same cluster key. Returns out, or "" for a key that is not 40 valid z85 characters. */
const char *key_fingerprint(const char *public_key_z85, char out[KEY_FINGERPRINT_BYTES]);

/* The master's and worker's common key option handling: loads `path` (or $STRATA_KEY when path
 * is NULL) into *k, or, with insecure set, returns 0 leaving k empty and prints the warning.
 * who: "strata-master" / "strata-worker[name]" for the messages. */
int curve_key_resolve(const char *path, int insecure, const char *who, curve_key *k, strata_err *err);
/* 1 when k holds a usable key pair (not insecure) */
static inline int curve_key_set(const curve_key *k) { return k && k->secret_z85[0]; }

#endif
