// Degree-2 monomial features phi(x) = [c_ij x_i x_j for i <= j] (ReBased's and Based's quadratic part) for rows of
// x, forward and backward, on the CPU. The same order and coefficients as kernelized/kernels/polynomial.py's
// monomial_features (which stays the reference). Written as one pass over each row: the PyTorch version is d
// slices, d products and a concatenation, and its backward d zero-filled slice gradients of the whole input.

namespace {

// x [n, d] rows, coef [m], out rows of m = d (d + 1) / 2 with leading dimension ldo >= m (a slice of wider
// feature rows, e.g. Based's [1, x, phi_2(x)], is written in place).
template <typename T>
void forward(const T* x, long n, int d, const T* coef, T* out, long ldo) {
#pragma omp parallel for schedule(static)  // rows on the calling thread's OpenMP team (torch's)
    for (long r = 0; r < n; ++r) {
        const T* xr = x + r * d;
        T* o = out + r * ldo;
        const T* c = coef;
        for (int i = 0; i < d; ++i) {
            const T xi = xr[i];
            for (int j = i; j < d; ++j) *o++ = *c++ * xi * xr[j];
        }
    }
}

// dx [n, d] = d<g, phi(x)>/dx for g rows of m (leading dimension ldg): each product x_i x_j sends c_ij g_ij x_j
// to dx_i and c_ij g_ij x_i to dx_j.
template <typename T>
void backward(const T* x, const T* g, long ldg, long n, int d, const T* coef, T* dx) {
#pragma omp parallel for schedule(static)
    for (long r = 0; r < n; ++r) {
        const T *xr = x + r * d, *gr = g + r * ldg, *c = coef;
        T* dr = dx + r * d;
        for (int i = 0; i < d; ++i) dr[i] = 0;
        for (int i = 0; i < d; ++i) {
            const T xi = xr[i];
            T acc = 0;
            for (int j = i; j < d; ++j) {
                const T cg = *c++ * *gr++;
                acc += cg * xr[j];
                dr[j] += cg * xi;
            }
            dr[i] += acc;
        }
    }
}

}  // namespace

#define KZ_EXPORT_FEATURES(T, suffix)                                                                 \
    extern "C" void monomials2_forward_##suffix(const T* x, long n, int d, const T* coef, T* out,     \
                                                long ldo) {                                          \
        forward<T>(x, n, d, coef, out, ldo);                                                          \
    }                                                                                                 \
    extern "C" void monomials2_backward_##suffix(const T* x, const T* g, long ldg, long n, int d,     \
                                                 const T* coef, T* dx) {                             \
        backward<T>(x, g, ldg, n, d, coef, dx);                                                       \
    }

KZ_EXPORT_FEATURES(float, f32)
KZ_EXPORT_FEATURES(double, f64)
