"""MiniMax model configuration: Hugging Face style `config.json` parsing and
presets (full shapes of MiniMax-M2, M2.5, M3, and tiny test configs).

One flat dataclass serves both families; `family` selects the code paths that
really differ:

  m2  QK norm over the FULL q and k widths (needs the cross-rank all-reduce under
      TP), plain RMSNorm, silu experts, every layer MoE, no shared expert,
      routed scaling factor 1.
  m3  per-head Gemma QK norm (no all-reduce), Gemma RMSNorm (scale by 1 + w),
      SwiGLU-OAI experts (alpha 1.702, limit 7.0, split gate/up layout), one
      shared expert, routed scaling factor 2.0, dense first layers
      (`mlp_layer_types`, or `moe_layer_freq` as in the published config.json).

Values: the published model configs, checked against the sources named
beside each preset.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, NamedTuple, Optional

M2_MODEL_TYPES = ("minimax", "minimax_m2")
M3_MODEL_TYPES = ("minimax_m3", "minimax_m3_vl", "minimax_m3_vl_text")
ACTIVATIONS = ("silu", "swiglu_oai")
MLP_KINDS = ("sparse", "dense")


class ConfigError(ValueError):
    """A config.json that this package cannot serve (names the key)."""


class MoERankShape(NamedTuple):
    """One rank's share of a MoE layer: the shapes its expert kernels see."""
    hidden: int
    intermediate: int            # per expert, this rank's TP slice
    num_experts: int             # global routed experts
    num_local_experts: int       # on this rank
    top_k: int
    activation: str
    ep_size: int
    tp_size: int


@dataclass(frozen=True)
class MiniMaxConfig:
    name: str
    family: str                          # "m2" | "m3"
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    num_local_experts: int               # HF's name for the GLOBAL routed expert count
    num_experts_per_tok: int
    intermediate_size: int               # per routed expert
    vocab_size: int = 200064
    rms_norm_eps: float = 1e-6
    routed_scaling_factor: float = 1.0
    use_routing_bias: bool = True
    activation: str = "silu"             # "silu" (M2) | "swiglu_oai" (M3)
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    gate_up_layout: str = "split"        # GEMM1 output: gate = first I columns, up = last I
    n_shared_experts: int = 0
    shared_intermediate_size: int = 0
    dense_intermediate_size: int = 0
    mlp_layer_types: tuple = ()          # per layer "sparse" | "dense"; () = all sparse
    num_mtp_modules: int = 0             # MTP layers stored after the decoder layers (not served here)
    weight_prefix: str = ""              # "language_model." for the multimodal M3 checkpoint
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.family not in ("m2", "m3"):
            raise ConfigError(f"family {self.family!r}: expected 'm2' or 'm3'")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation {self.activation!r}: expected one of {ACTIVATIONS}")
        if self.gate_up_layout not in ("split", "interleaved"):
            raise ConfigError(f"gate_up_layout {self.gate_up_layout!r}: expected 'split' or 'interleaved'")
        if not self.mlp_layer_types:
            object.__setattr__(self, "mlp_layer_types", ("sparse",) * self.num_hidden_layers)
        else:
            object.__setattr__(self, "mlp_layer_types", tuple(self.mlp_layer_types))
        if len(self.mlp_layer_types) != self.num_hidden_layers:
            raise ConfigError(f"mlp_layer_types has {len(self.mlp_layer_types)} entries; "
                              f"num_hidden_layers is {self.num_hidden_layers}")
        bad = sorted(set(self.mlp_layer_types) - set(MLP_KINDS))
        if bad:
            raise ConfigError(f"mlp_layer_types holds {bad}; expected entries in {MLP_KINDS}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                              f"num_key_value_heads {self.num_key_value_heads}")
        if not 0 < self.num_experts_per_tok <= self.num_local_experts:
            raise ConfigError(f"num_experts_per_tok {self.num_experts_per_tok} not in [1, {self.num_local_experts}]")
        if self.n_shared_experts not in (0, 1):
            raise ConfigError(f"n_shared_experts {self.n_shared_experts}: only 0 or 1 is supported")
        if self.n_shared_experts and self.shared_intermediate_size <= 0:
            raise ConfigError("n_shared_experts is 1 but shared_intermediate_size is not set")
        if "dense" in self.mlp_layer_types and self.dense_intermediate_size <= 0:
            raise ConfigError("mlp_layer_types has dense layers but dense_intermediate_size is not set")

    # ------------------------------------------------------------------ shapes
    @property
    def num_experts(self) -> int:
        return self.num_local_experts

    @property
    def top_k(self) -> int:
        return self.num_experts_per_tok

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def qk_norm(self) -> str:
        """"full" (M2: one norm over the whole q / k projection) or "per_head" (M3)."""
        return "full" if self.family == "m2" else "per_head"

    @property
    def gemma_norm(self) -> bool:
        """Gemma RMSNorm (scale by 1 + w) for the layer norms and the QK norm."""
        return self.family == "m3"

    @property
    def has_shared_expert(self) -> bool:
        return self.n_shared_experts > 0

    def is_moe_layer(self, i: int) -> bool:
        return self.mlp_layer_types[i] == "sparse"

    def moe_params_per_layer(self) -> int:
        """Routed expert parameters of one MoE layer (3 matrices of H x I each)."""
        return self.num_local_experts * 3 * self.hidden_size * self.intermediate_size

    def moe_rank_shape(self, ep: int = 1, tp: int = 1) -> MoERankShape:
        """A MoE layer on one rank of ep x tp: the routed experts split over
        the EP ranks and each expert's intermediate columns over the TP ranks.
        Where ep does not divide the experts the first ranks hold one more
        (parallel.expert_map's split): this is their share, the busiest."""
        if not 1 <= ep <= self.num_experts:
            raise ConfigError(f"ep {ep}: expected 1 to {self.num_experts} (the routed experts)")
        if tp < 1 or self.intermediate_size % tp:
            raise ConfigError(f"tp {tp} does not divide intermediate_size {self.intermediate_size}")
        return MoERankShape(self.hidden_size, self.intermediate_size // tp, self.num_experts,
                            -(-self.num_experts // ep), self.top_k, self.activation, ep, tp)

    def with_(self, **changes) -> "MiniMaxConfig":
        """A copy with some fields changed. A new layer count keeps an
        all-MoE layer list all-MoE; a mixed list must be given anew."""
        if "num_hidden_layers" in changes and "mlp_layer_types" not in changes \
                and set(self.mlp_layer_types) == {"sparse"}:
            changes["mlp_layer_types"] = ()
        return replace(self, **changes)

    # -------------------------------------------------------------- HF config
    @classmethod
    def from_hf(cls, d: Mapping[str, Any], name: str = "custom") -> "MiniMaxConfig":
        """Parse a Hugging Face `config.json` dict: MiniMax-M2 / M2.5 (flat) or
        MiniMax-M3 (flat text config, or the multimodal wrapper whose
        `text_config` holds the text backbone; its weights sit under
        `language_model.`)."""
        prefix = ""
        t = d
        if isinstance(d.get("text_config"), Mapping):
            t = d["text_config"]
            prefix = "language_model."
        model_type = str(d.get("model_type") or t.get("model_type") or "")
        qk_type = t.get("qk_norm_type")
        if qk_type == "per_head" or model_type in M3_MODEL_TYPES or (prefix and qk_type is None):
            family = "m3"
        elif qk_type in (None, "per_layer") and (model_type in M2_MODEL_TYPES or not model_type):
            family = "m2"
        else:
            raise ConfigError(f"model_type {model_type!r} / qk_norm_type {qk_type!r} is not a MiniMax-M2 or M3 config")
        if t.get("use_qk_norm") is False:
            raise ConfigError("use_qk_norm is false: MiniMax models normalise q and k; this config is not served")
        scoring = t.get("scoring_func", "sigmoid")
        if scoring != "sigmoid":
            raise ConfigError(f"scoring_func {scoring!r}: MiniMax routing is sigmoid")

        def need(key):
            if key not in t:
                raise ConfigError(f"config.json lacks {key!r}" + (" (in text_config)" if prefix else ""))
            return t[key]

        hidden, heads = int(need("hidden_size")), int(need("num_attention_heads"))
        layers = int(need("num_hidden_layers"))
        act = str(t.get("hidden_act", "silu")).lower()
        # The published M3 config says "swigluoai"; transformers rewrites it to
        # "silu" while computing SwiGLU-OAI inline, so family m3 always means SwiGLU-OAI.
        activation = "swiglu_oai" if family == "m3" or act in ("swigluoai", "swiglu_oai") else "silu"
        if activation == "silu" and act != "silu":
            raise ConfigError(f"hidden_act {act!r}: expected 'silu' (M2) or 'swigluoai' (M3)")
        types = t.get("mlp_layer_types")
        if types is None and t.get("moe_layer_freq") is not None:
            freq = t["moe_layer_freq"]
            if not isinstance(freq, (list, tuple)):
                raise ConfigError(f"moe_layer_freq {freq!r}: expected a per-layer list of 0/1")
            types = ["sparse" if f else "dense" for f in freq]
        n_shared = int(t.get("n_shared_experts", 1 if family == "m3" and t.get("shared_intermediate_size") else 0))
        return cls(
            name=name, family=family, hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=int(need("num_key_value_heads")),
            head_dim=int(t.get("head_dim") or hidden // heads),
            num_local_experts=int(need("num_local_experts")), num_experts_per_tok=int(need("num_experts_per_tok")),
            intermediate_size=int(need("intermediate_size")), vocab_size=int(t.get("vocab_size", 200064)),
            rms_norm_eps=float(t.get("rms_norm_eps", 1e-6)),
            routed_scaling_factor=float(t.get("routed_scaling_factor", 1.0)),
            use_routing_bias=bool(t.get("use_routing_bias", True)), activation=activation,
            swiglu_alpha=float(t.get("swiglu_alpha", 1.702)), swiglu_limit=float(t.get("swiglu_limit", 7.0)),
            n_shared_experts=n_shared if family == "m3" else 0,
            shared_intermediate_size=int(t.get("shared_intermediate_size", 0) or 0) if n_shared else 0,
            dense_intermediate_size=int(t.get("dense_intermediate_size", 0) or 0),
            mlp_layer_types=tuple(types) if types is not None else (),
            num_mtp_modules=int(t.get("num_mtp_modules", 0) or 0), weight_prefix=prefix, extra=dict(d))

    @classmethod
    def from_pretrained(cls, path: str, name: Optional[str] = None) -> "MiniMaxConfig":
        """From a checkpoint directory (its config.json) or a config.json file."""
        f = os.path.join(path, "config.json") if os.path.isdir(path) else path
        with open(f) as fh:
            return cls.from_hf(json.load(fh), name=name or os.path.basename(os.path.dirname(os.path.abspath(f))))

    def to_hf(self) -> dict:
        """A config.json dict that from_hf reads back to this config (M3 in the
        multimodal wrapper when weight_prefix is "language_model.")."""
        t = dict(hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
                 num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
                 head_dim=self.head_dim, num_local_experts=self.num_local_experts,
                 num_experts_per_tok=self.num_experts_per_tok, intermediate_size=self.intermediate_size,
                 vocab_size=self.vocab_size, rms_norm_eps=self.rms_norm_eps,
                 routed_scaling_factor=self.routed_scaling_factor, use_routing_bias=self.use_routing_bias,
                 scoring_func="sigmoid", use_qk_norm=True, num_mtp_modules=self.num_mtp_modules)
        if self.family == "m2":
            t.update(model_type="minimax", hidden_act="silu", qk_norm_type="per_layer")
            return t
        t.update(hidden_act="swigluoai", qk_norm_type="per_head", use_gemma_norm=True,
                 swiglu_alpha=self.swiglu_alpha, swiglu_limit=self.swiglu_limit,
                 n_shared_experts=self.n_shared_experts, shared_intermediate_size=self.shared_intermediate_size,
                 dense_intermediate_size=self.dense_intermediate_size,
                 moe_layer_freq=[1 if k == "sparse" else 0 for k in self.mlp_layer_types])
        if self.weight_prefix == "language_model.":
            return dict(model_type="minimax_m3_vl", architectures=["MiniMaxM3SparseForConditionalGeneration"],
                        text_config=t)
        t.update(model_type="minimax_m3")
        return t

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        return d


# --------------------------------------------------------------------------- #
# presets
# --------------------------------------------------------------------------- #

# MiniMax-M2: checked against the MiniMaxM2Config
# defaults (hidden 3072, 62 layers, 48/8 heads of 128, 256 experts top-8,
# intermediate 1536, qk_norm_type "per_layer", routed_scaling_factor 1.0,
# 3 MTP modules) in transformers' minimax_m2 port (as vendored in
# ModelCloud/GPTQModel gptqmodel/hf_minimax_m2/configuration_minimax_m2.py).
_M2 = dict(family="m2", hidden_size=3072, num_hidden_layers=62, num_attention_heads=48, num_key_value_heads=8,
           head_dim=128, num_local_experts=256, num_experts_per_tok=8, intermediate_size=1536, vocab_size=200064,
           rms_norm_eps=1e-6, routed_scaling_factor=1.0, activation="silu", num_mtp_modules=3)

# MiniMax-M3 text backbone (`text_config`; weights under `language_model.`):
# the values of the published text_config (hidden 6144, 60 layers, 64/4 heads of 128,
# 128 experts top-4, intermediate 3072, dense 12288, one shared expert of 3072,
# routed_scaling_factor 2.0, SwiGLU-OAI 1.702/7.0, three dense first layers,
# per-head QK norm). Not verified against a real config.json: the hub file was
# not reachable from here. Pass the checkpoint's own config.json to
# MiniMaxConfig.from_pretrained to serve a real model.
_M3 = dict(family="m3", hidden_size=6144, num_hidden_layers=60, num_attention_heads=64, num_key_value_heads=4,
           head_dim=128, num_local_experts=128, num_experts_per_tok=4, intermediate_size=3072, vocab_size=200064,
           rms_norm_eps=1e-6, routed_scaling_factor=2.0, activation="swiglu_oai", swiglu_alpha=1.702,
           swiglu_limit=7.0, n_shared_experts=1, shared_intermediate_size=3072, dense_intermediate_size=12288,
           mlp_layer_types=("dense",) * 3 + ("sparse",) * 57, num_mtp_modules=7, weight_prefix="language_model.")

# Tiny configs for CPU tests and the demo: same code paths, shapes a CPU runs
# in milliseconds. tiny-m2 has 10 experts so EP4 splits them unevenly (3,3,2,2).
_TINY_M2 = dict(family="m2", hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4,
                head_dim=8, num_local_experts=10, num_experts_per_tok=3, intermediate_size=32, vocab_size=256,
                activation="silu")
_TINY_M3 = dict(family="m3", hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                head_dim=16, num_local_experts=8, num_experts_per_tok=2, intermediate_size=32, vocab_size=256,
                routed_scaling_factor=2.0, activation="swiglu_oai", n_shared_experts=1, shared_intermediate_size=32,
                dense_intermediate_size=48, mlp_layer_types=("dense", "sparse"), weight_prefix="language_model.")

PRESETS: dict[str, MiniMaxConfig] = {
    "minimax-m2": MiniMaxConfig(name="minimax-m2", **_M2),
    # M2.5 (and M2.1) keep M2's shapes (their published configs); not checked separately.
    "minimax-m2.5": MiniMaxConfig(name="minimax-m2.5", **_M2),
    "minimax-m3": MiniMaxConfig(name="minimax-m3", **_M3),
    "tiny-m2": MiniMaxConfig(name="tiny-m2", **_TINY_M2),
    "tiny-m3": MiniMaxConfig(name="tiny-m3", **_TINY_M3),
}


# The published models and their routed experts' weight format (M3's
# checkpoints hold ModelOpt MXFP8 experts): what `explain` assumes unless told.
EXPERT_WEIGHTS: dict[str, str] = {"minimax-m2": "bf16", "minimax-m2.5": "bf16", "minimax-m3": "mxfp8"}


def preset(name: str) -> MiniMaxConfig:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
