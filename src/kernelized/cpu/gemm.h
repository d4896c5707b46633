// What the kernels share: the row-major gemm on torch's BLAS pointer, strided [B, L, H, X] tensors, the parallel
// loops over work items and (batch, head) sequences, two copies, the output's gradient. Header-only, included by
// every source of the library (kernelized/cpu/__init__.py hashes it with them).

#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

namespace kz {

template <typename T>
using Gemm = void (*)(const char*, const char*, const int*, const int*, const int*, const T*, const T*,
                      const int*, const T*, const int*, const T*, T*, const int*);

// c[m, n] = alpha * op(a)[m, k] @ op(b)[k, n] + beta * c, all row-major with leading dimensions lda, ldb, ldc.
template <typename T>
struct RowMajor {
    Gemm<T> gemm;
    void operator()(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, long lda, const T* b, long ldb,
                    T beta, T* c, long ldc) const {
        const char ca = ta ? 'T' : 'N', cb = tb ? 'T' : 'N';
        const int la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
        gemm(&cb, &ca, &n, &m, &k, &alpha, b, &lb, a, &la, &beta, c, &lc);
    }
};

// Strided [B, L, H, X] tensors for the batched entry points: element offsets of batch b and head h, row stride ld.
template <typename T>
struct Heads {
    T* base;
    long sb, sh, ld;
    T* at(long b, long h) const { return base + b * sb + h * sh; }
};

// Entry points take each strided tensor as (pointer, batch stride, head stride, row stride), in elements.
#define KZ_HEADS(T, x) T *x, long x##_sb, long x##_sh, long x##_ld
#define KZ_AT(T, x) kz::Heads<T>{x, x##_sb, x##_sh, x##_ld}

// fn(i) for every i in [i0, i1), one item per thread at a time over the calling thread's OpenMP team (torch's: the
// library links the libgomp torch has loaded); BLAS inside a parallel region runs single-threaded.
template <typename Fn>
void parallel_items(long i0, long i1, Fn fn) {
#pragma omp parallel for schedule(dynamic, 1)
    for (long i = i0; i < i1; ++i) fn(i);
}

// fn(b, h, i) for every (batch, head) sequence i = b H + h of B x H, as parallel_items: the batched entry points'
// one loop.
template <typename Fn>
void parallel_pairs(long B, long H, Fn fn) {
    parallel_items(0, B * H, [&](long i) { fn(i / H, i % H, i); });
}

template <typename T>
void transpose(const T* a, int rows, int cols, T* out) {  // out [cols, rows] = a [rows, cols]^T
    for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols; ++j) out[static_cast<long>(j) * rows + i] = a[static_cast<long>(i) * cols + j];
}

template <typename T>
void copy_rows(const T* a, long lda, int rows, int cols, T* out) {  // out [rows, cols] contiguous
    for (int i = 0; i < rows; ++i) std::memcpy(out + static_cast<long>(i) * cols, a + i * lda, sizeof(T) * cols);
}

// The gradient reaching [numerator, normaliser] of one output row: o = num / den gives dnum = do / den (written to
// dnum[0..Dv)) and dden = -(do . o) / den (returned); without normalisation (normalize 0) dnum = do and dden = 0.
template <typename T>
T output_gradient(const T* d_o, const T* o, T den, int Dv, int normalize, T* dnum) {
    if (!normalize) {
        std::memcpy(dnum, d_o, sizeof(T) * Dv);
        return T(0);
    }
    const T inv = T(1) / den;
    T dot = 0;
#pragma omp simd reduction(+ : dot)  // vectorised sums (-fopenmp-simd; strict IEEE order would forbid it)
    for (int d = 0; d < Dv; ++d) dot += d_o[d] * o[d];
    for (int d = 0; d < Dv; ++d) dnum[d] = d_o[d] * inv;
    return -dot * inv;
}

}  // namespace kz
