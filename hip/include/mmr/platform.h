// Which vendor and device arch this translation unit is compiled for.
//
// Convention (the HIP->CUDA translator relies on it): vendor-specific code sits
// inside `#if MMR_AMD` ... `#else` ... `#endif` blocks. The AMD branch may use
// HIP-only names (__builtin_amdgcn_*, __hip_atomic_*, hipExtMallocWithFlags);
// the translator leaves those lines alone, and the NVIDIA compile never sees
// them. Everything outside such blocks is portable HIP that the translator
// maps to CUDA name for name.
#pragma once

#include <hip/hip_runtime.h>
#include <stdint.h>

#if defined(__HIP_PLATFORM_AMD__) || defined(__HIP_PLATFORM_HCC__)
#define MMR_AMD 1
#define MMR_NVIDIA 0
#else
#define MMR_AMD 0
#define MMR_NVIDIA 1
#endif

#define MMR_DEVICE __device__ __forceinline__
#define MMR_HOST_DEVICE __host__ __device__ __forceinline__
