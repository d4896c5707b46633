// Bidirectional (non-causal) linear attention for one (batch, head) sequence on the CPU: forward and backward.
//
// The same products as kernelized/ops/linear/bidirectional.py's reference: the state S = k^T [v, 1] ([F, Dv+1],
// the last column the normaliser's z) and the output [numerator | normaliser] = q S, each one BLAS gemm on the
// caller's strided rows, so q and k ([B, T, H, F], often hundreds of features) are read in place, never
// permuted or copied. Key padding is fused: the padded keys' rows of [v, 1] are zero (what zeroing their
// features does), so the features need no masked copy either. Useful work 4 T F (Dv+1) forward, twice that
// backward; everything else is O(T (F + Dv)). In float32 on an AVX-512 build the two skinny products are tiles.h's
// register tiles instead of BLAS calls (tiles 1; tiles 0 keeps BLAS, as float64 and other CPUs do): MKL ran these
// shapes well below its square-matrix rate. backward_features is the backward with the random features' own backward
// fused in (kernelized/layers/fused.py), a tile of rows at a time.

#include <type_traits>

#include "gemm.h"
#include "random_features.h"
#include "tiles.h"

namespace {

using kz::RowMajor;

// V1 [L, Dv+1] = [keep * v, keep] (keep 1 where it is null).
template <typename T>
void values_with_ones(const T* v, long ldv, const T* keep, long L, int Dv, T* V1) {
    const int D1 = Dv + 1;
    for (long t = 0; t < L; ++t) {
        const T w = keep ? keep[t] : T(1);
        T* row = V1 + t * D1;
        for (int d = 0; d < Dv; ++d) row[d] = w * v[t * ldv + d];
        row[Dv] = w;
    }
}

// dy [L, Dv+1]: the gradient of each row's [numerator, normaliser] from do (lddo) and o (ldo).
template <typename T>
void output_gradients(const T* d_o, long lddo, const T* o, long ldo, const T* norm, long L, int Dv, int normalize,
                      T* dy) {
    for (long t = 0; t < L; ++t) {
        T* y = dy + t * (Dv + 1);
        y[Dv] = kz::output_gradient(d_o + t * lddo, o + t * ldo, normalize ? norm[t] : T(1), Dv, normalize, y);
    }
}

// dv rows (lddv) of padded keys times their keep (0): no gradient reaches them.
template <typename T>
void drop_padded(const T* keep, long L, int Dv, T* dv, long lddv) {
    if (keep)
        for (long t = 0; t < L; ++t)
            if (keep[t] != T(1))
                for (int d = 0; d < Dv; ++d) dv[t * lddv + d] *= keep[t];
}

#if KZ_HAVE_TILES
// forward's products as register tiles, the state transposed while it sums (S^T [Dv+1, F], vectors along F); the
// normaliser z = S^T's last row meets q as a dot product inside project.
void forward_tiled(const float* q, long ldq, const float* k, long ldk, const float* v, long ldv, const float* keep,
                   const float* S0, float* o, long ldo, float* S, float* norm, long L, int F, int Dv, int normalize,
                   float eps) {
    namespace tl = kz::tiles;
    const int D1 = Dv + 1;
    std::vector<float> V1(static_cast<size_t>(L) * D1), ST(static_cast<size_t>(F) * D1, 0.f), den(L);
    values_with_ones(v, ldv, keep, L, Dv, V1.data());
    if (S0) kz::transpose(S0, F, D1, ST.data());
    tl::accumulate(k, ldk, V1.data(), D1, L, F, D1, ST.data(), F);  // S^T += [v, 1]^T k
    kz::transpose(ST.data(), D1, F, S);
    tl::project(q, ldq, L, F, S, D1, Dv, normalize ? ST.data() + static_cast<long>(Dv) * F : nullptr, o, ldo,
                den.data());  // o = q S[:, :Dv], den = q z
    if (normalize)
        for (long t = 0; t < L; ++t) {
            const float d = den[t] + eps, inv = 1.f / d;
            for (int j = 0; j < Dv; ++j) o[t * ldo + j] *= inv;
            if (norm) norm[t] = d;
        }
}

#endif

// The state's gradient G = dS_final + sum of q^T dy [F, Dv+1] over one or more row ranges (add), then G itself
// (done). In float32 with tiles (tiles.h) it sums transposed, G^T [Dv+1, F], vectors along F; else one gemm a range.
template <typename T>
struct StateGradient {
    RowMajor<T> mm;
    int F, D1;
    bool tiled;
    std::vector<T> G, GT;

    StateGradient(kz::Gemm<T> gemm, int F_, int D1_, const T* dS_final, int tiles)
        : mm{gemm}, F(F_), D1(D1_), tiled(KZ_HAVE_TILES && std::is_same_v<T, float> && tiles),
          G(static_cast<size_t>(F_) * D1_, T(0)) {
        if (tiled) {
            GT.assign(G.size(), T(0));
            if (dS_final) kz::transpose(dS_final, F, D1, GT.data());
        } else if (dS_final) {
            std::memcpy(G.data(), dS_final, sizeof(T) * G.size());
        }
    }
    void add(const T* q, long ldq, const T* dy, int n) {  // n rows of q and of dy [n, Dv+1]
#if KZ_HAVE_TILES
        if constexpr (std::is_same_v<T, float>)
            if (tiled) return kz::tiles::accumulate(q, ldq, dy, D1, n, F, D1, GT.data(), F);
#endif
        mm(true, false, F, D1, n, 1, q, ldq, dy, D1, 1, G.data(), D1);
    }
    const T* done() {
        if (tiled) kz::transpose(GT.data(), D1, F, G.data());
        return G.data();
    }
};

// dv rows (lddv) = k G[:, :Dv] for n rows of k (ldk), G [F, Dv+1]: tiles.h's project in float32 with tiles, else a
// gemm.
template <typename T>
void values_gradient(const RowMajor<T>& mm, int tiles, const T* k, long ldk, int n, int F, const T* G, int Dv, T* dv,
                     long lddv) {
#if KZ_HAVE_TILES
    if constexpr (std::is_same_v<T, float>)
        if (tiles) return kz::tiles::project(k, ldk, n, F, G, Dv + 1, Dv, nullptr, dv, lddv, nullptr);
#endif
    mm(false, false, n, Dv, F, 1, k, ldk, G, Dv + 1, 0, dv, lddv);
}

// q, k rows of F features (leading dims ldq, ldk), v rows of Dv (ldv), keep [L] (1 = key, 0 = padding) or null,
// S0 [F, Dv+1] or null. Writes S [F, Dv+1] (S0 + k^T [v, 1], kept for backward), o rows (ldo): numerator /
// (normaliser + eps) if normalize, else the numerator; and, if norm is not null, the normaliser + eps [L]. tiles:
// float32's products as register tiles where the build has them (forward_tiled).
template <typename T>
void forward(kz::Gemm<T> gemm, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv, const T* keep,
             const T* S0, T* o, long ldo, T* S, T* norm, long L, int F, int Dv, int normalize, T eps, int tiles) {
#if KZ_HAVE_TILES
    if constexpr (std::is_same_v<T, float>)
        if (tiles) return forward_tiled(q, ldq, k, ldk, v, ldv, keep, S0, o, ldo, S, norm, L, F, Dv, normalize, eps);
#endif
    const RowMajor<T> mm{gemm};
    const int D1 = Dv + 1;
    std::vector<T> V1(static_cast<size_t>(L) * D1), Y(static_cast<size_t>(L) * D1);
    values_with_ones(v, ldv, keep, L, Dv, V1.data());
    if (S0) std::memcpy(S, S0, sizeof(T) * F * D1);
    mm(true, false, F, D1, static_cast<int>(L), 1, k, ldk, V1.data(), D1, S0 ? 1 : 0, S, D1);  // S = k^T [v, 1]
    mm(false, false, static_cast<int>(L), D1, F, 1, q, ldq, S, D1, 0, Y.data(), D1);         // Y = q S
    for (long t = 0; t < L; ++t) {
        const T* y = Y.data() + t * D1;
        T* ot = o + t * ldo;
        if (normalize) {
            const T den = y[Dv] + eps, inv = T(1) / den;
            for (int d = 0; d < Dv; ++d) ot[d] = y[d] * inv;
            if (norm) norm[t] = den;
        } else {
            std::memcpy(ot, y, sizeof(T) * Dv);
        }
    }
}

// Gradients of forward: do rows (lddo), o the forward's output rows (ldo; read when normalize), S and norm as
// forward wrote them, dS_final [F, Dv+1] or null. Writes dq, dk, dv rows (lddq, lddk, lddv) and, if dS0 is not
// null, the initial state's gradient [F, Dv+1]. With dy = d[numerator | normaliser] and G = dS_final + q^T dy:
//   dq = dy S^T,   dk = [v, 1] G^T,   dv = k G[:, :Dv]   (padded keys' rows of dk, dv zero through keep).
template <typename T>
void backward(kz::Gemm<T> gemm, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv, const T* keep,
              const T* d_o, long lddo, const T* o, long ldo, const T* S, const T* norm, const T* dS_final, T* dq,
              long lddq, T* dk, long lddk, T* dv, long lddv, T* dS0, long L, int F, int Dv, int normalize,
              int tiles) {
    const RowMajor<T> mm{gemm};
    const int D1 = Dv + 1, n = static_cast<int>(L);
    std::vector<T> dy(static_cast<size_t>(L) * D1);
    output_gradients(d_o, lddo, o, ldo, norm, L, Dv, normalize, dy.data());  // the gradient of [numerator, normaliser]
    mm(false, true, n, F, D1, 1, dy.data(), D1, S, D1, 0, dq, lddq);           // dq = dy S^T
    StateGradient<T> grad(gemm, F, D1, dS_final, tiles);
    grad.add(q, ldq, dy.data(), n);  // G += q^T dy
    const T* G = grad.done();
    std::vector<T>& V1 = dy;  // dy is spent: its buffer takes [keep v, keep]
    values_with_ones(v, ldv, keep, L, Dv, V1.data());
    mm(false, true, n, F, D1, 1, V1.data(), D1, G, D1, 0, dk, lddk);  // dk = [v, 1] G^T
    values_gradient(mm, tiles, k, ldk, n, F, G, Dv, dv, lddv);        // dv = k G[:, :Dv]
    drop_padded(keep, L, Dv, dv, lddv);
    if (dS0) std::memcpy(dS0, G, sizeof(T) * F * D1);
}

// The backward of the random features the op was given (random_features.h), for one head: kind 1 RKS, 2 PRF (c the
// |x|^2 coefficient, hyperbolic the pair); frequencies W [M, d].
template <typename T>
struct FeatureGrad {
    int kind;
    const T* W;
    int M, d;
    T c;
    int hyperbolic;
    // dx rows (lddx) of n rows of inputs x (ldx) from their features phi (ldphi) and the features' gradient g (ldg);
    // adds into dW [M, d] and the per-frequency sums [M]
    void operator()(kz::Gemm<T> gemm, const T* x, long ldx, long n, const T* phi, long ldphi, const T* g, long ldg,
                    T* dx, long lddx, T* dW, T* sums) const {
        if (kind == 1)
            kz::rf::rks_backward(gemm, x, ldx, n, d, W, M, phi, ldphi, g, ldg, dx, lddx, dW, sums);
        else
            kz::rf::prf_backward(gemm, x, ldx, n, d, W, M, phi, ldphi, g, ldg, c, hyperbolic, dx, lddx, dW, sums);
    }
};

// backward (above) with the features' own backward fused in, 128 rows at a time: a tile's feature gradient (dq or
// dk) stays in cache from the product that forms it to the features' backward that consumes it, and each role's
// features are read once. Unfused, the op writes dq and dk and the features' backward reads them and the features
// again: four more passes over [L, F]. Writes dxq, dxk (rows of the inputs x the features came from) and dv; adds
// into dW and sums. No initial state and no state gradient (the fused path serves calls without them).
template <typename T>
void backward_features(kz::Gemm<T> gemm, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv,
                       const T* keep, const T* d_o, long lddo, const T* o, long ldo, const T* S, const T* norm,
                       const T* xq, long ldxq, const T* xk, long ldxk, const FeatureGrad<T>& fg, T* dxq, long lddxq,
                       T* dxk, long lddxk, T* dv, long lddv, T* dW, T* sums, long L, int F, int Dv, int normalize,
                       int tiles) {
    const RowMajor<T> mm{gemm};
    const int D1 = Dv + 1;
    const long TILE = 128;
    std::vector<T> dy(static_cast<size_t>(L) * D1), V1(TILE * D1), g(TILE * F);
    output_gradients(d_o, lddo, o, ldo, norm, L, Dv, normalize, dy.data());
    StateGradient<T> grad(gemm, F, D1, nullptr, tiles);
    for (long t0 = 0; t0 < L; t0 += TILE) {  // queries: dq = dy S^T, G += q^T dy, then dq into dxq, dW
        const int n = static_cast<int>(std::min(TILE, L - t0));
        const T *qt = q + t0 * ldq, *dyt = dy.data() + t0 * D1;
        mm(false, true, n, F, D1, 1, dyt, D1, S, D1, 0, g.data(), F);
        grad.add(qt, ldq, dyt, n);
        fg(gemm, xq + t0 * ldxq, ldxq, n, qt, ldq, g.data(), F, dxq + t0 * lddxq, lddxq, dW, sums);
    }
    const T* G = grad.done();
    for (long t0 = 0; t0 < L; t0 += TILE) {  // keys: dk = [v, 1] G^T, dv = k G[:, :Dv], then dk into dxk, dW
        const int n = static_cast<int>(std::min(TILE, L - t0));
        const T* kt = k + t0 * ldk;
        values_with_ones(v + t0 * ldv, ldv, keep ? keep + t0 : nullptr, n, Dv, V1.data());
        mm(false, true, n, F, D1, 1, V1.data(), D1, G, D1, 0, g.data(), F);
        values_gradient(mm, tiles, kt, ldk, n, F, G, Dv, dv + t0 * lddv, lddv);
        fg(gemm, xk + t0 * ldxk, ldxk, n, kt, ldk, g.data(), F, dxk + t0 * lddxk, lddxk, dW, sums);
    }
    drop_padded(keep, L, Dv, dv, lddv);
}

// Every (batch, head) sequence i = b H + h in one call, as OpenMP work items on the calling thread's team (torch's:
// the library links the libgomp torch loaded). keep [B, L] or null; S0, S, dS_final, dS0 [B, H, F, Dv+1] or null;
// norm [B, H, L] or null.
template <typename T>
void forward_pairs(kz::Gemm<T> gemm, kz::Heads<const T> q, kz::Heads<const T> k, kz::Heads<const T> v, const T* keep,
                   const T* S0, kz::Heads<T> o, T* S, T* norm, long B, long H, long L, int F, int Dv, int normalize,
                   T eps, int tiles) {
    const long state = static_cast<long>(F) * (Dv + 1);
    kz::parallel_pairs(B, H, [&](long b, long h, long i) {
        forward<T>(gemm, q.at(b, h), q.ld, k.at(b, h), k.ld, v.at(b, h), v.ld, keep ? keep + b * L : nullptr,
                   S0 ? S0 + i * state : nullptr, o.at(b, h), o.ld, S + i * state, norm ? norm + i * L : nullptr, L,
                   F, Dv, normalize, eps, tiles);
    });
}

template <typename T>
void backward_pairs(kz::Gemm<T> gemm, kz::Heads<const T> q, kz::Heads<const T> k, kz::Heads<const T> v,
                    const T* keep, kz::Heads<const T> d_o, kz::Heads<const T> o, const T* S, const T* norm,
                    const T* dS_final, kz::Heads<T> dq, kz::Heads<T> dk, kz::Heads<T> dv, T* dS0, long B, long H,
                    long L, int F, int Dv, int normalize, int tiles) {
    const long state = static_cast<long>(F) * (Dv + 1);
    kz::parallel_pairs(B, H, [&](long b, long h, long i) {
        backward<T>(gemm, q.at(b, h), q.ld, k.at(b, h), k.ld, v.at(b, h), v.ld, keep ? keep + b * L : nullptr,
                    d_o.at(b, h), d_o.ld, o.at(b, h), o.ld, S + i * state, norm ? norm + i * L : nullptr,
                    dS_final ? dS_final + i * state : nullptr, dq.at(b, h), dq.ld, dk.at(b, h), dk.ld, dv.at(b, h),
                    dv.ld, dS0 ? dS0 + i * state : nullptr, L, F, Dv, normalize, tiles);
    });
}

// backward_features over every (batch, head) sequence i: W [H, M, d]; dW [B, H, M, d] and sums [B, H, M], one
// partial per sequence (the caller adds the batch's).
template <typename T>
void backward_features_pairs(kz::Gemm<T> gemm, kz::Heads<const T> q, kz::Heads<const T> k, kz::Heads<const T> v,
                             const T* keep, kz::Heads<const T> d_o, kz::Heads<const T> o, const T* S, const T* norm,
                             kz::Heads<const T> xq, kz::Heads<const T> xk, const T* W, int M, int d, int kind, T c,
                             int hyperbolic, kz::Heads<T> dxq, kz::Heads<T> dxk, kz::Heads<T> dv, T* dW, T* sums,
                             long B, long H, long L, int F, int Dv, int normalize, int tiles) {
    const long state = static_cast<long>(F) * (Dv + 1);
    kz::parallel_pairs(B, H, [&](long b, long h, long i) {
        const FeatureGrad<T> fg{kind, W + h * M * d, M, d, c, hyperbolic};
        std::fill(dW + i * M * d, dW + (i + 1) * M * d, T(0));
        std::fill(sums + i * M, sums + (i + 1) * M, T(0));
        backward_features<T>(gemm, q.at(b, h), q.ld, k.at(b, h), k.ld, v.at(b, h), v.ld, keep ? keep + b * L : nullptr,
                             d_o.at(b, h), d_o.ld, o.at(b, h), o.ld, S + i * state, norm ? norm + i * L : nullptr,
                             xq.at(b, h), xq.ld, xk.at(b, h), xk.ld, fg, dxq.at(b, h), dxq.ld, dxk.at(b, h), dxk.ld,
                             dv.at(b, h), dv.ld, dW + i * M * d, sums + i * M, L, F, Dv, normalize, tiles);
    });
}

}  // namespace

#define KZ_EXPORT(T, suffix)                                                                                     \
    extern "C" void bidirectional_forward_##suffix(void* gemm, KZ_HEADS(const T, q), KZ_HEADS(const T, k),       \
                                                   KZ_HEADS(const T, v), const T* keep, const T* S0,             \
                                                   KZ_HEADS(T, o), T* S, T* norm, long B, long H, long L, int F, \
                                                   int Dv, int normalize, double eps, int tiles) {              \
        forward_pairs<T>(reinterpret_cast<kz::Gemm<T>>(gemm), KZ_AT(const T, q), KZ_AT(const T, k),              \
                         KZ_AT(const T, v), keep, S0, KZ_AT(T, o), S, norm, B, H, L, F, Dv, normalize,           \
                         static_cast<T>(eps), tiles);                                                            \
    }                                                                                                            \
    extern "C" void bidirectional_backward_##suffix(                                                             \
        void* gemm, KZ_HEADS(const T, q), KZ_HEADS(const T, k), KZ_HEADS(const T, v), const T* keep,             \
        KZ_HEADS(const T, d_o), KZ_HEADS(const T, o), const T* S, const T* norm, const T* dS_final,              \
        KZ_HEADS(T, dq), KZ_HEADS(T, dk), KZ_HEADS(T, dv), T* dS0, long B, long H, long L, int F, int Dv,        \
        int normalize, int tiles) {                                                                              \
        backward_pairs<T>(reinterpret_cast<kz::Gemm<T>>(gemm), KZ_AT(const T, q), KZ_AT(const T, k),             \
                          KZ_AT(const T, v), keep, KZ_AT(const T, d_o), KZ_AT(const T, o), S, norm, dS_final,    \
                          KZ_AT(T, dq), KZ_AT(T, dk), KZ_AT(T, dv), dS0, B, H, L, F, Dv, normalize, tiles);      \
    }

#define KZ_EXPORT_FEATURES(T, suffix)                                                                          \
    extern "C" void bidirectional_features_backward_##suffix(                                                   \
        void* gemm, KZ_HEADS(const T, q), KZ_HEADS(const T, k), KZ_HEADS(const T, v), const T* keep,             \
        KZ_HEADS(const T, d_o), KZ_HEADS(const T, o), const T* S, const T* norm, KZ_HEADS(const T, xq),          \
        KZ_HEADS(const T, xk), const T* W, int M, int d, int kind, double c, int hyperbolic, KZ_HEADS(T, dxq),  \
        KZ_HEADS(T, dxk), KZ_HEADS(T, dv), T* dW, T* sums, long B, long H, long L, int F, int Dv, int normalize,   \
        int tiles) {                                                                                             \
        backward_features_pairs<T>(reinterpret_cast<kz::Gemm<T>>(gemm), KZ_AT(const T, q), KZ_AT(const T, k),   \
                                   KZ_AT(const T, v), keep, KZ_AT(const T, d_o), KZ_AT(const T, o), S, norm,     \
                                   KZ_AT(const T, xq), KZ_AT(const T, xk), W, M, d, kind, static_cast<T>(c),     \
                                   hyperbolic, KZ_AT(T, dxq), KZ_AT(T, dxk), KZ_AT(T, dv), dW, sums, B, H, L, F, \
                                   Dv, normalize, tiles);                                                        \
    }

KZ_EXPORT(float, f32)
KZ_EXPORT(double, f64)
KZ_EXPORT_FEATURES(float, f32)
KZ_EXPORT_FEATURES(double, f64)

extern "C" int bidirectional_tiles() { return KZ_HAVE_TILES; }  // whether float32 can take tiles.h's path
