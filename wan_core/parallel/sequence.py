"""Sequence parallelism for the DiT: each rank of a group holds ``L_pad / N`` consecutive tokens
of the ``[B, L, C]`` residual stream (the sequence zero-padded at its end to ``L_pad``, a
multiple of ``N``); self-attention is the only layer that needs the other ranks' tokens.

- **Ulysses** (DeepSpeed-Ulysses): one all-to-all turns ``[B, L/N, H, D]`` q, k, v into
  ``[B, L, H/N, D]``; attention runs over the whole (unpadded) sequence for ``H/N`` heads; a
  second all-to-all turns the output back.
- **Ring**: the key/value shards travel round the ranks (to ``r+1``, from ``r-1``, in flight
  while the attention of the shard in hand runs); the partial outputs merge by their
  log-sum-exp, ``o = Σ_i exp(lse_i − lse) o_i`` with ``lse = log Σ_i exp(lse_i)``. The padded
  keys of the last shard are left out.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F

from ..attention import attention, attention_with_lse

# torch 2.13 names all_gather_into_tensor (same arguments) all_gather_single and deprecates the
# old name; older releases have only the old one.
all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class SequenceParallel:
    """Token sharding over ``group`` with ``"ulysses"`` or ``"ring"`` attention; ``device``: where
    this rank's collectives of the group run (its GPU; the CPU for gloo)."""

    def __init__(self, group: dist.ProcessGroup, attention: str,
                 device: torch.device | str = "cpu"):
        if attention not in ("ulysses", "ring"):
            raise ValueError(f"sequence-parallel attention is 'ulysses' or 'ring', not {attention!r}")
        self.group, self.kind, self.device = group, attention, torch.device(device)
        self.size, self.rank = dist.get_world_size(group), dist.get_rank(group)
        self.length = None  # the unpadded token count of the forward in progress

    def __repr__(self) -> str:
        return f"SequenceParallel({self.kind}, rank {self.rank} of {self.size})"

    def __deepcopy__(self, memo) -> SequenceParallel:
        return self  # a process group is shared, never copied (weight_sharing_copy)

    # -- sharding ----------------------------------------------------------------------------
    def begin(self, length: int) -> None:
        """Start a forward over ``length`` tokens (sets the padding of :meth:`shard`)."""
        self.length = length

    @property
    def shard_length(self) -> int:
        return math.ceil(self.length / self.size)

    def shard(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's tokens of ``x`` (``length`` along ``dim``), zero-padded at the end."""
        n = self.shard_length
        pad = n * self.size - x.shape[dim]
        if pad:
            x = F.pad(x, (0, 0) * (x.dim() - 1 - dim % x.dim()) + (0, pad))
        return x.narrow(dim, self.rank * n, n).contiguous()

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L/N, C]`` shards of every rank -> ``[B, L, C]`` (padding dropped)."""
        b, n = x.shape[:2]
        full = x.new_empty(self.size * b, *x.shape[1:])  # [N·B, L/N, C]
        all_gather_single(full, x.contiguous(), group=self.group)
        full = full.view(self.size, b, n, *x.shape[2:]).transpose(0, 1)
        return full.reshape(b, self.size * n, *x.shape[2:])[:, :self.length]

    def agree(self, flag: bool) -> bool:
        """True only where every rank of the group says True (one decision for all shards)."""
        value = torch.tensor([int(flag)], dtype=torch.int32, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN, group=self.group)
        return bool(value.item())

    # -- attention ---------------------------------------------------------------------------
    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                  backend: str) -> torch.Tensor:
        """Self-attention over the whole sequence for this rank's query tokens;
        ``[B, L/N, H, D]`` in and out."""
        if self.kind == "ulysses":
            return self._ulysses(q, k, v, backend)
        return _ring_attention(q, k, v, self)

    def _ulysses(self, q, k, v, backend):
        b, n, h, d = q.shape
        qkv = torch.stack([q, k, v])  # [3, B, L/N, H, D]
        # Head chunk j goes to rank j; from rank i come its tokens of this rank's heads.
        qkv = qkv.unflatten(3, (self.size, h // self.size)).permute(3, 0, 1, 2, 4, 5)
        qkv = funcol.all_to_all_single(qkv.contiguous(), None, None, self.group)
        qkv = qkv.permute(1, 2, 0, 3, 4, 5).reshape(3, b, self.size * n, h // self.size, d)
        q, k, v = qkv[:, :, :self.length].unbind(0)
        out = attention(q, k, v, backend=backend)  # [B, L, H/N, D]
        out = F.pad(out, (0, 0, 0, 0, 0, self.size * n - self.length))
        out = out.view(b, self.size, n, h // self.size, d).permute(1, 0, 2, 3, 4)
        out = funcol.all_to_all_single(out.contiguous(), None, None, self.group)
        return out.permute(1, 2, 0, 3, 4).reshape(b, n, h, d)


def _ring_attention(q, k, v, sp: SequenceParallel) -> torch.Tensor:
    n = q.shape[1]
    to_next = [(r + 1) % sp.size for r in range(sp.size)]  # rank r sends to r + 1
    kv = torch.stack([k, v])
    out = lse = None
    for i in range(sp.size):
        owner = (sp.rank - i) % sp.size  # whose tokens are in hand
        if i + 1 < sp.size:  # in flight while this shard's attention runs; waited for on use
            incoming = funcol.permute_tensor(kv.flatten(), to_next, sp.group)
        valid = min(n, sp.length - owner * n)
        if valid > 0:
            o_i, lse_i = attention_with_lse(q, kv[0, :, :valid], kv[1, :, :valid])
            out, lse = (o_i.float(), lse_i) if out is None else _merge(out, lse, o_i, lse_i)
        if i + 1 < sp.size:
            kv = incoming.view_as(kv)
    return out.to(q.dtype)


def _merge(out, lse, o_i, lse_i):
    """Two partial attentions ``[B, L, H, D]`` with their ``lse [B, H, L]`` -> one."""
    new = torch.logaddexp(lse, lse_i)
    weight = (lse - new).exp().transpose(1, 2).unsqueeze(-1)
    weight_i = (lse_i - new).exp().transpose(1, 2).unsqueeze(-1)
    return out * weight + o_i.float() * weight_i, new
