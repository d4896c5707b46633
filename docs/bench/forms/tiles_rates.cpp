// One-thread rates behind docs/benchmarks.md's "Why the tiles did not reach 1.5x": the register tiles of
// src/kernelized/cpu/tiles.h on cache-resident and on streamed operands, a register-only FMA loop (the core's
// attainable float32 rate), and this VM's write bandwidth with ordinary and with streaming stores.
// Built and run by tiles_rates.py (the library's flags); best of 9 repetitions each.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <utility>
#include <vector>

#include "tiles.h"

static double best(const std::function<void()>& fn, int reps = 9) {
    double b = 1e30;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        fn();
        b = std::min(b, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return b;
}

#define KZ_R(i) __m512 a##i = _mm512_set1_ps(i * 1e-3f);
#define KZ_F(i) a##i = _mm512_fmadd_ps(a##i, x, y);
#define KZ_S(i) s += _mm512_reduce_add_ps(a##i);

static double fma_rate(float arg) {  // 12 independent chains: bound by the FMA ports, not their latency
    KZ_R(0) KZ_R(1) KZ_R(2) KZ_R(3) KZ_R(4) KZ_R(5) KZ_R(6) KZ_R(7) KZ_R(8) KZ_R(9) KZ_R(10) KZ_R(11)
    const __m512 x = _mm512_set1_ps(arg), y = _mm512_set1_ps(1e-4f);
    const long n = 20000000;
    double t = 1e30;
    for (int r = 0; r < 3; ++r) {  // no lambda: captured by reference, the chains would live in memory
        const auto t0 = std::chrono::steady_clock::now();
        for (long i = 0; i < n; ++i) {
            KZ_F(0) KZ_F(1) KZ_F(2) KZ_F(3) KZ_F(4) KZ_F(5) KZ_F(6) KZ_F(7) KZ_F(8) KZ_F(9) KZ_F(10) KZ_F(11)
        }
        t = std::min(t, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    float s = 0;
    KZ_S(0) KZ_S(1) KZ_S(2) KZ_S(3) KZ_S(4) KZ_S(5) KZ_S(6) KZ_S(7) KZ_S(8) KZ_S(9) KZ_S(10) KZ_S(11)
    if (s == 12345.f) std::printf(" ");  // keep the sums
    return n * 12.0 * 32 / t;
}

int main() {
    std::printf("register-only FMA loop: %.0f GFLOP/s\n", fma_rate(0.999f) / 1e9);
    // the LRA gmm-rks shape: 4 heads of F = 513 features per row of [B, T, H, F], Dv + 1 = 33; one sequence of 256
    // rows (0.5 MB: L2-resident after the first repetition), or 32 sequences of T = 1024 (67 MB, from memory)
    const long H = 4;
    const int F = 513, D = 33, Dv = 32;
    const long ld = H * F;
    for (const auto [seqs, T] : {std::pair{1L, 256L}, {32L, 1024L}, {1L, 256L}, {32L, 1024L}}) {
        const long B = (seqs + H - 1) / H;
        std::vector<float> A(B * T * ld), V(T * D), CT(static_cast<size_t>(D) * F), S(static_cast<size_t>(F) * D),
            Y(T * Dv), den(T);
        for (auto& a : A) a = std::rand() / float(RAND_MAX);
        for (auto& a : V) a = std::rand() / float(RAND_MAX);
        for (auto& a : S) a = 1e-3f;
        auto seq = [&](long i) { return A.data() + (i / H) * T * ld + (i % H) * F; };
        const double flops = 2.0 * seqs * T * F * D;
        const double acc = best([&] {
            for (long i = 0; i < seqs; ++i) kz::tiles::accumulate(seq(i), ld, V.data(), D, T, F, D, CT.data(), F);
        });
        const double proj = best([&] {
            for (long i = 0; i < seqs; ++i)
                kz::tiles::project(seq(i), ld, T, F, S.data(), D, Dv, CT.data(), Y.data(), Dv, den.data());
        });
        std::printf("%ld sequence(s) of %ld rows, %.1f MB of features: accumulate %.2f ms (%.0f GFLOP/s), "
                    "project %.2f ms (%.0f GFLOP/s)\n",
                    seqs, T, seqs * T * F * 4 / 1e6, acc * 1e3, flops / acc / 1e9, proj * 1e3, flops / proj / 1e9);
    }
    const long n = 64L << 20;  // 256 MB
    float* y = static_cast<float*>(std::aligned_alloc(64, n * 4));
    for (long i = 0; i < n; ++i) y[i] = 0;
    const __m512 one = _mm512_set1_ps(1.f);
    const double plain = best([&] { for (long i = 0; i < n; i += 16) _mm512_store_ps(y + i, one); }, 5);
    const double stream = best([&] { for (long i = 0; i < n; i += 16) _mm512_stream_ps(y + i, one); _mm_sfence(); }, 5);
    std::printf("writing 256 MB: ordinary stores %.1f GB/s, streaming stores %.1f GB/s\n", n * 4 / plain / 1e9,
                n * 4 / stream / 1e9);
    std::free(y);
}
