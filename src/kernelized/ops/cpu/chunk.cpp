// Causal chunked linear attention for one (batch, head) sequence on the CPU: forward and backward.
//
// The same algorithm as kernelized/ops/linear/chunk.py (which stays the reference), in one pass per sequence:
// the state S = sum k [v, 1]^T ([F, Dv+1]: the last column is the normaliser's z) is updated in place chunk
// by chunk and stays in cache, every product is one BLAS gemm on the caller's strided rows, and the masks,
// normalisation and rank-one normaliser terms are fused loops. No torch headers: plain C++ built in about a
// second, called through ctypes (which drops the GIL, so Python threads run sequences in parallel).
//
// Layout: all matrices are row-major; a row-major product is a column-major BLAS call with the operands
// swapped. BLAS is the Fortran sgemm_/dgemm_ that torch's own library exports, passed in as a pointer.

#include <algorithm>
#include <cstring>
#include <vector>

namespace {

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

template <typename T>
void zero_upper(T* a, int C) {  // a [C, C]: drop future positions (j > i)
    for (int i = 0; i < C; ++i) std::memset(a + i * C + i + 1, 0, sizeof(T) * (C - i - 1));
}

// q, k rows of F features (leading dims ldq, ldk), v rows of Dv (ldv), L = N * C tokens. S0 [F, Dv+1] or null.
// Writes o rows (ldo): numerator / (normaliser + eps) if normalize, else the numerator; S_final [F, Dv+1].
// If states is not null (training) also keeps the state before each chunk states [N, F, Dv+1], the masked
// in-chunk scores [N, C, C] and, if normalize, the normaliser plus eps norm [L].
template <typename T>
void forward(Gemm<T> gemm, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv, const T* S0, T* o,
             long ldo, T* S_final, T* states, T* scores, T* norm, long L, int F, int Dv, int C, int normalize,
             T eps) {
    const RowMajor<T> mm{gemm};
    const int D1 = Dv + 1;
    const long M = static_cast<long>(F) * D1;
    std::vector<T> S(M), A_(static_cast<size_t>(C) * C), Y(static_cast<size_t>(C) * D1), ksum(F);
    if (S0) std::memcpy(S.data(), S0, sizeof(T) * M);
    for (long n = 0; n < L / C; ++n) {
        const long t0 = n * C;
        const T *qc = q + t0 * ldq, *kc = k + t0 * ldk, *vc = v + t0 * ldv;
        if (states) std::memcpy(states + n * M, S.data(), sizeof(T) * M);
        T* A = scores ? scores + n * C * C : A_.data();
        mm(false, true, C, C, F, 1, qc, ldq, kc, ldk, 0, A, C);  // in-chunk scores q k^T
        zero_upper(A, C);
        mm(false, false, C, D1, F, 1, qc, ldq, S.data(), D1, 0, Y.data(), D1);  // earlier chunks: q S
        mm(false, false, C, Dv, C, 1, A, C, vc, ldv, 1, Y.data(), D1);         // this chunk: A v
        for (int i = 0; i < C; ++i) {                                            // ... and A 1 for the normaliser
            T s = 0;
            for (int j = 0; j <= i; ++j) s += A[i * C + j];
            Y[i * D1 + Dv] += s;
        }
        mm(true, false, F, Dv, C, 1, kc, ldk, vc, ldv, 1, S.data(), D1);  // S += k^T v
        std::fill(ksum.begin(), ksum.end(), T(0));  // z += k^T 1, summed within the chunk first: z is large
        for (int t = 0; t < C; ++t)                 // by now, and 64 adds into it would each round
            for (int f = 0; f < F; ++f) ksum[f] += kc[t * ldk + f];
        for (int f = 0; f < F; ++f) S[f * D1 + Dv] += ksum[f];
        for (int i = 0; i < C; ++i) {
            const T* y = Y.data() + i * D1;
            T* oi = o + (t0 + i) * ldo;
            if (normalize) {
                const T den = y[Dv] + eps, inv = T(1) / den;
                for (int d = 0; d < Dv; ++d) oi[d] = y[d] * inv;
                if (norm) norm[t0 + i] = den;
            } else {
                std::memcpy(oi, y, sizeof(T) * Dv);
            }
        }
    }
    std::memcpy(S_final, S.data(), sizeof(T) * M);
}

// Gradients of forward (run with states): do rows (lddo), o the forward's output rows (ldo; read only when
// normalize), dS_final [F, Dv+1] or null. Writes dq, dk, dv rows (lddq, lddk, lddv) and, if dS0 is not null,
// the initial state's gradient [F, Dv+1]. G is the gradient reaching the state from the chunks after the
// current one; it is accumulated in place, last chunk first.
template <typename T>
void backward(Gemm<T> gemm, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv, const T* d_o,
              long lddo, const T* o, long ldo, const T* states, const T* scores, const T* norm,
              const T* dS_final, T* dq, long lddq, T* dk, long lddk, T* dv, long lddv, T* dS0, long L, int F,
              int Dv, int C, int normalize) {
    const RowMajor<T> mm{gemm};
    const int D1 = Dv + 1;
    const long M = static_cast<long>(F) * D1;
    std::vector<T> G(M, T(0)), dy(static_cast<size_t>(C) * D1), P(static_cast<size_t>(C) * C);
    if (dS_final) std::memcpy(G.data(), dS_final, sizeof(T) * M);
    for (long n = L / C - 1; n >= 0; --n) {
        const long t0 = n * C;
        const T *qc = q + t0 * ldq, *kc = k + t0 * ldk, *vc = v + t0 * ldv;
        const T *before = states + n * M, *A = scores + n * C * C;
        T *dqc = dq + t0 * lddq, *dkc = dk + t0 * lddk, *dvc = dv + t0 * lddv;
        for (int i = 0; i < C; ++i) {  // gradient of [numerator, normaliser]
            const T* g = d_o + (t0 + i) * lddo;
            T* y = dy.data() + i * D1;
            if (normalize) {  // o = num / den: dnum = do / den, dden = -(do . o) / den
                const T* oi = o + (t0 + i) * ldo;
                const T inv = T(1) / norm[t0 + i];
                T dot = 0;
                for (int d = 0; d < Dv; ++d) {
                    dot += g[d] * oi[d];
                    y[d] = g[d] * inv;
                }
                y[Dv] = -dot * inv;
            } else {
                std::memcpy(y, g, sizeof(T) * Dv);
                y[Dv] = 0;
            }
        }
        mm(false, true, C, C, Dv, 1, dy.data(), D1, vc, ldv, 0, P.data(), C);  // dL/dA = dy [v, 1]^T
        for (int i = 0; i < C; ++i)
            for (int j = 0; j <= i; ++j) P[i * C + j] += dy[i * D1 + Dv];
        zero_upper(P.data(), C);
        mm(false, false, C, F, C, 1, P.data(), C, kc, ldk, 0, dqc, lddq);  // dq = P k + dy S_before^T
        mm(false, true, C, F, D1, 1, dy.data(), D1, before, D1, 1, dqc, lddq);
        mm(true, false, C, F, C, 1, P.data(), C, qc, ldq, 0, dkc, lddk);  // dk = P^T q + [v, 1] G^T
        mm(false, true, C, F, Dv, 1, vc, ldv, G.data(), D1, 1, dkc, lddk);
        for (int t = 0; t < C; ++t)
            for (int f = 0; f < F; ++f) dkc[t * lddk + f] += G[f * D1 + Dv];
        mm(true, false, C, Dv, C, 1, A, C, dy.data(), D1, 0, dvc, lddv);  // dv = A^T dnum + k G[:, :Dv]
        mm(false, false, C, Dv, F, 1, kc, ldk, G.data(), D1, 1, dvc, lddv);
        mm(true, false, F, D1, C, 1, qc, ldq, dy.data(), D1, 1, G.data(), D1);  // G += q^T dy
    }
    if (dS0) std::memcpy(dS0, G.data(), sizeof(T) * M);
}

}  // namespace

#define KZ_EXPORT(T, suffix)                                                                                   \
    extern "C" void chunk_forward_##suffix(void* gemm, const T* q, long ldq, const T* k, long ldk, const T* v, \
                                           long ldv, const T* S0, T* o, long ldo, T* S_final, T* states,       \
                                           T* scores, T* norm, long L, int F, int Dv, int C, int normalize,    \
                                           double eps) {                                                       \
        forward<T>(reinterpret_cast<Gemm<T>>(gemm), q, ldq, k, ldk, v, ldv, S0, o, ldo, S_final, states,       \
                   scores, norm, L, F, Dv, C, normalize, static_cast<T>(eps));                                 \
    }                                                                                                          \
    extern "C" void chunk_backward_##suffix(                                                                   \
        void* gemm, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv, const T* d_o, long lddo, \
        const T* o, long ldo, const T* states, const T* scores, const T* norm, const T* dS_final, T* dq,       \
        long lddq, T* dk, long lddk, T* dv, long lddv, T* dS0, long L, int F, int Dv, int C, int normalize) {  \
        backward<T>(reinterpret_cast<Gemm<T>>(gemm), q, ldq, k, ldk, v, ldv, d_o, lddo, o, ldo, states,        \
                    scores, norm, dS_final, dq, lddq, dk, lddk, dv, lddv, dS0, L, F, Dv, C, normalize);        \
    }

KZ_EXPORT(float, f32)
KZ_EXPORT(double, f64)
