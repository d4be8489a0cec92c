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
// NVIDIA sm80+: one conversion instruction for the pair (same rounding; a NaN
// becomes the canonical bf16 NaN), where the bit arithmetic is about ten
// instructions per value (0.3 us of the Lamport op's normalise at TP2).
MMR_DEVICE uint32_t pack_bf16x2(float lo, float hi) {
#if MMR_AMD
  return uint32_t(float_to_bf16(lo)) | (uint32_t(float_to_bf16(hi)) << 16);
#else
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return uint32_t(float_to_bf16(lo)) | (uint32_t(float_to_bf16(hi)) << 16);
#endif
#endif
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

// Saturating round-to-nearest-even float -> fp8 byte, for a y that is not
// NaN (infinities saturate). Branch-free, as the quantiser's inner loop needs
// (a branchy version left that kernel instruction bound at half the memory
// roofline). Clamping first keeps the rounding at or below the largest code.
// Normal range: drop 20 mantissa bits with RNE on the float's bits (a carry
// into the exponent is the right answer), then rebias. Subnormal range: y in
// units of the smallest subnormal, rounded to even by __float2int_rn (exact:
// scaling by a power of two); 8 there is the smallest normal, also code 8.
template <Fp8 F>
MMR_DEVICE uint32_t float_to_fp8_nonnan(float y) {
  using T = Fp8Traits<F>;
  y = fminf(fmaxf(y, -T::kMax), T::kMax);
  const uint32_t u = float_to_bits(y);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  const uint32_t normal = ((a + 0x7ffffu + ((a >> 20) & 1u)) >> 20) - uint32_t((127 - T::kBias) << 3);
  const uint32_t sub = uint32_t(__float2int_rn(bits_to_float(a) * float(1 << (T::kBias + 2))));
  const uint32_t code = a < (uint32_t(127 + 1 - T::kBias) << 23) ? sub : normal;
  if (F == Fp8::kE4M3FNUZ) return code == 0u ? 0u : code | sign;  // no negative zero
  return code | sign;
}

// Two floats (neither NaN) -> their two fp8 bytes, lo | hi << 8: the same
// bytes as float_to_fp8_nonnan on each. NVIDIA sm89+ converts an e4m3fn pair
// in one instruction with that rounding (RNE) and saturation (satfinite:
// +-448, infinities included); the bit arithmetic above costs about 15
// instructions per element, which left mxfp8_quant issue-bound on an H200.
template <Fp8 F>
MMR_DEVICE uint32_t float2_to_fp8_nonnan(float lo, float hi) {
#if MMR_AMD
  return float_to_fp8_nonnan<F>(lo) | (float_to_fp8_nonnan<F>(hi) << 8);
#else
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  if constexpr (F == Fp8::kE4M3FN) {
    uint16_t r;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));  // first source -> high byte
    return r;
  }
#endif
  return float_to_fp8_nonnan<F>(lo) | (float_to_fp8_nonnan<F>(hi) << 8);
#endif
}

// Any float -> fp8 byte: NaN to the flavour's NaN, the rest as above.
template <Fp8 F>
MMR_DEVICE uint8_t float_to_fp8(float f) {
  const uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return F == Fp8::kE4M3FN ? uint8_t(0x7fu | ((u >> 24) & 0x80u)) : uint8_t(0x80u);
  return uint8_t(float_to_fp8_nonnan<F>(f));
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
