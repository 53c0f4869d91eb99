/* A minimal test harness: CHECK records a failure and goes on; TEST_END prints the closing line
 * "N passed, M failed" that CI reads and returns the exit status. */
#ifndef STRATA_CHECK_H
#define STRATA_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (cond) {                                                           \
            check_passed++;                                                   \
        } else {                                                              \
            check_failed++;                                                   \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, "\n");                                            \
        }                                                                     \
    } while (0)

/* lines of the file at path that contain needle (0 when it cannot be read): for logs of the
 * processes a test starts */
static inline int check_count_lines(const char *path, const char *needle) {
    char line[1024];
    int n = 0;
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) n += strstr(line, needle) != NULL;
    if (f) fclose(f);
    return n;
}

#define TEST_END()                                                            \
    (printf("%d passed, %d failed\n", check_passed, check_failed), check_failed ? 1 : 0)

#endif
