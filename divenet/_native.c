/* divenet's optional native kernels (float32 only), loaded by divenet/_native.py with ctypes.
 *
 * Activations are laid out (C, H, W, N), batch innermost, so every inner loop runs over
 * contiguous images and the compiler vectorizes it; weights come pre-arranged by the caller so
 * that the values a loop broadcasts are contiguous too. Each kernel is the plain loop nest of
 * its definition, blocked so that the accumulators stay in registers.
 *
 * Convolution geometry is passed as an int64 array
 *     g = {C, H, W, N, O, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw, threads}
 * with ph, pw the top and left padding, and `threads` how many threads a call may use: each
 * kernel splits its output among them (rows, or weight-gradient tiles), so every output is
 * summed in the same order whatever the count.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* one build runs everywhere; the loader picks the AVX-512 or AVX2 copy on CPUs that have them */
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif
#define INLINE static inline __attribute__((always_inline))

typedef float v16 __attribute__((vector_size(64))); /* 16 images: one AVX-512 register */
#pragma GCC diagnostic ignored "-Wpsabi" /* f8 in the default copy: inlined only */
typedef float f8 __attribute__((vector_size(32))); /* 8 floats: elementwise and depthwise kernels */
typedef int32_t m8 __attribute__((vector_size(32)));

#define SPLAT(v) ((f8){v, v, v, v, v, v, v, v})
INLINE f8 select8(m8 mask, f8 a, f8 b) /* mask ? a : b, lane by lane (mask lanes are 0 or -1) */
{
    return (f8)(((m8)a & mask) | ((m8)b & ~mask));
}

/* unaligned loads and stores (macros: a v16 never crosses a function call) */
#define LOAD16(dst, p) memcpy(&(dst), (p), sizeof(v16))
#define STORE16(p, src) memcpy((p), &(src), sizeof(v16))

/* Bumped with every change of a signature or layout; divenet/_native.py ignores a library
 * built from other sources (an editable install not rebuilt after a change). */
int dn_version(void) { return 14; }

enum { C_, H_, W_, N_, O_, KH, KW, OH_, OW_, SH, SW, PH, PW, DH, DW, THREADS };
/* the geometry of the kernels on the implicit GEMM's phase buffer (dn_gemm_conv and others) */
enum { GG, GOG, GK, GOH, GL, GROW, GSTRIDE, GP, GTHREADS };

/* A kernel's arguments, for the threads that share its work. */
typedef struct {
    const float *a, *b, *c;
    float *out;
    const i64 *g, *toff;
    const float *d, *e, *f; /* batch norm's further per-channel operands, and its eps */
    float eps;
} conv_args;

typedef void (*range_fn)(const conv_args *, i64 lo, i64 hi);

typedef struct {
    range_fn run;
    const conv_args *args;
    i64 n, grain, next; /* next: the first unit no thread has taken (atomic) */
} work;

static void *work_main(void *p)
{
    work *w = p;
    for (;;) {
        i64 lo = __atomic_fetch_add(&w->next, w->grain, __ATOMIC_RELAXED);
        if (lo >= w->n) return NULL;
        w->run(w->args, lo, lo + w->grain < w->n ? lo + w->grain : w->n);
    }
}

/* run(args, lo, hi) over [0, n) on `threads` threads, this one included, each taking the next
 * few units as it comes free: a thread slowed down (a busy core: OpenBLAS's workers spin for a
 * while after each GEMM) takes fewer, where fixed halves made LeNet's steps slower than one
 * thread (docs/performance.md). Who computes a unit does not change its arithmetic. */
static void parallel(range_fn run, const conv_args *args, i64 n, i64 threads)
{
    enum { MAX = 16 };
    if (threads > MAX) threads = MAX;
    if (threads <= 1 || n < 2) {
        run(args, 0, n);
        return;
    }
    i64 grain = n / (8 * threads);
    work w = {run, args, n, grain > 0 ? grain : 1, 0};
    pthread_t tid[MAX];
    int started[MAX] = {0};
    for (i64 t = 1; t < threads; t++) started[t] = pthread_create(&tid[t], NULL, work_main, &w) == 0;
    work_main(&w); /* the units of a thread that did not start are taken by the others */
    for (i64 t = 1; t < threads; t++)
        if (started[t]) pthread_join(tid[t], NULL);
}
#define CB 8  /* channels per register tile */
#define NV 2  /* vectors of 16 images per register tile */

/* The taps t of a window at output position o that land inside [0, n): first and one past
 * last; without integer division at unit dilation (the AVX2 input gradient 5-9% faster on
 * LeNet's layers). */
INLINE i64 tap_lo(i64 o, i64 s, i64 p, i64 d)
{
    i64 base = o * s - p;
    return base >= 0 ? 0 : d == 1 ? -base : (-base + d - 1) / d;
}

INLINE i64 tap_hi(i64 o, i64 s, i64 p, i64 d, i64 k, i64 n)
{
    i64 base = o * s - p;
    if (base >= n) return 0;
    i64 t = d == 1 ? n - base : (n - 1 - base) / d + 1;
    return t < k ? t : k;
}

/* The output row (column) whose window reads input position t - p + i d at tap i, given
 * t = position + p - i d: -1 if none (outside, or between strides); no division at stride 1. */
INLINE i64 tap_out(i64 t, i64 s, i64 n)
{
    if (t < 0) return -1;
    i64 o = s == 1 ? t : t % s ? -1 : t / s;
    return o < n ? o : -1;
}

/* acc[q] += w[q] * src for the CB channels of a tile: nv vectors of 16 images, or the single
 * image at src into one[q] when nv == 0 */
INLINE void tile_fma(v16 acc[CB][NV], float one[CB], const float *w, const float *src, int nv)
{
    if (nv == 0) {
        for (int q = 0; q < CB; q++) one[q] += w[q] * src[0];
        return;
    }
    v16 sv[NV];
    for (int v = 0; v < nv; v++) LOAD16(sv[v], src + 16 * v);
    for (int q = 0; q < CB; q++)
        for (int v = 0; v < nv; v++) acc[q][v] += w[q] * sv[v];
}

/* The first `rows` channels of a tile to dst, channel planes `plane` floats apart. */
INLINE void tile_store(float *dst, i64 plane, i64 rows, v16 acc[CB][NV], const float one[CB], int nv)
{
    for (i64 q = 0; q < rows; q++) {
        if (nv == 0) dst[q * plane] = one[q];
        for (int v = 0; v < nv; v++) STORE16(dst + q * plane + 16 * v, acc[q][v]);
    }
}

/* ---- convolution forward: out[o, oh, ow, n] = b[o] + sum w[o, c, i, j] x[c, h, w, n] ----
 * A register tile is CB output channels by 16 * nv images (nv vectors), or one image when
 * nv == 0 (the batch's tail). */

INLINE void conv_forward_tile(const float *x, const float *wt, const float *bias, float *out,
                              const i64 *g, i64 o0, i64 oh, i64 ow, i64 n0, int nv)
{
    i64 C = g[C_], H = g[H_], W = g[W_], N = g[N_], O = g[O_], kh = g[KH], kw = g[KW];
    i64 opad = (O + CB - 1) / CB * CB;
    i64 ilo = tap_lo(oh, g[SH], g[PH], g[DH]), ihi = tap_hi(oh, g[SH], g[PH], g[DH], kh, H);
    i64 jlo = tap_lo(ow, g[SW], g[PW], g[DW]), jhi = tap_hi(ow, g[SW], g[PW], g[DW], kw, W);
    v16 acc[CB][NV];
    float one[CB];
    for (int q = 0; q < CB; q++) {
        one[q] = bias[o0 + q];
        for (int v = 0; v < nv; v++) acc[q][v] = (v16){0} + bias[o0 + q];
    }
    for (i64 c = 0; c < C; c++)
        for (i64 i = ilo; i < ihi; i++) {
            const float *xr = x + ((c * H + oh * g[SH] - g[PH] + i * g[DH]) * W) * N + n0;
            const float *wr = wt + (c * kh + i) * kw * opad + o0;
            for (i64 j = jlo; j < jhi; j++)
                tile_fma(acc, one, wr + j * opad, xr + (ow * g[SW] - g[PW] + j * g[DW]) * N, nv);
        }
    tile_store(out + ((o0 * g[OH_] + oh) * g[OW_] + ow) * N + n0, g[OH_] * g[OW_] * N,
               O - o0 < CB ? O - o0 : CB, acc, one, nv);
}

/* Runs tile(..., n0, nv) over a batch of N images: 32 at a time, then 16, then one by one. */
#define OVER_BATCH(N, tile, ...)                                                                    \
    do {                                                                                            \
        i64 n0_ = 0;                                                                                \
        for (; n0_ + 32 <= (N); n0_ += 32) tile(__VA_ARGS__, n0_, 2);                               \
        for (; n0_ + 16 <= (N); n0_ += 16) tile(__VA_ARGS__, n0_, 1);                               \
        for (; n0_ < (N); n0_++) tile(__VA_ARGS__, n0_, 0);                                         \
    } while (0)

/* x (C, H, W, N); wt (C, kh, kw, Opad) with Opad the multiple of CB above O, zero beyond O;
 * bias (Opad); out (O, OH, OW, N). */
HOT static void conv_forward_rows(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g;
    for (i64 o0 = 0; o0 < g[O_]; o0 += CB)
        for (i64 oh = lo; oh < hi; oh++)
            for (i64 ow = 0; ow < g[OW_]; ow++)
                OVER_BATCH(g[N_], conv_forward_tile, a->a, a->b, a->c, a->out, g, o0, oh, ow);
}

HOT void dn_conv_forward(const float *x, const float *wt, const float *bias, float *out, const i64 *g)
{
    conv_args a = {x, wt, bias, out, g, NULL};
    parallel(conv_forward_rows, &a, g[OH_], g[THREADS]);
}

/* ---- input gradient: dx[c, h, w, n] = sum w[o, c, i, j] dy[o, oh, ow, n] over the (o, i, j)
 * whose window at (oh, ow) reads (h, w) ---- */

INLINE void conv_input_grad_tile(const float *dy, const float *wd, float *dx, const i64 *g,
                                 i64 c0, i64 h, i64 w, i64 n0, int nv)
{
    i64 C = g[C_], N = g[N_], O = g[O_], kh = g[KH], kw = g[KW], OH = g[OH_], OW = g[OW_];
    i64 cpad = (C + CB - 1) / CB * CB;
    v16 acc[CB][NV];
    float one[CB] = {0};
    for (int q = 0; q < CB; q++)
        for (int v = 0; v < nv; v++) acc[q][v] = (v16){0};
    for (i64 i = 0; i < kh; i++) {
        i64 th = h + g[PH] - i * g[DH];
        if (th < 0 || th % g[SH] || th / g[SH] >= OH) continue;
        i64 oh = th / g[SH];
        for (i64 j = 0; j < kw; j++) {
            i64 tw = w + g[PW] - j * g[DW];
            if (tw < 0 || tw % g[SW] || tw / g[SW] >= OW) continue;
            i64 ow = tw / g[SW];
            /* each tap's sum over o first, then the taps: a two-level sum, whose float32 error
             * stays near a GEMM's where the o * kh * kw terms cancel (LeNet's second layer) */
            v16 part[CB][NV];
            float part_one[CB] = {0};
            for (int q = 0; q < CB; q++)
                for (int v = 0; v < nv; v++) part[q][v] = (v16){0};
            for (i64 o = 0; o < O; o++)
                tile_fma(part, part_one, wd + ((o * kh + i) * kw + j) * cpad + c0,
                         dy + ((o * OH + oh) * OW + ow) * N + n0, nv);
            for (int q = 0; q < CB; q++) {
                one[q] += part_one[q];
                for (int v = 0; v < nv; v++) acc[q][v] += part[q][v];
            }
        }
    }
    tile_store(dx + ((c0 * g[H_] + h) * g[W_] + w) * N + n0, g[H_] * g[W_] * N,
               C - c0 < CB ? C - c0 : CB, acc, one, nv);
}

/* dy (O, OH, OW, N); wd (O, kh, kw, Cpad) with Cpad the multiple of CB above C, zero beyond C;
 * dx (C, H, W, N), written outright. */
HOT static void conv_input_grad_rows(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g;
    for (i64 c0 = 0; c0 < g[C_]; c0 += CB)
        for (i64 h = lo; h < hi; h++)
            for (i64 w = 0; w < g[W_]; w++)
                OVER_BATCH(g[N_], conv_input_grad_tile, a->a, a->b, a->out, g, c0, h, w);
}

HOT void dn_conv_input_grad(const float *dy, const float *wd, float *dx, const i64 *g)
{
    conv_args a = {dy, wd, NULL, dx, g, NULL};
    parallel(conv_input_grad_rows, &a, g[H_], g[THREADS]);
}

/* ---- weight gradient: dw[o, c, i, j] = sum over (oh, ow, n) of dy[o, oh, ow, n] xp[c, h, w, n] ----
 * xp is the input with its padding written out, so every tap of every window reads real memory
 * and a tap is just an offset. A register tile is WO output channels by WT taps, 16 images wide:
 * per step it loads WO + WT vectors for WO * WT multiply-adds. Tiles past the last channel or
 * tap repeat the last one and are not stored. */

#define WO 4
#define WT 6

INLINE void weight_grad_step(const float *const gq[WO], i64 go, const float *xp, const i64 to[WT],
                             i64 xo, v16 acc[WO][WT])
{
    v16 gv[WO];
    for (int q = 0; q < WO; q++) LOAD16(gv[q], gq[q] + go);
    for (int u = 0; u < WT; u++) {
        v16 xv;
        LOAD16(xv, xp + to[u] + xo);
        for (int q = 0; q < WO; q++) acc[q][u] += gv[q] * xv;
    }
}

/* Weight-gradient tiles [lo, hi) (tile = o-block * tap blocks + tap block) of WO_ output
 * channels by WT_ taps, LANES images a vector, for each copy of the kernels. */
#define WEIGHT_GRAD_TILES(NAME, ATTR, VEC, WO_, WT_, LANES, STEP)\
ATTR static void NAME(const conv_args *a, i64 lo, i64 hi)                                                  \
{                                                                                                          \
    const float *xp = a->a, *dy = a->b;                                                                    \
    float *dwt = a->out;                                                                                   \
    const i64 *g = a->g, *toff = a->toff;                                                                  \
    i64 C = g[C_], Wp = g[W_], N = g[N_], O = g[O_], kh = g[KH], kw = g[KW];                               \
    i64 OH = g[OH_], OW = g[OW_], K = C * kh * kw, P = OH * OW * N, tap_blocks = (K + WT_ - 1) / WT_;      \
    for (i64 tile = lo; tile < hi; tile++) {                                                               \
        i64 o0 = tile / tap_blocks * WO_, t0 = tile % tap_blocks * WT_;                                    \
        const float *gq[WO_];                                                                              \
        for (int q = 0; q < WO_; q++) gq[q] = dy + (o0 + q < O ? o0 + q : O - 1) * P;                      \
        i64 to[WT_];                                                                                       \
        for (int u = 0; u < WT_; u++) to[u] = toff[t0 + u < K ? t0 + u : K - 1];                           \
        /* sums per output row, then over rows: blocked summation keeps the float32 error                  \
         * of long reductions (LeNet's first layer: 200704 products) near a GEMM's */                      \
        VEC total[WO_][WT_] = {{{0}}};                                                                     \
        float total_tail[WO_][WT_] = {{0}};                                                                \
        for (i64 oh = 0; oh < OH; oh++) {                                                                  \
            VEC acc[WO_][WT_] = {{{0}}};                                                                   \
            float tail[WO_][WT_] = {{0}}; /* images past the last whole vector */                          \
            for (i64 ow = 0; ow < OW; ow++) {                                                              \
                i64 go = (oh * OW + ow) * N, xo = (oh * g[SH] * Wp + ow * g[SW]) * N, n0 = 0;              \
                for (; n0 + LANES <= N; n0 += LANES) STEP(gq, go + n0, xp, to, xo + n0, acc);              \
                for (; n0 < N; n0++)                                                                       \
                    for (int u = 0; u < WT_; u++)                                                          \
                        for (int q = 0; q < WO_; q++) tail[q][u] += gq[q][go + n0] * xp[to[u] + xo + n0];  \
            }                                                                                              \
            for (int q = 0; q < WO_; q++)                                                                  \
                for (int u = 0; u < WT_; u++) {                                                            \
                    total[q][u] += acc[q][u];                                                              \
                    total_tail[q][u] += tail[q][u];                                                        \
                }                                                                                          \
        }                                                                                                  \
        for (i64 u = 0; u < WT_ && t0 + u < K; u++)                                                        \
            for (i64 q = 0; q < WO_ && o0 + q < O; q++) {                                                  \
                float sum = total_tail[q][u];                                                              \
                for (int l = 0; l < LANES; l++) sum += total[q][u][l];                                     \
                dwt[(t0 + u) * O + o0 + q] = sum;                                                          \
            }                                                                                              \
    }                                                                                                      \
}

WEIGHT_GRAD_TILES(weight_grad_tiles, HOT, v16, WO, WT, 16, weight_grad_step)

/* xp (C, Hp, Wp, N) padded input, with g[H_], g[W_] its padded size and the padding in g
 * ignored; dy (O, OH, OW, N); dwt (C, kh, kw, O), written outright. */
/* Runs `tiles` (WO output channels by WT taps each) over the weight gradient, with every tap's
 * offset into the padded input computed once: -1 without memory for that table. */
static int weight_grad(range_fn tiles, i64 wo, i64 wt, const float *xp, const float *dy, float *dwt,
                       const i64 *g)
{
    i64 C = g[C_], Hp = g[H_], Wp = g[W_], O = g[O_], kh = g[KH], kw = g[KW], N = g[N_], K = C * kh * kw;
    i64 *toff = malloc(K * sizeof(i64));
    if (!toff) return -1;
    for (i64 c = 0, t = 0; c < C; c++)
        for (i64 i = 0; i < kh; i++)
            for (i64 j = 0; j < kw; j++, t++) toff[t] = ((c * Hp + i * g[DH]) * Wp + j * g[DW]) * N;
    conv_args a = {xp, dy, NULL, dwt, g, toff};
    parallel(tiles, &a, (O + wo - 1) / wo * ((K + wt - 1) / wt), g[THREADS]);
    free(toff);
    return 0;
}

HOT int dn_conv_weight_grad(const float *xp, const float *dy, float *dwt, const i64 *g)
{
    return weight_grad(weight_grad_tiles, WO, WT, xp, dy, dwt, g);
}

/* ---- average pooling: out[c, oh, ow, n] = scale[oh, ow] * sum of x[c, h, w, n] over the
 * window's taps inside the input; x (C, H, W, N), out (C, OH, OW, N), g as a convolution's
 * (O = C, no dilation). One pass over the input where NumPy makes one per tap (LeNet's 2x2
 * pools: 2.5 ms a step of 33). The taps are summed in ops/pool.py's order: the same bits. */
HOT static void avg_pool_planes(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g;
    i64 H = g[H_], W = g[W_], N = g[N_], OH = g[OH_], OW = g[OW_];
    for (i64 c = lo; c < hi; c++)
        for (i64 oh = 0; oh < OH; oh++)
            for (i64 ow = 0; ow < OW; ow++) {
                float *o = a->out + ((c * OH + oh) * OW + ow) * N;
                for (i64 n = 0; n < N; n++) o[n] = 0.0f;
                for (i64 i = 0; i < g[KH]; i++) {
                    i64 h = oh * g[SH] - g[PH] + i;
                    if (h < 0 || h >= H) continue;
                    for (i64 j = 0; j < g[KW]; j++) {
                        i64 w = ow * g[SW] - g[PW] + j;
                        if (w < 0 || w >= W) continue;
                        const float *xr = a->a + ((c * H + h) * W + w) * N;
                        for (i64 n = 0; n < N; n++) o[n] += xr[n];
                    }
                }
                float s = a->b[oh * OW + ow];
                for (i64 n = 0; n < N; n++) o[n] *= s;
            }
}

HOT void dn_avg_pool(const float *x, const float *scale, float *out, const i64 *g)
{
    conv_args a = {x, scale, NULL, out, g, NULL};
    parallel(avg_pool_planes, &a, g[C_], g[THREADS]);
}

/* gx[c, h, w, n] = sum of scale[oh, ow] gy[c, oh, ow, n] over the windows that hold (h, w) */
HOT static void avg_pool_grad_planes(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g;
    i64 H = g[H_], W = g[W_], N = g[N_], OH = g[OH_], OW = g[OW_];
    for (i64 c = lo; c < hi; c++)
        for (i64 h = 0; h < H; h++)
            for (i64 w = 0; w < W; w++) {
                float *d = a->out + ((c * H + h) * W + w) * N;
                for (i64 n = 0; n < N; n++) d[n] = 0.0f;
                for (i64 i = 0; i < g[KH]; i++) {
                    i64 oh = tap_out(h + g[PH] - i, g[SH], OH);
                    if (oh < 0) continue;
                    for (i64 j = 0; j < g[KW]; j++) {
                        i64 ow = tap_out(w + g[PW] - j, g[SW], OW);
                        if (ow < 0) continue;
                        const float *gr = a->a + ((c * OH + oh) * OW + ow) * N;
                        float s = a->b[oh * OW + ow];
                        for (i64 n = 0; n < N; n++) d[n] += gr[n] * s;
                    }
                }
            }
}

HOT void dn_avg_pool_grad(const float *gy, const float *scale, float *gx, const i64 *g)
{
    conv_args a = {gy, scale, NULL, gx, g, NULL};
    parallel(avg_pool_grad_planes, &a, g[C_], g[THREADS]);
}

/* ---- max pooling: out[c, oh, ow, n] = the max of x[c, h, w, n] over the window's taps inside
 * the input, idx the uint8 tap i * kw + j of its first maximum in row-major order (a NaN
 * counts as the maximum, as in PyTorch); x (C, H, W, N), out and idx (C, OH, OW, N), g as a
 * convolution's (O = C). NumPy takes a pass per tap for the maxima and another per tap for the
 * indices (GoogLeNet at 224x224 b8: 13 max pools, 0.34 s of a 1.4 s training step). */
typedef uint8_t u8x8 __attribute__((vector_size(8)));

HOT static void max_pool_planes(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g;
    i64 H = g[H_], W = g[W_], N = g[N_], kh = g[KH], kw = g[KW], OH = g[OH_], OW = g[OW_];
    uint8_t *idx = (uint8_t *)a->c; /* NULL: no indices wanted */
    for (i64 c = lo; c < hi; c++)
        for (i64 oh = 0; oh < OH; oh++) {
            i64 ilo = tap_lo(oh, g[SH], g[PH], g[DH]), ihi = tap_hi(oh, g[SH], g[PH], g[DH], kh, H);
            for (i64 ow = 0; ow < OW; ow++) {
                i64 jlo = tap_lo(ow, g[SW], g[PW], g[DW]), jhi = tap_hi(ow, g[SW], g[PW], g[DW], kw, W);
                i64 at = ((c * OH + oh) * OW + ow) * N;
                const float *x0 = a->a + ((c * H + oh * g[SH] - g[PH]) * W + ow * g[SW] - g[PW]) * N;
                i64 n0 = 0;
                for (; n0 + 8 <= N; n0 += 8) {
                    f8 best = SPLAT(-__builtin_inff());
                    m8 k = {0};
                    for (i64 i = ilo; i < ihi; i++)
                        for (i64 j = jlo; j < jhi; j++) {
                            f8 v;
                            memcpy(&v, x0 + (i * g[DH] * W + j * g[DW]) * N + n0, sizeof v);
                            m8 take = (v > best) | ((v != v) & (best == best));
                            best = select8(take, v, best);
                            k = (k & ~take) | (((m8){0} + (int32_t)(i * kw + j)) & take);
                        }
                    memcpy(a->out + at + n0, &best, sizeof best);
                    if (idx) {
                        u8x8 k8 = __builtin_convertvector(k, u8x8);
                        memcpy(idx + at + n0, &k8, sizeof k8);
                    }
                }
                for (; n0 < N; n0++) {
                    float best = -__builtin_inff();
                    int k = 0;
                    for (i64 i = ilo; i < ihi; i++)
                        for (i64 j = jlo; j < jhi; j++) {
                            float v = x0[(i * g[DH] * W + j * g[DW]) * N + n0];
                            if (v > best || (v != v && best == best)) {
                                best = v;
                                k = (int)(i * kw + j);
                            }
                        }
                    a->out[at + n0] = best;
                    if (idx) idx[at + n0] = (uint8_t)k;
                }
            }
        }
}

/* x (C, H, W, N) -> out (C, OH, OW, N) and, unless idx is NULL, idx (C, OH, OW, N) uint8 */
HOT void dn_max_pool(const float *x, float *out, uint8_t *idx, const i64 *g)
{
    conv_args a = {x, NULL, (const float *)idx, out, g, NULL};
    parallel(max_pool_planes, &a, g[C_], g[THREADS]);
}

/* gx[c, h, w, n] = the sum of gy[c, oh, ow, n] over the windows whose first maximum (h, w) is,
 * added in tap order as ops/pool.py's NumPy path adds them (the same bits) */
HOT static void max_pool_grad_planes(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g;
    i64 H = g[H_], W = g[W_], N = g[N_], kh = g[KH], kw = g[KW], OH = g[OH_], OW = g[OW_];
    const uint8_t *idx = (const uint8_t *)a->b;
    int32_t taps[256];
    i64 offs[256];
    for (i64 c = lo; c < hi; c++)
        for (i64 h = 0; h < H; h++)
            for (i64 w = 0; w < W; w++) {
                int m = 0;
                for (i64 i = 0; i < kh; i++) {
                    i64 oh = tap_out(h + g[PH] - i * g[DH], g[SH], OH);
                    if (oh < 0) continue;
                    for (i64 j = 0; j < kw; j++) {
                        i64 ow = tap_out(w + g[PW] - j * g[DW], g[SW], OW);
                        if (ow < 0) continue;
                        taps[m] = (int32_t)(i * kw + j);
                        offs[m++] = ((c * OH + oh) * OW + ow) * N;
                    }
                }
                float *d = a->out + ((c * H + h) * W + w) * N;
                i64 n0 = 0;
                for (; n0 + 8 <= N; n0 += 8) {
                    f8 acc = SPLAT(0.0f);
                    for (int t = 0; t < m; t++) {
                        f8 gv;
                        u8x8 k8;
                        memcpy(&gv, a->a + offs[t] + n0, sizeof gv);
                        memcpy(&k8, idx + offs[t] + n0, sizeof k8);
                        m8 hit = __builtin_convertvector(k8, m8) == taps[t];
                        acc += (f8)((m8)gv & hit);
                    }
                    memcpy(d + n0, &acc, sizeof acc);
                }
                for (; n0 < N; n0++) {
                    float acc = 0.0f;
                    for (int t = 0; t < m; t++)
                        if (idx[offs[t] + n0] == taps[t]) acc += a->a[offs[t] + n0];
                    d[n0] = acc;
                }
            }
}

/* gy (C, OH, OW, N), idx from dn_max_pool -> gx (C, H, W, N), written outright */
HOT void dn_max_pool_grad(const float *gy, const uint8_t *idx, float *gx, const i64 *g)
{
    conv_args a = {gy, (const float *)idx, NULL, gx, g, NULL};
    parallel(max_pool_grad_planes, &a, g[C_], g[THREADS]);
}

/* ---- depthwise convolution (groups == C == O: MobileNet's 3x3 layers) ----------------------
 * w (C, kh, kw), x (C, H, W, N), out (C, OH, OW, N); each output is a kh * kw tap sum of its own
 * channel, vectorized over the images. im2col + one small GEMM per group ran these at 0.4-1.6
 * GFLOP/s (mobilenet at 224x224, b8: 1.06 s of a 1.6 s training step). */
#define DW_MAX_TAPS 49 /* kh * kw: the weight gradient's accumulators live on the stack */

HOT static void depthwise_forward_planes(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g;
    i64 H = g[H_], W = g[W_], N = g[N_], kh = g[KH], kw = g[KW], OH = g[OH_], OW = g[OW_];
    for (i64 c = lo; c < hi; c++) {
        const float *wc = a->b + c * kh * kw;
        float b = a->c ? a->c[c] : 0.0f;
        for (i64 oh = 0; oh < OH; oh++) {
            i64 ilo = tap_lo(oh, g[SH], g[PH], g[DH]), ihi = tap_hi(oh, g[SH], g[PH], g[DH], kh, H);
            for (i64 ow = 0; ow < OW; ow++) {
                i64 jlo = tap_lo(ow, g[SW], g[PW], g[DW]), jhi = tap_hi(ow, g[SW], g[PW], g[DW], kw, W);
                float *o = a->out + ((c * OH + oh) * OW + ow) * N;
                const float *x0 = a->a + ((c * H + oh * g[SH] - g[PH]) * W + ow * g[SW] - g[PW]) * N;
                i64 n0 = 0;
                for (; n0 + 8 <= N; n0 += 8) { /* the tap sum of 8 images in one register */
                    f8 acc = SPLAT(b);
                    for (i64 i = ilo; i < ihi; i++)
                        for (i64 j = jlo; j < jhi; j++) {
                            f8 xv;
                            memcpy(&xv, x0 + (i * g[DH] * W + j * g[DW]) * N + n0, sizeof xv);
                            acc += wc[i * kw + j] * xv;
                        }
                    memcpy(o + n0, &acc, sizeof acc);
                }
                for (; n0 < N; n0++) {
                    float acc = b;
                    for (i64 i = ilo; i < ihi; i++)
                        for (i64 j = jlo; j < jhi; j++) acc += wc[i * kw + j] * x0[(i * g[DH] * W + j * g[DW]) * N + n0];
                    o[n0] = acc;
                }
            }
        }
    }
}

/* x (C, H, W, N), w (C, kh, kw), bias (C) or NULL -> out (C, OH, OW, N) */
HOT void dn_depthwise_forward(const float *x, const float *w, const float *bias, float *out, const i64 *g)
{
    conv_args a = {x, w, bias, out, g, NULL};
    parallel(depthwise_forward_planes, &a, g[C_], g[THREADS]);
}

/* Depthwise forward vectorized along output rows instead of images, for batches under 8 (one
 * image: the kernel above runs scalar). It reads the implicit GEMM's phase buffer (one channel
 * a group): each tap's run over an output row (width x batch) is contiguous at off[k] from the
 * row's start. A unit is one output row of one channel; its vectors may read past the row's
 * end (the buffer has 32 floats of slack) into lanes that are not stored. */
HOT static void depthwise_rows_units(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g; /* the implicit GEMM's geometry: {C, 1, K, OH, L, row, plane, P, threads} */
    i64 K = g[GK], OH = g[GOH], L = g[GL];
    for (i64 u = lo; u < hi; u++) {
        i64 c = u / OH, oh = u % OH;
        const float *x = a->a + c * g[GSTRIDE] + oh * g[GROW], *wc = a->b + c * K;
        float *out = a->out + c * g[GP] + oh * L, b = a->c ? a->c[c] : 0;
        for (i64 q = 0; q < L; q += 8) {
            f8 acc = SPLAT(b);
            for (i64 k = 0; k < K; k++) {
                f8 v;
                memcpy(&v, x + a->toff[k] + q, sizeof v);
                acc += wc[k] * v;
            }
            memcpy(out + q, &acc, (size_t)(L - q < 8 ? L - q : 8) * sizeof(float));
        }
    }
}

/* out (C, OH, OW, N) from xq (the phase buffer), w (C, K), bias (C) or NULL, off (K) */
void dn_depthwise_rows(const float *xq, const float *w, const float *bias, float *out, const i64 *off, const i64 *g)
{
    conv_args a = {xq, w, bias, out, g, off};
    parallel(depthwise_rows_units, &a, g[GG] * g[GOH], g[GTHREADS]);
}

/* dx[c, h, w, n] = sum of w[c, i, j] dy[c, oh, ow, n] over the taps whose window reads (h, w) */
HOT static void depthwise_input_grad_planes(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g;
    i64 H = g[H_], W = g[W_], N = g[N_], kh = g[KH], kw = g[KW], OH = g[OH_], OW = g[OW_];
    i64 taps[DW_MAX_TAPS], offs[DW_MAX_TAPS]; /* the taps that reach (h, w): weight, dy offset */
    for (i64 c = lo; c < hi; c++) {
        const float *wc = a->b + c * kh * kw, *gc = a->a + c * OH * OW * N;
        for (i64 h = 0; h < H; h++)
            for (i64 w = 0; w < W; w++) {
                int m = 0;
                for (i64 i = 0; i < kh; i++) {
                    i64 oh = tap_out(h + g[PH] - i * g[DH], g[SH], OH);
                    if (oh < 0) continue;
                    for (i64 j = 0; j < kw; j++) {
                        i64 ow = tap_out(w + g[PW] - j * g[DW], g[SW], OW);
                        if (ow < 0) continue;
                        taps[m] = i * kw + j;
                        offs[m++] = (oh * OW + ow) * N;
                    }
                }
                float *d = a->out + ((c * H + h) * W + w) * N;
                i64 n0 = 0;
                for (; n0 + 8 <= N; n0 += 8) {
                    f8 acc = SPLAT(0.0f);
                    for (int t = 0; t < m; t++) {
                        f8 gv;
                        memcpy(&gv, gc + offs[t] + n0, sizeof gv);
                        acc += wc[taps[t]] * gv;
                    }
                    memcpy(d + n0, &acc, sizeof acc);
                }
                for (; n0 < N; n0++) {
                    float acc = 0.0f;
                    for (int t = 0; t < m; t++) acc += wc[taps[t]] * gc[offs[t] + n0];
                    d[n0] = acc;
                }
            }
    }
}

/* dy (C, OH, OW, N), w (C, kh, kw) -> dx (C, H, W, N), written outright */
HOT void dn_depthwise_input_grad(const float *dy, const float *w, float *dx, const i64 *g)
{
    i64 C = g[C_], kh = g[KH], kw = g[KW];
    float *flipped = g[SH] == 1 && g[SW] == 1 ? malloc(C * kh * kw * sizeof(float)) : NULL;
    if (!flipped) { /* strided (or no memory): each input position gathers its taps */
        conv_args a = {dy, w, NULL, dx, g, NULL};
        parallel(depthwise_input_grad_planes, &a, C, g[THREADS]);
        return;
    }
    /* stride 1: the forward's correlation of dy with the flipped kernel, padded by the
     * kernel's reach less the padding (256 channels 28x28 b8: 6.9 -> 3.5 ms against gathering) */
    for (i64 c = 0; c < C; c++)
        for (i64 t = 0; t < kh * kw; t++) flipped[c * kh * kw + t] = w[c * kh * kw + kh * kw - 1 - t];
    i64 gf[THREADS + 1] = {C, g[OH_], g[OW_], g[N_], C, kh, kw, g[H_], g[W_], 1, 1,
                           (kh - 1) * g[DH] - g[PH], (kw - 1) * g[DW] - g[PW], g[DH], g[DW], g[THREADS]};
    conv_args a = {dy, flipped, NULL, dx, gf, NULL};
    parallel(depthwise_forward_planes, &a, C, g[THREADS]);
    free(flipped);
}

/* dw[c, i, j] = sum over (oh, ow, n) of dy[c, oh, ow, n] x[c, h, w, n]: per 8 images, each
 * tap's products summed per output row in a register, then over the rows (blocked summation,
 * as the dense weight gradient's), then over the images in double */
HOT static void depthwise_weight_grad_planes(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g;
    i64 H = g[H_], W = g[W_], N = g[N_], kh = g[KH], kw = g[KW], OH = g[OH_], OW = g[OW_];
    for (i64 c = lo; c < hi; c++) {
        double sum[DW_MAX_TAPS] = {0};
        const float *xc = a->a + c * H * W * N, *gc = a->b + c * OH * OW * N;
        for (i64 n0 = 0; n0 < N; n0 += 8) {
            i64 nb = N - n0 < 8 ? N - n0 : 8;
            f8 total[DW_MAX_TAPS];
            for (i64 t = 0; t < kh * kw; t++) total[t] = SPLAT(0.0f);
            for (i64 oh = 0; oh < OH; oh++) {
                i64 ilo = tap_lo(oh, g[SH], g[PH], g[DH]), ihi = tap_hi(oh, g[SH], g[PH], g[DH], kh, H);
                f8 row[DW_MAX_TAPS];
                for (i64 t = 0; t < kh * kw; t++) row[t] = SPLAT(0.0f);
                for (i64 ow = 0; ow < OW; ow++) {
                    i64 jlo = tap_lo(ow, g[SW], g[PW], g[DW]), jhi = tap_hi(ow, g[SW], g[PW], g[DW], kw, W);
                    f8 gv = SPLAT(0.0f), xv = SPLAT(0.0f); /* lanes past the batch stay 0 */
                    const float *x0 = xc + ((oh * g[SH] - g[PH]) * W + ow * g[SW] - g[PW]) * N + n0;
                    if (nb == 8) {
                        memcpy(&gv, gc + (oh * OW + ow) * N + n0, sizeof gv);
                        for (i64 i = ilo; i < ihi; i++)
                            for (i64 j = jlo; j < jhi; j++) {
                                memcpy(&xv, x0 + (i * g[DH] * W + j * g[DW]) * N, sizeof xv);
                                row[i * kw + j] += gv * xv;
                            }
                        continue;
                    }
                    for (int l = 0; l < nb; l++) gv[l] = gc[(oh * OW + ow) * N + n0 + l];
                    for (i64 i = ilo; i < ihi; i++)
                        for (i64 j = jlo; j < jhi; j++) {
                            for (int l = 0; l < nb; l++) xv[l] = x0[(i * g[DH] * W + j * g[DW]) * N + l];
                            row[i * kw + j] += gv * xv;
                        }
                }
                for (i64 t = 0; t < kh * kw; t++) total[t] += row[t];
            }
            for (i64 t = 0; t < kh * kw; t++)
                for (int l = 0; l < 8; l++) sum[t] += total[t][l];
        }
        for (i64 t = 0; t < kh * kw; t++) a->out[c * kh * kw + t] = (float)sum[t];
    }
}

/* x (C, H, W, N), dy (C, OH, OW, N) -> dw (C, kh, kw); -1 (nothing written) beyond DW_MAX_TAPS */
HOT int dn_depthwise_weight_grad(const float *x, const float *dy, float *dw, const i64 *g)
{
    if (g[KH] * g[KW] > DW_MAX_TAPS) return -1;
    conv_args a = {x, dy, NULL, dw, g, NULL};
    parallel(depthwise_weight_grad_planes, &a, g[C_], g[THREADS]);
    return 0;
}

/* ---- AVX2 copies (CPUs without AVX-512: dn_isa() == 3) ----
 * The kernels above keep 16-float vectors in register tiles sized for AVX-512's 32 registers;
 * on AVX2 (16 registers of 8 floats) GCC splits each vector in two and spills the tiles (LeNet
 * conv1 at b256 on a Zen 3: forward 53 ms and input gradient 323 ms, against NumPy's 10 and 9).
 * These run the same sums on tiles of 8-float vectors sized for 16 ymm registers: forward and
 * input gradient 4 channels by 3 vectors (7 loads per 12 multiply-adds), weight gradient 2
 * output channels by 6 taps. */

#if defined(__x86_64__) && defined(__GNUC__)
#define AVX2 __attribute__((target("avx2,fma")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

/* The copy of the HOT kernels that target_clones' resolver runs on this CPU: 4 for
 * x86-64-v4 (AVX-512), 3 for x86-64-v3 (AVX2 + FMA), 0 for the default. */
int dn_isa(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return 4;
    return __builtin_cpu_supports("x86-64-v3") ? 3 : 0;
}

typedef float v8 __attribute__((vector_size(32))); /* 8 images: one AVX2 register */
#define LOAD8(dst, p) memcpy(&(dst), (p), sizeof(v8))
#define STORE8(p, src) memcpy((p), &(src), sizeof(v8))

/* the images in tiles of 24, 16, 8, then one by one; the channel blocks innermost */
#define OVER_BATCH24(N, blocks, tile, ...)                                                          \
    do {                                                                                            \
        i64 n0_ = 0;                                                                                \
        for (; n0_ + 24 <= (N); n0_ += 24)                                                          \
            for (i64 b_ = 0; b_ < (blocks); b_ += CB8) tile(__VA_ARGS__, b_, n0_, 3);               \
        if (n0_ + 16 <= (N)) {                                                                      \
            for (i64 b_ = 0; b_ < (blocks); b_ += CB8) tile(__VA_ARGS__, b_, n0_, 2);               \
            n0_ += 16;                                                                              \
        }                                                                                           \
        if (n0_ + 8 <= (N)) {                                                                       \
            for (i64 b_ = 0; b_ < (blocks); b_ += CB8) tile(__VA_ARGS__, b_, n0_, 1);               \
            n0_ += 8;                                                                               \
        }                                                                                           \
        for (; n0_ < (N); n0_++)                                                                    \
            for (i64 b_ = 0; b_ < (blocks); b_ += CB8) tile(__VA_ARGS__, b_, n0_, 0);               \
    } while (0)

/* Forward register tiles of CB8 output channels by 8 * nv images (nv <= 3 vectors), or one
 * image (nv == 0): per tap nv loads and CB8 broadcasts for CB8 * nv multiply-adds, 12
 * accumulators of 16 registers. Tiles of 8 channels by one vector (9 loads for 8
 * multiply-adds) ran LeNet's layers at a third of this (load-bound). */
#define CB8 4

/* acc[q][v] += w[q] * src[8 v ...] for the CB8 channels of a tile and its nv vectors of images,
 * or the single image at src into one[q] when nv == 0 */
AVX2_INLINE void tile4_fma(v8 acc[CB8][3], float one[CB8], const float *w, const float *src, int nv)
{
    if (nv == 0) {
        for (int q = 0; q < CB8; q++) one[q] += w[q] * src[0];
        return;
    }
    v8 sv[3];
#pragma GCC unroll 3
    for (int v = 0; v < nv; v++) LOAD8(sv[v], src + 8 * v);
#pragma GCC unroll 4
    for (int q = 0; q < CB8; q++)
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++) acc[q][v] += w[q] * sv[v];
}

/* The first `rows` channels of a tile to dst, channel planes `plane` floats apart. */
AVX2_INLINE void tile4_store(float *dst, i64 plane, i64 rows, v8 acc[CB8][3], const float one[CB8], int nv)
{
    for (i64 q = 0; q < rows; q++) {
        if (nv == 0) dst[q * plane] = one[q];
        for (int v = 0; v < nv; v++) STORE8(dst + q * plane + 8 * v, acc[q][v]);
    }
}


AVX2_INLINE void conv_forward_tile8(const float *x, const float *wt, const float *bias, float *out,
                                    const i64 *g, i64 oh, i64 ow, i64 o0, i64 n0, int nv)
{
    i64 C = g[C_], H = g[H_], W = g[W_], N = g[N_], O = g[O_], kh = g[KH], kw = g[KW];
    i64 opad = (O + CB - 1) / CB * CB;
    i64 ilo = tap_lo(oh, g[SH], g[PH], g[DH]), ihi = tap_hi(oh, g[SH], g[PH], g[DH], kh, H);
    i64 jlo = tap_lo(ow, g[SW], g[PW], g[DW]), jhi = tap_hi(ow, g[SW], g[PW], g[DW], kw, W);
    v8 acc[CB8][3];
    float one[CB8];
#pragma GCC unroll 4
    for (int q = 0; q < CB8; q++) {
        one[q] = bias[o0 + q];
#pragma GCC unroll 3
        for (int v = 0; v < 3; v++) acc[q][v] = (v8){0} + bias[o0 + q];
    }
    for (i64 c = 0; c < C; c++)
        for (i64 i = ilo; i < ihi; i++) {
            const float *xr = x + ((c * H + oh * g[SH] - g[PH] + i * g[DH]) * W) * N + n0;
            const float *wr = wt + (c * kh + i) * kw * opad + o0;
            for (i64 j = jlo; j < jhi; j++)
                tile4_fma(acc, one, wr + j * opad, xr + (ow * g[SW] - g[PW] + j * g[DW]) * N, nv);
        }
    tile4_store(out + ((o0 * g[OH_] + oh) * g[OW_] + ow) * N + n0, g[OH_] * g[OW_] * N,
                O - o0 < CB8 ? O - o0 : CB8, acc, one, nv);
}

AVX2 static void conv_forward_rows8(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g;
    /* the channel blocks innermost: they reuse the images' taps from L1 (LeNet's second layer
     * streamed its 1.2 MB input from L3 once per block before) */
    for (i64 oh = lo; oh < hi; oh++)
        for (i64 ow = 0; ow < g[OW_]; ow++)
            OVER_BATCH24(g[N_], g[O_], conv_forward_tile8, a->a, a->b, a->c, a->out, g, oh, ow);
}

/* dn_conv_forward's arguments and result */
AVX2 void dn_avx2_conv_forward(const float *x, const float *wt, const float *bias, float *out, const i64 *g)
{
    conv_args a = {x, wt, bias, out, g, NULL};
    parallel(conv_forward_rows8, &a, g[OH_], g[THREADS]);
}

/* Input-gradient tiles of CB8 input channels by 8 * nv images, as the forward's; each tap's
 * sum over the output channels in registers, the taps' sum in `acc` (L1) */
AVX2_INLINE void conv_input_grad_tile8(const float *dy, const float *wd, float *dx, const i64 *g,
                                       i64 h, i64 w, i64 c0, i64 n0, int nv)
{
    i64 C = g[C_], N = g[N_], O = g[O_], kh = g[KH], kw = g[KW], OH = g[OH_], OW = g[OW_];
    i64 cpad = (C + CB - 1) / CB * CB;
    v8 acc[CB8][3];
    float one[CB8] = {0};
#pragma GCC unroll 4
    for (int q = 0; q < CB8; q++)
#pragma GCC unroll 3
        for (int v = 0; v < 3; v++) acc[q][v] = (v8){0};
    for (i64 i = 0; i < kh; i++) {
        i64 oh = tap_out(h + g[PH] - i * g[DH], g[SH], OH);
        if (oh < 0) continue;
        for (i64 j = 0; j < kw; j++) {
            i64 ow = tap_out(w + g[PW] - j * g[DW], g[SW], OW);
            if (ow < 0) continue;
            /* the two-level sum of conv_input_grad_tile */
            v8 part[CB8][3];
            float part_one[CB8] = {0};
#pragma GCC unroll 4
            for (int q = 0; q < CB8; q++)
#pragma GCC unroll 3
                for (int v = 0; v < 3; v++) part[q][v] = (v8){0};
            const float *wo = wd + (i * kw + j) * cpad + c0, *src = dy + (oh * OW + ow) * N + n0;
            for (i64 o = 0; o < O; o++, wo += kh * kw * cpad, src += OH * OW * N)
                tile4_fma(part, part_one, wo, src, nv);
#pragma GCC unroll 4
            for (int q = 0; q < CB8; q++) {
                one[q] += part_one[q];
#pragma GCC unroll 3
                for (int v = 0; v < nv; v++) acc[q][v] += part[q][v];
            }
        }
    }
    tile4_store(dx + ((c0 * g[H_] + h) * g[W_] + w) * N + n0, g[H_] * g[W_] * N,
                C - c0 < CB8 ? C - c0 : CB8, acc, one, nv);
}

AVX2 static void conv_input_grad_rows8(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g;
    for (i64 h = lo; h < hi; h++)
        for (i64 w = 0; w < g[W_]; w++)
            OVER_BATCH24(g[N_], g[C_], conv_input_grad_tile8, a->a, a->b, a->out, g, h, w);
}

AVX2 void dn_avx2_conv_input_grad(const float *dy, const float *wd, float *dx, const i64 *g)
{
    conv_args a = {dy, wd, NULL, dx, g, NULL};
    parallel(conv_input_grad_rows8, &a, g[H_], g[THREADS]);
}

/* weight gradient tiles: WO8 output channels by WT8 taps, 8 images wide; per step WO8 + WT8
 * loads for WO8 * WT8 multiply-adds, with 12 accumulators + 3 operands in 16 registers */
#define WO8 2
#define WT8 6

AVX2_INLINE void weight_grad_step8(const float *const gq[WO8], i64 go, const float *xp,
                                   const i64 to[WT8], i64 xo, v8 acc[WO8][WT8])
{
    v8 gv[WO8];
    for (int q = 0; q < WO8; q++) LOAD8(gv[q], gq[q] + go);
    for (int u = 0; u < WT8; u++) {
        v8 xv;
        LOAD8(xv, xp + to[u] + xo);
        for (int q = 0; q < WO8; q++) acc[q][u] += gv[q] * xv;
    }
}

WEIGHT_GRAD_TILES(weight_grad_tiles8, AVX2, v8, WO8, WT8, 8, weight_grad_step8)

/* dn_conv_weight_grad's arguments and result */
AVX2 int dn_avx2_conv_weight_grad(const float *xp, const float *dy, float *dwt, const i64 *g)
{
    return weight_grad(weight_grad_tiles8, WO8, WT8, xp, dy, dwt, g);
}

/* ---- implicit GEMM: convolutions of wide channel counts -------------------------------------
 * out[o, p] = sum over taps k of w[o, k] x[k, p], the GEMM of im2col without the patch matrix.
 * The input comes as its stride phases, zero-padded, batch innermost (divenet/_native.py
 * ``gemm_conv`` lays it out): for tap k = (c, i, j) and the columns p = (ow, n) of one output
 * row oh, x[k, p] is then one contiguous run of that buffer at off[k] + oh * row, so a tile
 * reads its columns of every tap straight from the input. The weights come packed tap-major
 * in blocks of GEMM_MR = 12 output channels (the last block 4 or 8).
 * Two copies, each sized to its register file:
 * - AVX-512 (32 registers): a tile is 12 channels by 32 columns, 24 accumulators, 2 loads and
 *   12 broadcasts per 24 multiply-adds a tap. One thread on Zen 4: 64 -> 64 channels 3x3 at
 *   28x28 b64 39 ms against 64 ms for im2col + OpenBLAS; 256 channels at 14x14 b8 16 against
 *   21 ms (docs/performance.md).
 * - AVX2 (16 registers; 16-float vectors spill there): a tile is half a block, 6 channels (4
 *   of a block of 8 or 4) by 16 columns, 12 accumulators, 2 loads and 6 broadcasts per 12
 *   multiply-adds. */
#define V4 __attribute__((target("arch=x86-64-v4")))
#define GEMM_MR 12 /* output channels per weight block */


/* A tile: `rows` output channels (weights of tap k at a[k * lda ...]) by `cols` columns. */
#define GEMM_TILE(NAME, TARGET, VEC, WIDTH, LOAD, MR, NV)                                         \
    TARGET static void NAME(const float *restrict a, i64 lda, const float *restrict xb,           \
                            const i64 *restrict off, i64 K, const float *bias, float *restrict out, \
                            i64 P, i64 rows, i64 cols, int more)                                  \
    {                                                                                             \
        VEC acc[MR][NV];                                                                          \
        for (int r = 0; r < MR; r++)                                                              \
            for (int v = 0; v < NV; v++) acc[r][v] = (VEC){0};                                    \
        if (more) /* the sums of the earlier tap blocks */                                        \
            for (i64 r = 0; r < rows; r++) memcpy(&acc[r][0], out + r * P, (size_t)cols * sizeof(float)); \
        for (i64 k = 0; k < K; k++) {                                                             \
            VEC b[NV];                                                                            \
            for (int v = 0; v < NV; v++) LOAD(b[v], xb + off[k] + WIDTH * v);                     \
            const float *ak = a + k * lda;                                                        \
            _Pragma("GCC unroll 12") for (int r = 0; r < MR; r++)                                 \
                for (int v = 0; v < NV; v++) acc[r][v] += ak[r] * b[v];                           \
        }                                                                                         \
        for (i64 r = 0; r < rows; r++) {                                                          \
            if (bias)                                                                             \
                for (int v = 0; v < NV; v++) acc[r][v] += bias[r];                                \
            memcpy(out + r * P, &acc[r][0], (size_t)cols * sizeof(float));                        \
        }                                                                                         \
    }
GEMM_TILE(gemm_tile16_12_2, V4, v16, 16, LOAD16, 12, 2)
GEMM_TILE(gemm_tile16_12_1, V4, v16, 16, LOAD16, 12, 1)
GEMM_TILE(gemm_tile16_8_2, V4, v16, 16, LOAD16, 8, 2)
GEMM_TILE(gemm_tile16_8_1, V4, v16, 16, LOAD16, 8, 1)
GEMM_TILE(gemm_tile16_4_2, V4, v16, 16, LOAD16, 4, 2)
GEMM_TILE(gemm_tile16_4_1, V4, v16, 16, LOAD16, 4, 1)
GEMM_TILE(gemm_tile8_6_2, AVX2, v8, 8, LOAD8, 6, 2)
GEMM_TILE(gemm_tile8_6_1, AVX2, v8, 8, LOAD8, 6, 1)
GEMM_TILE(gemm_tile8_4_2, AVX2, v8, 8, LOAD8, 4, 2)
GEMM_TILE(gemm_tile8_4_1, AVX2, v8, 8, LOAD8, 4, 1)

typedef void (*gemm_tile_fn)(const float *, i64, const float *, const i64 *, i64, const float *, float *, i64,
                             i64, i64, int);

/* One weight block (mr packed rows, `rows` of them real) by one chunk of columns: one tile. */
V4 static void gemm_block16(const float *w, i64 mr, const float *xb, const i64 *off, i64 K, const float *bias,
                            float *out, i64 P, i64 rows, i64 cols, int more)
{
    gemm_tile_fn tile = mr == 12 ? (cols > 16 ? gemm_tile16_12_2 : gemm_tile16_12_1)
                      : mr == 8  ? (cols > 16 ? gemm_tile16_8_2 : gemm_tile16_8_1)
                                 : (cols > 16 ? gemm_tile16_4_2 : gemm_tile16_4_1);
    tile(w, mr, xb, off, K, bias, out, P, rows, cols, more);
}

/* ... in tiles of half the block: 6 + 6 rows of 12, 4 + 4 of 8, 4 of 4. */
AVX2 static void gemm_block8(const float *w, i64 mr, const float *xb, const i64 *off, i64 K, const float *bias,
                             float *out, i64 P, i64 rows, i64 cols, int more)
{
    i64 half = mr == 12 ? 6 : 4;
    gemm_tile_fn tile = half == 6 ? (cols > 8 ? gemm_tile8_6_2 : gemm_tile8_6_1)
                                  : (cols > 8 ? gemm_tile8_4_2 : gemm_tile8_4_1);
    for (i64 r0 = 0; r0 < rows; r0 += half)
        tile(w + r0, mr, xb, off, K, bias ? bias + r0 : NULL, out + r0 * P, P, rows - r0 < half ? rows - r0 : half,
             cols, more);
}

/* Blocking (as BLIS blocks a GEMM): a unit of work is a panel of GEMM_PANEL columns (chunks of
 * CHUNK, output rows in order) times a range of GEMM_RANGE blocks of 12 output channels, of
 * one group. Its taps go in blocks of GEMM_KB: the panel's columns of a tap block (up to 512 KB,
 * the L2 cache) serve every channel block of the range, and each channel block's weights of a
 * tap block (12 KB, L1) serve every chunk of the panel. A unit of one output row and all
 * channels ran 512 -> 512 channels at 7x7 b8 at 84 GFLOP/s against OpenBLAS's 136 (Zen 4):
 * the whole weight matrix streamed from L3 for 56 columns. */
#define GEMM_KB 256
#define GEMM_PANEL 512
#define GEMM_RANGE 4

#define GEMM_CONV(NAME, TARGET, CHUNK, BLOCK)                                                  \
    TARGET static void NAME##_units(const conv_args *a, i64 lo, i64 hi)                           \
    {                                                                                             \
        const i64 *g = a->g;                                                                      \
        i64 Og = g[GOG], K = g[GK], L = g[GL], P = g[GP];                                         \
        i64 per_row = (L + CHUNK - 1) / CHUNK, chunks = g[GOH] * per_row, per_panel = GEMM_PANEL / CHUNK; \
        i64 panels = (chunks + per_panel - 1) / per_panel;                                        \
        i64 blocks = (Og + GEMM_MR - 1) / GEMM_MR, ranges = (blocks + GEMM_RANGE - 1) / GEMM_RANGE; \
        i64 opad = Og / GEMM_MR * GEMM_MR + (Og % GEMM_MR + 3) / 4 * 4;                           \
        for (i64 u = lo; u < hi; u++) {                                                           \
            i64 grp = u / (panels * ranges), panel = u / ranges % panels, range = u % ranges;     \
            i64 c0 = panel * per_panel, c1 = c0 + per_panel < chunks ? c0 + per_panel : chunks;   \
            i64 b0 = range * GEMM_RANGE, b1 = b0 + GEMM_RANGE < blocks ? b0 + GEMM_RANGE : blocks; \
            const float *xg = a->a + grp * g[GSTRIDE];                                            \
            const float *wg = a->b + grp * opad * K, *bg = a->c + grp * opad;                     \
            float *og = a->out + grp * Og * P;                                                    \
            for (i64 k0 = 0; k0 < K; k0 += GEMM_KB) {                                                  \
                i64 kn = K - k0 < GEMM_KB ? K - k0 : GEMM_KB;                                               \
                for (i64 o0 = b0 * GEMM_MR; o0 < b1 * GEMM_MR && o0 < Og; o0 += GEMM_MR) {        \
                    i64 rows = Og - o0 < GEMM_MR ? Og - o0 : GEMM_MR, mr = (rows + 3) / 4 * 4;    \
                    const float *w = wg + o0 * K + k0 * mr, *b = k0 + kn == K ? bg + o0 : NULL;   \
                    for (i64 c = c0; c < c1; c++) {                                               \
                        i64 oh = c / per_row, q0 = c % per_row * CHUNK;                           \
                        BLOCK(w, mr, xg + oh * g[GROW] + q0, a->toff + k0, kn, b, og + o0 * P + oh * L + q0, P, \
                              rows, L - q0 < CHUNK ? L - q0 : CHUNK, k0 > 0);                     \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* out (G * Og, P) from xq (the phase buffer; 32 floats of slack after it), wp (per group  \
     * the weight blocks, each (K, rows) tap-major), bias (per group, padded like wp), off (K  \
     * tap offsets into xq) and the geometry above. */                                           \
    TARGET void NAME(const float *xq, const float *wp, const float *bias, float *out, const i64 *off, \
                     const i64 *g)                                                                \
    {                                                                                             \
        conv_args a = {xq, wp, bias, out, g, off};                                                \
        i64 chunks = g[GOH] * ((g[GL] + CHUNK - 1) / CHUNK), blocks = (g[GOG] + GEMM_MR - 1) / GEMM_MR; \
        i64 per_panel = GEMM_PANEL / CHUNK;                                                       \
        i64 units = (chunks + per_panel - 1) / per_panel * ((blocks + GEMM_RANGE - 1) / GEMM_RANGE); \
        parallel(NAME##_units, &a, g[GG] * units, g[GTHREADS]);                                   \
    }
GEMM_CONV(dn_gemm_conv, V4, 32, gemm_block16)
GEMM_CONV(dn_avx2_gemm_conv, AVX2, 16, gemm_block8)

/* ---- implicit GEMM: the weight gradient ---------------------------------------------------
 * dw[o, k] = sum over p of dy[o, p] x[k, p], x read from the forward's phase buffer (above):
 * for output row oh, the columns of tap k are the run at off[k] + oh * row. No patch matrix:
 * built for OpenBLAS, it cost a fifth of this product's time, and sliced to bound its memory
 * (32 MB) the stem's product ran in slices of one input channel.
 * A tile is MR output channels by NR taps, dot products accumulated in vectors along the
 * columns of a block of output rows (its dy rows stay in L2 for every tap of the unit), summed
 * across lanes once a block: MR + NR loads per MR * NR multiply-adds. The row's tail is read
 * with masked loads, never past the row. */
#include <immintrin.h>

#define WGRAD_STEP(VEC, LD, M, MR, NR, QG, QX) /* LD(dst, p, mask): a load, masked or not */ \
    do {                                                                                          \
        VEC a_[MR];                                                                               \
        for (int i = 0; i < MR; i++) LD(a_[i], gy0[i] + (QG), M);                                     \
        for (int j = 0; j < NR; j++) {                                                            \
            VEC b_;                                                                               \
            LD(b_, xr0[j] + (QX), M);                                                           \
            for (int i = 0; i < MR; i++) acc[i][j] += a_[i] * b_;                                 \
        }                                                                                         \
    } while (0)
#define WGRAD_TILE(NAME, TARGET, VEC, WIDTH, PLAIN, MASK_T, MASK, MLOAD, HSUM, MR, NR)                 \
    TARGET static void NAME(const float *const gy0[MR], const float *const xr0[NR], i64 rows, i64 L, \
                            i64 row, float *dw, i64 K, i64 mr, i64 nr)                            \
    {                                                                                             \
        VEC acc[MR][NR];                                                                          \
        for (int i = 0; i < MR; i++)                                                              \
            for (int j = 0; j < NR; j++) acc[i][j] = (VEC){0};                                    \
        i64 full = L / WIDTH * WIDTH;                                                             \
        MASK_T tail = MASK(L - full);                                                             \
        /* the rows' full vectors, then their tails: two plain loops keep the accumulators in \
         * registers (one loop with the tail inside spilled them every row) */                 \
        for (i64 r = 0; r < rows; r++)                                                            \
            for (i64 q = r * L; q < r * L + full; q += WIDTH) WGRAD_STEP(VEC, PLAIN, tail, MR, NR, q, q + r * (row - L)); \
        if (full < L)                                                                             \
            for (i64 r = 0; r < rows; r++)                                                        \
                WGRAD_STEP(VEC, MLOAD, tail, MR, NR, r * L + full, r * row + full);               \
        for (int i = 0; i < MR; i++) /* constant bounds: the accumulators stay registers */     \
            for (int j = 0; j < NR; j++)                                                          \
                if (i < mr && j < nr) dw[i * K + j] += HSUM(acc[i][j]);                           \
    }
#define FLOAD16(dst, p, m) LOAD16(dst, p) /* the plain loads, in the masked ones' form */
#define FLOAD8(dst, p, m) LOAD8(dst, p)
#define MASK16(n) ((__mmask16)((1u << (n)) - 1))
#define MLOAD16(dst, p, m) ((dst) = (v16)_mm512_maskz_loadu_ps((m), (p)))
#define MASK8(n) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define MLOAD8(dst, p, m) ((dst) = (v8)_mm256_maskload_ps((p), (m)))
V4 static inline float hsum16(v16 v) { return _mm512_reduce_add_ps((__m512)v); }
AVX2 static inline float hsum8(v8 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
WGRAD_TILE(wgrad_tile16, V4, v16, 16, FLOAD16, __mmask16, MASK16, MLOAD16, hsum16, 4, 6)
WGRAD_TILE(wgrad_tile8, AVX2, v8, 8, FLOAD8, __m256i, MASK8, MLOAD8, hsum8, 2, 4)

/* A unit of work: WGRAD_ORANGE output channels by WGRAD_KRANGE taps of one group, over every
 * column in blocks of about WGRAD_COLS (whole output rows). Each dw value is summed by one
 * unit in one order, whatever the thread count. */
#define WGRAD_COLS 2048
#define WGRAD_ORANGE 32
#define WGRAD_KRANGE 24

#define WGRAD_CONV(NAME, TARGET, TILE, MR, NR)                                                   \
    TARGET static void NAME##_units(const conv_args *a, i64 lo, i64 hi)                           \
    {                                                                                             \
        const i64 *g = a->g;                                                                      \
        i64 Og = g[GOG], K = g[GK], OH = g[GOH], L = g[GL], P = g[GP];                            \
        i64 oranges = (Og + WGRAD_ORANGE - 1) / WGRAD_ORANGE, kranges = (K + WGRAD_KRANGE - 1) / WGRAD_KRANGE; \
        i64 per_block = L < WGRAD_COLS ? WGRAD_COLS / L : 1;                                      \
        for (i64 u = lo; u < hi; u++) {                                                           \
            i64 grp = u / (oranges * kranges), o0 = u / kranges % oranges * WGRAD_ORANGE;         \
            i64 k0 = u % kranges * WGRAD_KRANGE;                                                  \
            i64 o1 = o0 + WGRAD_ORANGE < Og ? o0 + WGRAD_ORANGE : Og, k1 = k0 + WGRAD_KRANGE < K ? k0 + WGRAD_KRANGE : K; \
            const float *x = a->a + grp * g[GSTRIDE], *dy = a->b + grp * Og * P;                  \
            float *dw = a->out + grp * Og * K;                                                    \
            for (i64 r0 = 0; r0 < OH; r0 += per_block) {                                          \
                i64 rows = OH - r0 < per_block ? OH - r0 : per_block;                             \
                for (i64 k = k0; k < k1; k += NR) {                                               \
                    i64 nr = k1 - k < NR ? k1 - k : NR;                                           \
                    const float *xr[NR]; /* a partial tile repeats its last row */                \
                    for (i64 j = 0; j < NR; j++) xr[j] = x + a->toff[k + (j < nr ? j : nr - 1)] + r0 * g[GROW]; \
                    for (i64 o = o0; o < o1; o += MR) {                                           \
                        i64 mr = o1 - o < MR ? o1 - o : MR;                                       \
                        const float *gy[MR];                                                      \
                        for (i64 i = 0; i < MR; i++) gy[i] = dy + (o + (i < mr ? i : mr - 1)) * P + r0 * L; \
                        TILE(gy, xr, rows, L, g[GROW], dw + o * K + k, K, mr, nr);                \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* dw (G * Og, K), zeroed, from xq (the forward's phase buffer), dy (G * Og, P), off and   \
     * the geometry of dn_gemm_conv */                                                          \
    TARGET void NAME(const float *xq, const float *dy, float *dw, const i64 *off, const i64 *g)   \
    {                                                                                             \
        conv_args a = {xq, dy, NULL, dw, g, off};                                                 \
        i64 units = (g[GOG] + WGRAD_ORANGE - 1) / WGRAD_ORANGE * ((g[GK] + WGRAD_KRANGE - 1) / WGRAD_KRANGE); \
        parallel(NAME##_units, &a, g[GG] * units, g[GTHREADS]);                                   \
    }
WGRAD_CONV(dn_gemm_conv_weight_grad, V4, wgrad_tile16, 4, 6)
WGRAD_CONV(dn_avx2_gemm_conv_weight_grad, AVX2, wgrad_tile8, 2, 4)
#else
int dn_isa(void) { return 0; }
#endif

/* ---- elementwise: sigmoid and tanh ---------------------------------------------------------
 * NumPy's float32 exp runs at about 12 ns an element on an AVX2 Zen 3 (its tanh at 4 ns): LeNet's
 * four sigmoids took more time than its first convolution. These loops run 8 floats at a time
 * (GCC vector extensions; target_clones picks the widest copy), exp by Cephes' expf scheme:
 * x = n ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-6 polynomial, 2^n written into the
 * exponent bits (about 1 ulp). NaN stays NaN; inputs beyond float32's range saturate. */


/* exp, sigmoid and tanh of one vector type F (lanes of M for masks), written once for two
 * widths: 16 floats in the AVX-512 copy (LeNet's first sigmoid, 1.2M floats, Zen 4: 0.54
 * against 0.70 ms at 8), 8 floats elsewhere (GCC splits a 16-float vector badly without
 * AVX-512: 3.6 ms on the AVX2 copy). */
#define VECTOR_MATH(F, M, W, ATTR)                                                               \
    ATTR F select_##W(M mask, F a, F b) { return (F)(((M)a & mask) | ((M)b & ~mask)); }          \
    ATTR F exp_##W(F x)                                                                          \
    {                                                                                            \
        M under = x < -87.3365447505531f;                                                        \
        x = select_##W(x > 88.3762626647949f, (F){} + 88.3762626647949f, x);                     \
        x = select_##W(under, (F){} - 87.3365447505531f, x);                                     \
        /* 1.5 * 2^23: adding and subtracting it rounds to an integer */                         \
        F n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;                            \
        F r = x - n * 0.693359375f - n * -2.12194440e-4f;                                        \
        F p = (F){} + 1.9875691500E-4f;                                                          \
        p = p * r + 1.3981999507E-3f;                                                            \
        p = p * r + 8.3334519073E-3f;                                                            \
        p = p * r + 4.1665795894E-2f;                                                            \
        p = p * r + 1.6666665459E-1f;                                                            \
        p = p * r + 5.0000001201E-1f;                                                            \
        p = p * (r * r) + r + 1.0f;                                                              \
        M e = (__builtin_convertvector(n, M) + 127) << 23;                                       \
        return select_##W(under, (F){}, p * (F)e);                                               \
    }                                                                                            \
    ATTR F sigmoid_##W(F x)                                                                      \
    {                                                                                            \
        F e = exp_##W((F)((M)x | INT32_MIN)); /* exp(-|x|) <= 1: never overflows */             \
        F r = 1.0f / (1.0f + e);                                                                 \
        return select_##W(x >= 0.0f, r, e * r);                                                  \
    }                                                                                            \
    ATTR F tanh_##W(F x)                                                                         \
    {                                                                                            \
        F a = (F)((M)x & INT32_MAX);                                                             \
        /* |x| < 0.625: Cephes' tanhf polynomial (1 - 2 / (e + 1) would cancel there) */         \
        F z = a * a;                                                                             \
        F p = (F){} - 5.70498872745E-3f;                                                         \
        p = p * z + 2.06390887954E-2f;                                                           \
        p = p * z - 5.37397155531E-2f;                                                           \
        p = p * z + 1.33314422036E-1f;                                                           \
        p = p * z - 3.33332819422E-1f;                                                           \
        p = p * z * a + a;                                                                       \
        F big = 1.0f - 2.0f / (exp_##W(a + a) + 1.0f);                                           \
        F t = select_##W(a < 0.625f, p, big);                                                    \
        return (F)((M)t | ((M)x & INT32_MIN));                                                   \
    }

/* y[i] = fn(x[i]) for i < n; y may be x (in place). */
#define UNARY_LOOP(name, F, W, ATTR)                                                             \
    ATTR void name##_loop_##W(const float *x, float *y, i64 n)                                   \
    {                                                                                            \
        i64 i = 0;                                                                               \
        for (; i + W <= n; i += W) {                                                             \
            F v;                                                                                 \
            memcpy(&v, x + i, sizeof v);                                                         \
            v = name##_##W(v);                                                                   \
            memcpy(y + i, &v, sizeof v);                                                         \
        }                                                                                        \
        if (i < n) {                                                                             \
            F v = {0};                                                                           \
            memcpy(&v, x + i, (size_t)(n - i) * sizeof(float));                                  \
            v = name##_##W(v);                                                                   \
            memcpy(y + i, &v, (size_t)(n - i) * sizeof(float));                                  \
        }                                                                                        \
    }

VECTOR_MATH(f8, m8, 8, INLINE)
UNARY_LOOP(sigmoid, f8, 8, HOT static)
UNARY_LOOP(tanh, f8, 8, HOT static)
int dn_isa(void);
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
typedef int32_t m16 __attribute__((vector_size(64)));
VECTOR_MATH(v16, m16, 16, static inline __attribute__((always_inline, target("arch=x86-64-v4"))))
UNARY_LOOP(sigmoid, v16, 16, static __attribute__((target("arch=x86-64-v4"))))
UNARY_LOOP(tanh, v16, 16, static __attribute__((target("arch=x86-64-v4"))))
#define WIDE(name, x, y, n)                                                                      \
    do {                                                                                         \
        static int isa = -1; /* threads may race to fill it: atomics, all writing the same */   \
        int seen = __atomic_load_n(&isa, __ATOMIC_RELAXED);                                      \
        if (seen < 0) __atomic_store_n(&isa, seen = dn_isa(), __ATOMIC_RELAXED);                 \
        if (seen == 4) {                                                                         \
            name##_loop_16(x, y, n);                                                             \
            return;                                                                              \
        }                                                                                        \
    } while (0)
#else
#define WIDE(name, x, y, n) (void)0
#endif

static void sigmoid_range(const float *x, float *y, i64 n)
{
    WIDE(sigmoid, x, y, n);
    sigmoid_loop_8(x, y, n);
}

static void tanh_range(const float *x, float *y, i64 n)
{
    WIDE(tanh, x, y, n);
    tanh_loop_8(x, y, n);
}

/* ReLU as NumPy's maximum(x, 0): NaN kept, negative numbers and -0 to +0; y may be x */
HOT static void relu_range(const float *x, float *y, i64 n)
{
    i64 i = 0;
    for (; i + 8 <= n; i += 8) {
        f8 v;
        memcpy(&v, x + i, sizeof v);
        v = (f8)((m8)v & ~(v <= SPLAT(0.0f)));
        memcpy(y + i, &v, sizeof v);
    }
    for (; i < n; i++) y[i] = x[i] <= 0 ? 0 : x[i];
}

/* The gradients from the saved output y and the incoming gradient g, in one pass (NumPy takes
 * three, ops/activation.py); dx may be g. */
#define BINARY_LOOP(expr)                                                \
    i64 i = 0;                                                           \
    for (; i + 8 <= n; i += 8) {                                         \
        f8 y8, g8;                                                       \
        memcpy(&y8, y + i, sizeof y8);                                   \
        memcpy(&g8, g + i, sizeof g8);                                   \
        f8 v = expr;                                                     \
        memcpy(dx + i, &v, sizeof v);                                    \
    }                                                                    \
    if (i < n) {                                                         \
        f8 y8 = SPLAT(0.0f), g8 = SPLAT(0.0f);                           \
        memcpy(&y8, y + i, (size_t)(n - i) * sizeof(float));             \
        memcpy(&g8, g + i, (size_t)(n - i) * sizeof(float));             \
        f8 v = expr;                                                     \
        memcpy(dx + i, &v, (size_t)(n - i) * sizeof(float));             \
    }

HOT static void sigmoid_grad_range(const float *y, const float *g, float *dx, i64 n)
{
    BINARY_LOOP(((SPLAT(1.0f) - y8) * y8) * g8)
}

HOT static void tanh_grad_range(const float *y, const float *g, float *dx, i64 n)
{
    BINARY_LOOP((SPLAT(1.0f) - y8 * y8) * g8)
}

/* ReLU's: g where y > 0, else 0 (also for a NaN g, as PyTorch's threshold_backward) */
HOT static void relu_grad_range(const float *y, const float *g, float *dx, i64 n)
{
    BINARY_LOOP((f8)((m8)g8 & (y8 > SPLAT(0.0f))))
}

/* The entry points: size = {n, threads}; the threads take runs of EW_RUN values (results do
 * not depend on who computes which). How many threads a call gets is divenet/_native.py's
 * split_threads: starting one costs about 0.1 ms. */
#define EW_RUN 32768
#define EW_UNARY(name)                                                                          \
    static void name##_runs(const conv_args *a, i64 lo, i64 hi)                                 \
    {                                                                                           \
        i64 n = a->g[0], s = lo * EW_RUN, e = hi * EW_RUN < n ? hi * EW_RUN : n;                \
        name##_range(a->a + s, a->out + s, e - s);                                              \
    }                                                                                           \
    void dn_##name(const float *x, float *y, const i64 *size)                                   \
    {                                                                                           \
        conv_args a = {x, NULL, NULL, y, size, NULL};                                           \
        parallel(name##_runs, &a, (size[0] + EW_RUN - 1) / EW_RUN, size[1]);                   \
    }
#define EW_BINARY(name)                                                                         \
    static void name##_runs(const conv_args *a, i64 lo, i64 hi)                                 \
    {                                                                                           \
        i64 n = a->g[0], s = lo * EW_RUN, e = hi * EW_RUN < n ? hi * EW_RUN : n;                \
        name##_range(a->a + s, a->b + s, a->out + s, e - s);                                    \
    }                                                                                           \
    void dn_##name(const float *y, const float *g, float *dx, const i64 *size)                  \
    {                                                                                           \
        conv_args a = {y, g, NULL, dx, size, NULL};                                             \
        parallel(name##_runs, &a, (size[0] + EW_RUN - 1) / EW_RUN, size[1]);                   \
    }
EW_UNARY(sigmoid)
EW_UNARY(tanh)
EW_UNARY(relu)
EW_BINARY(sigmoid_grad)
EW_BINARY(tanh_grad)
EW_BINARY(relu_grad)

/* ---- batch norm over (C, L): each channel's L values contiguous ----------------------------
 * (batch-last and channels-first maps, ops/norm.py.) NumPy ran it in five single-threaded
 * passes over cache-sized channel blocks; these take two (the statistics or the backward's
 * sums, then the output or the input gradient; a channel's second pass reads it from the
 * cache) and split the channels among threads. Each channel's sums run whole in one thread,
 * in one order: float vectors over runs of BN_RUN values, double across runs. The elementwise
 * formulas are ops/norm.py's, one IEEE rounding an operation and no fused multiply-add:
 * graph mode rebuilds the output with NumPy and must get the same bits. */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off", "no-math-errno") /* sqrt: still correctly rounded */
enum { BN_C, BN_L, BN_THREADS, BN_TRAINING, BN_SUMS, BN_DX }; /* geometry */
#define BN_RUN 1024

/* sum over i < n of x[i] (what 0), (x[i] - m)^2 (what 1), or y[i] (x[i] - m) (what 2) */
HOT static double bn_sum(const float *x, const float *y, float m, i64 n, int what)
{
    double total = 0;
    f8 mv = SPLAT(m);
    i64 full = n / 32 * 32;
    for (i64 r = 0; r < full; r += BN_RUN) {
        i64 e = r + BN_RUN < full ? r + BN_RUN : full;
        f8 acc[4] = {SPLAT(0.0f), SPLAT(0.0f), SPLAT(0.0f), SPLAT(0.0f)};
        for (i64 i = r; i < e; i += 32)
            for (int k = 0; k < 4; k++) {
                f8 v, w;
                memcpy(&v, x + i + 8 * k, sizeof v);
                if (what == 0) {
                    acc[k] += v;
                } else if (what == 1) {
                    v = v - mv;
                    acc[k] += v * v;
                } else {
                    memcpy(&w, y + i + 8 * k, sizeof w);
                    acc[k] += w * (v - mv);
                }
            }
        f8 v = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        float part = 0;
        for (int l = 0; l < 8; l++) part += v[l];
        total += part;
    }
    for (i64 i = full; i < n; i++) {
        float v = x[i] - m;
        total += what == 0 ? x[i] : what == 1 ? v * v : y[i] * v;
    }
    return total;
}

/* One channel's output: y = (x - mean) * scale + shift (no mean: x * scale + shift) */
HOT static void bn_write(const float *x, float *y, i64 L, const float *mean, float scale, const float *shift)
{
    float m = mean ? *mean : 0, t = shift ? *shift : 0;
    f8 mv = SPLAT(m), kv = SPLAT(scale), tv = SPLAT(t);
    i64 i = 0;
    for (; i + 8 <= L; i += 8) {
        f8 v;
        memcpy(&v, x + i, sizeof v);
        if (mean) v = v - mv;
        v = v * kv;
        if (shift) v = v + tv;
        memcpy(y + i, &v, sizeof v);
    }
    for (; i < L; i++) {
        float v = mean ? x[i] - m : x[i];
        v = v * scale;
        y[i] = shift ? v + t : v;
    }
}

/* Per channel c of u (a) into y (out), weight (b) and bias (c) optional. Training (d ==
 * NULL): the batch's mean, biased variance and 1 / sqrt(var + eps) into stats (f: 3 rows of
 * C), then y = (x - mean) * (invstd w) + bias, the channel still in the cache. Eval: mean (d)
 * and invstd (e) given, y = x * scale + (-mean scale + bias). */
HOT static void bn_forward_channels(const conv_args *a, i64 lo, i64 hi)
{
    i64 C = a->g[BN_C], L = a->g[BN_L];
    float *stats = (float *)a->f;
    for (i64 c = lo; c < hi; c++) {
        const float *x = a->a + c * L;
        float *y = a->out + c * L;
        if (!a->d) {
            float mean = (float)(bn_sum(x, NULL, 0, L, 0) / (double)L);
            float var = (float)(bn_sum(x, NULL, mean, L, 1) / (double)L);
            float inv = 1.0f / sqrtf(var + a->eps);
            stats[c] = mean, stats[C + c] = var, stats[2 * C + c] = inv;
            bn_write(x, y, L, &stats[c], a->b ? inv * a->b[c] : inv, a->c ? a->c + c : NULL);
        } else {
            float scale = a->b ? a->e[c] * a->b[c] : a->e[c];
            float shift = -a->d[c] * scale;
            if (a->c) shift = shift + a->c[c];
            bn_write(x, y, L, NULL, scale, &shift);
        }
    }
}

void dn_bn_forward(const float *u, const float *weight, const float *bias, const float *mean, const float *invstd,
                   float *y, float *stats, const float *eps, const i64 *g)
{
    conv_args a = {u, weight, bias, y, g, NULL, mean, invstd, stats, *eps};
    parallel(bn_forward_channels, &a, g[BN_C], g[BN_THREADS]);
}

/* Per channel c of u (a), the output gradient gy (b), the saved mean (c) and invstd (d), weight
 * (e) optional: sums (f: 2 rows of C) = sum(g) and invstd sum(g (x - mean)) when asked
 * (BN_SUMS), then dx (out, may be gy) = g A + (x - mean) B + K in training, g A in eval, with
 * A = invstd w, B = -A invstd sum(g xhat) / L, K = -A sum(g) / L (BN_DX). */
HOT static void bn_backward_channels(const conv_args *a, i64 lo, i64 hi)
{
    i64 C = a->g[BN_C], L = a->g[BN_L], training = a->g[BN_TRAINING];
    float *sums = (float *)a->f, n = (float)L;
    for (i64 c = lo; c < hi; c++) {
        const float *x = a->a + c * L, *gy = a->b + c * L;
        float *dx = a->out + c * L;
        float m = a->c[c], inv = a->d[c], sg = 0, gxhat = 0;
        if (a->g[BN_SUMS]) {
            sg = (float)bn_sum(gy, NULL, 0, L, 0);
            gxhat = inv * (float)bn_sum(x, gy, m, L, 2);
            sums[c] = sg, sums[C + c] = gxhat;
        }
        if (!a->g[BN_DX]) continue;
        float A = a->e ? inv * a->e[c] : inv, B = -A * inv * gxhat / n, K = -A * sg / n;
        f8 mv = SPLAT(m), av = SPLAT(A), bv = SPLAT(B), kv = SPLAT(K);
        i64 i = 0;
        for (; i + 8 <= L; i += 8) {
            f8 v, w;
            memcpy(&w, gy + i, sizeof w);
            w = w * av;
            if (training) {
                memcpy(&v, x + i, sizeof v);
                w = (w + (v - mv) * bv) + kv;
            }
            memcpy(dx + i, &w, sizeof w);
        }
        for (; i < L; i++) {
            float w = gy[i] * A;
            dx[i] = training ? (w + (x[i] - m) * B) + K : w;
        }
    }
}

void dn_bn_backward(const float *u, const float *gy, const float *mean, const float *invstd, const float *weight,
                    float *dx, float *sums, const i64 *g)
{
    conv_args a = {u, gy, mean, dx, g, NULL, invstd, weight, sums};
    parallel(bn_backward_channels, &a, g[BN_C], g[BN_THREADS]);
}
#pragma GCC pop_options

/* ---- Winograd F(2x2, 3x3): 3x3 stride-1 convolutions ------------------------------------
 * y = A^T [ (G w G^T) . (B^T d B) ] A per 4x4 input tile d and 2x2 output tile (Lavin and Gray
 * 2016): the 16 products of a tile position xi are one GEMM over channels, M[xi] (O, T) =
 * U[xi] (O, C) @ V[xi] (C, T), which the caller runs (OpenBLAS); these are its two transforms,
 * over a chunk of tile rows [t0, t1). A column of V or M is (tile row - t0, tile column, image):
 * the batch innermost, so the loops over images vectorize. Only additions and subtractions:
 * each transform is exact up to one rounding per operation. */
enum { WG_C, WG_H, WG_W, WG_N, WG_PH, WG_PW, WG_TW, WG_T0, WG_T1, WG_OH, WG_OW, WG_THREADS };

#define LOADF(dst, p) ((dst) = *(p))
#define STOREF(p, src) (*(p) = (src))
#ifndef LOAD8
#define LOAD8(dst, p) memcpy(&(dst), (p), sizeof(f8))
#define STORE8(p, src) memcpy((p), &(src), sizeof(f8))
#endif
/* B^T d B of one tile for images n.. (a vector of them, or one): d the 16 rows of the window,
 * the 16 results at col + xi * stride */
#define winograd_in_tile(T_, d, col, stride, n, LD, ST)                                           \
    do {                                                                                          \
        T_ x_[16], t_[16], r_;                                                                    \
        for (int k = 0; k < 16; k++) LD(x_[k], (d)[k] + (n));                                     \
        for (int j = 0; j < 4; j++) { /* B^T d: rows */                                         \
            t_[j] = x_[j] - x_[8 + j];                                                            \
            t_[4 + j] = x_[4 + j] + x_[8 + j];                                                    \
            t_[8 + j] = x_[8 + j] - x_[4 + j];                                                    \
            t_[12 + j] = x_[4 + j] - x_[12 + j];                                                  \
        }                                                                                         \
        for (int i = 0; i < 4; i++) { /* (B^T d) B: columns */                                  \
            r_ = t_[i * 4] - t_[i * 4 + 2];         ST((col) + (i * 4 + 0) * (stride) + (n), r_); \
            r_ = t_[i * 4 + 1] + t_[i * 4 + 2];     ST((col) + (i * 4 + 1) * (stride) + (n), r_); \
            r_ = t_[i * 4 + 2] - t_[i * 4 + 1];     ST((col) + (i * 4 + 2) * (stride) + (n), r_); \
            r_ = t_[i * 4 + 1] - t_[i * 4 + 3];     ST((col) + (i * 4 + 3) * (stride) + (n), r_); \
        }                                                                                         \
    } while (0)
/* A^T m A + bias of one tile for images n..: m at col + xi * stride, the 2 x 2 outputs at out
 * (rows OW * N apart), those past the map's last row or column (down, right false) not written */
#define winograd_out_tile(T_, col, stride, out, n, bias, LD, ST)                                  \
    do {                                                                                          \
        T_ m_[16], s_[8], r_;                                                                     \
        for (int k = 0; k < 16; k++) LD(m_[k], (col) + k * (stride) + (n));                       \
        for (int j = 0; j < 4; j++) { /* A^T m: rows */                                         \
            s_[j] = (m_[j] + m_[4 + j]) + m_[8 + j];                                              \
            s_[4 + j] = (m_[4 + j] - m_[8 + j]) - m_[12 + j];                                     \
        }                                                                                         \
        r_ = ((s_[0] + s_[1]) + s_[2]) + (bias);                  ST((out) + (n), r_);            \
        if (right) { r_ = ((s_[1] - s_[2]) - s_[3]) + (bias);     ST((out) + N + (n), r_); }      \
        if (down) { r_ = ((s_[4] + s_[5]) + s_[6]) + (bias);      ST((out) + OW * N + (n), r_); } \
        if (down && right) { r_ = ((s_[5] - s_[6]) - s_[7]) + (bias); ST((out) + (OW + 1) * N + (n), r_); } \
    } while (0)

/* V (16, C, (t1 - t0) * TW * N) from x (C, H, W, N): per channel (a unit of work) and tile, its
 * 4 x 4 window (rows 2 th - ph .., columns 2 tw - pw ..; outside the input: zeros) as B^T d B. */
HOT static void winograd_input_channels(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g;
    i64 C = g[WG_C], H = g[WG_H], W = g[WG_W], N = g[WG_N], TW = g[WG_TW], t0 = g[WG_T0];
    i64 T = (g[WG_T1] - t0) * TW * N;
    const float *zeros = a->c;
    for (i64 c = lo; c < hi; c++) {
        const float *x = a->a + c * H * W * N;
        float *v = a->out + c * T;
        for (i64 th = t0; th < g[WG_T1]; th++)
            for (i64 tw = 0; tw < TW; tw++) {
                const float *d[16];
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++) {
                        i64 r = 2 * th - g[WG_PH] + i, s = 2 * tw - g[WG_PW] + j;
                        d[i * 4 + j] = r >= 0 && r < H && s >= 0 && s < W ? x + (r * W + s) * N : zeros;
                    }
                float *col = v + ((th - t0) * TW + tw) * N;
                i64 n = 0;
                for (; n + 8 <= N; n += 8) winograd_in_tile(f8, d, col, C * T, n, LOAD8, STORE8);
                for (; n < N; n++) winograd_in_tile(float, d, col, C * T, n, LOADF, STOREF);
            }
    }
}

/* x (C, H, W, N), zeros (N floats of 0), v (16, C, chunk columns), geometry above */
void dn_winograd_input(const float *x, const float *zeros, float *v, const i64 *g)
{
    conv_args a = {x, NULL, zeros, v, g};
    parallel(winograd_input_channels, &a, g[WG_C], g[WG_THREADS]);
}

/* y (O, OH, OW, N) rows 2 t0 .. from M (16, O, chunk columns): per output channel (a unit) and
 * tile, A^T m A plus the bias (on odd maps, without the last tiles' outputs past the map). */
HOT static void winograd_output_channels(const conv_args *a, i64 lo, i64 hi)
{
    const i64 *g = a->g;
    i64 O = g[WG_C], N = g[WG_N], TW = g[WG_TW], t0 = g[WG_T0], OH = g[WG_OH], OW = g[WG_OW];
    i64 T = (g[WG_T1] - t0) * TW * N;
    for (i64 o = lo; o < hi; o++) {
        const float *m = a->a + o * T;
        float *y = a->out + o * OH * OW * N, bias = a->b ? a->b[o] : 0.0f;
        for (i64 th = t0; th < g[WG_T1]; th++)
            for (i64 tw = 0; tw < TW; tw++) {
                const float *col = m + ((th - t0) * TW + tw) * N;
                float *out = y + (2 * th * OW + 2 * tw) * N;
                int down = 2 * th + 1 < OH, right = 2 * tw + 1 < OW; /* the map's odd last row, column */
                i64 n = 0;
                for (; n + 8 <= N; n += 8) {
                    f8 bv = SPLAT(bias);
                    winograd_out_tile(f8, col, O * T, out, n, bv, LOAD8, STORE8);
                }
                for (; n < N; n++) winograd_out_tile(float, col, O * T, out, n, bias, LOADF, STOREF);
            }
    }
}

/* m (16, O, chunk columns), bias (O) or NULL, y (O, OH, OW, N), geometry above with C = O */
void dn_winograd_output(const float *m, const float *bias, float *y, const i64 *g)
{
    conv_args a = {m, bias, NULL, y, g};
    parallel(winograd_output_channels, &a, g[WG_C], g[WG_THREADS]);
}
