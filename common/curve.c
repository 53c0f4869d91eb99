#include "common/curve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "common/sha256.h"

static int valid_z85(const char *s) {
    uint8_t raw[32];
    return s && strlen(s) == 40 && zmq_z85_decode(raw, s) != NULL;
}

int curve_keygen(const char *path, curve_key *out, strata_err *err) {
    curve_key k = {{0}, {0}};
    if (!zmq_has("curve")) return err_set(err, "this libzmq was built without CURVE support");
    if (zmq_curve_keypair(k.public_z85, k.secret_z85)) return err_set(err, "zmq_curve_keypair: %s", zmq_strerror(errno));
    char pub_path[4096], fp[KEY_FINGERPRINT_BYTES];
    if (snprintf(pub_path, sizeof pub_path, "%s.pub", path) >= (int)sizeof pub_path) return err_set(err, "%s: path too long", path);
    key_fingerprint(k.public_z85, fp);
    /* O_EXCL: a second keygen must not silently lock every existing worker out */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return err_set(err, "%s: %s", path, errno == EEXIST ? "exists already (remove it first to make a new key)" : strerror(errno));
    char text[512];
    int n = snprintf(text, sizeof text,
                     "# strata cluster key (CurveZMQ), fingerprint %s. Keep it secret: whoever holds this file\n"
                     "# can join the cluster. Copy it to the master and every worker; pass --key FILE.\n"
                     "public = %s\nsecret = %s\n", fp, k.public_z85, k.secret_z85);
    int bad = write(fd, text, (size_t)n) != n;
    if (close(fd) || bad) { unlink(path); return err_set(err, "%s: write failed", path); }
    FILE *f = fopen(pub_path, "w");
    if (!f) return err_set(err, "%s: %s", pub_path, strerror(errno));
    fprintf(f, "# strata cluster public key, fingerprint %s\npublic = %s\n", fp, k.public_z85);
    if (fclose(f)) return err_set(err, "%s: write failed", pub_path);
    if (out) *out = k;
    return 0;
}

int curve_key_load(const char *path, curve_key *out, strata_err *err) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f) return err_set(err, "key file %s: %s", path, strerror(errno));
    char line[256];
    int lineno = 0, rc = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '#' || *p == '\n' || *p == '\r' || !*p) continue;
        char key[16], val[64];
        if (sscanf(p, "%15[a-z] = %63s", key, val) != 2) { rc = err_set(err, "key file %s, line %d: expected 'public = ...' or 'secret = ...'", path, lineno); break; }
        char *dst = !strcmp(key, "public") ? out->public_z85 : !strcmp(key, "secret") ? out->secret_z85 : NULL;
        if (!dst) rc = err_set(err, "key file %s, line %d: unknown entry '%s'", path, lineno, key);
        else if (!valid_z85(val)) rc = err_set(err, "key file %s, line %d: %s key is not 40 z85 characters", path, lineno, key);
        else memcpy(dst, val, CURVE_Z85_BYTES);
    }
    fclose(f);
    if (rc) return rc;
    if (!out->public_z85[0]) return err_set(err, "key file %s: no public key", path);
    if (out->secret_z85[0]) {
        /* the pair must belong together, or every handshake would fail with no clear reason */
        char derived[CURVE_Z85_BYTES];
        if (zmq_curve_public(derived, out->secret_z85) || strcmp(derived, out->public_z85))
            return err_set(err, "key file %s: the secret key does not belong to the public key", path);
    }
    return 0;
}

static int set_str(void *sock, int opt, const char *v, const char *what, strata_err *err) {
    if (zmq_setsockopt(sock, opt, v, strlen(v))) return err_set(err, "CURVE %s: %s", what, zmq_strerror(errno));
    return 0;
}

int curve_server_setup(void *sock, const curve_key *k, strata_err *err) {
    int one = 1;
    if (!curve_key_set(k)) return err_set(err, "CURVE server: no secret key");
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one)) return err_set(err, "CURVE server: %s", zmq_strerror(errno));
    if (set_str(sock, ZMQ_CURVE_SECRETKEY, k->secret_z85, "secret key", err)) return -1;
    return set_str(sock, ZMQ_ZAP_DOMAIN, CURVE_ZAP_DOMAIN, "ZAP domain", err);
}

int curve_client_setup(void *sock, const curve_key *k, strata_err *err) {
    if (!curve_key_set(k)) return err_set(err, "CURVE client: no secret key");
    if (set_str(sock, ZMQ_CURVE_SERVERKEY, k->public_z85, "server key", err) ||
        set_str(sock, ZMQ_CURVE_PUBLICKEY, k->public_z85, "public key", err) ||
        set_str(sock, ZMQ_CURVE_SECRETKEY, k->secret_z85, "secret key", err))
        return -1;
    return 0;
}

const char *key_fingerprint(const char *public_key_z85, char out[KEY_FINGERPRINT_BYTES]) {
    uint8_t raw[32], h[SHA256_BYTES];
    out[0] = 0;
    if (!valid_z85(public_key_z85)) return out;
    zmq_z85_decode(raw, public_key_z85);
    sha256_ctx c;
    if (sha256_init(&c)) return out;
    sha256_update(&c, raw, sizeof raw);
    sha256_final(&c, h);
    for (int i = 0; i < 8; i++) snprintf(out + 2 * i, 3, "%02x", h[i]);
    return out;
}

int curve_key_resolve(const char *path, int insecure, const char *who, curve_key *k, strata_err *err) {
    memset(k, 0, sizeof *k);
    if (insecure) {
        fprintf(stderr,
                "%s: WARNING: --insecure: CurveZMQ is OFF. Nothing on the wire is encrypted or authenticated:\n"
                "%s: WARNING: anyone who can reach these sockets can send bundles and run forwards.\n"
                "%s: WARNING: use this only on a trusted LAN; make a key with `strata-master keygen --out FILE`.\n",
                who, who, who);
        return 0;
    }
    if (!path || !*path) path = getenv(CURVE_KEY_ENV);
    if (!path || !*path)
        return err_set(err, "no cluster key: pass --key FILE (or set %s); make one with `strata-master keygen --out FILE` "
                       "and copy it to every node, or pass --insecure on a trusted LAN", CURVE_KEY_ENV);
    if (curve_key_load(path, k, err)) return -1;
    if (!k->secret_z85[0]) return err_set(err, "key file %s holds only a public key; this node needs the full key file", path);
    if (!zmq_has("curve")) return err_set(err, "this libzmq was built without CURVE support (or pass --insecure)");
    char fp[KEY_FINGERPRINT_BYTES];
    fprintf(stderr, "%s: CurveZMQ on, cluster key %s (fingerprint %s)\n", who, path, key_fingerprint(k->public_z85, fp));
    return 0;
}
