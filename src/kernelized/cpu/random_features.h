// The backward of random features, a range of rows at a time, from the features alone (no cos/sin/exp again):
// shared by random_features.cpp (the features' own backward) and bidirectional.cpp (fused into the op's backward,
// tile by tile, so that the features' gradients never reach memory). Header-only; kernelized/cpu/__init__.py
// hashes it with the sources.

#pragma once

#include <algorithm>
#include <vector>

#include "gemm.h"

namespace kz::rf {

using kz::RowMajor;

// rows per tile: u [tile, M] stays in L2 (128 KB at M = 256 in float32); more rows for few frequencies, so that each
// gemm has work enough (512 rows at M = 32 took 15 % less time than 128; 128 rows at M = 256 15 % less than 512)
inline long tile_rows(int M) { return std::max(128L, 16384L / M); }

// From the features alone: d(a cos u)/du = -(a sin u), d(a sin u)/du = a cos u. Writes dx [N, d] (lddx); adds
// du^T x into dW [M, d] and sum over rows of (a cos u g_cos + a sin u g_sin) into amp_sum [M] (that over a is
// d_amp; the caller divides).
template <typename T>
void rks_backward(kz::Gemm<T> gemm, const T* x, long ldx, long N, int d, const T* W, int M, const T* out, long ldo,
                  const T* g, long ldg, T* dx, long lddx, T* dW, T* amp_sum) {
    const RowMajor<T> mm{gemm};
    const long TILE = tile_rows(M);
    std::vector<T> dU(static_cast<size_t>(TILE) * M);
    for (long n0 = 0; n0 < N; n0 += TILE) {
        const int rows = static_cast<int>(std::min(TILE, N - n0));
        for (int i = 0; i < rows; ++i) {
            const T *o = out + (n0 + i) * ldo, *gr = g + (n0 + i) * ldg;
            T* du = dU.data() + static_cast<long>(i) * M;
#pragma omp simd
            for (int m = 0; m < M; ++m) {
                du[m] = o[m] * gr[M + m] - o[M + m] * gr[m];
                amp_sum[m] += o[m] * gr[m] + o[M + m] * gr[M + m];
            }
        }
        mm(false, false, rows, d, M, 1, dU.data(), M, W, d, 0, dx + n0 * lddx, lddx);  // dx = du W
        mm(true, false, M, d, rows, 1, dU.data(), M, x + n0 * ldx, ldx, 1, dW, d);     // dW += du^T x
    }
}

// From the features alone: each log-feature's gradient is g * out (the shift is held constant, as detached). Writes
// dx [N, d] = du W - 2 c (sum_f g_f out_f) x; adds du^T x into dW [M, d] and each frequency's log-feature gradients
// (both of the pair) into log_amp_sum [M] (= d log a).
template <typename T>
void prf_backward(kz::Gemm<T> gemm, const T* x, long ldx, long N, int d, const T* W, int M, const T* out, long ldo,
                  const T* g, long ldg, T c, int hyperbolic, T* dx, long lddx, T* dW, T* log_amp_sum) {
    const RowMajor<T> mm{gemm};
    const long TILE = tile_rows(M);
    std::vector<T> dU(static_cast<size_t>(TILE) * M), total(TILE);
    for (long n0 = 0; n0 < N; n0 += TILE) {
        const int rows = static_cast<int>(std::min(TILE, N - n0));
        for (int i = 0; i < rows; ++i) {
            const T *o = out + (n0 + i) * ldo, *gr = g + (n0 + i) * ldg;
            T* du = dU.data() + static_cast<long>(i) * M;
            T sum = 0;
            if (hyperbolic) {
#pragma omp simd reduction(+ : sum)
                for (int m = 0; m < M; ++m) {
                    const T plus = gr[m] * o[m], minus = gr[M + m] * o[M + m];
                    du[m] = plus - minus;
                    log_amp_sum[m] += plus + minus;
                    sum += plus + minus;
                }
            } else {
#pragma omp simd reduction(+ : sum)
                for (int m = 0; m < M; ++m) {
                    const T ge = gr[m] * o[m];
                    du[m] = ge;
                    log_amp_sum[m] += ge;
                    sum += ge;
                }
            }
            total[i] = sum;
        }
        T* dxt = dx + n0 * lddx;
        mm(false, false, rows, d, M, 1, dU.data(), M, W, d, 0, dxt, lddx);  // dx = du W
        for (int i = 0; i < rows; ++i) {                                     // - 2 c sum x: through |x|^2
            const T w = -2 * c * total[i], *xr = x + (n0 + i) * ldx;
            T* dr = dxt + i * lddx;
#pragma omp simd
            for (int j = 0; j < d; ++j) dr[j] += w * xr[j];
        }
        mm(true, false, M, d, rows, 1, dU.data(), M, x + n0 * ldx, ldx, 1, dW, d);  // dW += du^T x
    }
}

}  // namespace kz::rf
