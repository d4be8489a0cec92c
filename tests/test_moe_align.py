"""Triton moe_align against reference.moe_align: same padded count, same
per-block local expert ids, the same set of routes per block, padding
everywhere else. The kernel keeps the flat route order inside a group (no
atomics decide an order), so the buffers are also compared exactly. Every
output element is poisoned first, so an unwritten one fails."""
import pytest
import torch

from minimax_rocm import reference as R
from minimax_rocm.parallel import expert_map
from minimax_rocm.triton.moe_align import moe_align

pytestmark = pytest.mark.interpreter  # CPU tensors to Triton kernels (conftest.py)

POISON = -7


def _ids(T, k, E, dtype=torch.int32, device="cpu"):
    if T == 0:
        return torch.zeros(0, k, dtype=dtype, device=device)
    return torch.stack([torch.randperm(E)[:k] for _ in range(T)]).to(dtype).to(device)


def _run(ids, bm, emap, E_loc):
    n = R.align_buffer_size(ids.numel(), bm, E_loc)
    dev = ids.device
    out = (torch.full((n,), POISON, dtype=torch.int32, device=dev),
           torch.full((n // bm,), POISON, dtype=torch.int32, device=dev),
           torch.full((1,), POISON, dtype=torch.int32, device=dev))
    return moe_align(ids, bm, emap, E_loc, out=out)


def _check(got, ref, bm):
    s, b, n = got
    rs, rb, rn = ref
    assert s.shape == rs.shape and b.shape == rb.shape
    assert int(n) == int(rn), (int(n), int(rn))
    assert torch.equal(b.cpu(), rb.cpu())
    s, rs = s.cpu(), rs.cpu()
    for i in range(int(rn) // bm):
        blk = slice(i * bm, (i + 1) * bm)
        assert sorted(s[blk].tolist()) == sorted(rs[blk].tolist()), f"block {i}"
    assert torch.equal(s[int(rn):], rs[int(rn):])
    assert torch.equal(s, rs)                    # deterministic: the reference's order too


@pytest.mark.parametrize("T,k,E,ep,rank,bm", [
    (7, 2, 8, 2, 1, 4),        # EP2, tiny blocks
    (33, 4, 16, 4, 3, 16),     # several blocks per expert
    (20, 8, 32, 8, 0, 16),     # M2-like top-8
    (5, 8, 32, 1, 0, 16),      # no map: every expert local
    (40, 4, 16, 2, 0, 64),     # "before"-style 64-row tiles
])
@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
def test_matches_reference(T, k, E, ep, rank, bm, id_dtype):
    ids = _ids(T, k, E, id_dtype)
    emap = expert_map(E, ep, rank) if ep > 1 else None
    if emap is not None and id_dtype == torch.int64:
        emap = emap.long()
    E_loc = E // ep
    _check(_run(ids, bm, emap, E_loc), R.moe_align(ids, bm, emap, E_loc), bm)


def test_empty_batch_and_rank_without_routes():
    emap = expert_map(8, 2, 1)
    s, b, n = _run(_ids(0, 2, 8), 16, emap, 4)
    assert int(n) == 0 and (b == -1).all() and (s == 0).all()
    ids = torch.tensor([[0, 1], [2, 3], [1, 0]], dtype=torch.int32)   # only rank 0's experts
    s, b, n = _run(ids, 16, emap, 4)
    assert int(n) == 0 and (b == -1).all() and (s == ids.numel()).all()


def test_invalid_ids_are_dropped_never_indexed():
    # The op rejects these; the kernels must still treat them as remote (graph
    # capture skips the value checks), and a bad map entry too.
    E, E_loc = 8, 4
    emap = expert_map(E, 2, 1)
    emap[5] = 9                       # a corrupt local id: out of [0, E_loc)
    ids = torch.tensor([[4, -1], [E + 3, 6], [5, 7], [6, 4]], dtype=torch.int32)
    s, b, n = _run(ids, 4, emap, E_loc)
    clean = torch.tensor([[4, 0], [0, 6], [0, 7], [6, 4]], dtype=torch.int32)   # 0 is remote on rank 1
    good_map = expert_map(E, 2, 1)
    good_map[5] = -1
    _check((s, b, n), R.moe_align(clean, 4, good_map, E_loc), 4)


@pytest.mark.gpu
@pytest.mark.parametrize("T,k,E,ep,bm", [(216, 4, 128, 8, 16), (2048, 8, 256, 8, 16), (1024, 4, 128, 1, 64),
                                         (2048, 8, 256, 1, 64)])
def test_gpu_matches_reference(T, k, E, ep, bm):
    dev = torch.device("cuda")
    ids = _ids(T, k, E, device=dev)
    emap = expert_map(E, ep, ep - 1, device=dev) if ep > 1 else None
    E_loc = E // ep
    _check(_run(ids, bm, emap, E_loc), R.moe_align(ids, bm, emap, E_loc), bm)
