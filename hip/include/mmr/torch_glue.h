// Host-side glue for the launchers in hip/*.hip: input checks that name the op
// and argument, the current stream, launch-error checks. Not seen by the
// device-only compile checks (MMR_DEVICE_ONLY).
#pragma once
#ifndef MMR_DEVICE_ONLY

#include <c10/hip/HIPStream.h>
#include <torch/library.h>
#include <ATen/ATen.h>

#include "platform.h"

#define MMR_CHECK(op, arg, cond, msg) TORCH_CHECK((cond), "minimax_rocm_ext.", op, ": argument '", arg, "' ", msg)

// A launch's error: the code mmr::launch_kernel returned, or (after <<<>>>)
// the last error.
#define MMR_CHECK_LAUNCH_RESULT(op, err)                                                                     \
  do {                                                                                                       \
    const hipError_t e_ = (err);                                                                             \
    TORCH_CHECK(e_ == hipSuccess, "minimax_rocm_ext.", op, ": launch failed: ", hipGetErrorString(e_));     \
  } while (0)
#define MMR_CHECK_LAUNCH(op) MMR_CHECK_LAUNCH_RESULT(op, hipGetLastError())

namespace mmr {
inline hipStream_t current_stream() { return c10::hip::getCurrentHIPStream().stream(); }

inline int multiprocessor_count() {
  int dev = 0, n = 0;
  (void)hipGetDevice(&dev);
  (void)hipDeviceGetAttribute(&n, hipDeviceAttributeMultiprocessorCount, dev);
  return n;
}
}  // namespace mmr

#endif  // MMR_DEVICE_ONLY
