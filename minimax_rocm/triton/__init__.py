"""Triton kernels (portable: AMD and NVIDIA). Each kernel module exposes plain
Python launch functions and `aot_specs()`, the production shapes that the
ahead-of-time compile checks build for gfx942, gfx950 and sm90."""
