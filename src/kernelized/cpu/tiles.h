// Float32 AVX-512 register tiles for the skinny products of linear attention (bidirectional.cpp), where a [L, F]
// feature matrix (F up to hundreds, rows strided in [B, L, H, F]) meets a [L, D] or [F, D] one with D = Dv + 1 small.
// MKL runs these shapes at 55-90 % of its square-matrix rate even on cached operands (docs/bench/forms/
// skinny_gemm.txt): its kernels block for square shapes and pack their operands. Here each product keeps its output
// tile in registers over the long dimension and reads the wide operand in place, once:
//
//   accumulate  CT [D, F] += A^T B       A [L, F] (the features), B [L, D]: sums over L, vectors along F
//   project     Y  [L, D]  = A S         A [L, F], S [F, D]: sums over F, vectors along D (and A z, z [F])
//   expand      O  [L, F]  = B CT        B [L, D], CT [D, F]: sums over D, vectors along F
//
// Compiled where the build targets AVX-512 (-march=native on such a CPU: KZ_HAVE_TILES 1); elsewhere, and for
// float64, the callers use BLAS. Header-only, included by bidirectional.cpp (kernelized/cpu/__init__.py hashes it).

#pragma once

#if defined(__AVX512F__)
#define KZ_HAVE_TILES 1

#include <immintrin.h>

#include <algorithm>

// full unrolling of the loops over a tile's registers, so that GCC keeps the tile's arrays in registers (left as
// loops it spilled them to the stack on every iteration: 4x the time)
#define KZ_UNROLL _Pragma("GCC unroll 32")

namespace kz::tiles {

inline __mmask16 lanes(int n) { return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1); }

// CT[d0 + j, f0 + i] += sum_{t < L} A[t, f0 + i] B[t, d0 + j] for j < ND, i < nf <= 16 NF: ND x NF accumulators.
template <int NF, int ND>
void accumulate_tile(const float* A, long lda, const float* B, long ldb, long L, int f0, int nf, int d0, float* CT,
                     long ldc) {
    __mmask16 m[NF];
    KZ_UNROLL for (int i = 0; i < NF; ++i) m[i] = lanes(nf - 16 * i);
    __m512 c[ND][NF];
    KZ_UNROLL for (int j = 0; j < ND; ++j) KZ_UNROLL for (int i = 0; i < NF; ++i) c[j][i] =
        _mm512_maskz_loadu_ps(m[i], CT + (d0 + j) * ldc + f0 + 16 * i);
    for (long t = 0; t < L; ++t) {
        __m512 a[NF];
        KZ_UNROLL for (int i = 0; i < NF; ++i) a[i] = _mm512_maskz_loadu_ps(m[i], A + t * lda + f0 + 16 * i);
        const float* b = B + t * ldb + d0;
        KZ_UNROLL for (int j = 0; j < ND; ++j) {
            const __m512 bj = _mm512_set1_ps(b[j]);
            KZ_UNROLL for (int i = 0; i < NF; ++i) c[j][i] = _mm512_fmadd_ps(a[i], bj, c[j][i]);
        }
    }
    KZ_UNROLL for (int j = 0; j < ND; ++j) KZ_UNROLL for (int i = 0; i < NF; ++i)
        _mm512_mask_storeu_ps(CT + (d0 + j) * ldc + f0 + 16 * i, m[i], c[j][i]);
}

// Columns [d0, d0 + w) of accumulate_tile in tiles of 11, 8, 4, 2 and 1 columns: five widths instead of eleven
// keep the build short (each is fully unrolled).
template <int NF>
void accumulate_columns(const float* A, long lda, const float* B, long ldb, long L, int f0, int nf, int d0, int w,
                        float* CT, long ldc) {
    for (; w > 0;) {
        const int nd = w >= 11 ? 11 : w >= 8 ? 8 : w >= 4 ? 4 : w >= 2 ? 2 : 1;
        switch (nd) {
#define KZ_CASE(n) \
    case n: accumulate_tile<NF, n>(A, lda, B, ldb, L, f0, nf, d0, CT, ldc); break;
            KZ_CASE(11) KZ_CASE(8) KZ_CASE(4) KZ_CASE(2) KZ_CASE(1)
#undef KZ_CASE
        }
        d0 += nd, w -= nd;
    }
}

// CT [D, F] (row stride ldc) += A^T B: A [L, F] rows lda, B [L, D] rows ldb. Blocks of 64 rows (A's block stays in
// L1/L2 while each group of 32 features is swept once per group of up to 11 columns: 22 accumulators).
inline void accumulate(const float* A, long lda, const float* B, long ldb, long L, int F, int D, float* CT,
                       long ldc) {
    const int groups = (D + 10) / 11, width = (D + groups - 1) / groups;  // 33 columns: 3 groups of 11
    for (long t0 = 0; t0 < L; t0 += 64) {
        const long n = std::min(64L, L - t0);
        const float *a = A + t0 * lda, *b = B + t0 * ldb;
        for (int f0 = 0; f0 < F; f0 += 32) {
            const int nf = std::min(32, F - f0);
            for (int d0 = 0; d0 < D; d0 += width) {
                const int w = std::min(width, D - d0);
                if (nf > 16)
                    accumulate_columns<2>(a, lda, b, ldb, n, f0, nf, d0, w, CT, ldc);
                else  // a last group of <= 16 features (F = 513: 1) in one register
                    accumulate_columns<1>(a, lda, b, ldb, n, f0, nf, d0, w, CT, ldc);
            }
        }
    }
}

// Rows r < R: Y[r, d0 + (0..nd)] = sum_f A[r, f] S[f, d0 + (0..nd)] (nd <= 32) and, if z, den[r] = sum_f A[r, f] z[f].
template <int R>
void project_tile(const float* A, long lda, int F, const float* S, long lds, int nd, const float* z, float* Y,
                  long ldy, float* den) {
    const __mmask16 m0 = lanes(nd), m1 = lanes(nd - 16);
    __m512 y0[R], y1[R], dz[R];
    KZ_UNROLL for (int r = 0; r < R; ++r) y0[r] = y1[r] = dz[r] = _mm512_setzero_ps();
    auto step = [&](int f) {  // one feature: its row of S against each row's A[r, f]
        const __m512 s0 = _mm512_maskz_loadu_ps(m0, S + f * lds), s1 = _mm512_maskz_loadu_ps(m1, S + f * lds + 16);
        KZ_UNROLL for (int r = 0; r < R; ++r) {
            const __m512 a = _mm512_set1_ps(A[r * lda + f]);
            y0[r] = _mm512_fmadd_ps(a, s0, y0[r]);
            y1[r] = _mm512_fmadd_ps(a, s1, y1[r]);
        }
    };
    int f = 0;
    for (; f + 16 <= F; f += 16) {
        _Pragma("GCC unroll 16") for (int i = 0; i < 16; ++i) step(f + i);
        if (z) {  // the normaliser as a dot product along F, a vector of 16 features at a time
            const __m512 zz = _mm512_loadu_ps(z + f);
            KZ_UNROLL for (int r = 0; r < R; ++r) dz[r] = _mm512_fmadd_ps(_mm512_loadu_ps(A + r * lda + f), zz, dz[r]);
        }
    }
    const int tail = f;
    for (; f < F; ++f) step(f);
    KZ_UNROLL for (int r = 0; r < R; ++r) {
        _mm512_mask_storeu_ps(Y + r * ldy, m0, y0[r]);
        _mm512_mask_storeu_ps(Y + r * ldy + 16, m1, y1[r]);
        if (z) {
            float s = _mm512_reduce_add_ps(dz[r]);
            for (int i = tail; i < F; ++i) s += A[r * lda + i] * z[i];
            den[r] = s;
        }
    }
}

// Y [L, D] (rows ldy) = A S: A [L, F] rows lda, S [F, D] rows lds; and, if z [F] is not null, den [L] = A z.
// Tiles of 8 rows x 32 columns (16 accumulators, and 8 for den: 24 of the 32 registers).
inline void project(const float* A, long lda, long L, int F, const float* S, long lds, int D, const float* z,
                    float* Y, long ldy, float* den) {
    for (int d0 = 0; d0 < D; d0 += 32) {
        const int nd = std::min(32, D - d0);
        const float* zd = d0 == 0 ? z : nullptr;
        long t = 0;
        for (; t + 8 <= L; t += 8)
            project_tile<8>(A + t * lda, lda, F, S + d0, lds, nd, zd, Y + t * ldy + d0, ldy, zd ? den + t : nullptr);
        for (; t < L; ++t)
            project_tile<1>(A + t * lda, lda, F, S + d0, lds, nd, zd, Y + t * ldy + d0, ldy, zd ? den + t : nullptr);
    }
}

}  // namespace kz::tiles

#undef KZ_UNROLL
#else
#define KZ_HAVE_TILES 0
#endif
