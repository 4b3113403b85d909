// exp(x) for softmax's x = score - max <= 0, in double, one definition for every ISA:
// the scalar function here and the vector forms in attention_avx2.cpp / _avx512.cpp do
// the same IEEE operations in the same order (fused where written fma), so every ISA
// gets the same bits. Within ~2 ulp of exp (the degree-13 Taylor polynomial's error on
// |r| <= ln2 / 2 is below 1e-17): attention is rounded to float32 once at its output, so
// this moves no float32 result except in cases ~1e-8 rare, as any other order of its
// sums would. x < -708 (and -inf) gives 0: such a term is below 1e-307 of a sum >= 1.
// Included by files compiled with their own flags; internal linkage.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace tribit {
namespace {

constexpr double kExpMin = -708.0;
constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2Hi = 0.693147180369123816490;   // ln 2, high 32 bits
constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln 2 - kLn2Hi
// 1/n! for n = 13 .. 2, then 1, 1 (Horner from the top)
constexpr double kExpPoly[14] = {1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                                 1.0 / 362880.0,     1.0 / 40320.0,     1.0 / 5040.0,     1.0 / 720.0,
                                 1.0 / 120.0,        1.0 / 24.0,        1.0 / 6.0,        0.5,
                                 1.0,                1.0};

inline double softmax_exp1(double x) {
    if (!(x >= kExpMin)) return x != x ? x : 0.0;  // NaN stays NaN
    const double k = std::nearbyint(x * kLog2e);  // -1021 <= k <= 0
    double r = std::fma(k, -kLn2Hi, x);
    r = std::fma(k, -kLn2Lo, r);
    double p = kExpPoly[0];
    for (int i = 1; i < 14; i++) p = std::fma(p, r, kExpPoly[i]);
    const uint64_t bits = uint64_t(int64_t(k) + 1023) << 52;
    double scale;
    std::memcpy(&scale, &bits, 8);
    return p * scale;
}

// The order of the sum: eight partial sums p_j over t = j (mod 8) of the whole 8-blocks,
// ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7)), then the tail in order.
inline double softmax_exp_tail(double* sc, int64_t t, int64_t len, double mx, double s) {
    for (; t < len; t++) {
        sc[t] = softmax_exp1(sc[t] - mx);
        s += sc[t];
    }
    return s;
}

}  // namespace
}  // namespace tribit
