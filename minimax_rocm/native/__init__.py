"""Building the native extension: HIP -> CUDA translation (hip2cuda), the
extension loader (ext), and the CPU compile checks (compile_checks)."""
