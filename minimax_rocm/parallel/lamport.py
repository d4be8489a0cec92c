"""LamportWorkspace: the peer-mapped buffers of the one-shot Lamport exchange
behind the fused `allreduce_rms_qk` / `allreduce_rms` kernels
(hip/lamport_allreduce_rms.hip; protocol in DESIGN.md, section 7).

Size per rank (one device allocation):

    NUM_BUFFERS x max_tokens x world x SLOTS_PER_RANK slots x 2 values x 4 bytes
    e.g. 3 x 16384 x 8 x 8 x 2 x 4 B = 24 MiB at TP8, 8192 tokens at TP2: 3 MiB

(a rank sends one pair of sums per wave of its block, so that no block-wide
reduction stands before the exchange; a launch with fewer waves than
SLOTS_PER_RANK leaves the rest of its slots empty).

The buffers come from the native extension (cudaMalloc on NVIDIA; on ROCm
`hipExtMallocWithFlags(..., hipDeviceMallocUncached)`, so a polling reader is
never served a stale cache line), are filled with the sentinel (-0.0f), and
their IPC handles are exchanged with `all_gather_object` over the group; each
rank opens every peer's buffer. A separate 16-byte counter block (plain device
memory, this rank only) holds the index of the buffer the next call uses,
advanced by the kernel itself, so CUDA/HIP graph replays rotate correctly.

Creating and closing a workspace are collective over the group. Every rank
must then make the same sequence of calls with the same token counts; a rank
calling with a different T (or skipping a call) leaves its peers spinning
until `timeout_s` passes, when the kernel traps (the ops check T against
max_tokens on the host, never on the device).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.distributed as dist

NUM_BUFFERS = 3              # the rotation: call n uses n % 3 and clears n - 1
VALUES_PER_TOKEN = 2         # q and k sums of squares (one 8-byte store)
SLOTS_PER_RANK = 8           # pairs per rank and token: one per wave of the largest block (256 / 32)
SUPPORTED_WORLD_SIZES = (2, 4, 8)
SENTINEL_I32 = -(1 << 31)    # 0x80000000: -0.0f, "empty"
NUM_FLAGS = 4                # buffer index, blocks started, previous T, launches


def size_bytes(world: int, max_tokens: int) -> int:
    """Bytes of Lamport buffer per rank."""
    return NUM_BUFFERS * max_tokens * world * SLOTS_PER_RANK * VALUES_PER_TOKEN * 4


def _group_and_name(group) -> tuple:
    from .groups import resolve_group
    if group is None:
        group = dist.group.WORLD
    elif isinstance(group, str):
        group = resolve_group(group)
    return group, group.group_name


class LamportWorkspace:
    """Peer-mapped Lamport buffers for one process group (collective to open
    and to close). Registers itself in `minimax_rocm.parallel` under the group's
    name, which is what the `allreduce_rms*` ops look up.

        with LamportWorkspace(tp_group, max_tokens=8192):
            minimax_rocm.allreduce_rms_qk(qkv, q_w, k_w, eps, tp_group.group_name)
    """

    def __init__(self, group: Union[None, str, "dist.ProcessGroup"] = None, max_tokens: int = 8192,
                 device: Optional[Union[int, torch.device]] = None, register: bool = True,
                 timeout_s: float = 600.0):
        from ..native import ext
        self.group, self.group_name = _group_and_name(group)
        self.world = dist.get_world_size(self.group)
        self.rank = dist.get_rank(self.group)
        if self.world not in SUPPORTED_WORLD_SIZES:
            raise ValueError(f"LamportWorkspace: world size {self.world} is not supported "
                             f"({SUPPORTED_WORLD_SIZES}); the NCCL/RCCL path serves this group")
        if not int(max_tokens) > 0:
            raise ValueError(f"LamportWorkspace: max_tokens must be > 0, got {max_tokens}")
        if int(max_tokens) * self.world * SLOTS_PER_RANK >= 1 << 31:  # the kernel's 32-bit slot indices
            raise ValueError(f"LamportWorkspace: max_tokens={max_tokens} is too large for world size {self.world} "
                             f"(at most {((1 << 31) - 1) // (self.world * SLOTS_PER_RANK)})")
        self.max_tokens = int(max_tokens)
        self.timeout_s = float(timeout_s)
        if isinstance(device, int):
            device = torch.device("cuda", device)
        if device is None or device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self._ops = ext.load()
        if self._ops is None:
            raise RuntimeError(f"LamportWorkspace: the native extension is not available: {ext.load_error()}")
        self.nbytes = size_bytes(self.world, self.max_tokens)
        self._ptr = 0
        self._opened: list[int] = []
        self._registered = False
        d = self.device.index
        self._ptr = int(self._ops.lamport_alloc(self.nbytes, d))
        try:
            self._view = self._ops.lamport_view(self._ptr, self.nbytes // 4, d)
            self._view.fill_(SENTINEL_I32)
            self.flags = torch.zeros(NUM_FLAGS, dtype=torch.int32, device=self.device)
            torch.cuda.synchronize(self.device)  # the sentinel is in place before any peer can write
            handle = bytes(self._ops.lamport_ipc_handle(self._ptr, d).numpy().tobytes())
            handles: list = [None] * self.world
            dist.all_gather_object(handles, handle, group=self.group)
            peers = []
            for r, h in enumerate(handles):
                if r == self.rank:
                    peers.append(self._ptr)
                else:
                    p = int(self._ops.lamport_ipc_open(torch.frombuffer(bytearray(h), dtype=torch.uint8), d))
                    self._opened.append(p)
                    peers.append(p)
            self.peers = peers
            dist.barrier(group=self.group)  # every rank's buffer is filled and mapped
        except Exception:
            self._release()
            raise
        if register:
            from .groups import register_lamport_workspace
            register_lamport_workspace(self.group_name, self)
            self._registered = True

    # ------------------------------------------------------------------ calls
    def check_tokens(self, op: str, arg: str, tokens: int) -> None:
        if tokens > self.max_tokens:
            from ..errors import fail
            fail(op, arg, f"has {tokens} tokens; the Lamport workspace of group {self.group_name!r} holds at most "
                          f"{self.max_tokens} (open it with a larger max_tokens)")

    def allreduce_rms_qk(self, qkv: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor,
                         eps: float) -> None:
        """q and k of qkv `[T, q + 2 kv]` (bf16) normalised in place over the group."""
        self._check_open()
        self.check_tokens("allreduce_rms_qk", "qkv", qkv.shape[0])
        self._ops.lamport_allreduce_rms_qk(qkv, q_weight, k_weight, float(eps), self.peers, self.flags, self.rank,
                                           self.max_tokens, self.timeout_s, self._pdl())

    def allreduce_rms(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
        """x `[T, D]` (bf16) normalised in place over the full width D x world."""
        self._check_open()
        self.check_tokens("allreduce_rms", "x", x.shape[0])
        self._ops.lamport_allreduce_rms(x, weight, float(eps), self.peers, self.flags, self.rank, self.max_tokens,
                                        self.timeout_s, self._pdl())

    def _pdl(self) -> bool:
        """Launch with programmatic dependent launch (NVIDIA sm90+, see
        minimax_rocm.triton.dependent_launch): the kernel's launch hides behind
        the tail of the kernel before it when that one signals early."""
        from ..triton import dependent_launch
        return dependent_launch.enabled(self.device, triton_kernel=False)

    # ------------------------------------------------------------ inspection
    def buffers(self) -> torch.Tensor:
        """This rank's buffers as int32
        `[NUM_BUFFERS, max_tokens, world, SLOTS_PER_RANK, 2]` (bit patterns;
        SENTINEL_I32 = empty; a call fills slots [0, waves) of its tokens).
        For tests and debugging."""
        self._check_open()
        return self._view.view(NUM_BUFFERS, self.max_tokens, self.world, SLOTS_PER_RANK, VALUES_PER_TOKEN)

    def calls(self) -> int:
        """Kernel launches made so far (synchronises). The buffer a launch
        uses is its index modulo NUM_BUFFERS."""
        return int(self.flags[3].item())

    @property
    def closed(self) -> bool:
        return self._ptr == 0

    def _check_open(self):
        if self.closed:
            raise RuntimeError(f"LamportWorkspace of group {self.group_name!r} is closed")

    # ---------------------------------------------------------------- close
    def close(self) -> None:
        """Free the buffers (collective: every rank of the group calls it)."""
        if self.closed:
            return
        if self._registered:
            from .groups import lamport_workspace, unregister_lamport_workspace
            if lamport_workspace(self.group_name) is self:
                unregister_lamport_workspace(self.group_name)
            self._registered = False
        torch.cuda.synchronize(self.device)
        dist.barrier(group=self.group)  # no peer is still writing into our buffer
        self._release(own=False)
        dist.barrier(group=self.group)  # no peer still maps our buffer
        self._release()

    def _release(self, own: bool = True) -> None:
        d = self.device.index
        for p in self._opened:
            self._ops.lamport_ipc_close(p, d)
        self._opened = []
        if own and self._ptr:
            self._view = None
            self._ops.lamport_free(self._ptr, d)
            self._ptr = 0

    def __enter__(self) -> "LamportWorkspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"LamportWorkspace(group={self.group_name!r}, world={self.world}, rank={self.rank}, "
                f"max_tokens={self.max_tokens}, bytes={self.nbytes}, closed={self.closed})")
