"""moe_align in Triton: group this rank's routes by LOCAL expert, each group
padded to BLOCK_M, entirely on the device (no host sync, graph-capturable).

Layout contract: minimax_rocm.reference.moe_align / align_buffer_size. The
result is deterministic and equals the reference exactly: inside a group the
routes keep their flat order (t * k + j), so even the set of routes in each
block of a multi-block group matches.

Three launches (PDL-chained on sm90: minimax_rocm/triton/dependent_launch.py):
  1. count: per chunk of CHUNK routes, a histogram of local expert ids
     (`counts[chunk, e]`, every entry written: a CHUNK x E compare-and-sum in
     registers, so no zeroed buffer and no memset launch before it),
  2. offsets: one program scans the chunk histograms (per expert, over
     chunks), pads each group to BLOCK_M, writes group starts, the padded
     total, and every block's local expert id (-1 past the total),
  3. place: a route's slot = group start + routes of its expert in earlier
     chunks + earlier routes of its expert in its own chunk (a CHUNK x CHUNK
     comparison); positions holding no route get the padding id (= number of
     routes). The two kinds of writes go to disjoint positions.
Any id outside [0, E_glob), or whose map entry is outside [0, E_loc), is a
remote route: dropped, never used as an index.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .. import reference
from . import dependent_launch
from .dependent_launch import pdl_enter


@triton.jit
def local_expert(gid, map_ptr, E_glob, E_loc, HAS_MAP: tl.constexpr):
    """Global expert ids -> local ids in [0, E_loc), or -1 (remote or invalid)."""
    gid = gid.to(tl.int32)
    ok = (gid >= 0) & (gid < E_glob)
    if HAS_MAP:
        loc = tl.load(map_ptr + gid, mask=ok, other=-1).to(tl.int32)
    else:
        loc = gid
    return tl.where(ok & (loc >= 0) & (loc < E_loc), loc, -1)


@triton.jit
def _count_kernel(ids_ptr, map_ptr, counts_ptr, numel, E_glob, E_loc,
                  HAS_MAP: tl.constexpr, CHUNK: tl.constexpr, E_PAD: tl.constexpr, PDL: tl.constexpr = False):
    pdl_enter(PDL)
    c = tl.program_id(0)
    offs = c * CHUNK + tl.arange(0, CHUNK)
    inb = offs < numel
    loc = local_expert(tl.load(ids_ptr + offs, mask=inb, other=-1), map_ptr, E_glob, E_loc, HAS_MAP)
    e = tl.arange(0, E_PAD)
    # remote / invalid routes are -1 and match no expert
    hist = tl.sum((loc[:, None] == e[None, :]).to(tl.int32), 0)
    tl.store(counts_ptr + c.to(tl.int64) * E_loc + e, hist, mask=e < E_loc)


@triton.jit
def _offsets_kernel(counts_ptr, prefix_ptr, starts_ptr, block_ids_ptr, npost_ptr, n_chunks, E_loc, max_blocks,
                    BLOCK_M: tl.constexpr, E_PAD: tl.constexpr, C_TILE: tl.constexpr, B_CHUNK: tl.constexpr,
                    PDL: tl.constexpr = False):
    pdl_enter(PDL)
    e = tl.arange(0, E_PAD)
    em = e < E_loc
    # per expert: routes in earlier chunks (exclusive scan over chunks)
    running = tl.zeros((E_PAD,), dtype=tl.int32)
    for c0 in range(0, n_chunks, C_TILE):
        c = c0 + tl.arange(0, C_TILE)
        m = (c < n_chunks)[:, None] & em[None, :]
        idx = c.to(tl.int64)[:, None] * E_loc + e[None, :]
        cnt = tl.load(counts_ptr + idx, mask=m, other=0)
        incl = tl.cumsum(cnt, 0)
        tl.store(prefix_ptr + idx, incl - cnt + running[None, :], mask=m)
        running += tl.sum(cnt, 0)
    padded = (running + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    ends = tl.cumsum(padded, 0)
    tl.store(starts_ptr + e, ends - padded, mask=em)
    tl.store(starts_ptr + E_loc + e, running, mask=em)       # group sizes
    total = tl.sum(padded, 0)
    tl.store(npost_ptr, total)
    # block b belongs to the first expert whose group ends after b * BLOCK_M
    # (empty groups end where they start, so they are skipped).
    for b0 in range(0, max_blocks, B_CHUNK):
        b = b0 + tl.arange(0, B_CHUNK)
        row = b * BLOCK_M
        before = (ends[None, :] <= row[:, None]) & em[None, :]
        owner = tl.sum(before.to(tl.int32), 1)
        owner = tl.where(row < total, owner, -1)
        tl.store(block_ids_ptr + b, owner, mask=b < max_blocks)


@triton.jit
def _place_kernel(ids_ptr, map_ptr, prefix_ptr, starts_ptr, block_ids_ptr, npost_ptr, sorted_ptr,
                  numel, n_chunks, max_padded, E_glob, E_loc,
                  HAS_MAP: tl.constexpr, BLOCK_M: tl.constexpr, CHUNK: tl.constexpr, PAD_BLOCK: tl.constexpr,
                  PDL: tl.constexpr = False):
    pdl_enter(PDL)
    pid = tl.program_id(0)
    if pid < n_chunks:
        # routes of chunk `pid` -> their slots, flat order kept inside a group
        i = tl.arange(0, CHUNK)
        offs = pid * CHUNK + i
        inb = offs < numel
        loc = local_expert(tl.load(ids_ptr + offs, mask=inb, other=-1), map_ptr, E_glob, E_loc, HAS_MAP)
        ok = inb & (loc >= 0)
        safe = tl.where(ok, loc, 0)
        # earlier routes of the same expert within this chunk
        same = (loc[None, :] == loc[:, None]) & (i[None, :] < i[:, None])
        rank = tl.sum(same.to(tl.int32), 1)
        base = tl.load(prefix_ptr + pid.to(tl.int64) * E_loc + safe, mask=ok, other=0)
        start = tl.load(starts_ptr + safe, mask=ok, other=0)
        tl.store(sorted_ptr + start + base + rank, offs, mask=ok)
    else:
        # positions without a route -> the padding id (names differ from the
        # branch above: Triton unifies same-named values across branches)
        pos = (pid - n_chunks) * PAD_BLOCK + tl.arange(0, PAD_BLOCK)
        pin = pos < max_padded
        total = tl.load(npost_ptr)
        owner = tl.load(block_ids_ptr + pos // BLOCK_M, mask=pin, other=-1)
        used = pin & (pos < total) & (owner >= 0)
        own = tl.where(used, owner, 0)
        g_start = tl.load(starts_ptr + own, mask=used, other=0)
        g_cnt = tl.load(starts_ptr + E_loc + own, mask=used, other=0)
        is_pad = pin & ((~used) | (pos - g_start >= g_cnt))
        tl.store(sorted_ptr + pos, tl.full(pos.shape, 0, tl.int32) + numel, mask=is_pad)


def moe_align(topk_ids: torch.Tensor, block_m: int, expert_map, num_local_experts: int, *, chunk: int = 64,
              pad_block: int = 1024, out: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sorted_route_ids, block_expert_ids, num_routes_post_padded) exactly as
    reference.moe_align; the padded count stays on the device. `out`: the
    three buffers to fill (every element is written)."""
    numel = topk_ids.numel()
    dev = topk_ids.device
    E = num_local_experts
    E_glob = E if expert_map is None else expert_map.shape[0]
    max_padded = reference.align_buffer_size(numel, block_m, E)
    max_blocks = max_padded // block_m
    i32 = dict(dtype=torch.int32, device=dev)
    if out is None:
        out = (torch.empty((max_padded,), **i32), torch.empty((max_blocks,), **i32), torch.empty((1,), **i32))
    sorted_ids, block_ids, npost = out
    assert sorted_ids.shape == (max_padded,) and block_ids.shape == (max_blocks,) and npost.shape == (1,)
    n_chunks = triton.cdiv(max(numel, 1), chunk)
    counts = torch.empty((n_chunks * E,), **i32)
    prefix = torch.empty((n_chunks * E,), **i32)
    starts = torch.empty((2 * E,), **i32)             # group starts | group sizes
    ids = topk_ids.reshape(-1)
    emap = ids if expert_map is None else expert_map
    has_map = expert_map is not None
    e_pad = max(16, triton.next_power_of_2(E))
    pdl = dependent_launch.launch(dev)
    _count_kernel[(n_chunks,)](ids, emap, counts, numel, E_glob, E, HAS_MAP=has_map, CHUNK=chunk, E_PAD=e_pad, **pdl)
    _offsets_kernel[(1,)](counts, prefix, starts, block_ids, npost, n_chunks, E, max_blocks, BLOCK_M=block_m,
                          E_PAD=e_pad, C_TILE=max(1, min(32, 4096 // e_pad)), B_CHUNK=max(1, min(64, 4096 // e_pad)),
                          **pdl)
    _place_kernel[(n_chunks + triton.cdiv(max_padded, pad_block),)](
        ids, emap, prefix, starts, block_ids, npost, sorted_ids, numel, n_chunks, max_padded, E_glob, E,
        HAS_MAP=has_map, BLOCK_M=block_m, CHUNK=chunk, PAD_BLOCK=pad_block, **pdl)
    return sorted_ids, block_ids, npost


def aot_specs():
    from .aot import AotSpec
    sig_count = {"ids_ptr": "*i32", "map_ptr": "*i32", "counts_ptr": "*i32", "numel": "i32", "E_glob": "i32",
                 "E_loc": "i32", "HAS_MAP": "constexpr", "CHUNK": "constexpr", "E_PAD": "constexpr",
                 "PDL": "constexpr"}
    sig_off = {"counts_ptr": "*i32", "prefix_ptr": "*i32", "starts_ptr": "*i32", "block_ids_ptr": "*i32",
               "npost_ptr": "*i32", "n_chunks": "i32", "E_loc": "i32", "max_blocks": "i32", "BLOCK_M": "constexpr",
               "E_PAD": "constexpr", "C_TILE": "constexpr", "B_CHUNK": "constexpr", "PDL": "constexpr"}
    sig_place = {"ids_ptr": "*i32", "map_ptr": "*i32", "prefix_ptr": "*i32", "starts_ptr": "*i32",
                 "block_ids_ptr": "*i32", "npost_ptr": "*i32", "sorted_ptr": "*i32", "numel": "i32",
                 "n_chunks": "i32", "max_padded": "i32", "E_glob": "i32", "E_loc": "i32", "HAS_MAP": "constexpr",
                 "BLOCK_M": "constexpr", "CHUNK": "constexpr", "PAD_BLOCK": "constexpr", "PDL": "constexpr"}
    return [
        AotSpec("moe_align.count[EP8]", _count_kernel, sig_count, dict(HAS_MAP=True, CHUNK=64, E_PAD=16)),
        AotSpec("moe_align.count[E=256]", _count_kernel, sig_count, dict(HAS_MAP=False, CHUNK=64, E_PAD=256)),
        # "before" aligns all 256 M2 experts: the widest offsets kernel
        AotSpec("moe_align.offsets[E=256,BM=64]", _offsets_kernel, sig_off,
                dict(BLOCK_M=64, E_PAD=256, C_TILE=16, B_CHUNK=16)),
        AotSpec("moe_align.place[EP8,BM=16]", _place_kernel, sig_place,
                dict(HAS_MAP=True, BLOCK_M=16, CHUNK=64, PAD_BLOCK=1024)),
    ]
