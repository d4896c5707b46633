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

#include "gemm.h"

namespace {

using kz::copy_rows;
using kz::Gemm;
using kz::RowMajor;
using kz::transpose;

// The in-chunk products are causal: query row i sees keys j <= i. Each is done as two gemms, rows [0, h) and
// [h, C) with h = C/2, and the first skips keys [h, C), which it cannot see: a quarter of the in-chunk work,
// about a tenth of all of it. The operands are stacked so that what each half needs is contiguous.

// q, k rows of F features (leading dims ldq, ldk), v rows of Dv (ldv), L = N * C tokens. S0 [F, Dv+1] or null.
// Writes o rows (ldo): numerator / (normaliser + eps) if normalize, else the numerator; S_final [F, Dv+1].
// If states is not null (training) also keeps the state before each chunk, transposed, states [N, Dv+1, F],
// the masked in-chunk scores [N, C, C] and, if normalize, the normaliser plus eps norm [L].
//
// The state is kept transposed (ST [Dv+1, F]) right above a copy of the chunk's keys, so that the read of the
// earlier chunks and the in-chunk scores are one product: [Y | A] = q [ST; k]^T.
template <typename T>
void forward(Gemm<T> gemm, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv, const T* S0, T* o,
             long ldo, T* S_final, T* states, T* scores, T* norm, long L, int F, int Dv, int C, int normalize,
             T eps) {
    const RowMajor<T> mm{gemm};
    const int D1 = Dv + 1, W = D1 + C, h = C / 2;
    const long M = static_cast<long>(F) * D1;
    std::vector<T> SK(static_cast<size_t>(W) * F, T(0)), YA(static_cast<size_t>(C) * W), ksum(F);
    T *ST = SK.data(), *K = SK.data() + M, *Y = YA.data(), *A = YA.data() + D1;
    if (S0) transpose(S0, F, D1, ST);
    for (long n = 0; n < L / C; ++n) {
        const long t0 = n * C;
        const T *qc = q + t0 * ldq, *vc = v + t0 * ldv;
        if (states) std::memcpy(states + n * M, ST, sizeof(T) * M);
        copy_rows(k + t0 * ldk, ldk, C, F, K);
        mm(false, true, h, D1 + h, F, 1, qc, ldq, ST, F, 0, Y, W);  // [Y | A] = q [ST; k]^T
        mm(false, true, C - h, W, F, 1, qc + h * ldq, ldq, ST, F, 0, Y + h * W, W);
        for (int i = 0; i < C; ++i) {  // causal mask; A 1 for the normaliser
            T* a = A + static_cast<long>(i) * W;
            std::fill(a + i + 1, a + C, T(0));
            T s = 0;
#pragma omp simd reduction(+ : s)  // vectorised sums (-fopenmp-simd; strict IEEE order would forbid it)
            for (int j = 0; j <= i; ++j) s += a[j];
            Y[static_cast<long>(i) * W + Dv] += s;
            if (scores) std::memcpy(scores + (n * C + i) * C, a, sizeof(T) * C);
        }
        mm(false, false, h, Dv, h, 1, A, W, vc, ldv, 1, Y, W);  // this chunk: Y += A v
        mm(false, false, C - h, Dv, C, 1, A + h * W, W, vc, ldv, 1, Y + h * W, W);
        mm(true, false, Dv, F, C, 1, vc, ldv, K, F, 1, ST, F);  // ST += v^T k
        std::fill(ksum.begin(), ksum.end(), T(0));  // z += k^T 1, summed within the chunk first: z is large
        for (int t = 0; t < C; ++t)                 // by now, and 64 adds into it would each round
            for (int f = 0; f < F; ++f) ksum[f] += K[static_cast<long>(t) * F + f];
        for (int f = 0; f < F; ++f) ST[static_cast<long>(Dv) * F + f] += ksum[f];
        for (int i = 0; i < C; ++i) {
            const T* y = Y + static_cast<long>(i) * W;
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
    transpose(ST, D1, F, S_final);
}

// Gradients of forward (run with states): do rows (lddo), o the forward's output rows (ldo; read only when
// normalize), dS_final [F, Dv+1] or null. Writes dq, dk, dv rows (lddq, lddk, lddv) and, if dS0 is not null,
// the initial state's gradient [F, Dv+1]. GT ([Dv+1, F], transposed like the states) is the gradient reaching
// the state from the chunks after the current one, accumulated in place, last chunk first. As in forward, the
// operands are stacked so that dq and dk are one product each:
//   dq = [dy | P] [ST_before; k],   dk = [P^T | v 1] [q; GT],   with P = dL/dA = dy [v, 1]^T (masked).
template <typename T>
void backward(Gemm<T> gemm, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv, const T* d_o,
              long lddo, const T* o, long ldo, const T* states, const T* scores, const T* norm,
              const T* dS_final, T* dq, long lddq, T* dk, long lddk, T* dv, long lddv, T* dS0, long L, int F,
              int Dv, int C, int normalize) {
    const RowMajor<T> mm{gemm};
    const int D1 = Dv + 1, W = D1 + C, h = C / 2;
    const long M = static_cast<long>(F) * D1;
    std::vector<T> SK(static_cast<size_t>(W) * F), QG(static_cast<size_t>(W) * F, T(0));
    std::vector<T> dyP(static_cast<size_t>(C) * W), PTv(static_cast<size_t>(C) * W);
    T *Sb = SK.data(), *K = SK.data() + M, *Q = QG.data(), *GT = QG.data() + static_cast<long>(C) * F;
    T *dy = dyP.data(), *P = dyP.data() + D1;
    if (dS_final) transpose(dS_final, F, D1, GT);
    for (int i = 0; i < C; ++i) PTv[static_cast<long>(i) * W + C + Dv] = 1;  // the ones column of [v, 1]
    for (long n = L / C - 1; n >= 0; --n) {
        const long t0 = n * C;
        const T *vc = v + t0 * ldv, *A = scores + n * C * C;
        T *dqc = dq + t0 * lddq, *dkc = dk + t0 * lddk, *dvc = dv + t0 * lddv;
        for (int i = 0; i < C; ++i) {  // gradient of [numerator, normaliser]
            T* y = dy + static_cast<long>(i) * W;
            const T den = normalize ? norm[t0 + i] : T(1);
            y[Dv] = kz::output_gradient(d_o + (t0 + i) * lddo, o + (t0 + i) * ldo, den, Dv, normalize, y);
        }
        mm(false, true, h, h, Dv, 1, dy, W, vc, ldv, 0, P, W);  // P = dnum v^T + dden 1^T, masked
        mm(false, true, C - h, C, Dv, 1, dy + h * W, W, vc, ldv, 0, P + h * W, W);
        for (int i = 0; i < C; ++i) {
            T* p = P + static_cast<long>(i) * W;
            for (int j = 0; j <= i; ++j) p[j] += dy[static_cast<long>(i) * W + Dv];
            std::fill(p + i + 1, p + C, T(0));
        }
        std::memcpy(Sb, states + n * M, sizeof(T) * M);
        copy_rows(k + t0 * ldk, ldk, C, F, K);
        mm(false, false, h, F, D1 + h, 1, dy, W, Sb, F, 0, dqc, lddq);  // dq = [dy | P] [ST_before; k]
        mm(false, false, C - h, F, W, 1, dy + h * W, W, Sb, F, 0, dqc + h * lddq, lddq);
        for (int i = 0; i < C; ++i) {  // [P^T | v 1]
            for (int j = 0; j < C; ++j) PTv[static_cast<long>(i) * W + j] = P[static_cast<long>(j) * W + i];
            std::memcpy(PTv.data() + static_cast<long>(i) * W + C, vc + i * ldv, sizeof(T) * Dv);
        }
        copy_rows(q + t0 * ldq, ldq, C, F, Q);
        mm(false, false, h, F, W, 1, PTv.data(), W, Q, F, 0, dkc, lddk);  // dk = [P^T | v 1] [q; GT]
        mm(false, false, C - h, F, W - h, 1, PTv.data() + h * W + h, W, Q + h * F, F, 0, dkc + h * lddk, lddk);
        mm(true, false, h, Dv, C, 1, A, C, dy, W, 0, dvc, lddv);  // dv = A^T dnum + k G[:, :Dv]
        mm(true, false, C - h, Dv, C - h, 1, A + h * C + h, C, dy + h * W, W, 0, dvc + h * lddv, lddv);
        mm(false, true, C, Dv, F, 1, K, F, GT, F, 1, dvc, lddv);
        mm(true, false, D1, F, C, 1, dy, W, Q, F, 1, GT, F);  // GT += dy^T q
    }
    if (dS0) transpose(GT, D1, F, dS0);
}

// A [B, H, ...] or [H, B, ...] array of per-sequence blocks: element offsets of batch b and head h; null base: none.
template <typename T>
struct Blocks {
    T* base;
    long sb, sh;
    T* at(long b, long h) const { return base ? base + b * sb + h * sh : nullptr; }
};

}  // namespace

// Every (batch, head) sequence i = b H + h in one call, as OpenMP work items on the calling thread's team (torch's:
// the library links the libgomp torch loaded). Strided [B, T, H, X] tensors as (pointer, batch stride, head
// stride, row stride); per-sequence blocks (S0, S_final, states, scores, norm, dS_final, dS0) as (pointer, batch
// stride, head stride).
#define KZ_BLOCKS(T, x) T *x, long x##_sb, long x##_sh
#define KZ_BLOCK(T, x) Blocks<T>{x, x##_sb, x##_sh}
#define KZ_PAIRS(body) kz::parallel_pairs(B, H, [&](long b, long h, long) { body; });

#define KZ_EXPORT(T, suffix)                                                                                   \
    extern "C" void chunk_forward_##suffix(void* gemm, KZ_HEADS(const T, q), KZ_HEADS(const T, k),             \
                                           KZ_HEADS(const T, v), KZ_BLOCKS(const T, S0), KZ_HEADS(T, o),       \
                                           KZ_BLOCKS(T, Sf), KZ_BLOCKS(T, st), KZ_BLOCKS(T, sc),               \
                                           KZ_BLOCKS(T, nm), long B, long H, long L, int F, int Dv, int C,     \
                                           int normalize, double eps) {                                        \
        const auto mm = reinterpret_cast<Gemm<T>>(gemm);                                                       \
        const auto Q = KZ_AT(const T, q), K = KZ_AT(const T, k), V = KZ_AT(const T, v);                       \
        const auto O = KZ_AT(T, o);                                                                            \
        const auto s0 = KZ_BLOCK(const T, S0);                                                                 \
        const auto sf = KZ_BLOCK(T, Sf), sts = KZ_BLOCK(T, st), scs = KZ_BLOCK(T, sc), nms = KZ_BLOCK(T, nm);  \
        KZ_PAIRS(forward<T>(mm, Q.at(b, h), Q.ld, K.at(b, h), K.ld, V.at(b, h), V.ld, s0.at(b, h), O.at(b, h), \
                            O.ld, sf.at(b, h), sts.at(b, h), scs.at(b, h), nms.at(b, h), L, F, Dv, C,          \
                            normalize, static_cast<T>(eps)))                                                   \
    }                                                                                                          \
    extern "C" void chunk_backward_##suffix(                                                                   \
        void* gemm, KZ_HEADS(const T, q), KZ_HEADS(const T, k), KZ_HEADS(const T, v), KZ_HEADS(const T, d_o), \
        KZ_HEADS(const T, o), KZ_BLOCKS(const T, st), KZ_BLOCKS(const T, sc), KZ_BLOCKS(const T, nm),          \
        KZ_BLOCKS(const T, dSf), KZ_HEADS(T, dq), KZ_HEADS(T, dk), KZ_HEADS(T, dv), KZ_BLOCKS(T, dS0), long B, \
        long H, long L, int F, int Dv, int C, int normalize) {                                                 \
        const auto mm = reinterpret_cast<Gemm<T>>(gemm);                                                       \
        const auto Q = KZ_AT(const T, q), K = KZ_AT(const T, k), V = KZ_AT(const T, v);                       \
        const auto DO = KZ_AT(const T, d_o), O = KZ_AT(const T, o);                                            \
        const auto sts = KZ_BLOCK(const T, st), scs = KZ_BLOCK(const T, sc), nms = KZ_BLOCK(const T, nm);      \
        const auto dsf = KZ_BLOCK(const T, dSf);                                                               \
        const auto DQ = KZ_AT(T, dq), DK = KZ_AT(T, dk), DV = KZ_AT(T, dv);                                    \
        const auto ds0 = KZ_BLOCK(T, dS0);                                                                     \
        KZ_PAIRS(backward<T>(mm, Q.at(b, h), Q.ld, K.at(b, h), K.ld, V.at(b, h), V.ld, DO.at(b, h), DO.ld,     \
                             O.at(b, h), O.ld, sts.at(b, h), scs.at(b, h), nms.at(b, h), dsf.at(b, h),         \
                             DQ.at(b, h), DQ.ld, DK.at(b, h), DK.ld, DV.at(b, h), DV.ld, ds0.at(b, h), L, F,   \
                             Dv, C, normalize))                                                                \
    }

KZ_EXPORT(float, f32)
KZ_EXPORT(double, f64)
