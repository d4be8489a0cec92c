// bf16, fp8 (e4m3fn and e4m3fnuz) and e8m0 conversions in plain bit
// arithmetic: the HIP 5.2 headers the gfx942 compile check uses have neither
// hip_bf16.h nor hip_fp8.h, and the same code must translate to CUDA.
#pragma once

#include "platform.h"

namespace mmr {

MMR_DEVICE float bits_to_float(uint32_t u) { return __uint_as_float(u); }
MMR_DEVICE uint32_t float_to_bits(float f) { return __float_as_uint(f); }

// ---------------------------------------------------------------- bf16

MMR_DEVICE float bf16_to_float(uint16_t b) { return bits_to_float(uint32_t(b) << 16); }

// Round to nearest even, NaN stays a (quiet) NaN.
MMR_DEVICE uint16_t float_to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// Two bf16 packed in a 32-bit word (element 0 in the low half).
MMR_DEVICE float bf16_lo(uint32_t w) { return bits_to_float(w << 16); }
MMR_DEVICE float bf16_hi(uint32_t w) { return bits_to_float(w & 0xffff0000u); }
MMR_DEVICE uint32_t pack_bf16x2(float lo, float hi) {
  return uint32_t(float_to_bf16(lo)) | (uint32_t(float_to_bf16(hi)) << 16);
}

// ---------------------------------------------------------------- fp8 E4M3
// FN (OCP; NVIDIA, gfx950): bias 7, max 448 (0x7E), NaN 0x7F/0xFF, has -0.
// FNUZ (gfx942):             bias 8, max 240 (0x7F), NaN 0x80 only, no -0.

enum class Fp8 { kE4M3FN, kE4M3FNUZ };

template <Fp8 F>
struct Fp8Traits;
template <>
struct Fp8Traits<Fp8::kE4M3FN> {
  static constexpr int kBias = 7;
  static constexpr uint32_t kMaxCode = 0x7e;
  static constexpr float kMax = 448.f;
  static constexpr int kEmax = 8;  // largest power of two: OCP emax_elem
};
template <>
struct Fp8Traits<Fp8::kE4M3FNUZ> {
  static constexpr int kBias = 8;
  static constexpr uint32_t kMaxCode = 0x7f;
  static constexpr float kMax = 240.f;
  static constexpr int kEmax = 7;
};

// Saturating round-to-nearest-even float -> fp8 byte.
template <Fp8 F>
MMR_DEVICE uint8_t float_to_fp8(float f) {
  using T = Fp8Traits<F>;
  const uint32_t u = float_to_bits(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return F == Fp8::kE4M3FN ? uint8_t(0x7fu | sign) : uint8_t(0x80u);
  uint32_t code;
  const int e = int(a >> 23) - 127;
  if (a >= float_to_bits(T::kMax)) {
    code = T::kMaxCode;  // saturate (infinity included)
  } else if (e < 1 - T::kBias) {
    // subnormal range: value = m * 2^(1 - bias - 3); m == 8 rounds up to the
    // smallest normal, whose code is also 8. Scaling by a power of two is exact.
    const float scaled = bits_to_float(a) * bits_to_float(uint32_t(127 + T::kBias + 2) << 23);
    code = uint32_t(__float2int_rn(scaled));
  } else {
    uint32_t mant = a & 0x7fffffu, r = mant >> 20, rem = mant & 0xfffffu;
    int ee = e;
    if (rem > 0x80000u || (rem == 0x80000u && (r & 1u))) ++r;
    if (r == 8u) { r = 0u; ++ee; }
    code = (uint32_t(ee + T::kBias) << 3) | r;
    if (code > T::kMaxCode) code = T::kMaxCode;
  }
  if (F == Fp8::kE4M3FNUZ && code == 0u) return 0u;  // no negative zero
  return uint8_t(code | sign);
}

template <Fp8 F>
MMR_DEVICE float fp8_to_float(uint8_t b) {
  using T = Fp8Traits<F>;
  if (F == Fp8::kE4M3FN ? (b & 0x7fu) == 0x7fu : b == 0x80u) return bits_to_float(0x7fc00000u);
  const uint32_t e = (b >> 3) & 0xfu, m = b & 7u;
  float v = e == 0 ? float(m) * bits_to_float(uint32_t(127 + 1 - T::kBias - 3) << 23)
                   : bits_to_float(((e + 127u - T::kBias) << 23) | (m << 20));
  return (b & 0x80u) ? -v : v;
}

// ---------------------------------------------------------------- e8m0 scales
// value 2^(b - 127); 0xFF is NaN. 2^-127 is a float subnormal.
MMR_DEVICE float e8m0_to_float(uint8_t b) {
  if (b == 0xffu) return bits_to_float(0x7fc00000u);
  if (b == 0u) return bits_to_float(0x00400000u);
  return bits_to_float(uint32_t(b) << 23);
}

// OCP MX scale exponent for a block whose largest magnitude is `amax`
// (finite): floor(log2(amax)) - emax_elem, clamped to [-127, 127]; an all-zero
// block gets -127. Exact: floor(log2) is read off the exponent bits.
template <Fp8 F>
MMR_DEVICE int mx_scale_exponent(float amax) {
  const uint32_t a = float_to_bits(amax) & 0x7fffffffu;
  if (a == 0u) return -127;
  int e = int(a >> 23) - 127;
  if ((a >> 23) == 0u) e = 31 - __clz(int(a)) - 149;  // subnormal amax: its top bit's weight
  e -= Fp8Traits<F>::kEmax;
  return e < -127 ? -127 : (e > 127 ? 127 : e);
}

}  // namespace mmr
