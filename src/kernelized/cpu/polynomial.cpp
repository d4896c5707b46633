// Implicit polynomial attention for one (batch, head) sequence on the CPU, forward and backward, flash style:
// A_ij = sum_p c_p (scale q_i . k_j)^p (ReBased: c_2 = 1; Based: 1 + s + s^2/2), o_i = sum_j A_ij v_j / (sum_j A_ij
// + eps). The same function as kernelized/ops/polynomial.py's torch ops (the reference), but the T x T scores never
// leave the cache: queries go in blocks of QB rows, and each block's scores [QB, keys] are made by one gemm, turned
// into A by a fused pass (polynomial, causal mask, key padding, row sums), and used by the next gemm right away.
// Causal blocks stop at their last query's key. Backward recomputes the block's scores instead of keeping T x T.
//
// Rows are strided (q, k rows of d, v and o rows of Dv, with leading dimensions); keep [L] (1 = key, 0 = padding)
// or null; coef[0..4] the polynomial's coefficients (degree <= 4).

#include "gemm.h"

namespace {

using kz::Heads;
using kz::RowMajor;

constexpr int QB = 64;  // queries per block: a block's scores (QB x L floats) stay in L2 up to L ~ 4k

template <typename T>
struct Poly {
    T c[5];
    T value(T s) const { return (((c[4] * s + c[3]) * s + c[2]) * s + c[1]) * s + c[0]; }
    T slope(T s) const { return ((4 * c[4] * s + 3 * c[3]) * s + 2 * c[2]) * s + c[1]; }
};

// Scores of queries [i0, i0 + rows) against keys [0, n) into S [rows, n] (ld n): scale q k^T, then, if A is not
// null, A = poly(S) with the causal mask and key padding applied (S keeps the raw scores for the backward).
template <typename T>
void block_scores(const RowMajor<T>& mm, const T* q, long ldq, const T* k, long ldk, const T* keep, long i0,
                  int rows, int n, int d, int causal, T scale, const Poly<T>& poly, T* S, T* A) {
    mm(false, true, rows, n, d, scale, q + i0 * ldq, ldq, k, ldk, 0, S, n);
    if (!A) return;
    for (int r = 0; r < rows; ++r) {
        const T* s = S + static_cast<long>(r) * n;
        T* a = A + static_cast<long>(r) * n;
        const int visible = causal ? static_cast<int>(i0 + r + 1) : n;
        for (int j = 0; j < visible; ++j) a[j] = poly.value(s[j]) * (keep ? keep[j] : T(1));
        std::fill(a + visible, a + n, T(0));
    }
}

template <typename T>
void forward(kz::Gemm<T> gemm, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv, const T* keep,
             T* o, long ldo, T* norm, long L, int d, int Dv, int causal, const T* coef, T scale, int normalize,
             T eps) {
    const RowMajor<T> mm{gemm};
    const Poly<T> poly{{coef[0], coef[1], coef[2], coef[3], coef[4]}};
    std::vector<T> S(static_cast<size_t>(QB) * L), A(static_cast<size_t>(QB) * L);
    for (long i0 = 0; i0 < L; i0 += QB) {
        const int rows = static_cast<int>(std::min<long>(QB, L - i0));
        const int n = causal ? static_cast<int>(i0 + rows) : static_cast<int>(L);  // keys this block can see
        block_scores(mm, q, ldq, k, ldk, keep, i0, rows, n, d, causal, scale, poly, S.data(), A.data());
        mm(false, false, rows, Dv, n, 1, A.data(), n, v, ldv, 0, o + i0 * ldo, ldo);  // numerator
        if (!normalize) continue;
        for (int r = 0; r < rows; ++r) {
            const T* a = A.data() + static_cast<long>(r) * n;
            T den = 0;
#pragma omp simd reduction(+ : den)
            for (int j = 0; j < n; ++j) den += a[j];
            den += eps;
            T* orow = o + (i0 + r) * ldo;
            for (int c = 0; c < Dv; ++c) orow[c] /= den;
            if (norm) norm[i0 + r] = den;
        }
    }
}

// Gradients: do rows (lddo), o the forward's output (read if normalize), norm its normaliser + eps. Writes dq, dk,
// dv rows (zeroed here first: dk and dv gather over query blocks). Per block, with P = dL/dA = dnum v^T + dden:
//   dv += A^T dnum,   dS = P * poly'(S) (masked),   dq = scale dS k,   dk += scale dS^T q.
template <typename T>
void backward(kz::Gemm<T> gemm, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv, const T* keep,
              const T* d_o, long lddo, const T* o, long ldo, const T* norm, T* dq, long lddq, T* dk, long lddk,
              T* dv, long lddv, long L, int d, int Dv, int causal, const T* coef, T scale, int normalize) {
    const RowMajor<T> mm{gemm};
    const Poly<T> poly{{coef[0], coef[1], coef[2], coef[3], coef[4]}};
    std::vector<T> S(static_cast<size_t>(QB) * L), A(static_cast<size_t>(QB) * L), P(static_cast<size_t>(QB) * L);
    std::vector<T> dnum(static_cast<size_t>(QB) * Dv), dden(QB);
    for (long t = 0; t < L; ++t) {
        std::fill(dk + t * lddk, dk + t * lddk + d, T(0));
        std::fill(dv + t * lddv, dv + t * lddv + Dv, T(0));
    }
    for (long i0 = 0; i0 < L; i0 += QB) {
        const int rows = static_cast<int>(std::min<long>(QB, L - i0));
        const int n = causal ? static_cast<int>(i0 + rows) : static_cast<int>(L);
        block_scores(mm, q, ldq, k, ldk, keep, i0, rows, n, d, causal, scale, poly, S.data(), A.data());
        for (int r = 0; r < rows; ++r) {  // the gradient of [numerator, normaliser]
            const T den = normalize ? norm[i0 + r] : T(1);
            dden[r] = kz::output_gradient(d_o + (i0 + r) * lddo, o + (i0 + r) * ldo, den, Dv, normalize,
                                          dnum.data() + static_cast<long>(r) * Dv);
        }
        mm(true, false, n, Dv, rows, 1, A.data(), n, dnum.data(), Dv, 1, dv, lddv);  // dv += A^T dnum
        mm(false, true, rows, n, Dv, 1, dnum.data(), Dv, v, ldv, 0, P.data(), n);     // P = dnum v^T
        for (int r = 0; r < rows; ++r) {  // dS = (P + dden) * poly'(S), masked like A
            const T* s = S.data() + static_cast<long>(r) * n;
            T* p = P.data() + static_cast<long>(r) * n;
            const int visible = causal ? static_cast<int>(i0 + r + 1) : n;
            for (int j = 0; j < visible; ++j) p[j] = (p[j] + dden[r]) * poly.slope(s[j]) * (keep ? keep[j] : T(1));
            std::fill(p + visible, p + n, T(0));
        }
        mm(false, false, rows, d, n, scale, P.data(), n, k, ldk, 0, dq + i0 * lddq, lddq);  // dq = scale dS k
        mm(true, false, n, d, rows, scale, P.data(), n, q + i0 * ldq, ldq, 1, dk, lddk);    // dk += scale dS^T q
    }
}

// Every (batch, head) sequence i = b H + h in one call: a Python loop of one call per sequence cost more than the
// kernel itself at the MQAR demo's shape (192 sequences of 64 tokens). The sequences are OpenMP work items on the
// calling thread's team (torch's: the library links the libgomp torch loaded).
template <typename T>
void forward_pairs(kz::Gemm<T> gemm, Heads<const T> q, Heads<const T> k, Heads<const T> v, const T* keep, Heads<T> o,
                   T* norm, long B, long H, long L, int d, int Dv, int causal, const T* coef, T scale, int normalize,
                   T eps) {
    kz::parallel_pairs(B, H, [&](long b, long h, long i) {
        forward<T>(gemm, q.at(b, h), q.ld, k.at(b, h), k.ld, v.at(b, h), v.ld, keep ? keep + b * L : nullptr,
                   o.at(b, h), o.ld, norm ? norm + i * L : nullptr, L, d, Dv, causal, coef, scale, normalize, eps);
    });
}

template <typename T>
void backward_pairs(kz::Gemm<T> gemm, Heads<const T> q, Heads<const T> k, Heads<const T> v, const T* keep,
                    Heads<const T> d_o, Heads<const T> o, const T* norm, Heads<T> dq, Heads<T> dk, Heads<T> dv, long B,
                    long H, long L, int d, int Dv, int causal, const T* coef, T scale, int normalize) {
    kz::parallel_pairs(B, H, [&](long b, long h, long i) {
        backward<T>(gemm, q.at(b, h), q.ld, k.at(b, h), k.ld, v.at(b, h), v.ld, keep ? keep + b * L : nullptr,
                    d_o.at(b, h), d_o.ld, o.at(b, h), o.ld, norm ? norm + i * L : nullptr, dq.at(b, h), dq.ld,
                    dk.at(b, h), dk.ld, dv.at(b, h), dv.ld, L, d, Dv, causal, coef, scale, normalize);
    });
}

}  // namespace

#define KZ_EXPORT(T, suffix)                                                                                     \
    extern "C" void polynomial_forward_##suffix(void* gemm, KZ_HEADS(const T, q), KZ_HEADS(const T, k),          \
                                                KZ_HEADS(const T, v), const T* keep, KZ_HEADS(T, o), T* norm,    \
                                                long B, long H, long L, int d, int Dv, int causal,               \
                                                const T* coef, double scale, int normalize, double eps) {        \
        forward_pairs<T>(reinterpret_cast<kz::Gemm<T>>(gemm), KZ_AT(const T, q), KZ_AT(const T, k),              \
                         KZ_AT(const T, v), keep, KZ_AT(T, o), norm, B, H, L, d, Dv, causal, coef,               \
                         static_cast<T>(scale), normalize, static_cast<T>(eps));                                 \
    }                                                                                                            \
    extern "C" void polynomial_backward_##suffix(                                                                \
        void* gemm, KZ_HEADS(const T, q), KZ_HEADS(const T, k), KZ_HEADS(const T, v), const T* keep,             \
        KZ_HEADS(const T, d_o), KZ_HEADS(const T, o), const T* norm, KZ_HEADS(T, dq), KZ_HEADS(T, dk),           \
        KZ_HEADS(T, dv), long B, long H, long L, int d, int Dv, int causal, const T* coef, double scale,          \
        int normalize) {                                                                                         \
        backward_pairs<T>(reinterpret_cast<kz::Gemm<T>>(gemm), KZ_AT(const T, q), KZ_AT(const T, k),             \
                          KZ_AT(const T, v), keep, KZ_AT(const T, d_o), KZ_AT(const T, o), norm, KZ_AT(T, dq),   \
                          KZ_AT(T, dk), KZ_AT(T, dv), B, H, L, d, Dv, causal, coef, static_cast<T>(scale),       \
                          normalize);                                                                            \
    }

KZ_EXPORT(float, f32)
KZ_EXPORT(double, f64)
