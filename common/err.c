#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int err_set(strata_err *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int err_prefix(strata_err *err, const char *fmt, ...) {
    if (!err) return -1;
    char prefix[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* compose by hand: the message is cut at the buffer's end, never overrun */
    size_t n = strnlen(prefix, sizeof prefix), cap = sizeof err->msg - 1, k = 0;
    for (size_t i = 0; i < n && k < cap; i++) err->msg[k++] = prefix[i];
    for (const char *p = ": "; *p && k < cap; p++) err->msg[k++] = *p;
    for (size_t i = 0; old[i] && k < cap; i++) err->msg[k++] = old[i];
    err->msg[k] = '\0';
    return -1;
}
