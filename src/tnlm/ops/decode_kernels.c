/* The decode step's own kernels (decode_kernels.py): products of a few rows with a weight matrix stored in
   panels, and TransNormer's recurrent state update fused with its read-out.

   1. tnlm_panel_gemv:  y[b][n] = bias[n] + sum_k x[b][k] * W[n][k]   for b < B, n < N

   The weights are stored as wp[p][k][j] = W[16 p + j][k] (zero rows pad the last panel), so each panel of
   16 outputs is one contiguous block of 16 K floats: a thread reads its panels front to back, as a
   streaming read does, and every float read is used by each row of x in registers. Panels are divided
   among the threads; each output is computed by one thread in a fixed order, so the result does not
   depend on the thread count.

   With AVX2 and FMA (compiled with -march=native on such a CPU): one row keeps four 8-wide accumulators,
   two for even and two for odd k, and prefetches PREFETCH floats ahead; up to four rows share each
   panel's loads. Elsewhere a plain loop the compiler vectorises as it can.

   2. tnlm_decay_step: for each row b and head h, with S = state[b][h] (Dk x Dv),
        S = S + (lambda_h - 1) S + k^T v        (in place)
        o = q S                                 (1 x Dv, the updated S)
   in one pass over S (PyTorch needs three: two in-place updates and a product). */

#include <stddef.h>

#define PANEL 16
#define PREFETCH 512 /* floats ahead of the loads: 2 KB, 32 k-steps of a panel */

static void store(const float *acc, long width, const float *bias, float *out) {
    for (long j = 0; j < width; j++) out[j] = acc[j] + (bias ? bias[j] : 0.0f);
}

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

static void panel_one_row(const float *restrict x, long K, const float *restrict w, long width,
                          const float *restrict bias, float *restrict out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, c0 = a0, c1 = a0;
    long k = 0;
    for (; k + 2 <= K; k += 2) {
        const float *p = w + PANEL * k;
        _mm_prefetch((const char *)(p + PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + PREFETCH + PANEL), _MM_HINT_T0);
        __m256 even = _mm256_broadcast_ss(x + k), odd = _mm256_broadcast_ss(x + k + 1);
        a0 = _mm256_fmadd_ps(even, _mm256_loadu_ps(p), a0);
        a1 = _mm256_fmadd_ps(even, _mm256_loadu_ps(p + 8), a1);
        c0 = _mm256_fmadd_ps(odd, _mm256_loadu_ps(p + PANEL), c0);
        c1 = _mm256_fmadd_ps(odd, _mm256_loadu_ps(p + PANEL + 8), c1);
    }
    if (k < K) {
        const float *p = w + PANEL * k;
        __m256 v = _mm256_broadcast_ss(x + k);
        a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(p), a0);
        a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(p + 8), a1);
    }
    float acc[PANEL];
    _mm256_storeu_ps(acc, _mm256_add_ps(a0, c0));
    _mm256_storeu_ps(acc + 8, _mm256_add_ps(a1, c1));
    store(acc, width, bias, out);
}

/* rows of x (at most four; missing ones repeat row 0 and are not stored) through one panel */
static void panel_four_rows(const float *restrict x, long ldx, long rows, long K, const float *restrict w,
                            long width, const float *restrict bias, float *restrict out, long ldo) {
    const float *x0 = x, *x1 = rows > 1 ? x + ldx : x, *x2 = rows > 2 ? x + 2 * ldx : x, *x3 = rows > 3 ? x + 3 * ldx : x;
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    for (long k = 0; k < K; k++) {
        const float *p = w + PANEL * k;
        _mm_prefetch((const char *)(p + PREFETCH), _MM_HINT_T0);
        __m256 w0 = _mm256_loadu_ps(p), w1 = _mm256_loadu_ps(p + 8), v;
        v = _mm256_broadcast_ss(x0 + k); a00 = _mm256_fmadd_ps(v, w0, a00); a01 = _mm256_fmadd_ps(v, w1, a01);
        v = _mm256_broadcast_ss(x1 + k); a10 = _mm256_fmadd_ps(v, w0, a10); a11 = _mm256_fmadd_ps(v, w1, a11);
        v = _mm256_broadcast_ss(x2 + k); a20 = _mm256_fmadd_ps(v, w0, a20); a21 = _mm256_fmadd_ps(v, w1, a21);
        v = _mm256_broadcast_ss(x3 + k); a30 = _mm256_fmadd_ps(v, w0, a30); a31 = _mm256_fmadd_ps(v, w1, a31);
    }
    float acc[4][PANEL];
    _mm256_storeu_ps(acc[0], a00); _mm256_storeu_ps(acc[0] + 8, a01);
    _mm256_storeu_ps(acc[1], a10); _mm256_storeu_ps(acc[1] + 8, a11);
    _mm256_storeu_ps(acc[2], a20); _mm256_storeu_ps(acc[2] + 8, a21);
    _mm256_storeu_ps(acc[3], a30); _mm256_storeu_ps(acc[3] + 8, a31);
    for (long r = 0; r < rows; r++) store(acc[r], width, bias, out + r * ldo);
}

#else /* any other CPU: the same order of work in plain C */

static void panel_one_row(const float *restrict x, long K, const float *restrict w, long width,
                          const float *restrict bias, float *restrict out) {
    float acc[PANEL] = {0};
    for (long k = 0; k < K; k++) {
        const float v = x[k], *p = w + PANEL * k;
        for (int j = 0; j < PANEL; j++) acc[j] += v * p[j];
    }
    store(acc, width, bias, out);
}

static void panel_four_rows(const float *restrict x, long ldx, long rows, long K, const float *restrict w,
                            long width, const float *restrict bias, float *restrict out, long ldo) {
    for (long r = 0; r < rows; r++) panel_one_row(x + r * ldx, K, w, width, bias, out + r * ldo);
}

#endif

/* x: B rows of K floats, ldx apart; wp: ceil(N / 16) panels of 16 K floats; bias: N floats or NULL;
   y: B rows of N floats, ldy apart; threads: how many OpenMP threads to use. */
void tnlm_panel_gemv(const float *x, long B, long K, long ldx, const float *wp, long N, const float *bias,
                     float *y, long ldy, int threads) {
    long panels = (N + PANEL - 1) / PANEL;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1)
#endif
    for (long p = 0; p < panels; p++) {
        long n = p * PANEL, width = N - n < PANEL ? N - n : PANEL;
        const float *w = wp + n * K, *b = bias ? bias + n : NULL;
        if (B == 1) {
            panel_one_row(x, K, w, width, b, y + n);
            continue;
        }
        for (long r = 0; r < B; r += 4)
            panel_four_rows(x + r * ldx, ldx, B - r < 4 ? B - r : 4, K, w, width, b, y + r * ldy + n, ldy);
    }
    (void)threads;
}

/* state: BH = B * H blocks of Dk x Dv floats (row b * H + h), updated in place; lam_m1: H floats;
   q, k: BH rows of Dk floats; v, o: BH rows of Dv floats. */
#define DV_BLOCK 256
void tnlm_decay_step(float *state, long BH, long H, long Dk, long Dv, const float *lam_m1, const float *q,
                     const float *k, const float *v, float *o, int threads) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1)
#endif
    for (long bh = 0; bh < BH; bh++) {
        const float l = lam_m1[bh % H], *qs = q + bh * Dk, *ks = k + bh * Dk, *vs = v + bh * Dv;
        for (long j0 = 0; j0 < Dv; j0 += DV_BLOCK) {
            const long width = Dv - j0 < DV_BLOCK ? Dv - j0 : DV_BLOCK;
            float acc[DV_BLOCK] = {0};
            for (long i = 0; i < Dk; i++) {
                float *row = state + (bh * Dk + i) * Dv + j0;
                const float ki = ks[i], qi = qs[i], *vj = vs + j0;
#ifdef _OPENMP
#pragma omp simd
#endif
                for (long j = 0; j < width; j++) {
                    float x = row[j];
                    x = (x + x * l) + ki * vj[j];
                    row[j] = x;
                    acc[j] += qi * x;
                }
            }
            for (long j = 0; j < width; j++) o[bh * Dv + j0 + j] = acc[j];
        }
    }
    (void)threads;
}
