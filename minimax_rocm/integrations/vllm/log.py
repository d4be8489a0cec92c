"""The plugin's logger: a child of vLLM's, so our lines come out in vLLM's
format and under its level."""
import logging


def logger() -> logging.Logger:
    return logging.getLogger("vllm.minimax_rocm")
