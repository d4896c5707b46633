// Vectorisable float32 sin/cos and exp: plain arithmetic with no calls or branches, so that `#pragma omp simd` loops
// compile to vector code (the libm functions are calls, which GCC vectorises only under -ffast-math with libmvec).
// Header-only, included by random_features.cpp (kernelized/cpu/__init__.py hashes it with the sources). float64
// callers use std::sin/cos/exp. Accuracy against float64 libm: within 1e-7 absolute for sin/cos at |x| up to 1e4
// and 1e-7 relative for exp (tests/test_cpu_kernels.py).

#pragma once

#include <cmath>
#include <cstdint>

namespace kz {

// sin and cos of a float with no calls or branches, so that `omp simd` loops vectorise them: the quadrant
// reduction in double (for |x| < 2^31, where the quadrant fits an int), then Cephes' single-precision polynomials
// on [-pi/4, pi/4].
inline void sincos_f32(float x, float& s, float& c) {
    const double magic = 6755399441055744.0;  // 1.5 * 2^52: adding and subtracting it rounds to an integer
    const double xd = x, jd = (xd * 0.63661977236758134308 + magic) - magic;
    const float r = static_cast<float>((xd - jd * 1.5707963267948966) - jd * 6.123233995736766e-17);
    const int q = static_cast<int>(jd);
    const float z = r * r;
    const float sp = r + r * z * ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f);
    const float cp =
        1.0f - 0.5f * z + z * z * ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f);
    const bool odd = q & 1;  // quadrants 1 and 3 swap sin and cos; 2 and 3 negate sin, 1 and 2 cos
    const float s0 = odd ? cp : sp, c0 = odd ? sp : cp;
    s = (q & 2) ? -s0 : s0;
    c = ((q + 1) & 2) ? -c0 : c0;
}

// exp of a float, the same way: 2^j exp(r) with r = x - j ln 2, Cephes' polynomial, 2^j from the exponent bits;
// 0 below -87 (exp(-87) = 1.6e-38: no subnormals), inf above 88.7, NaN kept.
inline float exp_f32(float x) {
    const float magic = 12582912.0f;  // 1.5 * 2^23
    const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);  // (std::fmin/fmax do not vectorise)
    const float j = (xc * 1.44269504088896341f + magic) - magic;
    const float r = (xc - j * 0.693359375f) + j * 2.12194440e-4f;
    const float p = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
                      1.6666665459e-1f) * r + 5.0000001201e-1f) * r * r + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(j) + 127) << 23;
    const float e = p * __builtin_bit_cast(float, bits);
    return x < -87.0f ? 0.0f : (x > 88.0f ? (x > 88.72283f ? INFINITY : e) : (x != x ? x : e));
}

}  // namespace kz
