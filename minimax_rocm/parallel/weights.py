"""Safetensors weight loading for pipeline / data / expert parallel ranks.

Each rank reads only what it serves:
  - its pipeline stage's decoder layers (contiguous split; with an uneven count
    the first stages hold one layer more);
  - of each MoE layer, only its LOCAL experts (contiguous EP split, as
    minimax_rocm.parallel.expert_map), stacked for the fused MoE kernels:
        w13 `[E_loc, 2I, H]`: w1 (gate) rows then w3 (up) rows ("split" layout;
            "interleaved" puts gate in even and up in odd rows)
        w2  `[E_loc, H, I]`
    Remote experts' tensors are never read: the checkpoint is opened with
    safetensors' `safe_open` and only the needed keys are fetched;
  - of M2's full-width q/k norm weights, its tensor-parallel column slice
    (read as a slice: `get_slice`), since the all-reduce RMSNorm normalises
    each rank's slice over the full width;
  - of M3's shared expert, its slice along the intermediate dim over the EP
    group, so the EP combine all-reduce also sums the shared expert's partial
    outputs (no rank computes it whole, and no second collective).

With `mxfp8=True` each MoE layer's local experts are quantised to MXFP8 as
they load and kept as `layer_weight_formats` says at `max_model_len`: one
`Mxfp8Experts` (with or without its BF16 copy) or, in the layers that keep
BF16 only, the dequantised weights.

Data parallel ranks with the same (PP, TP, EP) coordinates load the same
tensors. Names follow the Hugging Face checkpoints:
    {prefix}model.layers.{i}.self_attn.q_norm.weight | k_norm.weight
    {prefix}model.layers.{i}.input_layernorm.weight | post_attention_layernorm.weight
    {prefix}model.layers.{i}.{moe}.gate.weight                      [E, H]
    {prefix}model.layers.{i}.{moe}.e_score_correction_bias          [E]
    {prefix}model.layers.{i}.{moe}.experts.{e}.w1|w2|w3.weight      (w1 gate, w3 up, w2 down)
    {prefix}model.layers.{i}.{moe}.shared_experts.gate_proj|up_proj|down_proj.weight   (M3)
    {prefix}model.layers.{i}.mlp.gate_proj|up_proj|down_proj.weight (M3 dense layers)
with prefix "" (M2) or "language_model." (the multimodal M3 checkpoint) and
{moe} "block_sparse_moe" (M2; MLX conversions of M3) or "mlp" (M3 as vLLM
ports load it): detected from the names present. Attention projections,
embeddings, lm_head, the final norm, MTP layers, the M3 sparse-attention
indexer and the vision tower are known names this package does not serve:
skipped, never read. Any other name is UNEXPECTED; a tensor this rank needs
that the checkpoint lacks is MISSING; both raise CheckpointError naming them.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

import torch
from safetensors import safe_open

from ..models.config import MiniMaxConfig
from ..ops.mxfp8 import Mxfp8Experts, layer_weight_formats
from .expert_map import local_expert_range, split_range

IGNORED = "ignored"
MOE_MODULES = ("block_sparse_moe", "mlp")
_VISION_PREFIXES = ("vision_tower.", "visual.", "vision_model.", "multi_modal_projector.", "mm_projector.",
                    "patch_merge_mlp.")
_ATTN_UNUSED = re.compile(r"self_attn\.(q_proj|k_proj|v_proj|o_proj)\.(weight|bias)$|self_attn\.index"
                          r"|rotary_emb\.")
_FP8_DTYPES = ("F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0")
_MAX_LISTED = 24


class CheckpointError(ValueError):
    """Missing, unexpected or mis-shaped tensors; `.missing`, `.unexpected` and
    `.mismatched` hold the names."""

    def __init__(self, msg: str, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                 mismatched: Sequence[str] = ()):
        super().__init__(msg)
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)


def _listing(what: str, names: Sequence[str]) -> str:
    shown = "\n    ".join(names[:_MAX_LISTED])
    more = f"\n    ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"{len(names)} {what}:\n    {shown}{more}"


# --------------------------------------------------------------------------- #
# parallel layout
# --------------------------------------------------------------------------- #


def stage_layers(num_layers: int, pp_size: int, pp_rank: int) -> tuple[int, int]:
    """Decoder layers [start, end) of pipeline stage pp_rank."""
    return split_range(num_layers, pp_size, pp_rank, "layers")


@dataclass(frozen=True)
class ParallelLayout:
    """One rank's coordinates. EP is the group that splits the routed experts
    (and whose all-reduce is the MoE combine); TP splits attention heads (the
    M2 q/k norm weights); DP ranks are replicas; PP splits the layers."""
    pp_size: int = 1
    pp_rank: int = 0
    tp_size: int = 1
    tp_rank: int = 0
    ep_size: int = 1
    ep_rank: int = 0
    dp_size: int = 1
    dp_rank: int = 0

    def __post_init__(self):
        for k in ("pp", "tp", "ep", "dp"):
            size, rank = getattr(self, f"{k}_size"), getattr(self, f"{k}_rank")
            if size < 1 or not 0 <= rank < size:
                raise ValueError(f"ParallelLayout: {k}_rank {rank} not in [0, {k}_size {size})")

    @classmethod
    def from_world_rank(cls, rank: int, *, pp: int = 1, dp: int = 1, tp: int = 1,
                        expert_parallel: bool = True) -> "ParallelLayout":
        """Coordinates of a global rank, ordered PP (outermost), DP, TP
        (innermost), as serving engines lay them out. With expert_parallel the
        EP group is the DP x TP ranks of a stage (ep_rank = dp_rank * tp +
        tp_rank); without it every rank holds every expert (ep_size 1)."""
        world = pp * dp * tp
        if not 0 <= rank < world:
            raise ValueError(f"ParallelLayout: rank {rank} not in [0, pp*dp*tp = {world})")
        tp_rank = rank % tp
        dp_rank = (rank // tp) % dp
        pp_rank = rank // (tp * dp)
        ep = dp * tp if expert_parallel else 1
        return cls(pp_size=pp, pp_rank=pp_rank, tp_size=tp, tp_rank=tp_rank, ep_size=ep,
                   ep_rank=dp_rank * tp + tp_rank if expert_parallel else 0, dp_size=dp, dp_rank=dp_rank)

    def layers(self, cfg: MiniMaxConfig) -> tuple[int, int]:
        return stage_layers(cfg.num_hidden_layers, self.pp_size, self.pp_rank)

    def experts(self, cfg: MiniMaxConfig) -> tuple[int, int]:
        return local_expert_range(cfg.num_local_experts, self.ep_size, self.ep_rank)


def tp_head_columns(num_heads: int, head_dim: int, tp_size: int, tp_rank: int, what: str) -> tuple[int, int]:
    """Columns [start, end) of this TP rank's heads in a `[heads * head_dim]` projection."""
    if num_heads % tp_size:
        raise ValueError(f"{what}: {num_heads} heads do not split evenly over TP{tp_size}")
    per = num_heads // tp_size
    return tp_rank * per * head_dim, (tp_rank + 1) * per * head_dim


# --------------------------------------------------------------------------- #
# weights as the blocks take them
# --------------------------------------------------------------------------- #


@dataclass
class MoEWeights:
    """One MoE layer on one EP rank. Its local experts are float weights
    (w13, w2) or MXFP8 (mxfp8), one or the other."""
    gate: torch.Tensor                          # [E, H] fp32 (router_gemm takes fp32 weights)
    e_score_correction_bias: Optional[torch.Tensor]   # [E] fp32
    w13: Optional[torch.Tensor]                 # [E_loc, 2I, H]; None: the experts are mxfp8
    w2: Optional[torch.Tensor]                  # [E_loc, H, I]
    expert_start: int = 0
    expert_end: int = -1                        # -1: expert_start + the experts held
    shared_w13: Optional[torch.Tensor] = None   # [2 Is_loc, H]: this rank's slice of the shared expert
    shared_w2: Optional[torch.Tensor] = None    # [H, Is_loc]
    mxfp8: Optional[Mxfp8Experts] = None        # the local experts in MXFP8 (+ the BF16 copy the policy keeps)
    max_model_len: int = 0                      # what the MXFP8 policy kept them for; fused_moe_mxfp8 reads it

    def __post_init__(self):
        if (self.w13 is None) == (self.mxfp8 is None):
            raise ValueError("MoEWeights: the experts are float weights (w13, w2) or mxfp8, exactly one of them")
        if self.w13 is not None and self.w2 is None:
            raise ValueError("MoEWeights: w13 without w2")
        if self.expert_end < 0:
            self.expert_end = self.expert_start + self.num_experts_held

    @property
    def num_experts_held(self) -> int:
        return (self.w13 if self.w13 is not None else self.mxfp8.w13_q).shape[0]

    @property
    def device(self) -> torch.device:
        return self.gate.device


@dataclass
class DenseMLPWeights:
    """A dense SwiGLU MLP (M3's first layers; also the shared expert)."""
    w13: torch.Tensor                           # [2I, H] gate rows then up rows ("split")
    w2: torch.Tensor                            # [H, I]


@dataclass
class LayerWeights:
    index: int
    q_norm: torch.Tensor                        # M2: this TP rank's slice of [q]; M3: [head_dim]
    k_norm: torch.Tensor
    input_layernorm: torch.Tensor               # [H]
    post_attention_layernorm: torch.Tensor      # [H]
    moe: Optional[MoEWeights] = None
    dense: Optional[DenseMLPWeights] = None


@dataclass
class LoadReport:
    layers: tuple[int, int]
    experts: tuple[int, int]
    moe_module: str
    loaded_experts: dict[int, tuple[int, ...]] = field(default_factory=dict)   # layer -> global ids read
    expert_formats: dict[int, str] = field(default_factory=dict)  # layer -> layer_weight_formats' entry (mxfp8)
    read: list[str] = field(default_factory=list)         # every tensor name fetched, in order
    skipped_remote_experts: int = 0                       # expert tensors of this stage's layers not read
    skipped_other_layers: int = 0                         # tensors of other stages' layers not read
    ignored: list[str] = field(default_factory=list)      # known names this package does not serve
    unexpected: list[str] = field(default_factory=list)


@dataclass
class StageWeights:
    config: MiniMaxConfig
    layout: ParallelLayout
    layers: dict[int, LayerWeights]
    report: LoadReport

    @property
    def layer_range(self) -> tuple[int, int]:
        return self.report.layers

    @property
    def expert_range(self) -> tuple[int, int]:
        return self.report.experts


# --------------------------------------------------------------------------- #
# names
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class TensorSpec:
    name: str
    layer: int
    role: str
    shape: tuple[int, ...]
    expert: int = -1


class Naming:
    """The checkpoint names of a config and the classification of any name."""

    _LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
    _EXPERT = re.compile(r"^experts\.(\d+)\.(w1|w2|w3)\.weight$")

    def __init__(self, cfg: MiniMaxConfig, moe_module: str = "block_sparse_moe"):
        if moe_module not in MOE_MODULES:
            raise ValueError(f"moe_module {moe_module!r}: expected one of {MOE_MODULES}")
        self.cfg, self.moe = cfg, moe_module

    def layer_prefix(self, i: int) -> str:
        return f"{self.cfg.weight_prefix}model.layers.{i}."

    def layer_specs(self, i: int) -> dict[str, TensorSpec]:
        """Every tensor of decoder layer i this package serves, experts included."""
        c, p, m = self.cfg, self.layer_prefix(i), self.moe
        H = c.hidden_size
        qn, kn = (c.q_size, c.kv_size) if c.qk_norm == "full" else (c.head_dim, c.head_dim)
        roles = [("self_attn.q_norm.weight", "q_norm", (qn,), -1), ("self_attn.k_norm.weight", "k_norm", (kn,), -1),
                 ("input_layernorm.weight", "input_layernorm", (H,), -1),
                 ("post_attention_layernorm.weight", "post_attention_layernorm", (H,), -1)]
        if c.is_moe_layer(i):
            E, I = c.num_local_experts, c.intermediate_size
            roles.append((f"{m}.gate.weight", "gate", (E, H), -1))
            if c.use_routing_bias:
                roles.append((f"{m}.e_score_correction_bias", "bias", (E,), -1))
            for e in range(E):
                roles += [(f"{m}.experts.{e}.w1.weight", "w1", (I, H), e),
                          (f"{m}.experts.{e}.w3.weight", "w3", (I, H), e),
                          (f"{m}.experts.{e}.w2.weight", "w2", (H, I), e)]
            if c.has_shared_expert:
                Is = c.shared_intermediate_size
                roles += [(f"{m}.shared_experts.gate_proj.weight", "shared_gate", (Is, H), -1),
                          (f"{m}.shared_experts.up_proj.weight", "shared_up", (Is, H), -1),
                          (f"{m}.shared_experts.down_proj.weight", "shared_down", (H, Is), -1)]
        else:
            Id = c.dense_intermediate_size
            roles += [("mlp.gate_proj.weight", "dense_gate", (Id, H), -1),
                      ("mlp.up_proj.weight", "dense_up", (Id, H), -1),
                      ("mlp.down_proj.weight", "dense_down", (H, Id), -1)]
        return {p + s: TensorSpec(p + s, i, role, shape, e) for s, role, shape, e in roles}

    def all_specs(self) -> dict[str, TensorSpec]:
        out: dict[str, TensorSpec] = {}
        for i in range(self.cfg.num_hidden_layers):
            out.update(self.layer_specs(i))
        return out

    def classify(self, name: str, specs: dict[str, TensorSpec]) -> Union[TensorSpec, str, None]:
        """The spec of a served tensor, IGNORED for a known name this package
        does not serve, None for an unexpected name."""
        if name in specs:
            return specs[name]
        c = self.cfg
        if c.weight_prefix and not name.startswith(c.weight_prefix):
            return IGNORED if name.startswith(_VISION_PREFIXES) else None
        rest = name[len(c.weight_prefix):]
        if rest in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight") or \
                re.search(r"(^|\.)mtp(\.|_)", rest):
            return IGNORED
        m = self._LAYER.match(rest)
        if not m:
            return None
        i, sub = int(m.group(1)), m.group(2)
        if c.num_hidden_layers <= i < c.num_hidden_layers + c.num_mtp_modules:
            return IGNORED                  # MTP modules stored as extra layers
        if i >= c.num_hidden_layers:
            return None
        if _ATTN_UNUSED.search(sub):
            return IGNORED
        return None


def detect_moe_module(cfg: MiniMaxConfig, names: Iterable[str]) -> str:
    """"block_sparse_moe" or "mlp": whichever the checkpoint's MoE layers use."""
    pre = re.escape(cfg.weight_prefix) + r"model\.layers\.\d+\."
    bsm = re.compile(pre + r"block_sparse_moe\.")
    mlp = re.compile(pre + r"mlp\.(experts\.|gate\.weight|e_score_correction_bias|shared_experts\.)")
    has_bsm = has_mlp = False
    for n in names:
        has_bsm = has_bsm or bool(bsm.match(n))
        has_mlp = has_mlp or bool(mlp.match(n))
    if has_bsm and has_mlp:
        raise CheckpointError("checkpoint mixes 'block_sparse_moe' and 'mlp' MoE module names")
    return "mlp" if has_mlp else "block_sparse_moe"


# --------------------------------------------------------------------------- #
# reading
# --------------------------------------------------------------------------- #


class SafetensorsCheckpoint:
    """Lazy access to a safetensors checkpoint: a directory (with
    `model.safetensors.index.json`, or every `*.safetensors` in it) or one
    file. Files are opened on first use; names and shapes come from headers;
    `read` fetches one tensor (or a slice of its rows / columns) and records
    the name in `reads`."""

    INDEX = "model.safetensors.index.json"

    def __init__(self, path: str):
        self.path = path
        self.reads: list[str] = []
        self._handles: dict[str, object] = {}
        if os.path.isdir(path):
            index = os.path.join(path, self.INDEX)
            if os.path.exists(index):
                with open(index) as f:
                    wm = json.load(f)["weight_map"]
                self._file_of = {n: os.path.join(path, f) for n, f in wm.items()}
                gone = sorted({f for f in self._file_of.values() if not os.path.isfile(f)})
                if gone:
                    raise CheckpointError(f"{index} names files that are not there: {', '.join(gone)}")
            else:
                files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
                if not files:
                    raise CheckpointError(f"{path}: no *.safetensors files and no {self.INDEX}")
                self._file_of = {}
                for f in files:
                    fp = os.path.join(path, f)
                    for n in self._handle(fp).keys():
                        self._file_of[n] = fp
        elif os.path.isfile(path):
            self._file_of = {n: path for n in self._handle(path).keys()}
        else:
            raise CheckpointError(f"{path}: no such checkpoint file or directory")

    def _handle(self, fp: str):
        h = self._handles.get(fp)
        if h is None:
            h = self._handles[fp] = safe_open(fp, framework="pt", device="cpu")
        return h

    def names(self) -> list[str]:
        return sorted(self._file_of)

    def _slice(self, name: str):
        return self._handle(self._file_of[name]).get_slice(name)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._slice(name).get_shape())

    def dtype_name(self, name: str) -> str:
        return str(self._slice(name).get_dtype())

    def read(self, name: str, rows: Optional[tuple[int, int]] = None,
             cols: Optional[tuple[int, int]] = None) -> torch.Tensor:
        h = self._handle(self._file_of[name])
        self.reads.append(name)
        if rows is None and cols is None:
            return h.get_tensor(name)
        sl = h.get_slice(name)
        r = slice(*rows) if rows else slice(None)
        if cols is None:
            return sl[r]
        return sl[r, slice(*cols)]

    def close(self) -> None:
        self._handles.clear()


# --------------------------------------------------------------------------- #
# loading
# --------------------------------------------------------------------------- #


def check_names(cfg: MiniMaxConfig, names: Iterable[str], moe_module: Optional[str] = None,
                ignore: Sequence[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """Whole-checkpoint check from names alone (nothing is read):
    (missing, unexpected, ignored)."""
    names = list(names)
    naming = Naming(cfg, moe_module or detect_moe_module(cfg, names))
    specs = naming.all_specs()
    present = set(names)
    extra = [re.compile(p) for p in ignore]
    unexpected, ignored = [], []
    for n in names:
        k = naming.classify(n, specs)
        if k == IGNORED or (k is None and any(p.search(n) for p in extra)):
            ignored.append(n)
        elif k is None:
            unexpected.append(n)
    return [n for n in specs if n not in present], unexpected, ignored


def load_stage(checkpoint: Union[str, SafetensorsCheckpoint], cfg: MiniMaxConfig,
               layout: ParallelLayout = ParallelLayout(), *, dtype: Optional[torch.dtype] = None,
               device: Union[str, torch.device] = "cpu", strict: bool = True, check_all: bool = False,
               moe_module: Optional[str] = None, ignore: Sequence[str] = (), mxfp8: bool = False,
               max_model_len: int = 0) -> StageWeights:
    """This rank's weights: its stage's layers, its local experts, its TP
    slices. Raises CheckpointError naming every missing tensor this rank needs
    (every tensor of the model with check_all), every unexpected name (unless
    strict=False; regexes in `ignore` mark more names as known), and every
    tensor whose shape does not match the config. Expert and dense MLP weights
    keep the checkpoint dtype unless `dtype` is given; router gates, biases
    and norm weights are float32. mxfp8: the routed experts are quantised on
    `device` (the platform's fp8 flavour) and kept per layer_weight_formats
    at max_model_len, any BF16 weights in the expert dtype."""
    ck = checkpoint if isinstance(checkpoint, SafetensorsCheckpoint) else SafetensorsCheckpoint(checkpoint)
    names = ck.names()
    moe = moe_module or detect_moe_module(cfg, names)
    naming = Naming(cfg, moe)
    lo, hi = layout.layers(cfg)
    e0, e1 = layout.experts(cfg)
    report = LoadReport(layers=(lo, hi), experts=(e0, e1), moe_module=moe)
    all_specs = naming.all_specs()
    present = set(names)

    missing_all, unexpected, ignored = check_names(cfg, names, moe, ignore)
    report.unexpected, report.ignored = unexpected, ignored
    needed: dict[str, TensorSpec] = {}
    for i in range(lo, hi):
        for n, s in naming.layer_specs(i).items():
            if s.expert < 0 or e0 <= s.expert < e1:
                needed[n] = s
    missing = missing_all if check_all else [n for n in needed if n not in present]
    problems = []
    if missing:
        problems.append(_listing("missing tensors", missing))
    if unexpected and strict:
        problems.append(_listing("unexpected tensors", unexpected))
    if problems:
        raise CheckpointError(f"checkpoint {ck.path} does not match config {cfg.name!r} "
                              f"(layers [{lo}, {hi}), experts [{e0}, {e1}), MoE module '{moe}'):\n  "
                              + "\n  ".join(problems), missing=missing, unexpected=unexpected if strict else ())
    mismatched = [f"{n}: shape {ck.shape(n)}, config expects {s.shape}" for n, s in needed.items()
                  if ck.shape(n) != s.shape]
    fp8 = [n for n in needed if ck.dtype_name(n) in _FP8_DTYPES]
    if mismatched or fp8:
        msg = []
        if mismatched:
            msg.append(_listing("tensors of the wrong shape", mismatched))
        if fp8:
            msg.append(_listing("fp8 tensors (block-quantised checkpoints are not supported by this loader; "
                                "load a BF16 checkpoint, with mxfp8=True to quantise its experts)", fp8))
        raise CheckpointError(f"checkpoint {ck.path}:\n  " + "\n  ".join(msg), mismatched=mismatched + fp8)
    for n, s in all_specs.items():
        if n in needed or n not in present:
            continue
        if lo <= s.layer < hi:
            report.skipped_remote_experts += 1
        else:
            report.skipped_other_layers += 1

    dev = torch.device(device)
    formats = layer_weight_formats(cfg.num_hidden_layers, max_model_len) if mxfp8 else None
    layers = {i: _load_layer(ck, cfg, layout, naming, i, (e0, e1), dtype, dev, report,
                             formats[i] if formats else None, max_model_len) for i in range(lo, hi)}
    report.read = list(ck.reads)
    return StageWeights(cfg, layout, layers, report)


def _load_layer(ck: SafetensorsCheckpoint, cfg: MiniMaxConfig, layout: ParallelLayout, naming: Naming, i: int,
                experts: tuple[int, int], dtype: Optional[torch.dtype], dev: torch.device,
                report: LoadReport, fmt: Optional[str] = None, max_model_len: int = 0) -> LayerWeights:
    p, m = naming.layer_prefix(i), naming.moe
    f32 = lambda t: t.to(device=dev, dtype=torch.float32)   # noqa: E731

    def mat(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=dev, dtype=dtype or t.dtype)

    if cfg.qk_norm == "full":
        # M2: the all-reduce norm takes this rank's column slice of the weights.
        qc = tp_head_columns(cfg.num_attention_heads, cfg.head_dim, layout.tp_size, layout.tp_rank, "q_norm")
        kc = tp_head_columns(cfg.num_key_value_heads, cfg.head_dim, layout.tp_size, layout.tp_rank, "k_norm")
        q_norm = ck.read(p + "self_attn.q_norm.weight", rows=qc)
        k_norm = ck.read(p + "self_attn.k_norm.weight", rows=kc)
    else:
        q_norm = ck.read(p + "self_attn.q_norm.weight")
        k_norm = ck.read(p + "self_attn.k_norm.weight")
    lw = LayerWeights(index=i, q_norm=f32(q_norm), k_norm=f32(k_norm),
                      input_layernorm=f32(ck.read(p + "input_layernorm.weight")),
                      post_attention_layernorm=f32(ck.read(p + "post_attention_layernorm.weight")))
    if not cfg.is_moe_layer(i):
        g, u = ck.read(p + "mlp.gate_proj.weight"), ck.read(p + "mlp.up_proj.weight")
        lw.dense = DenseMLPWeights(w13=mat(_stack_gate_up(g, u, cfg.gate_up_layout)),
                                   w2=mat(ck.read(p + "mlp.down_proj.weight")))
        return lw

    e0, e1 = experts
    I, H = cfg.intermediate_size, cfg.hidden_size
    w13 = w2 = None
    for j, e in enumerate(range(e0, e1)):
        g = ck.read(f"{p}{m}.experts.{e}.w1.weight")
        u = ck.read(f"{p}{m}.experts.{e}.w3.weight")
        d = ck.read(f"{p}{m}.experts.{e}.w2.weight")
        if w13 is None:
            wd = dtype or g.dtype
            w13 = torch.empty((e1 - e0, 2 * I, H), dtype=wd)
            w2 = torch.empty((e1 - e0, H, I), dtype=wd)
        w13[j] = _stack_gate_up(g, u, cfg.gate_up_layout)
        w2[j] = d
    report.loaded_experts[i] = tuple(range(e0, e1))
    w13, w2, mx = w13.to(dev), w2.to(dev), None
    if fmt is not None:
        report.expert_formats[i] = fmt
        mx = Mxfp8Experts.quantize(w13, w2)
        if fmt == "bf16":   # dequantised: every layer computes the same MXFP8 model
            w13, w2, mx = *mx.dequantize(w13.dtype), None
        else:
            w13, w2, mx = None, None, mx.with_format(fmt, w13.dtype)
    bias = ck.read(f"{p}{m}.e_score_correction_bias") if cfg.use_routing_bias else None
    mw = MoEWeights(gate=f32(ck.read(f"{p}{m}.gate.weight")),
                    e_score_correction_bias=None if bias is None else f32(bias),
                    w13=w13, w2=w2, expert_start=e0, expert_end=e1, mxfp8=mx, max_model_len=max_model_len)
    if cfg.has_shared_expert:
        s0, s1 = split_range(cfg.shared_intermediate_size, layout.ep_size, layout.ep_rank, "shared-expert columns")
        g = ck.read(f"{p}{m}.shared_experts.gate_proj.weight", rows=(s0, s1))
        u = ck.read(f"{p}{m}.shared_experts.up_proj.weight", rows=(s0, s1))
        d = ck.read(f"{p}{m}.shared_experts.down_proj.weight", cols=(s0, s1))
        mw.shared_w13 = mat(_stack_gate_up(g, u, cfg.gate_up_layout))
        mw.shared_w2 = mat(d.contiguous())
    lw.moe = mw
    return lw


def _stack_gate_up(gate: torch.Tensor, up: torch.Tensor, layout: str) -> torch.Tensor:
    """`[I, H]` gate and up -> `[2I, H]` in the GEMM1 layout the kernels read."""
    if layout == "split":
        return torch.cat([gate, up], dim=0)
    out = torch.empty((2 * gate.shape[0], gate.shape[1]), dtype=gate.dtype)
    out[0::2], out[1::2] = gate, up
    return out


# --------------------------------------------------------------------------- #
# writing (tests, the demo, converting a model for the tiny configs)
# --------------------------------------------------------------------------- #


def random_checkpoint_tensors(cfg: MiniMaxConfig, generator: Optional[torch.Generator] = None,
                              dtype: torch.dtype = torch.bfloat16, moe_module: str = "block_sparse_moe"
                              ) -> dict[str, torch.Tensor]:
    """Every tensor the package serves, random and well scaled (weights ~
    1/sqrt(fan_in); norm weights near 1, or near 0 for Gemma norms whose scale
    is 1 + w; gates and biases fp32)."""
    g = generator or torch.Generator().manual_seed(0)
    out = {}
    for n, s in Naming(cfg, moe_module).all_specs().items():
        if s.role in ("gate", "bias") or s.role.endswith("norm") or s.role.endswith("layernorm"):
            if s.role == "gate":
                t = torch.randn(s.shape, generator=g) * s.shape[1] ** -0.5
            elif s.role == "bias":
                t = torch.randn(s.shape, generator=g) * 0.1
            else:
                t = torch.randn(s.shape, generator=g) * 0.1 + (0.0 if cfg.gemma_norm else 1.0)
            out[n] = t.float()
        else:
            out[n] = (torch.randn(s.shape, generator=g) * s.shape[1] ** -0.5).to(dtype)
    return out


def save_checkpoint(tensors: dict[str, torch.Tensor], path: str, cfg: Optional[MiniMaxConfig] = None,
                    shards: int = 1) -> str:
    """Write tensors as a Hugging Face style checkpoint directory: `shards`
    files plus `model.safetensors.index.json` (and config.json when cfg is
    given). Returns path."""
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    names = sorted(tensors)
    per = -(-len(names) // max(1, shards))
    weight_map = {}
    for s in range(max(1, shards)):
        part = names[s * per:(s + 1) * per]
        if not part:
            continue
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in part}, os.path.join(path, fname))
        weight_map.update({n: fname for n in part})
    with open(os.path.join(path, SafetensorsCheckpoint.INDEX), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
    if cfg is not None:
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(cfg.to_hf(), f, indent=1)
    return path
