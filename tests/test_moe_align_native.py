"""The native moe_align (hip/moe_align.hip) equals the reference exactly:
same groups, same route order inside a group, same padding and block ids."""
import pytest
import torch

from minimax_rocm import reference
from minimax_rocm.parallel import expert_map, local_expert_range

pytestmark = pytest.mark.gpu


def _run(native, ids, block_m, emap, e_loc):
    n = reference.align_buffer_size(ids.numel(), block_m, e_loc)
    out = (torch.full((n,), -7, dtype=torch.int32, device="cuda"),
           torch.full((n // block_m,), -7, dtype=torch.int32, device="cuda"),
           torch.full((1,), -7, dtype=torch.int32, device="cuda"))
    native.moe_align(ids, emap, e_loc, block_m, *out)
    return out


# Routes are cut into one range per wave, with at most 8192 / local-experts
# ranges: 1024 local experts take the fewest (8), 16384 routes the longest.
@pytest.mark.parametrize("T,k,E,ep", [(1, 4, 128, 8), (16, 4, 128, 8), (216, 4, 128, 8), (2048, 8, 256, 8),
                                      (64, 8, 256, 1), (7, 3, 10, 3), (4096, 4, 128, 8), (300, 8, 1024, 1)])
@pytest.mark.parametrize("block_m", [16, 64])
@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
def test_matches_reference_exactly(native, T, k, E, ep, block_m, id_dtype):
    ids = torch.stack([torch.randperm(E)[:k] for _ in range(T)]).to(id_dtype).cuda()
    for rank in range(ep):
        lo, hi = local_expert_range(E, ep, rank)
        emap = expert_map(E, ep, rank, device="cuda") if ep > 1 else None
        got = _run(native, ids, block_m, emap, hi - lo)
        ref = reference.moe_align(ids.cpu(), block_m, None if emap is None else emap.cpu(), hi - lo)
        for g, r in zip(got, ref):
            assert torch.equal(g.cpu(), r), (rank, g, r)


def test_out_of_map_ids_are_remote_never_an_index(native):
    ids = torch.tensor([[0, 5], [1000, -3]], dtype=torch.int32, device="cuda")
    emap = torch.tensor([0, -1, -1, -1, -1, 1], dtype=torch.int32, device="cuda")
    sorted_ids, blocks, n = _run(native, ids, 16, emap, 2)
    assert n.item() == 32
    assert sorted_ids[:16].tolist() == [0] + [4] * 15 and sorted_ids[16:32].tolist() == [1] + [4] * 15
    assert blocks.tolist()[:2] == [0, 1]


@pytest.mark.parametrize("block_m", [16, 64])
def test_one_hot_expert_and_long_groups(native, block_m):
    # Every token routes to experts 0..k-1: whole waves of lanes share an
    # expert, and a group spans every range.
    T, k, E = 1500, 4, 16
    ids = torch.arange(k, dtype=torch.int32).repeat(T, 1)
    ids[::7] = torch.tensor([5, 9, 0, 15], dtype=torch.int32)
    got = _run(native, ids.cuda(), block_m, None, E)
    ref = reference.moe_align(ids, block_m, None, E)
    for g, r in zip(got, ref):
        assert torch.equal(g.cpu(), r)
