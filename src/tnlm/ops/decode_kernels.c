/* The decode step's own kernels (decode_kernels.py): products of a few rows with a weight matrix stored in
   panels, and TransNormer's recurrent state update fused with its read-out.

   1. tnlm_panel_gemv:  y[b][n] = bias[n] + sum_k x[b][k] * W[n][k]   for b < B, n < N

   The weights are stored as wp[p][k][j] = W[16 p + j][k] (zero rows pad the last panel), so each panel of
   16 outputs is one contiguous block of 16 K floats: a thread reads its panels front to back, as a
   streaming read does, and every float read is used by each row of x in registers. Panels are divided
   among the threads; each output is computed by one thread in a fixed order, so the result does not
   depend on the thread count.

   With AVX-512 (compiled with -march=native on such a CPU): two panels at a time, each a 16-wide register
   per row, for up to eight rows that share the panels' loads (a kernel each for 1, 2, 4 and 8 rows), and
   prefetching PREFETCH floats ahead. With AVX2 and FMA only: one row keeps four 8-wide accumulators, two
   for even and two for odd k; up to four rows share each panel's loads. Elsewhere a plain loop the
   compiler vectorises as it can.

   2. tnlm_decay_step: for each row b and head h, with S = state[b][h] (Dk x Dv),
        S = S + (lambda_h - 1) S + k^T v        (in place)
        o = q S                                 (1 x Dv, the updated S)
   in one pass over S (PyTorch needs three: two in-place updates and a product).

   3. tnlm_transnormer_layer: a whole TransNormer block for one token per row, with the two above (below). */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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


#if defined(__AVX512F__)
/* R rows of x (rows of them real; the others repeat row 0 and are not stored) through two panels at once,
   w0 and w1 (w1 NULL: w0 alone): 2 R accumulators of 16 floats, each row's broadcast used for both panels.
   R is a constant in each caller below, so the loops over it unroll and the accumulators stay in registers. */
static inline __attribute__((always_inline)) void pair_rows(const long R, const float *restrict x, long ldx, long rows,
        long K, const float *restrict w0, const float *restrict w1, long width0, long width1, const float *restrict bias,
        float *restrict out, long ldo) {
    const float *xr[8];
    __m512 a[8], b[8];
    for (long r = 0; r < R; r++) xr[r] = r < rows ? x + r * ldx : x, a[r] = b[r] = _mm512_setzero_ps();
    if (w1 == NULL) w1 = w0, width1 = 0;
    for (long k = 0; k < K; k++) {
        const float *p = w0 + PANEL * k, *q = w1 + PANEL * k;
        _mm_prefetch((const char *)(p + PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(q + PREFETCH), _MM_HINT_T0);
        const __m512 w0v = _mm512_loadu_ps(p), w1v = _mm512_loadu_ps(q);
        for (long r = 0; r < R; r++) {
            const __m512 v = _mm512_set1_ps(xr[r][k]);
            a[r] = _mm512_fmadd_ps(v, w0v, a[r]);
            b[r] = _mm512_fmadd_ps(v, w1v, b[r]);
        }
    }
    float acc[2][PANEL];
    for (long r = 0; r < rows; r++) {
        _mm512_storeu_ps(acc[0], a[r]);
        _mm512_storeu_ps(acc[1], b[r]);
        store(acc[0], width0, bias, out + r * ldo);
        if (width1) store(acc[1], width1, bias ? bias + PANEL : NULL, out + r * ldo + PANEL);
    }
}

#define PAIR_ROWS(R)                                                                                              \
    static void pair_rows_##R(const float *x, long ldx, long rows, long K, const float *w0, const float *w1,     \
                              long width0, long width1, const float *bias, float *out, long ldo) {             \
        pair_rows(R, x, ldx, rows, K, w0, w1, width0, width1, bias, out, ldo);                                   \
    }
PAIR_ROWS(1)
PAIR_ROWS(2)
PAIR_ROWS(4)
PAIR_ROWS(8)
#endif

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
#if defined(__AVX2__) && defined(__FMA__) && defined(__AVX512F__)
    { /* pairs of panels, up to eight rows at a time */
        long pairs = (panels + 1) / 2;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1)
#endif
        for (long p = 0; p < pairs; p++) {
            long n = 2 * p * PANEL, width0 = N - n < PANEL ? N - n : PANEL, width1 = N - n - PANEL;
            const float *w0 = wp + n * K, *w1 = width1 > 0 ? w0 + PANEL * K : NULL, *b = bias ? bias + n : NULL;
            width1 = width1 < 0 ? 0 : width1 > PANEL ? PANEL : width1;
            for (long r = 0; r < B; r += 8) {
                const long rows = B - r < 8 ? B - r : 8;
                const float *xs = x + r * ldx;
                float *ys = y + r * ldy + n;
                if (rows > 4) pair_rows_8(xs, ldx, rows, K, w0, w1, width0, width1, b, ys, ldy);
                else if (rows > 2) pair_rows_4(xs, ldx, rows, K, w0, w1, width0, width1, b, ys, ldy);
                else if (rows == 2) pair_rows_2(xs, ldx, rows, K, w0, w1, width0, width1, b, ys, ldy);
                else pair_rows_1(xs, ldx, rows, K, w0, w1, width0, width1, b, ys, ldy);
            }
        }
        return;
    }
#endif
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

/* 3. tnlm_transnormer_layer: one token per row through a TransNormer block, in place on x (B rows of d):
        h = norm_t(x);  q, k, v, u = h W_qkvu^T;  q, k = act(q), act(k);  q, k = lrpe(q), lrpe(k)
        S = S + (lambda - 1) S + k^T v;  o = q S                        (each head, state updated in place)
        x = x + (u * norm_o(o)) W_out^T
        h = norm_c(x);  x = x + (glu_act(h W_1^T) * h W_2^T) W_3^T
   the arithmetic of the fast step's PyTorch operators (generation/fast.py), in one call: the products
   through the panels above on `threads` threads, the state on `state_threads`, the rest on the caller's. */

enum { ACT_NONE, ACT_SILU, ACT_RELU, ACT_SIGMOID, ACT_GELU, ACT_ELU, ACT_ONE_PLUS_ELU, ACT_EXP };

struct tnlm_transnormer_layer {
    long d, hidden, heads, head_dim, glu;
    const float *qkvu, *qkvu_bias, *out, *out_bias, *l12, *l12_bias, *l3, *l3_bias; /* panels; biases or NULL */
    const float *token_norm, *mixer_norm, *channel_norm; /* RMSNorm weights; NULL: SRMSNorm (no weight) */
    double token_eps, mixer_eps, channel_eps;
    const float *theta;  /* LRPE's hidden frequencies (head-major), NULL: no LRPE */
    const float *lam_m1; /* lambda - 1 per head */
    long qk_act, glu_act;
};

/* e^x for x in [-87, 87] as 2^n e^r, n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts, the first
   exact in few bits), e^r by Cephes' degree-7 polynomial for expf (relative error ~1.2e-7, about libm's);
   written so that the compiler vectorises a loop of it, which it cannot do with libm's expf */
static inline float exp_core(float x) {
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest: 1.5 * 2^23 */
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    union { int i; float f; } scale = {.i = ((n == n ? (int)n : 0) + 127) << 23}; /* NaN: p is NaN, scale 1 */
    return p * scale.f;
}

/* the argument clamped to the range exp_core takes (NaN stays NaN) */
static inline float clamp87(float x) { return x < -87.0f ? -87.0f : x > 87.0f ? 87.0f : x; }

/* x[j] = act(x[j]) for j < n: silu and sigmoid vectorised, the rarer maps through libm */
static void activate(float *restrict x, long n, long act) {
    switch (act) {
    case ACT_SILU: /* below -87 the exact value is under 1e-35: 0 (of x's sign) */
#pragma omp simd
        for (long j = 0; j < n; j++) {
            const float v = x[j], e = exp_core(clamp87(-v));
            x[j] = v < -87.0f ? 0.0f * v : v / (1.0f + e);
        }
        return;
    case ACT_SIGMOID: /* below -87 the exact value is under 2e-38: 0 */
#pragma omp simd
        for (long j = 0; j < n; j++) {
            const float v = x[j], e = exp_core(clamp87(-v));
            x[j] = v < -87.0f ? 0.0f : 1.0f / (1.0f + e);
        }
        return;
    case ACT_RELU:
        for (long j = 0; j < n; j++) x[j] = x[j] > 0.0f ? x[j] : 0.0f;
        return;
    case ACT_GELU:
        for (long j = 0; j < n; j++) x[j] = 0.5f * x[j] * (1.0f + erff(x[j] * 0.70710678118654752f));
        return;
    case ACT_ELU:
        for (long j = 0; j < n; j++) x[j] = x[j] > 0.0f ? x[j] : expm1f(x[j]);
        return;
    case ACT_ONE_PLUS_ELU:
        for (long j = 0; j < n; j++) x[j] = 1.0f + (x[j] > 0.0f ? x[j] : expm1f(x[j]));
        return;
    case ACT_EXP:
        for (long j = 0; j < n; j++) x[j] = expf(x[j]);
        return;
    default:
        return;
    }
}

/* cos and sin of float angles, computed in double and rounded (within an ulp of libm's cosf and sinf):
   a = k pi/2 + r, |r| <= pi/4 (pi/2 in two parts, k pi/2 exact for |k| < 2^20: angles to ~1.6e6), then
   Taylor polynomials to r^14 and r^13 (error < 1e-13) and the quadrant; vectorised like exp_core */
static void cos_sin(const float *restrict angle, long n, float *restrict c, float *restrict s) {
#pragma omp simd
    for (long j = 0; j < n; j++) {
        const double a = angle[j];
        const double k = (a * 0.63661977236758134 + 6755399441055744.0) - 6755399441055744.0; /* 1.5 * 2^52 */
        const double r = (a - k * 1.5707963267341256) - k * 6.077100506506192e-11, r2 = r * r;
        const double sr = r * (1.0 + r2 * (-1.0 / 6 + r2 * (1.0 / 120 + r2 * (-1.0 / 5040 + r2 * (1.0 / 362880 +
                          r2 * (-1.0 / 39916800 + r2 * (1.0 / 6227020800.0)))))));
        const double cr = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24 + r2 * (-1.0 / 720 + r2 * (1.0 / 40320 + r2 * (-1.0 / 3628800 +
                          r2 * (1.0 / 479001600.0 + r2 * (-1.0 / 87178291200.0)))))));
        const long q = (long)k; /* the quadrant, chosen by exact arithmetic (a branch would stop the vectoriser) */
        const double odd = (double)(q & 1), sv = odd * cr + (1.0 - odd) * sr, cv = odd * sr + (1.0 - odd) * cr;
        s[j] = (float)((1.0 - (double)(q & 2)) * sv);
        c[j] = (float)((1.0 - (double)((q + 1) & 2)) * cv);
    }
}

/* y = x / sqrt(mean(x^2) + eps), times w where given */
static void rms_norm(const float *restrict x, long n, const float *restrict w, double eps, float *restrict y) {
    double sum = 0.0;
    for (long j = 0; j < n; j++) sum += (double)x[j] * x[j];
    const float r = 1.0f / sqrtf((float)(sum / n) + (float)eps);
    for (long j = 0; j < n; j++) y[j] = w ? (x[j] * r) * w[j] : x[j] * r;
}

int tnlm_transnormer_layer(const struct tnlm_transnormer_layer *L, float *x, long B, const int64_t *positions,
                           float *state, int threads, int state_threads) {
    const long d = L->d, hid = L->hidden, H = L->heads, hd = L->head_dim, G = L->glu;
    const long Dk = L->theta ? 2 * hd : hd, wide = 4 * hid > 2 * G ? 4 * hid : 2 * G, narrow = hid > G ? hid : G;
    float *buf = malloc(sizeof(float) * (B * (d + wide + 2 * H * Dk + 2 * hid + narrow + d) + 3 * hid));
    if (!buf) return -1;
    float *h = buf, *big = h + B * d, *qs = big + B * wide, *ks = qs + B * H * Dk, *vs = ks + B * H * Dk,
          *o = vs + B * hid, *mid = o + B * hid, *add = mid + B * narrow,
          *angle = add + B * d, *c = angle + hid, *s = c + hid;

    for (long b = 0; b < B; b++) rms_norm(x + b * d, d, L->token_norm, L->token_eps, h + b * d);
    tnlm_panel_gemv(h, B, d, d, L->qkvu, 4 * hid, L->qkvu_bias, big, 4 * hid, threads);
    for (long b = 0; b < B; b++) {
        float *row = big + b * 4 * hid;
        activate(row, 2 * hid, L->qk_act); /* q and k */
        if (L->theta) {
            const float pos = (float)positions[b];
            for (long j = 0; j < hid; j++) angle[j] = pos * L->theta[j];
            cos_sin(angle, hid, c, s);
        }
        for (long i = 0; i < H; i++) {
            const float *q = row + i * hd, *k = row + hid + i * hd;
            float *qd = qs + (b * H + i) * Dk, *kd = ks + (b * H + i) * Dk;
            if (L->theta) {
                const float *ci = c + i * hd, *si = s + i * hd;
                for (long j = 0; j < hd; j++) qd[j] = q[j] * ci[j], qd[hd + j] = q[j] * si[j], kd[j] = k[j] * ci[j], kd[hd + j] = k[j] * si[j];
            } else {
                memcpy(qd, q, sizeof(float) * hd);
                memcpy(kd, k, sizeof(float) * hd);
            }
        }
        memcpy(vs + b * hid, row + 2 * hid, sizeof(float) * hid);
    }
    tnlm_decay_step(state, B * H, H, Dk, hd, L->lam_m1, qs, ks, vs, o, state_threads);
    for (long b = 0; b < B; b++) {
        float *gated = mid + b * hid;
        const float *u = big + b * 4 * hid + 3 * hid;
        rms_norm(o + b * hid, hid, L->mixer_norm, L->mixer_eps, gated);
        for (long j = 0; j < hid; j++) gated[j] = u[j] * gated[j];
    }
    tnlm_panel_gemv(mid, B, hid, hid, L->out, d, L->out_bias, add, d, threads);
    for (long i = 0; i < B * d; i++) x[i] = x[i] + add[i];

    for (long b = 0; b < B; b++) rms_norm(x + b * d, d, L->channel_norm, L->channel_eps, h + b * d);
    tnlm_panel_gemv(h, B, d, d, L->l12, 2 * G, L->l12_bias, big, 2 * G, threads);
    for (long b = 0; b < B; b++) {
        float *gate = big + b * 2 * G;
        const float *value = gate + G;
        activate(gate, G, L->glu_act);
        for (long j = 0; j < G; j++) mid[b * G + j] = gate[j] * value[j];
    }
    tnlm_panel_gemv(mid, B, G, G, L->l3, d, L->l3_bias, add, d, threads);
    for (long i = 0; i < B * d; i++) x[i] = x[i] + add[i];
    free(buf);
    return 0;
}
