/* Helpers shared by the fuzz targets: a parser that takes a path gets the input through an
 * anonymous in-memory file (memfd), so no parser grows a "from memory" entry point for fuzzing. */
#ifndef STRATA_FUZZ_UTIL_H
#define STRATA_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Writes data to a fresh memfd; path receives "/proc/self/fd/N". Returns the fd or -1. */
static inline int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t path_bytes) {
    int fd = (int)syscall(SYS_memfd_create, "strata-fuzz", 0u);
    if (fd < 0) return -1;
    for (size_t done = 0; done < size;) {
        ssize_t k = write(fd, data + done, size - done);
        if (k <= 0) { close(fd); return -1; }
        done += (size_t)k;
    }
    snprintf(path, path_bytes, "/proc/self/fd/%d", fd);
    return fd;
}

#endif
