// Bidirectional (non-causal) linear attention for one (batch, head) sequence on the CPU: forward and backward.
//
// The same products as kernelized/ops/linear/bidirectional.py's reference: the state S = k^T [v, 1] ([F, Dv+1],
// the last column the normaliser's z) and the output [numerator | normaliser] = q S. The numerator's products are
// BLAS gemms Dv wide on the caller's strided rows, so q and k ([B, T, H, F], often hundreds of features) are read in
// place, never permuted or copied. The normaliser's column is kept out of them: a 33rd column made every gemm Dv+1
// wide, which the BLAS kernels (16 floats a vector) run much as 48 (docs/bench/forms/bidirectional_split.txt); its
// sums (z = k^T keep, q z, and their gradients) are vector loops over the rows of a block of T that the gemm has
// just brought into cache. Key padding is fused: padded keys' values and normaliser weights are zero (what zeroing
// their features does), so the features need no masked copy either. Useful work 4 T F (Dv+1) forward, twice that
// backward; everything else is O(T (F + Dv)).

#include "gemm.h"

namespace {

using kz::RowMajor;

// Rows of T per block: a block of q or k rows (block x F) stays in L2 between its gemm and its normaliser loop.
inline long block_rows(int F) { return std::min(1024L, std::max(32L, 131072L / F)); }

// The values the keys carry: keep * v rows ([L, Dv], a copy only where there is padding; else v itself).
template <typename T>
const T* kept_values(const T* v, long ldv, const T* keep, long L, int Dv, std::vector<T>& buffer, long& ld) {
    if (!keep) {
        ld = ldv;
        return v;
    }
    buffer.resize(static_cast<size_t>(L) * Dv);
    for (long t = 0; t < L; ++t)
        for (int d = 0; d < Dv; ++d) buffer[t * Dv + d] = keep[t] * v[t * ldv + d];
    ld = Dv;
    return buffer.data();
}

// acc[f] += w * row[f]
template <typename T>
inline void add_row(T* acc, T w, const T* row, int F) {
#pragma omp simd
    for (int f = 0; f < F; ++f) acc[f] += w * row[f];
}

template <typename T>
inline T dot(const T* a, const T* b, int F) {
    T sum = 0;
#pragma omp simd reduction(+ : sum)  // vectorised sums (-fopenmp-simd; strict IEEE order would forbid it)
    for (int f = 0; f < F; ++f) sum += a[f] * b[f];
    return sum;
}

// q, k rows of F features (leading dims ldq, ldk), v rows of Dv (ldv), keep [L] (1 = key, 0 = padding) or null,
// S0 [F, Dv+1] or null. Writes S [F, Dv+1] (S0 + k^T [v, 1], kept for backward), o rows (ldo): numerator /
// (normaliser + eps) if normalize, else the numerator; and, if norm is not null, the normaliser + eps [L].
template <typename T>
void forward(kz::Gemm<T> gemm, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv, const T* keep,
             const T* S0, T* o, long ldo, T* S, T* norm, long L, int F, int Dv, int normalize, T eps) {
    const RowMajor<T> mm{gemm};
    const int D1 = Dv + 1;
    const long TB = block_rows(F);
    std::vector<T> buffer, z(F, T(0)), Y(static_cast<size_t>(std::min(TB, L)) * Dv);
    long ldV;
    const T* V = kept_values(v, ldv, keep, L, Dv, buffer, ldV);
    if (S0) std::memcpy(S, S0, sizeof(T) * F * D1);
    for (long t0 = 0; t0 < L; t0 += TB) {  // S[:, :Dv] += k^T (keep v); z += k^T keep
        const int n = static_cast<int>(std::min(TB, L - t0));
        mm(true, false, F, Dv, n, 1, k + t0 * ldk, ldk, V + t0 * ldV, ldV, S0 || t0 ? 1 : 0, S, D1);
        for (long t = t0; t < t0 + n; ++t)
            if (!keep || keep[t] != T(0)) add_row(z.data(), keep ? keep[t] : T(1), k + t * ldk, F);
    }
    for (int f = 0; f < F; ++f) S[static_cast<long>(f) * D1 + Dv] = (S0 ? S0[static_cast<long>(f) * D1 + Dv] : 0) + z[f];
    for (int f = 0; f < F; ++f) z[f] = S[static_cast<long>(f) * D1 + Dv];
    for (long t0 = 0; t0 < L; t0 += TB) {  // numerator = q S[:, :Dv]; normaliser = q z
        const int n = static_cast<int>(std::min(TB, L - t0));
        mm(false, false, n, Dv, F, 1, q + t0 * ldq, ldq, S, D1, 0, Y.data(), Dv);
        for (int i = 0; i < n; ++i) {
            const long t = t0 + i;
            const T* y = Y.data() + static_cast<long>(i) * Dv;
            T* ot = o + t * ldo;
            if (normalize) {
                const T den = dot(q + t * ldq, z.data(), F) + eps, inv = T(1) / den;
                for (int d = 0; d < Dv; ++d) ot[d] = y[d] * inv;
                if (norm) norm[t] = den;
            } else {
                std::memcpy(ot, y, sizeof(T) * Dv);
            }
        }
    }
}

// Gradients of forward: do rows (lddo), o the forward's output rows (ldo; read when normalize), S and norm as
// forward wrote them, dS_final [F, Dv+1] or null. Writes dq, dk, dv rows (lddq, lddk, lddv) and, if dS0 is not
// null, the initial state's gradient [F, Dv+1]. With dy = [dnum | dden] the gradient of [numerator | normaliser]
// and G = dS_final + q^T dy (its last column Gz):
//   dq = dnum S[:, :Dv]^T + dden z^T,   dk = keep (v G[:, :Dv]^T + Gz^T),   dv = keep (k G[:, :Dv]).
template <typename T>
void backward(kz::Gemm<T> gemm, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv, const T* keep,
              const T* d_o, long lddo, const T* o, long ldo, const T* S, const T* norm, const T* dS_final, T* dq,
              long lddq, T* dk, long lddk, T* dv, long lddv, T* dS0, long L, int F, int Dv, int normalize) {
    const RowMajor<T> mm{gemm};
    const int D1 = Dv + 1;
    const long TB = block_rows(F);
    std::vector<T> dnum(static_cast<size_t>(L) * Dv), dden(L), z(F), Gz(F, T(0)), buffer;
    std::vector<T> G(static_cast<size_t>(F) * D1, T(0));
    for (long t = 0; t < L; ++t)  // the gradient of [numerator, normaliser]
        dden[t] = kz::output_gradient(d_o + t * lddo, o + t * ldo, normalize ? norm[t] : T(1), Dv, normalize,
                                      dnum.data() + t * Dv);
    for (int f = 0; f < F; ++f) z[f] = S[static_cast<long>(f) * D1 + Dv];
    if (dS_final) {
        std::memcpy(G.data(), dS_final, sizeof(T) * F * D1);
        for (int f = 0; f < F; ++f) Gz[f] = dS_final[static_cast<long>(f) * D1 + Dv];
    }
    for (long t0 = 0; t0 < L; t0 += TB) {  // dq = dnum S^T + dden z^T; G[:, :Dv] += q^T dnum; Gz += q^T dden
        const int n = static_cast<int>(std::min(TB, L - t0));
        const T* dn = dnum.data() + t0 * Dv;
        mm(false, true, n, F, Dv, 1, dn, Dv, S, D1, 0, dq + t0 * lddq, lddq);
        mm(true, false, F, Dv, n, 1, q + t0 * ldq, ldq, dn, Dv, dS_final || t0 ? 1 : 0, G.data(), D1);
        if (normalize)
            for (long t = t0; t < t0 + n; ++t) {
                add_row(dq + t * lddq, dden[t], z.data(), F);
                add_row(Gz.data(), dden[t], q + t * ldq, F);
            }
    }
    long ldV;
    const T* V = kept_values(v, ldv, keep, L, Dv, buffer, ldV);
    for (long t0 = 0; t0 < L; t0 += TB) {  // dk = (keep v) G^T + keep Gz^T; dv = k G[:, :Dv]
        const int n = static_cast<int>(std::min(TB, L - t0));
        mm(false, true, n, F, Dv, 1, V + t0 * ldV, ldV, G.data(), D1, 0, dk + t0 * lddk, lddk);
        for (long t = t0; t < t0 + n; ++t)
            if (!keep || keep[t] != T(0)) add_row(dk + t * lddk, keep ? keep[t] : T(1), Gz.data(), F);
        mm(false, false, n, Dv, F, 1, k + t0 * ldk, ldk, G.data(), D1, 0, dv + t0 * lddv, lddv);
    }
    if (keep)
        for (long t = 0; t < L; ++t)
            if (keep[t] != T(1))
                for (int d = 0; d < Dv; ++d) dv[t * lddv + d] *= keep[t];
    if (dS0) {
        std::memcpy(dS0, G.data(), sizeof(T) * F * D1);
        for (int f = 0; f < F; ++f) dS0[static_cast<long>(f) * D1 + Dv] = Gz[f];
    }
}

}  // namespace

#define KZ_EXPORT(T, suffix)                                                                                  \
    extern "C" void bidirectional_forward_##suffix(void* gemm, const T* q, long ldq, const T* k, long ldk,    \
                                                   const T* v, long ldv, const T* keep, const T* S0, T* o,    \
                                                   long ldo, T* S, T* norm, long L, int F, int Dv,            \
                                                   int normalize, double eps) {                               \
        forward<T>(reinterpret_cast<kz::Gemm<T>>(gemm), q, ldq, k, ldk, v, ldv, keep, S0, o, ldo, S, norm, L, \
                   F, Dv, normalize, static_cast<T>(eps));                                                    \
    }                                                                                                         \
    extern "C" void bidirectional_backward_##suffix(                                                          \
        void* gemm, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv, const T* keep,          \
        const T* d_o, long lddo, const T* o, long ldo, const T* S, const T* norm, const T* dS_final, T* dq,   \
        long lddq, T* dk, long lddk, T* dv, long lddv, T* dS0, long L, int F, int Dv, int normalize) {        \
        backward<T>(reinterpret_cast<kz::Gemm<T>>(gemm), q, ldq, k, ldk, v, ldv, keep, d_o, lddo, o, ldo, S,  \
                    norm, dS_final, dq, lddq, dk, lddk, dv, lddv, dS0, L, F, Dv, normalize);                  \
    }

KZ_EXPORT(float, f32)
KZ_EXPORT(double, f64)
