/* Errors as values: a function that can fail on input fills a strata_err with the reason
 * (file, field, offset) and returns -1 or NULL. Only main() prints and exits. */
#ifndef STRATA_ERR_H
#define STRATA_ERR_H

#include <stddef.h>

typedef struct {
    char msg[512];
} strata_err;

/* Sets the message (printf-style). Safe with err == NULL. Returns -1 for `return err_set(...)`. */
int err_set(strata_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message. Returns -1. */
int err_prefix(strata_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
