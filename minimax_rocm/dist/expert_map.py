"""Global -> local expert maps for expert parallelism (contiguous split)."""
from __future__ import annotations

import torch


def local_expert_range(num_experts: int, ep_size: int, ep_rank: int) -> tuple[int, int]:
    """[start, end) of rank ep_rank's experts. Uneven counts: the first
    num_experts % ep_size ranks hold one more."""
    if ep_size <= 0 or not 0 <= ep_rank < ep_size:
        raise ValueError(f"expert_map: ep_rank {ep_rank} not in [0, {ep_size})")
    if num_experts < ep_size:
        raise ValueError(f"expert_map: {num_experts} experts cannot be split over {ep_size} ranks")
    base, extra = divmod(num_experts, ep_size)
    start = ep_rank * base + min(ep_rank, extra)
    return start, start + base + (1 if ep_rank < extra else 0)


def expert_map(num_experts: int, ep_size: int, ep_rank: int, device=None) -> torch.Tensor:
    """`[num_experts]` int32: local id of each global expert on ep_rank, -1 if remote."""
    start, end = local_expert_range(num_experts, ep_size, ep_rank)
    m = torch.full((num_experts,), -1, dtype=torch.int32, device=device)
    m[start:end] = torch.arange(end - start, dtype=torch.int32, device=device)
    return m
