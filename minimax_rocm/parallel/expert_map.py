"""Global -> local expert maps for expert parallelism (contiguous split)."""
from __future__ import annotations

import torch


def split_range(n: int, parts: int, idx: int, what: str = "items", who: str = "split_range") -> tuple[int, int]:
    """[start, end) of part idx of n items split contiguously; the first
    n % parts parts hold one more. The one split rule of the package: experts
    over EP ranks, layers over PP stages, shared-expert columns."""
    if parts <= 0 or not 0 <= idx < parts:
        raise ValueError(f"{who}: part {idx} not in [0, {parts})")
    if n < parts:
        raise ValueError(f"{who}: {n} {what} cannot be split over {parts} ranks")
    base, extra = divmod(n, parts)
    start = idx * base + min(idx, extra)
    return start, start + base + (1 if idx < extra else 0)


def local_expert_range(num_experts: int, ep_size: int, ep_rank: int) -> tuple[int, int]:
    """[start, end) of rank ep_rank's experts (uneven counts: the first
    num_experts % ep_size ranks hold one more)."""
    return split_range(num_experts, ep_size, ep_rank, "experts", who="expert_map")


def expert_map(num_experts: int, ep_size: int, ep_rank: int, device=None) -> torch.Tensor:
    """`[num_experts]` int32: local id of each global expert on ep_rank, -1 if remote."""
    start, end = local_expert_range(num_experts, ep_size, ep_rank)
    m = torch.full((num_experts,), -1, dtype=torch.int32, device=device)
    m[start:end] = torch.arange(end - start, dtype=torch.int32, device=device)
    return m
