/* divenet's optional native kernels (float32 only), loaded by divenet/_native.py with ctypes.
 *
 * Activations are laid out (C, H, W, N), batch innermost, so every inner loop runs over
 * contiguous images and the compiler vectorizes it; weights come pre-arranged by the caller so
 * that the values a loop broadcasts are contiguous too. Each kernel is the plain loop nest of
 * its definition, blocked so that the accumulators stay in registers. They run on one thread:
 * on the project's 2-core machine a helper thread per call made training steps slower
 * (docs/performance.md).
 *
 * Convolution geometry is passed as an int64 array
 *     g = {C, H, W, N, O, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw}
 * with ph, pw the top and left padding.
 */
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
/* unaligned loads and stores (macros: a v16 never crosses a function call) */
#define LOAD16(dst, p) memcpy(&(dst), (p), sizeof(v16))
#define STORE16(p, src) memcpy((p), &(src), sizeof(v16))

/* Bumped with every change of a signature or layout; divenet/_native.py ignores a library
 * built from other sources (an editable install not rebuilt after a change). */
int dn_version(void) { return 2; }

enum { C_, H_, W_, N_, O_, KH, KW, OH_, OW_, SH, SW, PH, PW, DH, DW };
#define CB 8  /* channels per register tile */
#define NV 2  /* vectors of 16 images per register tile */

/* The taps t of a window at output position o that land inside [0, n): first and one past last. */
INLINE i64 tap_lo(i64 o, i64 s, i64 p, i64 d)
{
    i64 base = o * s - p;
    return base >= 0 ? 0 : (-base + d - 1) / d;
}

INLINE i64 tap_hi(i64 o, i64 s, i64 p, i64 d, i64 k, i64 n)
{
    i64 base = o * s - p;
    if (base >= n) return 0;
    i64 t = (n - 1 - base) / d + 1;
    return t < k ? t : k;
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
HOT void dn_conv_forward(const float *x, const float *wt, const float *bias, float *out, const i64 *g)
{
    for (i64 o0 = 0; o0 < g[O_]; o0 += CB)
        for (i64 oh = 0; oh < g[OH_]; oh++)
            for (i64 ow = 0; ow < g[OW_]; ow++)
                OVER_BATCH(g[N_], conv_forward_tile, x, wt, bias, out, g, o0, oh, ow);
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
HOT void dn_conv_input_grad(const float *dy, const float *wd, float *dx, const i64 *g)
{
    for (i64 c0 = 0; c0 < g[C_]; c0 += CB)
        for (i64 h = 0; h < g[H_]; h++)
            for (i64 w = 0; w < g[W_]; w++)
                OVER_BATCH(g[N_], conv_input_grad_tile, dy, wd, dx, g, c0, h, w);
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

/* xp (C, Hp, Wp, N) padded input, with g[H_], g[W_] its padded size and the padding in g
 * ignored; dy (O, OH, OW, N); dwt (C, kh, kw, O), written outright. */
HOT int dn_conv_weight_grad(const float *xp, const float *dy, float *dwt, const i64 *g)
{
    i64 C = g[C_], Hp = g[H_], Wp = g[W_], N = g[N_], O = g[O_], kh = g[KH], kw = g[KW];
    i64 OH = g[OH_], OW = g[OW_], K = C * kh * kw, P = OH * OW * N;
    i64 *toff = malloc(K * sizeof(i64));
    if (!toff) return -1;
    for (i64 c = 0, t = 0; c < C; c++)
        for (i64 i = 0; i < kh; i++)
            for (i64 j = 0; j < kw; j++, t++) toff[t] = ((c * Hp + i * g[DH]) * Wp + j * g[DW]) * N;
    for (i64 o0 = 0; o0 < O; o0 += WO) {
        const float *gq[WO];
        for (int q = 0; q < WO; q++) gq[q] = dy + (o0 + q < O ? o0 + q : O - 1) * P;
        for (i64 t0 = 0; t0 < K; t0 += WT) {
            i64 to[WT];
            for (int u = 0; u < WT; u++) to[u] = toff[t0 + u < K ? t0 + u : K - 1];
            /* sums per output row, then over rows: blocked summation keeps the float32 error
             * of long reductions (LeNet's first layer: 200704 products) near a GEMM's */
            v16 total[WO][WT] = {{{0}}};
            float total_tail[WO][WT] = {{0}};
            for (i64 oh = 0; oh < OH; oh++) {
                v16 acc[WO][WT] = {{{0}}};
                float tail[WO][WT] = {{0}}; /* images past the last whole vector */
                for (i64 ow = 0; ow < OW; ow++) {
                    i64 go = (oh * OW + ow) * N, xo = (oh * g[SH] * Wp + ow * g[SW]) * N, n0 = 0;
                    for (; n0 + 16 <= N; n0 += 16) weight_grad_step(gq, go + n0, xp, to, xo + n0, acc);
                    for (; n0 < N; n0++)
                        for (int u = 0; u < WT; u++)
                            for (int q = 0; q < WO; q++) tail[q][u] += gq[q][go + n0] * xp[to[u] + xo + n0];
                }
                for (int q = 0; q < WO; q++)
                    for (int u = 0; u < WT; u++) {
                        total[q][u] += acc[q][u];
                        total_tail[q][u] += tail[q][u];
                    }
            }
            for (i64 u = 0; u < WT && t0 + u < K; u++)
                for (i64 q = 0; q < WO && o0 + q < O; q++) {
                    float sum = total_tail[q][u];
                    for (int l = 0; l < 16; l++) sum += total[q][u][l];
                    dwt[(t0 + u) * O + o0 + q] = sum;
                }
        }
    }
    free(toff);
    return 0;
}

/* ---- AVX2 copies (CPUs without AVX-512: dn_isa() == 3) ----
 * The kernels above keep 16-float vectors in register tiles sized for AVX-512's 32 registers;
 * on AVX2 (16 registers of 8 floats) GCC splits each vector in two and spills the tiles (LeNet
 * conv1 at b256 on a Zen 3: forward 53 ms and input gradient 323 ms, against NumPy's 10 and 9).
 * These run the same loop nests on tiles of one 8-float vector, sized for 16 ymm registers. */

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

/* acc[q] += w[q] * src for the CB channels of a tile: 8 images at src, or the single image at
 * src into one[q] when nv == 0. CB accumulators + the source + a broadcast: 10 registers. */
AVX2_INLINE void tile8_fma(v8 acc[CB], float one[CB], const float *w, const float *src, int nv)
{
    if (nv == 0) {
        for (int q = 0; q < CB; q++) one[q] += w[q] * src[0];
        return;
    }
    v8 sv;
    LOAD8(sv, src);
    for (int q = 0; q < CB; q++) acc[q] += w[q] * sv;
}

AVX2_INLINE void tile8_store(float *dst, i64 plane, i64 rows, v8 acc[CB], const float one[CB], int nv)
{
    for (i64 q = 0; q < rows; q++) {
        if (nv == 0) dst[q * plane] = one[q];
        else STORE8(dst + q * plane, acc[q]);
    }
}

/* Runs tile(..., n0, nv) over a batch of N images: 8 at a time, then one by one. */
#define OVER_BATCH8(N, tile, ...)                                                                   \
    do {                                                                                            \
        i64 n0_ = 0;                                                                                \
        for (; n0_ + 8 <= (N); n0_ += 8) tile(__VA_ARGS__, n0_, 1);                                 \
        for (; n0_ < (N); n0_++) tile(__VA_ARGS__, n0_, 0);                                         \
    } while (0)

/* tap_lo, tap_hi, and the output row or column a tap of the input gradient reads (-1: none),
 * without integer division at unit dilation and stride: input gradient 5-9% faster on LeNet's
 * layers */
AVX2_INLINE i64 tap_lo8(i64 o, i64 s, i64 p, i64 d)
{
    i64 base = o * s - p;
    return d != 1 ? tap_lo(o, s, p, d) : base >= 0 ? 0 : -base;
}

AVX2_INLINE i64 tap_hi8(i64 o, i64 s, i64 p, i64 d, i64 k, i64 n)
{
    i64 base = o * s - p;
    if (d != 1) return tap_hi(o, s, p, d, k, n);
    return base >= n ? 0 : n - base < k ? n - base : k;
}

AVX2_INLINE i64 tap_out8(i64 t, i64 s, i64 n)
{
    if (t < 0) return -1;
    i64 o = s == 1 ? t : t % s ? -1 : t / s;
    return o < n ? o : -1;
}

AVX2_INLINE void conv_forward_tile8(const float *x, const float *wt, const float *bias, float *out,
                                    const i64 *g, i64 o0, i64 oh, i64 ow, i64 n0, int nv)
{
    i64 C = g[C_], H = g[H_], W = g[W_], N = g[N_], O = g[O_], kh = g[KH], kw = g[KW];
    i64 opad = (O + CB - 1) / CB * CB;
    i64 ilo = tap_lo8(oh, g[SH], g[PH], g[DH]), ihi = tap_hi8(oh, g[SH], g[PH], g[DH], kh, H);
    i64 jlo = tap_lo8(ow, g[SW], g[PW], g[DW]), jhi = tap_hi8(ow, g[SW], g[PW], g[DW], kw, W);
    v8 acc[CB];
    float one[CB];
    for (int q = 0; q < CB; q++) {
        one[q] = bias[o0 + q];
        acc[q] = (v8){0} + bias[o0 + q];
    }
    for (i64 c = 0; c < C; c++)
        for (i64 i = ilo; i < ihi; i++) {
            const float *xr = x + ((c * H + oh * g[SH] - g[PH] + i * g[DH]) * W) * N + n0;
            const float *wr = wt + (c * kh + i) * kw * opad + o0;
            for (i64 j = jlo; j < jhi; j++)
                tile8_fma(acc, one, wr + j * opad, xr + (ow * g[SW] - g[PW] + j * g[DW]) * N, nv);
        }
    tile8_store(out + ((o0 * g[OH_] + oh) * g[OW_] + ow) * N + n0, g[OH_] * g[OW_] * N,
                O - o0 < CB ? O - o0 : CB, acc, one, nv);
}

/* dn_conv_forward's arguments and result */
AVX2 void dn_avx2_conv_forward(const float *x, const float *wt, const float *bias, float *out, const i64 *g)
{
    for (i64 o0 = 0; o0 < g[O_]; o0 += CB)
        for (i64 oh = 0; oh < g[OH_]; oh++)
            for (i64 ow = 0; ow < g[OW_]; ow++)
                OVER_BATCH8(g[N_], conv_forward_tile8, x, wt, bias, out, g, o0, oh, ow);
}

AVX2_INLINE void conv_input_grad_tile8(const float *dy, const float *wd, float *dx, const i64 *g,
                                       i64 c0, i64 h, i64 w, i64 n0, int nv)
{
    i64 C = g[C_], N = g[N_], O = g[O_], kh = g[KH], kw = g[KW], OH = g[OH_], OW = g[OW_];
    i64 cpad = (C + CB - 1) / CB * CB;
    v8 acc[CB];
    float one[CB] = {0};
    for (int q = 0; q < CB; q++) acc[q] = (v8){0};
    for (i64 i = 0; i < kh; i++) {
        i64 oh = tap_out8(h + g[PH] - i * g[DH], g[SH], OH);
        if (oh < 0) continue;
        for (i64 j = 0; j < kw; j++) {
            i64 ow = tap_out8(w + g[PW] - j * g[DW], g[SW], OW);
            if (ow < 0) continue;
            /* the two-level sum of conv_input_grad_tile */
            v8 part[CB];
            float part_one[CB] = {0};
            for (int q = 0; q < CB; q++) part[q] = (v8){0};
            for (i64 o = 0; o < O; o++)
                tile8_fma(part, part_one, wd + ((o * kh + i) * kw + j) * cpad + c0,
                          dy + ((o * OH + oh) * OW + ow) * N + n0, nv);
            for (int q = 0; q < CB; q++) {
                one[q] += part_one[q];
                acc[q] += part[q];
            }
        }
    }
    tile8_store(dx + ((c0 * g[H_] + h) * g[W_] + w) * N + n0, g[H_] * g[W_] * N,
                C - c0 < CB ? C - c0 : CB, acc, one, nv);
}

/* dn_conv_input_grad's arguments and result */
AVX2 void dn_avx2_conv_input_grad(const float *dy, const float *wd, float *dx, const i64 *g)
{
    for (i64 c0 = 0; c0 < g[C_]; c0 += CB)
        for (i64 h = 0; h < g[H_]; h++)
            for (i64 w = 0; w < g[W_]; w++)
                OVER_BATCH8(g[N_], conv_input_grad_tile8, dy, wd, dx, g, c0, h, w);
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

/* dn_conv_weight_grad's arguments and result */
AVX2 int dn_avx2_conv_weight_grad(const float *xp, const float *dy, float *dwt, const i64 *g)
{
    i64 C = g[C_], Hp = g[H_], Wp = g[W_], N = g[N_], O = g[O_], kh = g[KH], kw = g[KW];
    i64 OH = g[OH_], OW = g[OW_], K = C * kh * kw, P = OH * OW * N;
    i64 *toff = malloc(K * sizeof(i64));
    if (!toff) return -1;
    for (i64 c = 0, t = 0; c < C; c++)
        for (i64 i = 0; i < kh; i++)
            for (i64 j = 0; j < kw; j++, t++) toff[t] = ((c * Hp + i * g[DH]) * Wp + j * g[DW]) * N;
    for (i64 o0 = 0; o0 < O; o0 += WO8) {
        const float *gq[WO8];
        for (int q = 0; q < WO8; q++) gq[q] = dy + (o0 + q < O ? o0 + q : O - 1) * P;
        for (i64 t0 = 0; t0 < K; t0 += WT8) {
            i64 to[WT8];
            for (int u = 0; u < WT8; u++) to[u] = toff[t0 + u < K ? t0 + u : K - 1];
            /* the blocked summation of dn_conv_weight_grad */
            v8 total[WO8][WT8] = {{{0}}};
            float total_tail[WO8][WT8] = {{0}};
            for (i64 oh = 0; oh < OH; oh++) {
                v8 acc[WO8][WT8] = {{{0}}};
                float tail[WO8][WT8] = {{0}};
                for (i64 ow = 0; ow < OW; ow++) {
                    i64 go = (oh * OW + ow) * N, xo = (oh * g[SH] * Wp + ow * g[SW]) * N, n0 = 0;
                    for (; n0 + 8 <= N; n0 += 8) weight_grad_step8(gq, go + n0, xp, to, xo + n0, acc);
                    for (; n0 < N; n0++)
                        for (int u = 0; u < WT8; u++)
                            for (int q = 0; q < WO8; q++) tail[q][u] += gq[q][go + n0] * xp[to[u] + xo + n0];
                }
                for (int q = 0; q < WO8; q++)
                    for (int u = 0; u < WT8; u++) {
                        total[q][u] += acc[q][u];
                        total_tail[q][u] += tail[q][u];
                    }
            }
            for (i64 u = 0; u < WT8 && t0 + u < K; u++)
                for (i64 q = 0; q < WO8 && o0 + q < O; q++) {
                    float sum = total_tail[q][u];
                    for (int l = 0; l < 8; l++) sum += total[q][u][l];
                    dwt[(t0 + u) * O + o0 + q] = sum;
                }
        }
    }
    free(toff);
    return 0;
}
#else
int dn_isa(void) { return 0; }
#endif
