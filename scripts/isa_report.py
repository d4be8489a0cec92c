#!/usr/bin/env python3
"""Per-kernel gfx942 ISA report of hip/*.hip: VGPRs, AGPRs, SGPRs, LDS, scratch
(spills), MFMA count, 16-byte loads. Exit status 1 if any kernel spills.

    python scripts/isa_report.py [--arch gfx942] [--json] [hip/foo.hip ...]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minimax_rocm.native.compile_checks import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
