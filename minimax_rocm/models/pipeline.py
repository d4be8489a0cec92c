"""Pipeline-parallel forward: each stage runs its layers and hands the hidden
states to the next stage (point-to-point send/recv; gloo on the CPU, NCCL or
RCCL on GPUs)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist


def pipeline_forward(stage: Callable[[torch.Tensor], torch.Tensor], x: Optional[torch.Tensor],
                     stage_ranks: Sequence[int], pp_rank: int, shape: Sequence[int], dtype: torch.dtype,
                     device: torch.device) -> Optional[torch.Tensor]:
    """Run this rank's stage in the pipeline whose stage p lives on global rank
    stage_ranks[p]. Stage 0 takes x; the others receive `shape`/`dtype` hidden
    states from the previous stage. Returns the final hidden states on the
    last stage and None elsewhere."""
    pp = len(stage_ranks)
    if not 0 <= pp_rank < pp:
        raise ValueError(f"pipeline_forward: pp_rank {pp_rank} not in [0, {pp})")
    if pp_rank == 0:
        if x is None:
            raise ValueError("pipeline_forward: stage 0 needs the input hidden states")
        h = x
    else:
        h = torch.empty(tuple(shape), dtype=dtype, device=device)
        dist.recv(h, src=stage_ranks[pp_rank - 1])
    h = stage(h).contiguous()
    if pp_rank + 1 < pp:
        dist.send(h, dst=stage_ranks[pp_rank + 1])
        return None
    return h
