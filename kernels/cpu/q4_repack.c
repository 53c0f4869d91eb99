/* Repacking MLX 4-bit weights into the blocked layout of cpu_kern.h (cpu_q4pack).
 *
 * Why a copy: the checkpoint stores a row's codes, scales and biases in three arrays, so a
 * kernel over 4 rows reads 12 streams and reorders nibbles and scales in registers for every
 * 64 weight bytes. The packed twin is one stream per block of 16 rows, already in the order the
 * VNNI kernel consumes (q4_pack_avx512.c), read with the same number of bytes (16-bit scales
 * stay 16-bit). It costs one more copy of the q4 weights in memory; the mmap'd original is only
 * touched again by embed.
 *
 * Portable C: the pack runs once per weight, spread over the thread pool by cpu_fast.c. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/cpu/cpu_kern.h"

#define PACK_ROWS 16

/* Packs of ARENA_MIN and more live in shared arenas: mappings on 2 MB boundaries with transparent
 * huge pages asked for (THP is "madvise" on common distributions), one TLB entry per 2 MB on a
 * stream the kernel reads once per token. A pack of its own mapping (as before) started anywhere
 * and ended anywhere, so a 2.45 MB pack (0.5b gate/up/down) got one huge page at most and packs
 * under 1 MB none: the 0.5b gate/up decode matvec from DRAM read 14.7 GB/s one thread, 15.7 on 2
 * MB-aligned pages (2026-12-06). Arenas are handed out front to back and unmapped when their
 * last pack is freed (a model's weights come and go together); a pack larger than ARENA_BYTES
 * gets an arena of its own. */
#define ARENA_MIN ((size_t)64 << 10)
#define ARENA_BYTES ((size_t)64 << 20)
#define HUGE ((size_t)2 << 20)

typedef struct arena {
    struct arena *next;
    char *base;
    size_t size, used;
    int live; /* packs in it not yet freed */
} arena;

static arena *arenas; /* the newest first: the one packs are taken from */
static pthread_mutex_t arena_mu = PTHREAD_MUTEX_INITIALIZER;

static void *arena_alloc(size_t bytes) {
    bytes = (bytes + 63) & ~(size_t)63;
    pthread_mutex_lock(&arena_mu);
    arena *a = arenas;
    if (!a || a->size - a->used < bytes) {
        size_t size = bytes > ARENA_BYTES ? (bytes + HUGE - 1) & ~(HUGE - 1) : ARENA_BYTES;
        char *m = mmap(NULL, size + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        a = m == MAP_FAILED ? NULL : malloc(sizeof *a);
        if (!a) {
            if (m != MAP_FAILED) munmap(m, size + HUGE);
            pthread_mutex_unlock(&arena_mu);
            return NULL;
        }
        size_t head = (HUGE - (uintptr_t)m % HUGE) % HUGE; /* trimmed to 2 MB boundaries */
        if (head) munmap(m, head);
        munmap(m + head + size, HUGE - head);
#if defined(MADV_HUGEPAGE) && !defined(Q4_PACK_NO_THP) /* -DQ4_PACK_NO_THP: to measure what it gives */
        madvise(m + head, size, MADV_HUGEPAGE); /* advice only: no huge pages is still correct */
#endif
        *a = (arena){arenas, m + head, size, 0, 0};
        arenas = a;
    }
    void *p = a->base + a->used;
    a->used += bytes;
    a->live++;
    pthread_mutex_unlock(&arena_mu);
    return p;
}

static void arena_free(void *p) {
    pthread_mutex_lock(&arena_mu);
    for (arena **pa = &arenas; *pa; pa = &(*pa)->next) {
        arena *a = *pa;
        if ((char *)p < a->base || (char *)p >= a->base + a->size) continue;
        if (--a->live == 0) { /* its last pack: the pages go back */
            *pa = a->next;
            munmap(a->base, a->size);
            free(a);
        }
        break;
    }
    pthread_mutex_unlock(&arena_mu);
}

int cpu_q4pack_matches(const cpu_q4pack *p, const bk_weight *w) {
    return p && p->rows == w->rows && p->cols == w->cols && p->group == w->group_size && p->sdtype == w->sdtype &&
           p->src_w == w->w->data && p->src_s == w->scales->data && p->src_b == w->biases->data &&
           p->writes_w == w->w->writes && p->writes_s == w->scales->writes && p->writes_b == w->biases->writes;
}

cpu_q4pack *cpu_q4pack_new(const bk_weight *w) {
    if (w->bits != 4 || w->rows < 1 || w->cols < 1 || w->group_size < 8 || w->group_size % 8 ||
        w->cols % w->group_size || !w->scales || !w->biases)
        return NULL;
    size_t es = w->sdtype == BK_F32 ? 4 : w->sdtype == BK_F16 || w->sdtype == BK_BF16 ? 2 : 0;
    if (!es) return NULL;
    cpu_q4pack *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->rows = w->rows;
    p->cols = w->cols;
    p->group = w->group_size;
    p->n_blocks = (w->rows + PACK_ROWS - 1) / PACK_ROWS;
    p->sdtype = w->sdtype;
    p->group_bytes = (size_t)w->group_size * PACK_ROWS / 2 + 2 * PACK_ROWS * es;
    p->block_bytes = p->group_bytes * (size_t)(w->cols / w->group_size);
    p->bytes = p->block_bytes * (size_t)p->n_blocks;
    p->src_w = w->w->data;
    p->src_s = w->scales->data;
    p->src_b = w->biases->data;
    p->writes_w = w->w->writes;
    p->writes_s = w->scales->writes;
    p->writes_b = w->biases->writes;
    if (p->bytes >= ARENA_MIN) {
        p->data = arena_alloc(p->bytes);
        if (!p->data) { free(p); return NULL; }
    } else {
        size_t sz = (p->bytes + 63) & ~(size_t)63;
        p->data = aligned_alloc(64, sz);
        if (!p->data) { free(p); return NULL; }
    }
    return p;
}

void cpu_q4pack_free(cpu_q4pack *p) {
    if (!p) return;
    if (p->bytes >= ARENA_MIN) arena_free(p->data);
    else free(p->data);
    free(p);
}

/* the 4 nibbles of x (bits 0..15) to the low nibbles of 4 bytes, nibble k to byte k */
static uint32_t spread4(uint32_t x) {
    x = (x | x << 8) & 0x00ff00ffu;
    return (x | x << 4) & 0x0f0f0f0fu;
}

void cpu_q4pack_fill(cpu_q4pack *p, const bk_weight *w, int b0, int b1) {
    const int G = p->group, ng = p->cols / G, words_per_row = p->cols / 8;
    const size_t es = p->sdtype == BK_F32 ? 4 : 2;
    const uint32_t *q = w->w->data;
    const uint8_t *sc = w->scales->data, *bi = w->biases->data;
    for (int b = b0; b < b1; b++) {
        uint8_t *dst = p->data + (size_t)b * p->block_bytes;
        for (int g = 0; g < ng; g++, dst += p->group_bytes) {
            for (int i = 0; i < PACK_ROWS; i++) {
                int r = b * PACK_ROWS + i;
                const uint32_t *row = r < p->rows ? q + (size_t)r * words_per_row + (size_t)g * G / 8 : NULL;
                for (int c = 0; c < G / 8; c++) {
                    /* one uint32 word holds the 8 columns of vector c, element k at bits 4k */
                    uint32_t word = row ? row[c] : 0, out = spread4(word & 0xffffu) | spread4(word >> 16) << 4;
                    memcpy(dst + 64 * c + 4 * i, &out, 4); /* byte j = bits 8j..8j+7: little-endian hosts */
                }
            }
            uint8_t *line = dst + (size_t)G * PACK_ROWS / 2;
            for (int i = 0; i < PACK_ROWS; i++) {
                int r = b * PACK_ROWS + i;
                size_t gi = (size_t)r * ng + g;
                if (r < p->rows) {
                    memcpy(line + es * i, sc + es * gi, es);
                    memcpy(line + es * (PACK_ROWS + i), bi + es * gi, es);
                } else { /* padding rows: all-zero bits are 0.0 in f16, bf16 and f32 */
                    memset(line + es * i, 0, es);
                    memset(line + es * (PACK_ROWS + i), 0, es);
                }
            }
        }
    }
}

void cpu_q4pack_row(const cpu_q4pack *p, int r, float *out) {
    const int G = p->group, ng = p->cols / G, i = r % PACK_ROWS;
    const uint8_t *src = p->data + (size_t)(r / PACK_ROWS) * p->block_bytes;
    for (int g = 0; g < ng; g++, src += p->group_bytes, out += G) {
        const uint8_t *line = src + (size_t)G * PACK_ROWS / 2;
        float scale = bk_load_float(line, p->sdtype, (size_t)i), bias = bk_load_float(line, p->sdtype, (size_t)(PACK_ROWS + i));
        for (int c = 0; c < G / 8; c++) {
            const uint8_t *b = src + 64 * c + 4 * i;
            for (int j = 0; j < 4; j++) { /* the reference's expression, so the row is bit for bit the same */
                out[8 * c + j] = scale * (float)(b[j] & 15) + bias;
                out[8 * c + 4 + j] = scale * (float)(b[j] >> 4) + bias;
            }
        }
    }
}

/* After the pack the checkpoint's copy of these bytes is read again only by embed (tied
 * embeddings), a few rows a token: its pages are handed back to the kernel so that the weights
 * are not resident twice. MADV_PAGEOUT keeps the contents (file pages are dropped and read
 * again on the next touch; anonymous memory would go to swap, or stay without one), so it is
 * safe on any memory; only the pages wholly inside each array are advised, and only for buffers
 * that wrap memory owned elsewhere (the mmap'd checkpoint). Advice: failure changes nothing. */
static void page_out(const bk_buf *b, size_t bytes) {
#ifdef MADV_PAGEOUT
    if (!b || b->owned || !b->data) return;
    long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0) return;
    uintptr_t a = ((uintptr_t)b->data + (uintptr_t)ps - 1) & ~(uintptr_t)(ps - 1);
    uintptr_t e = ((uintptr_t)b->data + bytes) & ~(uintptr_t)(ps - 1);
    if (e > a) madvise((void *)a, e - a, MADV_PAGEOUT);
#else
    (void)b;
    (void)bytes;
#endif
}

void cpu_q4pack_release_source(const bk_weight *w) {
    size_t es = w->sdtype == BK_F32 ? 4 : 2, groups = (size_t)w->rows * (size_t)(w->cols / w->group_size);
    page_out(w->w, (size_t)w->rows * (size_t)w->cols / 2);
    page_out(w->scales, groups * es);
    page_out(w->biases, groups * es);
}
