/* The fuzz targets without libFuzzer: a main that feeds one target (linked beside it) every file
 * of the given corpus directories (or single files). Built by the project's compiler, so the seed
 * corpora, and every crash input copied into them, are replayed in every test run and under the
 * ASan/UBSan build, where clang is not installed too. A fault aborts the process (the test fails
 * naming the input just before it on stdout).
 *
 * usage: fuzz_replay_<target> DIR_OR_FILE... */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_MAX_BYTES (16u << 20) /* a corpus file is small; anything larger is a mistake */

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* 0 when the file was run, -1 when it could not be read */
static int replay_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    struct stat st;
    if (fstat(fileno(f), &st) || st.st_size < 0 || (uint64_t)st.st_size > REPLAY_MAX_BYTES) { fclose(f); return -1; }
    size_t n = (size_t)st.st_size;
    /* an exact-size heap copy, as libFuzzer gives: ASan then sees a read one past the end */
    uint8_t *data = malloc(n ? n : 1);
    int ok = data && fread(data, 1, n, f) == n;
    fclose(f);
    if (ok) {
        printf("replay %s (%zu bytes)\n", path, n);
        fflush(stdout);
        LLVMFuzzerTestOneInput(data, n);
    }
    free(data);
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
    int passed = 0, failed = 0;
    if (argc < 2) { fprintf(stderr, "usage: %s DIR_OR_FILE...\n", argv[0]); return 2; }
    for (int a = 1; a < argc; a++) {
        DIR *d = opendir(argv[a]);
        if (!d) {
            if (replay_file(argv[a])) { printf("FAIL cannot read %s\n", argv[a]); failed++; } else passed++;
            continue;
        }
        char **names = NULL;
        int n = 0, cap = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                char **g = realloc(names, sizeof *g * (size_t)cap);
                if (!g) { printf("FAIL out of memory\n"); return 1; }
                names = g;
            }
            size_t len = strlen(argv[a]) + strlen(e->d_name) + 2;
            if (!(names[n] = malloc(len))) { printf("FAIL out of memory\n"); return 1; }
            snprintf(names[n++], len, "%s/%s", argv[a], e->d_name);
        }
        closedir(d);
        qsort(names, (size_t)n, sizeof *names, cmp_names); /* a stable order: a failure names the same input every run */
        if (!n) { printf("FAIL %s: empty corpus\n", argv[a]); failed++; }
        for (int i = 0; i < n; i++) {
            if (replay_file(names[i])) { printf("FAIL cannot read %s\n", names[i]); failed++; } else passed++;
            free(names[i]);
        }
        free(names);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
