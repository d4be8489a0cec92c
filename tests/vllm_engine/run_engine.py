"""One vLLM engine run on a tiny model with random weights: the CPU engine
tests start it with the isolated vLLM environment's Python.

    python run_engine.py --model minimax_m2 --out result.json [--tp 2]

Writes the greedy tokens, their logprobs and the top logprobs of each step
to --out. The environment decides the rest: VLLM_PLUGINS,
MINIMAX_ROCM_VLLM, MINIMAX_ROCM_VLLM_RECORD (the record/call log).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, EXPERTS, TOP_K, INTER, VOCAB = 256, 2, 4, 2, 64, 8, 2, 128, 512

CONFIGS = {
    "minimax_m2": dict(
        architectures=["MiniMaxM2ForCausalLM"], model_type="minimax_m2", hidden_size=HIDDEN,
        intermediate_size=INTER, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM, rotary_dim=HEAD_DIM // 2, num_local_experts=EXPERTS,
        num_experts_per_tok=TOP_K, scoring_func="softmax", use_routing_bias=False, vocab_size=VOCAB,
        max_position_embeddings=1024, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
        torch_dtype="bfloat16"),
    "qwen3_moe": dict(
        architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", hidden_size=HIDDEN,
        intermediate_size=INTER, moe_intermediate_size=INTER, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM, num_experts=EXPERTS,
        num_experts_per_tok=TOP_K, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
        vocab_size=VOCAB, max_position_embeddings=1024, rms_norm_eps=1e-6, rope_theta=10000.0,
        tie_word_embeddings=False, torch_dtype="bfloat16", hidden_act="silu"),
}

PROMPTS = [[1, 2, 3, 4, 5, 6, 7], [11, 12, 13], [100, 200, 300, 400, 500, 17, 42, 9, 8, 7, 6]]


def tensors(model: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights, scaled so that every layer moves the logits."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=None):
        scale = scale if scale is not None else shape[-1] ** -0.5
        return (torch.randn(*shape, generator=g) * scale).to(torch.bfloat16)

    def norm(n):
        return (1.0 + 0.1 * torch.randn(n, generator=g)).to(torch.bfloat16)

    t = {"model.embed_tokens.weight": rnd(VOCAB, HIDDEN, scale=1.0), "model.norm.weight": norm(HIDDEN),
         "lm_head.weight": rnd(VOCAB, HIDDEN, scale=4 * HIDDEN ** -0.5)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(HIDDEN)
        t[p + "post_attention_layernorm.weight"] = norm(HIDDEN)
        t[p + "self_attn.q_proj.weight"] = rnd(HEADS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.k_proj.weight"] = rnd(KV_HEADS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.v_proj.weight"] = rnd(KV_HEADS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.o_proj.weight"] = rnd(HIDDEN, HEADS * HEAD_DIM)
        if model == "minimax_m2":
            t[p + "self_attn.q_norm.weight"] = norm(HEADS * HEAD_DIM)
            t[p + "self_attn.k_norm.weight"] = norm(KV_HEADS * HEAD_DIM)
            t[p + "block_sparse_moe.gate.weight"] = rnd(EXPERTS, HIDDEN, scale=4 * HIDDEN ** -0.5).float()
            for e in range(EXPERTS):
                q = p + f"block_sparse_moe.experts.{e}."
                t[q + "w1.weight"] = rnd(INTER, HIDDEN)
                t[q + "w3.weight"] = rnd(INTER, HIDDEN)
                t[q + "w2.weight"] = rnd(HIDDEN, INTER)
        else:
            t[p + "self_attn.q_norm.weight"] = norm(HEAD_DIM)
            t[p + "self_attn.k_norm.weight"] = norm(HEAD_DIM)
            t[p + "mlp.gate.weight"] = rnd(EXPERTS, HIDDEN, scale=4 * HIDDEN ** -0.5)
            for e in range(EXPERTS):
                q = p + f"mlp.experts.{e}."
                t[q + "gate_proj.weight"] = rnd(INTER, HIDDEN)
                t[q + "up_proj.weight"] = rnd(INTER, HIDDEN)
                t[q + "down_proj.weight"] = rnd(HIDDEN, INTER)
    return t


def write_checkpoint(model: str, path: str, tokenizer: bool = False) -> str:
    """config.json and the weights; with `tokenizer` also a word-level
    tokenizer ("t0" ... "t511", one word per id), which vLLM's OpenAI server
    needs to answer a request."""
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(CONFIGS[model], f, indent=1)
    save_file(tensors(model), os.path.join(path, "model.safetensors"))
    if tokenizer:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast
        tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", eos_token="t1").save_pretrained(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(CONFIGS), default="minimax_m2")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ckpt", default=None, help="checkpoint folder (default: next to --out)")
    ap.add_argument("--tokens", type=int, default=6)
    ap.add_argument("--ep", action="store_true", help="experts split over the TP ranks (vLLM's EP)")
    args = ap.parse_args()
    ckpt = write_checkpoint(args.model, args.ckpt or os.path.join(os.path.dirname(os.path.abspath(args.out)),
                                                                  f"ckpt_{args.model}"))
    from vllm import LLM, SamplingParams
    t0 = time.time()
    llm = LLM(model=ckpt, skip_tokenizer_init=True, dtype="bfloat16", max_model_len=256, seed=0,
              gpu_memory_utilization=0.1, enforce_eager=True, tensor_parallel_size=args.tp,
              enable_expert_parallel=args.ep)
    sp = SamplingParams(max_tokens=args.tokens, temperature=0.0, logprobs=5, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], sp)
    result = []
    for o in outs:
        c = o.outputs[0]
        result.append(dict(tokens=list(c.token_ids),
                           logprobs=[{str(k): v.logprob for k, v in step.items()} for step in c.logprobs]))
    with open(args.out, "w") as f:
        json.dump(dict(model=args.model, tp=args.tp, seconds=time.time() - t0, outputs=result), f)


if __name__ == "__main__":
    main()
