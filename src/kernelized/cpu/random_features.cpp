// Random features of rows of x, formed a tile of rows at a time on the CPU: the projection u = x W^T (one gemm into a
// [rows, M] tile that stays in cache), then RKS's [a cos u, a sin u (, s)] or PRF's exp(u - c|x|^2 + log a - shift)
// (and the hyperbolic pair exp(-u - c|x|^2 + log a - shift)) written straight into the feature rows. Backward reads
// each row's features and their gradient once, forms du in the tile, writes dx = du W (one gemm) and adds du^T x to
// dW (one gemm) and the per-frequency sums to d_amp. The torch statement (kernelized/kernels/feature_ops.py's
// reference_*) writes u, cos u, sin u and the products as tensors of their own, and reads them again backward.
//
// The per-head functions take one head's rows x [N, d] (leading dimension ldx), its frequencies W [M, d] and
// per-frequency a [M] (RKS) or log a [M] (PRF); feature rows with leading dimension ldo (the [N, H, F] output of all
// heads). The exported calls take every head (strided tensors as (pointer, head stride, row stride)) and split each
// head's rows into `chunks` ranges, run as OpenMP work items on torch's own thread team (the library links the
// libgomp torch has loaded): no threads of our own that would wait on torch's spinning ones.

#include <algorithm>
#include <limits>
#include <vector>

#include "gemm.h"
#include "random_features.h"
#include "vmath.h"

namespace {

using kz::RowMajor;
using kz::rf::prf_backward;
using kz::rf::rks_backward;
using kz::rf::tile_rows;

inline void sincos_(float x, float& s, float& c) { kz::sincos_f32(x, s, c); }
inline void sincos_(double x, double& s, double& c) { s = std::sin(x), c = std::cos(x); }
inline float exp_(float x) { return kz::exp_f32(x); }
inline double exp_(double x) { return std::exp(x); }

// row(n, u) for every row n of x, with u = x_n W^T [M]: a gemm per tile of rows into a scratch tile.
template <typename T, typename Row>
void projected_rows(kz::Gemm<T> gemm, const T* x, long ldx, long N, int d, const T* W, int M, Row row) {
    const RowMajor<T> mm{gemm};
    const long TILE = tile_rows(M);
    std::vector<T> U(static_cast<size_t>(TILE) * M);
    for (long n0 = 0; n0 < N; n0 += TILE) {
        const int rows = static_cast<int>(std::min(TILE, N - n0));
        mm(false, true, rows, M, d, 1, x + n0 * ldx, ldx, W, d, 0, U.data(), M);  // u = x W^T
        for (int i = 0; i < rows; ++i) row(n0 + i, U.data() + static_cast<long>(i) * M);
    }
}

// out rows: [a cos u, a sin u] and, if smooth, the constant column s after them.
template <typename T>
void rks_forward(kz::Gemm<T> gemm, const T* x, long ldx, long N, int d, const T* W, int M, const T* amp, int smooth,
                 T s, T* out, long ldo) {
    projected_rows(gemm, x, ldx, N, d, W, M, [&](long n, const T* u) {
        T* o = out + n * ldo;
#pragma omp simd
        for (int m = 0; m < M; ++m) {
            T sn, cs;
            sincos_(u[m], sn, cs);
            o[m] = amp[m] * cs;
            o[M + m] = amp[m] * sn;
        }
        if (smooth) o[2 * M] = s;
    });
}

// out rows: exp(l) with l = [u, -u if hyperbolic] - c |x|^2 + log a - shift, where shift is the constant `shift`
// (shift_mode 1: the keys' stabiliser), the row's own largest l (2: the queries'), or 0 (0). Written as
// exp(+-u + log a - s) with one row constant s, so each row is one pass (two with the largest l: max, then exp).
template <typename T>
void prf_forward(kz::Gemm<T> gemm, const T* x, long ldx, long N, int d, const T* W, int M, const T* log_amp, T c,
                 int hyperbolic, int shift_mode, T shift, T* out, long ldo) {
    projected_rows(gemm, x, ldx, N, d, W, M, [&](long n, const T* u) {
        const T* xr = x + n * ldx;
        T* o = out + n * ldo;
        T s;
        if (shift_mode == 2) {  // the largest +-u + log a: c |x|^2 cancels
            s = -std::numeric_limits<T>::infinity();
            if (hyperbolic) {  // two loops: one with the test inside was left scalar (the call took 2x as long)
#pragma omp simd reduction(max : s)
                for (int m = 0; m < M; ++m) {
                    const T l = log_amp[m] + (u[m] < 0 ? -u[m] : u[m]);
                    s = l > s ? l : s;
                }
            } else {
#pragma omp simd reduction(max : s)
                for (int m = 0; m < M; ++m) {
                    const T l = log_amp[m] + u[m];
                    s = l > s ? l : s;
                }
            }
        } else {
            T sq = 0;
#pragma omp simd reduction(+ : sq)
            for (int j = 0; j < d; ++j) sq += xr[j] * xr[j];
            s = c * sq + (shift_mode == 1 ? shift : T(0));
        }
#pragma omp simd
        for (int m = 0; m < M; ++m) o[m] = exp_(u[m] + log_amp[m] - s);
        if (hyperbolic) {
#pragma omp simd
            for (int m = 0; m < M; ++m) o[M + m] = exp_(log_amp[m] - u[m] - s);
        }
    });
}

// Work item i of H * chunks: head i / chunks, rows [n0, n1) of its N (ranges as even as the chunk count allows).
struct Item {
    long h, n0, n1;
    Item(long i, long chunks, long N) : h(i / chunks) {
        const long c = i % chunks, size = (N + chunks - 1) / chunks;
        n0 = std::min(N, c * size);
        n1 = std::min(N, n0 + size);
    }
};

}  // namespace

// Strided tensors: (pointer, head stride, row stride) in elements; W [H, M, d] and a / log a [H, M] contiguous;
// backward adds item i's du^T x into dW + i M d and its per-frequency sums into sums + i M (the caller adds the
// items of each head; shift [H] or null).
#define KZ_EXPORT_RANDOM_FEATURES(T, suffix)                                                                       \
    extern "C" void rks_forward_##suffix(void* gemm, const T* x, long xh, long ldx, long N, int d, const T* W,    \
                                         int M, const T* amp, int smooth, double s, T* out, long oh, long ldo,    \
                                         int H, int chunks) {                                                     \
        const auto mm = reinterpret_cast<kz::Gemm<T>>(gemm);                                                      \
        kz::parallel_items(0, static_cast<long>(H) * chunks, [&](long i) {                                             \
            const Item it(i, chunks, N);                                                                          \
            rks_forward<T>(mm, x + it.h * xh + it.n0 * ldx, ldx, it.n1 - it.n0, d, W + it.h * M * d, M,          \
                           amp + it.h * M, smooth, static_cast<T>(s), out + it.h * oh + it.n0 * ldo, ldo);        \
        });                                                                                                       \
    }                                                                                                             \
    extern "C" void rks_backward_##suffix(void* gemm, const T* x, long xh, long ldx, long N, int d, const T* W,   \
                                          int M, const T* out, long oh, long ldo, const T* g, long gh, long ldg,  \
                                          T* dx, long dxh, long lddx, T* dW, T* sums, int H, int chunks) {        \
        const auto mm = reinterpret_cast<kz::Gemm<T>>(gemm);                                                      \
        kz::parallel_items(0, static_cast<long>(H) * chunks, [&](long i) {                                             \
            const Item it(i, chunks, N);                                                                          \
            rks_backward<T>(mm, x + it.h * xh + it.n0 * ldx, ldx, it.n1 - it.n0, d, W + it.h * M * d, M,         \
                            out + it.h * oh + it.n0 * ldo, ldo, g + it.h * gh + it.n0 * ldg, ldg,                 \
                            dx + it.h * dxh + it.n0 * lddx, lddx, dW + i * M * d, sums + i * M);                  \
        });                                                                                                       \
    }                                                                                                             \
    extern "C" void prf_forward_##suffix(void* gemm, const T* x, long xh, long ldx, long N, int d, const T* W,    \
                                         int M, const T* log_amp, double c, int hyperbolic, int shift_mode,       \
                                         const double* shift, T* out, long oh, long ldo, int H, int chunks) {     \
        const auto mm = reinterpret_cast<kz::Gemm<T>>(gemm);                                                      \
        kz::parallel_items(0, static_cast<long>(H) * chunks, [&](long i) {                                             \
            const Item it(i, chunks, N);                                                                          \
            prf_forward<T>(mm, x + it.h * xh + it.n0 * ldx, ldx, it.n1 - it.n0, d, W + it.h * M * d, M,          \
                           log_amp + it.h * M, static_cast<T>(c), hyperbolic, shift_mode,                         \
                           static_cast<T>(shift ? shift[it.h] : 0.0), out + it.h * oh + it.n0 * ldo, ldo);        \
        });                                                                                                       \
    }                                                                                                             \
    extern "C" void prf_backward_##suffix(void* gemm, const T* x, long xh, long ldx, long N, int d, const T* W,   \
                                          int M, const T* out, long oh, long ldo, const T* g, long gh, long ldg,  \
                                          double c, int hyperbolic, T* dx, long dxh, long lddx, T* dW, T* sums,   \
                                          int H, int chunks) {                                                    \
        const auto mm = reinterpret_cast<kz::Gemm<T>>(gemm);                                                      \
        kz::parallel_items(0, static_cast<long>(H) * chunks, [&](long i) {                                             \
            const Item it(i, chunks, N);                                                                          \
            prf_backward<T>(mm, x + it.h * xh + it.n0 * ldx, ldx, it.n1 - it.n0, d, W + it.h * M * d, M,         \
                            out + it.h * oh + it.n0 * ldo, ldo, g + it.h * gh + it.n0 * ldg, ldg,                 \
                            static_cast<T>(c), hyperbolic, dx + it.h * dxh + it.n0 * lddx, lddx, dW + i * M * d,  \
                            sums + i * M);                                                                        \
        });                                                                                                       \
    }

KZ_EXPORT_RANDOM_FEATURES(float, f32)
KZ_EXPORT_RANDOM_FEATURES(double, f64)
