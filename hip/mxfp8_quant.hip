// mxfp8_quant: OCP MXFP8 quantisation of a bf16 tensor along its last dim
// (a multiple of 32): per 32-element block one e8m0 scale byte and 32 fp8
// bytes, e4m3fn or e4m3fnuz. Byte for byte the same as reference.mxfp8_quant:
//   scale exponent = floor(log2(amax)) - emax_elem read off the exponent bits
//   (mx_scale_exponent), clamped to [-127, 127]; a zero block gets -127;
//   a block holding NaN or Inf gets scale 0xFF and NaN elements;
//   x * 2^-exp is exact, so the only rounding is the saturating RNE to fp8.
//
// Memory bound: 4 lanes per block, each lane one 16-byte load (8 bf16) and
// one 8-byte store of fp8 bytes; the block's amax is a 4-lane max. Blocks are
// contiguous in memory whatever the leading dims (K % 32 == 0), so the kernel
// sees a flat array of blocks. The amax is taken over the magnitudes' bits as
// integers: for IEEE floats that order equals the order of |x|, and NaN / Inf
// bits sort above every finite value, so one max also finds a bad block.
#include "mmr/mmr.h"

namespace {

constexpr int kThreads = 256;
constexpr int kLanesPerBlock = 4;  // 4 x 8 elements = one MX block

// 8 bf16 (4 words) of one lane -> 8 fp8 bytes (2 words) and the block's
// scale byte; the lane's 3 partners in its 4-lane group hold the rest of the block.
template <mmr::Fp8 F>
__device__ __forceinline__ void quant_chunk(const uint32_t (&w)[4], uint32_t (&out)[2], uint8_t& scale) {
  constexpr uint32_t kNanByte = F == mmr::Fp8::kE4M3FN ? 0x7fu : 0x80u;
  // largest magnitude, as bf16 bits (< 2^15, so int compares are exact)
  int m = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int lo = int(w[i] & 0x7fffu), hi = int((w[i] >> 16) & 0x7fffu);
    m = lo > m ? lo : m;
    m = hi > m ? hi : m;
  }
  m = mmr::group_max<kLanesPerBlock>(m);
  const bool bad = m >= 0x7f80;  // Inf or NaN somewhere in the block
  const int e = mmr::mx_scale_exponent<F>(mmr::bf16_to_float(uint16_t(m)));
  // 2^-e is a normal float for every e the clamp allows from a finite amax
  // (e <= 127 - emax_elem), so the product below is exact.
  const float inv = mmr::bits_to_float(uint32_t(127 - e) << 23);
  out[0] = out[1] = 0u;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t pair = bad ? (kNanByte | (kNanByte << 8))
                              : mmr::float2_to_fp8_nonnan<F>(mmr::bf16_lo(w[i]) * inv, mmr::bf16_hi(w[i]) * inv);
    out[i / 2] |= pair << (16 * (i % 2));
  }
  scale = bad ? uint8_t(0xff) : uint8_t(e + 127);
}

// Each thread takes kUnroll chunks a grid stride apart per trip: their loads
// are issued together, so more bytes are in flight per thread.
constexpr int kUnroll = 2;

template <mmr::Fp8 F>
__device__ __forceinline__ void quant_bf16(const uint16_t* __restrict__ x, uint8_t* __restrict__ q,
                                           uint8_t* __restrict__ scales, int64_t chunks, bool aligned) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  const int lane = int(threadIdx.x) % mmr::kWave;
  // The loop bound is tested on the wave's first lane, so every lane of a wave
  // runs the same trips and takes part in every shuffle; lanes past the end
  // (whole 4-lane groups, as chunks % 4 == 0) compute on zeros and store nothing.
  for (int64_t c0 = int64_t(blockIdx.x) * kThreads + threadIdx.x; c0 - lane < chunks; c0 += kUnroll * stride) {
    uint32_t w[kUnroll][4];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + u * stride;
#pragma unroll
      for (int i = 0; i < 4; ++i) w[u][i] = 0u;
      if (c < chunks) {
        if (aligned) {
          const mmr::Vec16 v = mmr::load16(x + c * 8);
#pragma unroll
          for (int i = 0; i < 4; ++i) w[u][i] = v.w[i];
        } else {
#pragma unroll
          for (int i = 0; i < 4; ++i)
            w[u][i] = uint32_t(x[c * 8 + 2 * i]) | (uint32_t(x[c * 8 + 2 * i + 1]) << 16);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + u * stride;
      uint32_t out[2];
      uint8_t scale;
      quant_chunk<F>(w[u], out, scale);
      if (c < chunks) {
        *reinterpret_cast<uint2*>(q + c * 8) = make_uint2(out[0], out[1]);
        if (c % kLanesPerBlock == 0) scales[c / kLanesPerBlock] = scale;
      }
    }
  }
}

__global__ void __launch_bounds__(kThreads) mxfp8_quant_bf16_e4m3fn_kernel(
    const uint16_t* __restrict__ x, uint8_t* __restrict__ q, uint8_t* __restrict__ scales, int64_t chunks,
    bool aligned) {
  quant_bf16<mmr::Fp8::kE4M3FN>(x, q, scales, chunks, aligned);
}

__global__ void __launch_bounds__(kThreads) mxfp8_quant_bf16_e4m3fnuz_kernel(
    const uint16_t* __restrict__ x, uint8_t* __restrict__ q, uint8_t* __restrict__ scales, int64_t chunks,
    bool aligned) {
  quant_bf16<mmr::Fp8::kE4M3FNUZ>(x, q, scales, chunks, aligned);
}

}  // namespace

#ifndef MMR_DEVICE_ONLY
#include "mmr/torch_glue.h"

namespace {

// q: uint8 (the caller views it as its fp8 flavour), same shape as x;
// scales: uint8 [..., K/32].
void mxfp8_quant(const at::Tensor& x, bool fnuz, at::Tensor& q, at::Tensor& scales) {
  const char* op = "mxfp8_quant";
  MMR_CHECK(op, "x", x.is_cuda() && x.scalar_type() == at::kBFloat16 && x.dim() >= 1 && x.is_contiguous(),
            "must be a contiguous bf16 GPU tensor with at least one dim");
  const int64_t K = x.size(-1), n = x.numel();
  MMR_CHECK(op, "x", K % 32 == 0, "last dim must be a multiple of 32 (the MX block)");
  MMR_CHECK(op, "q", q.is_cuda() && q.device() == x.device() && q.scalar_type() == at::kByte && q.is_contiguous() &&
                         q.numel() == n && (reinterpret_cast<uintptr_t>(q.data_ptr()) & 7u) == 0,
            "must be a contiguous, 8-byte aligned uint8 tensor with x's element count on x's device");
  MMR_CHECK(op, "scales", scales.is_cuda() && scales.device() == x.device() && scales.scalar_type() == at::kByte &&
                              scales.is_contiguous() && scales.numel() == n / 32,
            "must be a contiguous uint8 tensor with numel(x) / 32 elements on x's device");
  if (n == 0) return;
  const c10::DeviceGuard guard(x.device());
  const int64_t chunks = n / 8;
  const int64_t blocks =
      std::min<int64_t>((chunks + kThreads - 1) / kThreads, int64_t(mmr::multiprocessor_count()) * 16);
  const bool aligned = mmr::aligned16(x.data_ptr());
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr());
  auto* qp = reinterpret_cast<uint8_t*>(q.data_ptr());
  auto* sp = reinterpret_cast<uint8_t*>(scales.data_ptr());
  if (fnuz) {
    mxfp8_quant_bf16_e4m3fnuz_kernel<<<dim3(unsigned(blocks)), dim3(kThreads), 0, mmr::current_stream()>>>(
        xp, qp, sp, chunks, aligned);
  } else {
    mxfp8_quant_bf16_e4m3fn_kernel<<<dim3(unsigned(blocks)), dim3(kThreads), 0, mmr::current_stream()>>>(
        xp, qp, sp, chunks, aligned);
  }
  MMR_CHECK_LAUNCH(op);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(minimax_rocm_ext, m) {
  m.def("mxfp8_quant(Tensor x, bool fnuz, Tensor(a!) q, Tensor(b!) scales) -> ()");
}

TORCH_LIBRARY_IMPL(minimax_rocm_ext, CUDA, m) { m.impl("mxfp8_quant", &mxfp8_quant); }
#endif  // MMR_DEVICE_ONLY
