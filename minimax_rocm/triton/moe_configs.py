"""Per-arch tile table of the MoE expert GEMMs (minimax_rocm/triton/fused_moe.py).

The expert GEMMs of a decode step are bound by reading expert weights: few rows
per expert (about 7 per local expert at EP8 / 216 tokens / top-4) against
`[2I, H]` and `[H, I]` weight matrices of tens of MB. So the table is about
streaming weights at full bandwidth:
  * the grid is split over N only (M is tiny), into enough work items that
    every SM/CU has weight tiles in flight (`min_items_per_cu` below lowers
    BLOCK_N when few experts are active);
  * BLOCK_K wide enough for 16-byte loads of whole cache lines and a long K
    loop; enough pipeline stages to cover HBM latency;
  * BLOCK_M as small as the rows per expert allow (16 by default: a 64-row
    tile wastes most of its rows at decode), larger only when the routing
    gives an expert more rows.

Everything here is data: `choose()` turns (arch, gemm, problem size) into a
`Tile`; the benchmark (minimax_rocm/bench/fused_moe.py) measured the sm90
entries on an H100; the gfx942 / gfx950 entries are reasoned (no AMD GPU here)
and checked by the AOT compile test (v_mfma, no scratch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

from ..platform import arch_family


@dataclass(frozen=True)
class Tile:
    block_m: int = 16
    block_n: int = 64
    block_k: int = 128
    num_warps: int = 4
    num_stages: int = 3
    swap_ab: bool = False      # compute C^T = W X^T: the weight tile is the MMA's M side (wgmma wants M >= 64)
    progs_per_cu: int = 2      # persistent grid: programs per SM/CU (the grid never exceeds the work items)
    group_m: int = 0           # work-item order (fused_moe.item_coords): 0 N-tile major, else M-block groups
    tma_w: bool = False        # BF16 GEMMs: weight tiles through a tensor descriptor (TMA on sm90+) where it fits

    def constexprs(self) -> dict:
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, BLOCK_K=self.block_k, GROUP_M=self.group_m,
                    SWAP_AB=self.swap_ab)


@dataclass(frozen=True)
class PrefillTiles:
    """GEMM1 and GEMM2 tiles from `min_rows` expected rows per active expert
    on (one tier of an entry's prefill regime)."""
    min_rows: float
    gemm1: Tile
    gemm2: Tile


@dataclass(frozen=True)
class ArchMoe:
    # Fuse the activation (SwiGLU-OAI / silu-and-mul) into GEMM1's epilogue?
    fuse_act: bool
    why_fuse: str
    gemm1: Tile                # GEMM1 (w13, K = H), per fused output column tile
    gemm2: Tile                # GEMM2 (w2, K = I)
    gemm2_short_k: Tile        # GEMM2 when K = I <= short_k (TP8 shards: I = 384)
    before: Tile               # the "before" configuration: 64-row tiles over globally aligned experts
    short_k: int = 512
    # Few active blocks (small T): halve BLOCK_N and double BLOCK_K (same tile
    # bytes; BLOCK_K capped at 256 and at K's largest power-of-two divisor)
    # while there are fewer than this many work items per CU, down to min_block_n.
    min_items_per_cu: float = 3.0
    min_block_n: int = 32
    # Up to this many tokens each route is its own block (no alignment
    # kernels: the GEMMs map global expert ids themselves). One token's routes
    # are distinct experts, so every touched weight is still read once.
    per_route_max_tokens: int = 0
    why_per_route: str = ("not measured: the alignment at every size (at one token its three launches took "
                          "7.2 of 39 us, H100, M3 TP8; bench fused_moe times both at T=1)")
    # BLOCK_M by expected rows per active expert: first (max_rows, block_m) that fits
    block_m_by_rows: tuple[tuple[float, int], ...] = ((24.0, 16), (math.inf, 64))
    # pipeline stages of the sparse GEMMs when BLOCK_M >= 64 (bigger A tiles)
    large_m_stages: int = 2
    # Prefill (a chunked-prefill step: tens to hundreds of rows per active
    # expert, where the expert GEMMs turn compute-bound): tiers by ascending
    # min_rows, one BLOCK_M for all; the last tier whose min_rows the expected
    # rows per active expert reach gives GEMM1 and GEMM2 their tiles. Empty:
    # the decode table's 64-row tiles serve every size.
    prefill: tuple[PrefillTiles, ...] = ()
    why_prefill: str = "not measured: the 64-row decode tiles at every size"
    # Native MXFP8 GEMMs (triton/fused_moe_mxfp8.py): "fp8" one fp8 MMA per
    # 32-wide K block with both scales applied to its fp32 result; "upcast"
    # fp8 tiles scaled to BF16 in registers, one BF16 MMA per K step;
    # "scaled" tl.dot_scaled.
    mxfp8_dot: str = "upcast"
    why_mxfp8_dot: str = ""
    # fp8 BLOCK_K = this many times the BF16 tile's (same bytes per row: 2)
    mxfp8_block_k_factor: int = 2
    # The native MXFP8 GEMMs' own tile (both GEMMs, BLOCK_M below 64, no
    # small-T narrowing); None: the BF16 tiles at fp8 widths (above)
    mxfp8_tile: Optional[Tile] = None
    why_mxfp8_tile: str = ""
    # ... and in the prefill regime (from prefill_min_rows; its BLOCK_M); None:
    # the prefill tiles above at fp8 widths
    mxfp8_prefill_tile: Optional[Tile] = None
    # the dot mode in the prefill regime (None: mxfp8_dot)
    mxfp8_prefill_dot: Optional[str] = None
    # upcast mode: SwiGLU + MX rounding in GEMM1's epilogue (no fp32 `[rows,
    # 2I]` intermediate, no separate kernel; GEMM1's BLOCK_N halves). Off:
    # on H200 the fused GEMM1 was 1.24-1.26x slower end to end at M3 T=16..216
    # (362 vs 289 us at T=216, bench fused_moe_mxfp8), its two half-width
    # products per step costing more than the 8.6 MB fp32 round trip saves.
    mxfp8_fuse_act: bool = False
    # GEMM2 of the native MXFP8 MoE adds each route's weighted row into the
    # BF16 output with BF16 atomics (the output is the accumulator: no fp32
    # buffer, no conversion launch after it) instead of fp32 atomics into a
    # buffer converted at the end. Up to top_k roundings to BF16 per output
    # element instead of one: far below the fp8 operands' own error.
    mxfp8_bf16_atomics: bool = False
    why_mxfp8_bf16_atomics: str = "not measured: fp32 atomics and a conversion"
    # upcast mode: the activation rounding pass (and the output zeroing it
    # carries) runs on a second stream beside the routing alignment, joined
    # before GEMM1: in a CUDA graph, two branches. The alignment's three
    # short launches leave the GPU nearly idle, so the rounding hides.
    mxfp8_overlap_rounding: bool = False
    why_mxfp8_overlap_rounding: str = "not measured: one stream"

    @property
    def prefill_min_rows(self) -> float:
        """Expected rows per active expert from which the prefill tiles serve."""
        return self.prefill[0].min_rows if self.prefill else math.inf


# sm90 prefill tiles: 128 x 64 (GEMM1, fused: 128 weight rows) and 128 x 128
# (GEMM2) with groups of 8 M blocks sweeping the N tiles (A rows stay in L2:
# without it A is read again per N tile once it outgrows L2). From 256 rows
# per expert GEMM1 takes 128 x 128 over 8 warps (each A tile meets twice the
# weight rows) and GEMM2 loads its weight tiles by TMA.
SM90_PREFILL_GEMM1 = Tile(block_m=128, block_n=64, block_k=64, num_warps=4, num_stages=3, progs_per_cu=2, group_m=8)
SM90_PREFILL_GEMM2 = Tile(block_m=128, block_n=128, block_k=64, num_warps=4, num_stages=3, progs_per_cu=2, group_m=8)
SM90_PREFILL = (
    PrefillTiles(64, SM90_PREFILL_GEMM1, SM90_PREFILL_GEMM2),
    PrefillTiles(256, Tile(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3, progs_per_cu=1, group_m=8),
                 replace(SM90_PREFILL_GEMM2, tma_w=True)),
)
# gfx942's prefill tiles, which gfx950 shares (reasoned, not measured: the entries say why):
# 128 x 64 for both GEMMs from 128 rows per expert
GFX942_PREFILL = (PrefillTiles(128, *[Tile(block_m=128, block_n=64, block_k=64, num_warps=4, num_stages=2,
                                          progs_per_cu=2, group_m=8)] * 2),)
# measured on H100 (moe_prefill sweep-mxfp8, M3 / M2 EP8, T=4096 / 16384): 0.72-0.83x the BF16 MoE against
# 0.53-0.62x with the BF16 prefill tiles at fp8 widths (upcast dots are BF16 MMAs)
SM90_MXFP8_PREFILL = Tile(block_m=128, block_n=128, block_k=128, num_warps=8, num_stages=3, progs_per_cu=1, group_m=8)

ARCHS: dict[str, ArchMoe] = {
    # H100 / H200 (132 SMs, 228 KB shared memory per SM, ~3.0 TB/s copy).
    # Measured on an H100 (bench fused_moe + its tile sweep, two rounds:
    # minimax_rocm/bench/fused_moe.py sweep_plan): with these tiles GEMM1 and
    # GEMM2 alone stream 95-101% of the copy-bandwidth floor from T = 16 to
    # 216 at the M3 / M2 EP8-rank and M3 TP8 shapes, 87-96% at T = 1024
    # (BLOCK_M 64, 2 stages). BLOCK_M 16 keeps Triton on mma.sync (wgmma
    # wants 64 rows); swap-AB (wgmma with the weight tile as M) measured
    # within +-1%, so it stays off. End to end (align + GEMMs + reduce):
    # 86-99% of the weight-bytes floor at T = 16..1024.
    "sm90": ArchMoe(
        fuse_act=True,
        why_fuse=("measured on H100 (bench fused_moe): fused is as fast or faster in every case: "
                  "within 1% at T=1, 1-4% at T=16..216, 8-9% at T=1024 (M3 EP8 656 vs 716 us, "
                  "M2 EP8 357 vs 392 us, M3 TP8 710 vs 775 us)"),
        gemm1=Tile(block_n=64, block_k=128, num_warps=4, num_stages=3, progs_per_cu=2),
        gemm2=Tile(block_n=128, block_k=128, num_warps=4, num_stages=3, progs_per_cu=2),
        gemm2_short_k=Tile(block_n=128, block_k=128, num_warps=4, num_stages=3, progs_per_cu=2),
        before=Tile(block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=3, progs_per_cu=2),
        large_m_stages=2,
        mxfp8_dot="upcast",
        why_mxfp8_dot=("measured on H200 (bench fused_moe_mxfp8, M3 EP8 rank, T=64/216): upcast (BF16-image "
                       "activations, W bytes moved into BF16 fields, one multiply per element) 288/293 us, fp8 dot "
                       "per 32-wide block 622/658 us, tl.dot_scaled 876/889 us (BF16 MoE 425/447 us)"),
        mxfp8_bf16_atomics=True,
        why_mxfp8_bf16_atomics=("measured on H200 (bench fused_moe_mxfp8 variant rows, same run, no PDL; "
                                "benchmarks/history/fused_moe_mxfp8.md): packed bf16x2 red into the BF16 output vs "
                                "fp32 atomics + conversion: M3 EP8 T=16/64/216 166.7/283.7/286.1 vs "
                                "169.7/283.7/288.2 us, M2 EP8 99.7/156.4/161.8 vs 101.6/157.9/165.0 us"),
        mxfp8_overlap_rounding=True,
        why_mxfp8_overlap_rounding=("measured on H200 (python -m minimax_rocm.bench.fused_moe_mxfp8 spread, "
                                    "same run, M3 EP8): rounding beside the alignment vs after it, T=16/64/216 "
                                    "161.6-162.8 / 272.6-276.7 / "
                                    "275.8-278.1 us vs 162.9-163.8 / 273.0-275.2 / 277.9-279.1 us: 1-2 us at T=16 and "
                                    "216, within noise at T=64"),
        prefill=SM90_PREFILL,
        why_prefill=("measured on H100 (moe_prefill sweep, GEMMs alone, 18 tiles per GEMM at BLOCK_M 64 and 128, "
                     "T=2048-16384, three rank shapes: the first tier beats the 64-row tiles 1.04-1.11x from 64 "
                     "rows per expert and is best or within 4% at 128; the second tier beats the first 1.05-1.27x "
                     "from 256 rows; bench moe_prefill end to end: 1.04-1.92x vLLM's fused_experts at T=2048-16384; "
                     "benchmarks/history/fused_moe.md)"),
        mxfp8_tile=Tile(block_n=64, block_k=256, num_warps=4, num_stages=3, progs_per_cu=3),
        mxfp8_prefill_tile=SM90_MXFP8_PREFILL,
        why_mxfp8_tile=("measured on H200 (python -m minimax_rocm.bench.fused_moe_mxfp8 sweep, GEMMs alone, M3 and "
                        "M2 EP8 ranks, T=16/64/216): BN 64 / BK 256 / 3 stages / 3 programs per SM is within 2% of "
                        "the best of 13 tiles for both GEMMs (GEMM1 81-87% of its fp8 floor, GEMM2 63-81%); the "
                        "BF16 table's small-T narrowing to BN 32 was 1.6x slower at T=16, 4 stages 10-30% slower"),
    ),
    # B200: sm90's tiles (not measured here). MX hardware: at 128-row tiles
    # tl.dot_scaled lowers to tcgen05.mma kind::mxf8f6f4.block_scale (the
    # e8m0 scales applied by the tensor core); 16-row tiles stay on upcast
    # dots (there it lowers to a BF16 mma.sync).
    "sm100": ArchMoe(
        fuse_act=True,
        why_fuse="not measured: follows sm90",
        gemm1=Tile(block_n=64, block_k=128, num_warps=4, num_stages=3, progs_per_cu=2),
        gemm2=Tile(block_n=128, block_k=128, num_warps=4, num_stages=3, progs_per_cu=2),
        gemm2_short_k=Tile(block_n=128, block_k=128, num_warps=4, num_stages=3, progs_per_cu=2),
        before=Tile(block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=3, progs_per_cu=2),
        large_m_stages=2,
        prefill=SM90_PREFILL,
        why_prefill="not measured: sm90's prefill tiles",
        mxfp8_prefill_tile=SM90_MXFP8_PREFILL,
        mxfp8_prefill_dot="scaled",
    ),
    # MI300X (304 CUs, 64 KB LDS per CU, wave64, 5.3 TB/s HBM3, 256 MB Infinity
    # Cache). Reasoned, checked by the AOT compile (v_mfma, no scratch):
    #  * BLOCK_M 16: the MFMA 16x16x16 bf16 shape; at ~7 rows per local expert a
    #    32- or 64-row tile only multiplies padding (64 once an expert averages
    #    more than 24 rows, as measured on sm90).
    #  * BLOCK_K 64: one 128-byte row segment per weight row per stage; 16-byte
    #    loads (global_load_dwordx4) cover it. The fused GEMM1 stage holds gate
    #    + up (2 x 64 rows) + the 16-row A tile: (128 + 16) x 64 x 2 B = 18 KB;
    #    num_stages 2 on AMD's stream pipeliner is one LDS buffer plus the next
    #    tile in registers (the AOT compile shows 18 KB of LDS), so three
    #    workgroups fit in 64 KB. BLOCK_K 128 would need 36 KB: one workgroup
    #    per CU and no latency hiding between them.
    #  * BLOCK_N 64 (GEMM1, fused: 128 weight rows per program), 128 (GEMM2):
    #    at the M3 EP8 rank 8..16 active experts x 48 column tiles = 384..768
    #    work items, >= 1.25 per CU, each streaming 1.5 MB (K = 6144): long
    #    enough to amortise the pipeline prologue; fewer active experts shrink
    #    BLOCK_N (min_items_per_cu).
    #  * 4 waves (256 lanes): accumulators 2 x 16 x 64 fp32 = 8 VGPRs per lane.
    #  * progs_per_cu 2: two resident workgroups per CU.
    #  * GEMM2 short K (TP8, I = 384): BLOCK_K 128 -> 3 K steps; BLOCK_N 64 keeps
    #    the stage at (64 + 16) x 128 x 2 B = 20 KB.
    #  * BLOCK_M 64 stage (GEMM1): (128 + 64) x 64 x 2 B = 24 KB: still two per CU.
    "gfx942": ArchMoe(
        fuse_act=True,
        why_fuse=("reasoned: fusing saves a launch and the [rows, 2I] round trip "
                  "(~1 MB vs ~1.2 GB of weights per rank and layer) and leaves the weight "
                  "stream unchanged when each program loads the gate and the matching up tile; "
                  "on sm90 the measured fused variant is never slower"),
        gemm1=Tile(block_n=64, block_k=64, num_warps=4, num_stages=2, progs_per_cu=2),
        gemm2=Tile(block_n=128, block_k=64, num_warps=4, num_stages=2, progs_per_cu=2),
        gemm2_short_k=Tile(block_n=64, block_k=128, num_warps=4, num_stages=2, progs_per_cu=2),
        before=Tile(block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=2, progs_per_cu=2),
        large_m_stages=2,
        # Prefill, reasoned (not measured): the GEMM reaches MI300X's ridge
        # (1307 TFLOP/s bf16 / 5.3 TB/s = 247 flops per weight byte, i.e. 247
        # rows per expert) near 128 rows per expert, where a 128-row tile is
        # at most half padding. 128 x 128 outputs per program in GEMM1 (fused:
        # 64 gate + 64 up columns), 128 x 64 in GEMM2, whose fp8 variant
        # keeps a second accumulator for each 32-wide block's scaled product
        # (at 128 x 128 it spilled 608 bytes at 512 VGPRs); fp32 accumulators
        # 128 x 128 / 256 lanes = 64 VGPRs per lane beside the MFMA 32x32x8
        # operands; one LDS stage of A and W, (128 + 128) x 64 x 2 B = 32 KB,
        # so two workgroups share the 64 KB of a CU. MXFP8: BLOCK_K doubles at
        # the same bytes.
        # Groups of 8 M blocks sweep the N tiles (group_m): the gathered
        # activations of a prefill step outgrow the 4 MB L2 of an XCD, as
        # they outgrew the H100's 50 MB (measured there: 1.2-1.6x).
        prefill=GFX942_PREFILL,
        why_prefill="reasoned from LDS (2 x 32 KB per CU) and VGPR budgets; AOT-compiled, not measured",
        # gfx942 has fp8 MFMA (v_mfma_f32_16x16x32_fp8_fp8) and no bf16 fast
        # path for fp8 inputs; the issue asks for fp8 MFMA. Not measured (no
        # MI300X here): the AOT compile shows fp8 MFMA and no scratch.
        mxfp8_dot="fp8",
        why_mxfp8_dot="reasoned: fp8 MFMA per 32-wide block; unmeasured",
    ),
    # MI355X (256 CUs, 160 KB LDS): gfx942's shapes with a deeper K step.
    "gfx950": ArchMoe(
        fuse_act=True,
        why_fuse="reasoned as gfx942",
        gemm1=Tile(block_n=64, block_k=128, num_warps=4, num_stages=2, progs_per_cu=2),
        gemm2=Tile(block_n=128, block_k=128, num_warps=4, num_stages=2, progs_per_cu=2),
        gemm2_short_k=Tile(block_n=64, block_k=128, num_warps=4, num_stages=2, progs_per_cu=2),
        before=Tile(block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=2, progs_per_cu=2),
        large_m_stages=2,
        # Prefill: gfx942's tiles (ridge 2.5 PFLOP/s bf16 / 8 TB/s = 312 rows
        # per expert). A deeper K step (BLOCK_K 128, a 64 KB stage of the 160
        # KB LDS) spilled in the MXFP8 GEMMs, whose fp8 BLOCK_K doubles to 256.
        prefill=GFX942_PREFILL,
        why_prefill="reasoned as gfx942 (VGPR budget of the fp8 GEMMs); AOT-compiled, not measured",
        # MX hardware: tl.dot_scaled lowers to v_mfma_scale_f32_32x32x64_f8f6f4
        # (16x16x128 at 16 rows), both e8m0 scales applied per 32-wide block
        # inside the instruction, so fp8 products need no promotion in VGPRs.
        mxfp8_dot="scaled",
        why_mxfp8_dot=("reasoned: gfx950's MX-scaled fp8 MFMA; AOT-compiled 100-184 VGPRs, no scratch, against "
                       "148-358 VGPRs for an fp8 MFMA per 32-wide block scaled in registers; not measured"),
    ),
    # The interpreter (CPU tests): the smallest tiles tl.dot takes, few programs
    # so the persistent loop runs several items per program.
    "cpu": ArchMoe(
        fuse_act=True,
        why_fuse="tests cover both",
        gemm1=Tile(block_m=16, block_n=16, block_k=16, num_warps=4, num_stages=1, progs_per_cu=1),
        gemm2=Tile(block_m=16, block_n=16, block_k=16, num_warps=4, num_stages=1, progs_per_cu=1),
        gemm2_short_k=Tile(block_m=16, block_n=16, block_k=16, num_warps=4, num_stages=1, progs_per_cu=1),
        before=Tile(block_m=64, block_n=16, block_k=16, num_warps=4, num_stages=1, progs_per_cu=1),
        min_items_per_cu=0.0,
        large_m_stages=1,
        per_route_max_tokens=1,
        why_per_route="tests cover both",
    ),
}


def arch_entry(arch: str) -> ArchMoe:
    return ARCHS[arch_family(arch)]


def expected_blocks(num_routes: int, num_experts: int, num_local: int, block_m: int) -> tuple[float, float]:
    """(expected active local experts, expected M blocks) for uniform random
    routing of num_routes routes over num_experts global experts."""
    if num_routes <= 0:
        return 0.0, 0.0
    local_routes = num_routes * num_local / num_experts
    active = num_local * (1.0 - (1.0 - 1.0 / num_experts) ** num_routes)
    # each active expert pads its last block: about half a block of padding
    blocks = active * 0.5 + local_routes / block_m if active else 0.0
    return active, max(blocks, min(active, 1.0))


def rows_per_active_expert(num_routes: int, num_experts: int, num_local: int) -> float:
    active, _ = expected_blocks(num_routes, num_experts, num_local, 16)
    return (num_routes * num_local / num_experts) / active if active else 0.0


def prefill_tile(ent: ArchMoe, gemm: str, rows: float, block_m: Optional[int] = None) -> Optional[Tile]:
    """The prefill tile of `gemm` where the expected `rows` per active expert
    reach a tier of the entry's prefill regime (the last such) and (given)
    block_m is the tile's own (an overridden BLOCK_M keeps the decode table);
    else None."""
    tiers = [p for p in ent.prefill if rows >= p.min_rows]
    if not tiers:
        return None
    tile = tiers[-1].gemm1 if gemm == "gemm1" else tiers[-1].gemm2
    return tile if block_m in (None, tile.block_m) else None


def choose_block_m(arch: str, num_routes: int, num_experts: int, num_local: int) -> int:
    ent = arch_entry(arch)
    rows = rows_per_active_expert(num_routes, num_experts, num_local)
    pre = prefill_tile(ent, "gemm1", rows)
    if pre is not None:
        return pre.block_m
    for max_rows, bm in ent.block_m_by_rows:
        if rows <= max_rows:
            return bm
    return ent.block_m_by_rows[-1][1]


def choose(arch: str, gemm: str, *, N: int, K: int, num_routes: int, num_experts: int, num_local: int,
           block_m: int, cu_count: int, before: bool = False, override: Optional[Tile] = None) -> Tile:
    """The tile of `gemm` ("gemm1": N = fused output columns, "gemm2") for this problem."""
    ent = arch_entry(arch)
    if override is not None:
        return replace(override, block_m=block_m)
    pre = None if before else prefill_tile(ent, gemm, rows_per_active_expert(num_routes, num_experts, num_local),
                                           block_m)
    if pre is not None:
        return pre
    if before:
        base = ent.before
    elif gemm == "gemm1":
        base = ent.gemm1
    else:
        base = ent.gemm2_short_k if K <= ent.short_k else ent.gemm2
    tile = replace(base, block_m=block_m)
    if before:
        return tile
    if block_m >= 64:
        tile = replace(tile, num_stages=ent.large_m_stages)
    if not ent.min_items_per_cu or (gemm == "gemm2" and K <= ent.short_k):
        return tile      # short K: wide N tiles measured best even with few items (TP8, T = 1)
    _, blocks = expected_blocks(num_routes, num_experts, num_local, block_m)
    want = ent.min_items_per_cu * cu_count
    bn, bk = tile.block_n, tile.block_k
    bk_cap = min(256, K & -K) if K > 0 else bk
    while bn > ent.min_block_n and blocks * math.ceil(N / bn) < want:
        bn //= 2
        bk = max(bk, min(2 * bk, bk_cap))
    return replace(tile, block_n=bn, block_k=bk)
