/* The block functions of q4_pack_avx2.c, compiled twice there: Q4P2_NAME(x) names this copy's
 * functions, Q4P2_ATTR is its target, PAIR(acc, wl, wh, xa, xb) adds the products of a vector's
 * low and high codes with two broadcasts to acc and WIDEN(s, acc) adds acc to the int32 sums s
 * (pmaddubsw into int16 pairs then pmaddwd on AVX2; vpdpbusd into int32 with AVX-VNNI). No include
 * guard: it is meant to be included more than once. */

/* T tokens from t, one block of 16 rows at p: y rows 16 b .. (rows_left of them) */
INLINE Q4P2_ATTR void Q4P2_NAME(block_T)(const cpu_q4pack *pk, const uint8_t *p, const cpu_qact *a, int t, float *y,
                                         int rows_left, const bk_dtype st, const int T, const int pf) {
    const int K = pk->cols, G = pk->group, ng = K / G, lines = G / 8;
    const __m256i m0f = _mm256_set1_epi8(0x0f);
    __m256 acc[TILE_MAX][2];
    for (int j = 0; j < T; j++) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    for (int g = 0; g < ng; g++, p += pk->group_bytes) {
        if (pf)
            for (int c = 0; c <= lines; c++) _mm_prefetch((const char *)p + 64 * c + PF_AHEAD, _MM_HINT_T0);
        const uint8_t *line = p + (size_t)G * 8;
        for (int h = 0; h < 2; h++) {
            __m256i sh[TILE_MAX], sl[TILE_MAX]; /* int32 sums against the hi and lo planes */
            for (int j = 0; j < T; j++) sh[j] = sl[j] = _mm256_setzero_si256();
            for (int c0 = 0; c0 < lines; c0 += 4) {
                __m256i ph[TILE_MAX], pl[TILE_MAX]; /* PAIR sums of up to four vectors */
                for (int j = 0; j < T; j++) ph[j] = pl[j] = _mm256_setzero_si256();
                for (int c = c0; c < c0 + 4 && c < lines; c++) {
                    const __m256i v = _mm256_load_si256((const __m256i *)(p + 64 * c + 32 * h));
                    const __m256i wl = _mm256_and_si256(v, m0f), wh = _mm256_and_si256(_mm256_srli_epi16(v, 4), m0f);
                    for (int j = 0; j < T; j++) {
                        const int8_t *xh = a->hi + (size_t)(t + j) * K + (size_t)g * G + 8 * c;
                        const int8_t *xl = a->lo + (size_t)(t + j) * K + (size_t)g * G + 8 * c;
                        ph[j] = PAIR(ph[j], wl, wh, bcast4(xh), bcast4(xh + 4));
                        pl[j] = PAIR(pl[j], wl, wh, bcast4(xl), bcast4(xl + 4));
                    }
                }
                for (int j = 0; j < T; j++) {
                    sh[j] = WIDEN(sh[j], ph[j]);
                    sl[j] = WIDEN(sl[j], pl[j]);
                }
            }
            const __m256 sc = line8(line, st, 0, h), bi = line8(line, st, 1, h);
            for (int j = 0; j < T; j++) {
                const size_t ti = (size_t)(t + j) * ng + g;
                const __m256 tot = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_slli_epi32(sh[j], 8), sl[j]));
                acc[j][h] = _mm256_fmadd_ps(tot, _mm256_mul_ps(sc, _mm256_set1_ps(a->d[ti])), acc[j][h]);
                acc[j][h] = _mm256_fmadd_ps(bi, _mm256_set1_ps(a->bsum[ti]), acc[j][h]);
            }
        }
    }
    for (int j = 0; j < T; j++) {
        store8(y + (size_t)j * pk->rows, rows_left, acc[j][0]);
        store8(y + (size_t)j * pk->rows + 8, rows_left - 8, acc[j][1]);
    }
}

/* one token, one block: both halves of each vector against the same four broadcasts */
INLINE Q4P2_ATTR void Q4P2_NAME(block_1)(const cpu_q4pack *pk, const uint8_t *p, const cpu_qact *a, int t, float *y,
                                         int rows_left, const bk_dtype st) {
    const int K = pk->cols, G = pk->group, ng = K / G, lines = G / 8;
    const __m256i m0f = _mm256_set1_epi8(0x0f);
    const int8_t *xh = a->hi + (size_t)t * K, *xl = a->lo + (size_t)t * K;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    for (int g = 0; g < ng; g++, p += pk->group_bytes, xh += G, xl += G) {
        for (int c = 0; c <= lines; c++) _mm_prefetch((const char *)p + 64 * c + PF_AHEAD, _MM_HINT_T0);
        __m256i sh0 = _mm256_setzero_si256(), sl0 = sh0, sh1 = sh0, sl1 = sh0;
        for (int c0 = 0; c0 < lines; c0 += 4) {
            __m256i ph0 = _mm256_setzero_si256(), pl0 = ph0, ph1 = ph0, pl1 = ph0;
            for (int c = c0; c < c0 + 4 && c < lines; c++) {
                const __m256i v0 = _mm256_load_si256((const __m256i *)(p + 64 * c));
                const __m256i v1 = _mm256_load_si256((const __m256i *)(p + 64 * c + 32));
                const __m256i wl0 = _mm256_and_si256(v0, m0f), wh0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), m0f);
                const __m256i wl1 = _mm256_and_si256(v1, m0f), wh1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), m0f);
                const __m256i ha = bcast4(xh + 8 * c), hb = bcast4(xh + 8 * c + 4);
                const __m256i la = bcast4(xl + 8 * c), lb = bcast4(xl + 8 * c + 4);
                ph0 = PAIR(ph0, wl0, wh0, ha, hb);
                ph1 = PAIR(ph1, wl1, wh1, ha, hb);
                pl0 = PAIR(pl0, wl0, wh0, la, lb);
                pl1 = PAIR(pl1, wl1, wh1, la, lb);
            }
            sh0 = WIDEN(sh0, ph0);
            sh1 = WIDEN(sh1, ph1);
            sl0 = WIDEN(sl0, pl0);
            sl1 = WIDEN(sl1, pl1);
        }
        const uint8_t *line = p + (size_t)G * 8;
        const __m256 dg = _mm256_set1_ps(a->d[(size_t)t * ng + g]), xg = _mm256_set1_ps(a->bsum[(size_t)t * ng + g]);
        const __m256 tot0 = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_slli_epi32(sh0, 8), sl0));
        const __m256 tot1 = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_slli_epi32(sh1, 8), sl1));
        acc0 = _mm256_fmadd_ps(tot0, _mm256_mul_ps(line8(line, st, 0, 0), dg), acc0);
        acc0 = _mm256_fmadd_ps(line8(line, st, 1, 0), xg, acc0);
        acc1 = _mm256_fmadd_ps(tot1, _mm256_mul_ps(line8(line, st, 0, 1), dg), acc1);
        acc1 = _mm256_fmadd_ps(line8(line, st, 1, 1), xg, acc1);
    }
    store8(y, rows_left, acc0);
    store8(y + 8, rows_left - 8, acc1);
}

/* one token over blocks [b0, b1): one stream */
INLINE Q4P2_ATTR void Q4P2_NAME(one_token)(const cpu_q4pack *pk, const cpu_qact *a, float *y, int b0, int b1, int t,
                                           const bk_dtype st) {
    float *yt = y + (size_t)t * pk->rows;
    for (int b = b0; b < b1; b++)
        Q4P2_NAME(block_1)(pk, pk->data + (size_t)b * pk->block_bytes, a, t, yt + (size_t)b * 16, pk->rows - 16 * b, st);
}

/* T tokens of two adjacent blocks: one after the other (broadcasts into ymm are cheap) */
INLINE Q4P2_ATTR void Q4P2_NAME(block_2T)(const cpu_q4pack *pk, const uint8_t *p, const cpu_qact *a, int t, float *y,
                                          int rows_left, const bk_dtype st, const int T, const int pf) {
    for (int i = 0; i < 2; i++, p += pk->block_bytes, y += 16, rows_left -= 16)
        if (T == 1) Q4P2_NAME(block_1)(pk, p, a, t, y, rows_left, st);
        else Q4P2_NAME(block_T)(pk, p, a, t, y, rows_left, st, T, pf);
}

CPU_Q4P_WALK(Q4P2_ATTR, Q4P2_NAME(cpu_q4p_qmm), Q4P2_NAME(one_token), Q4P2_NAME(block_1), Q4P2_NAME(block_T),
             Q4P2_NAME(block_2T))
