"""Step caching (``wan_core.step_cache``) for ComfyUI's own Wan model, inside ComfyUI: what
WanRT Step Cache (MODEL) does with a model that went through WanRT Accelerate.

- TeaCache, MagCache and first-block cache decide between the blocks: the accelerated block 0
  runs the whole block stack through :meth:`StepCache.run_blocks` (the cached residual or every
  block), and blocks 1..N-1 pass that result on for the forward. TeaCache's probe, the time
  embedding, is kept from the model's ``time_embedding`` (an object patch).
- EasyCache decides on the model's input and output latents: a ``DIFFUSION_MODEL`` wrapper.
- One run is one sampler call (an ``OUTER_SAMPLE`` wrapper): the cache is reset before it and
  its tensors released after, and the forwards run and skipped are logged. The step is the
  current σ's place in that call's ``sample_sigmas`` (a KSamplerAdvanced share counts its own
  steps); ``cond_or_uncond`` names the CFG branch of each batch chunk.

Imported only inside ComfyUI (by ``step_cache.py``, when the node gets ComfyUI's MODEL).
"""

from __future__ import annotations

import logging

from comfy.patcher_extension import WrappersMP

from ..wan_core.dit import DiTConfig
from ..wan_core.step_cache import BRANCHES, StepCache
from .comfy_wan import AcceleratedBlock, sampling_step

KEY = "wanrt_step_cache"


def with_step_cache(patcher, make_cache):
    """A clone of ``patcher`` (after WanRT Accelerate) whose sampling runs the step cache
    ``make_cache(config)`` returns with its info line; returns ``(clone, info)``."""
    wan = patcher.get_model_object("diffusion_model")
    names = [f"diffusion_model.blocks.{i}.forward" for i in range(len(getattr(wan, "blocks", ())))]
    blocks = [patcher.object_patches.get(name) for name in names]
    if not blocks or not all(isinstance(block, AcceleratedBlock) for block in blocks):
        raise TypeError("WanRT Step Cache (MODEL): connect it after WanRT Accelerate; the cache "
                        "runs between WanRT's accelerated Wan blocks")
    if patcher.get_wrappers(WrappersMP.APPLY_MODEL, "torch.compile"):
        raise ValueError("WanRT Step Cache (MODEL): the model is compiled whole (WanRT Accelerate "
                         "compile 'full'); step caching runs between the blocks, use 'blocks'")
    cache, info = make_cache(dit_config(wan))
    model = patcher.clone()
    stack = CachedStack(cache)
    if cache.policy.probe == "latent":
        model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, KEY, stack.diffusion_model)
    else:
        stack.blocks = [block.in_stack(stack) for block in blocks]
        for name, block in zip(names, stack.blocks):
            model.add_object_patch(name, block)
        model.add_object_patch("diffusion_model.time_embedding.forward",
                               stack.keeping_time_embedding(wan.time_embedding))
    model.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, KEY, stack.outer_sample)
    return model, info


def dit_config(wan) -> DiTConfig:
    """ComfyUI's Wan model as WanRT's ``DiTConfig`` (the published constants are picked by its
    ``variant``: ``t2v-1.3B``, ``t2v-14B`` for a Wan 2.2 T2V-A14B expert too, ``i2v-14B``, ...)."""
    image = getattr(wan, "img_emb", None)
    positions = getattr(image, "emb_pos", None)
    return DiTConfig(dim=wan.dim, ffn_dim=wan.ffn_dim, num_heads=wan.num_heads,
                     num_layers=len(wan.blocks), in_dim=wan.in_dim, out_dim=wan.out_dim,
                     text_dim=wan.text_dim, freq_dim=wan.freq_dim,
                     image_dim=1280 if image is not None else None,
                     image_tokens=positions.shape[1] if positions is not None else None)


class CachedStack:
    """One model's step cache as ComfyUI calls it: forward by forward, block by block."""

    def __init__(self, cache: StepCache):
        self.cache = cache
        self.blocks: list[AcceleratedBlock] = []
        self.e = None  # this forward's time embedding
        self.passing = False  # block 0 ran the stack: the other blocks pass its result on

    def keeping_time_embedding(self, module):
        def forward(x):
            self.e = type(module).forward(module, x)
            return self.e
        return forward

    def where(self, batch: int, transformer_options: dict):
        """``(branches, step, steps)`` of this forward; None where the cache does not apply
        (outside sampling, chunks of one branch batched together)."""
        step, steps = sampling_step(transformer_options)
        chunks = transformer_options.get("cond_or_uncond") or []
        if (step is None or not chunks or len(set(chunks)) < len(chunks) or batch % len(chunks)
                or not set(chunks) <= {0, 1}):
            return None
        return tuple(BRANCHES[c] for c in chunks), step, steps

    def block(self, block, x, e0, freqs, context, context_img_len, transformer_options):
        """Block ``block.index``'s forward: block 0 runs the stack (or reuses the cache)."""
        args = (freqs, context, context_img_len, transformer_options)
        if block.index > 0:
            if not self.passing:
                return block.compute(x, e0, *args)
            self.passing = block.index < len(self.blocks) - 1
            return x
        where = self.where(x.shape[0], transformer_options)
        if where is None or self.e is None:
            return block.compute(x, e0, *args)
        branches, step, steps = where

        def run(h, start=0, stop=None):
            for each in self.blocks[start:stop]:
                h = each.compute(h, e0, *args)
            return h
        out = self.cache.run_blocks(x, self.e, e0, run, branches=branches, step=step, steps=steps,
                                    expert="model")
        self.passing = len(self.blocks) > 1
        return out

    def diffusion_model(self, executor, x, timestep, context, clip_fea=None, time_dim_concat=None,
                        transformer_options={}, **kwargs):
        """``DIFFUSION_MODEL`` wrapper: the whole forward through the cache (EasyCache)."""
        def model(x, t, context):
            return executor(x, t, context, clip_fea, time_dim_concat, transformer_options, **kwargs)
        where = self.where(x.shape[0], transformer_options)
        if where is None:
            return model(x, timestep, context)
        branches, step, steps = where
        return self.cache.forward(model, x, timestep, context, branches=branches, step=step,
                                  steps=steps, expert="model")

    def outer_sample(self, executor, *args, **kwargs):
        """``OUTER_SAMPLE`` wrapper: one sampler call is one run of the cache."""
        self.cache.reset()
        try:
            return executor(*args, **kwargs)
        finally:
            self.cache.release()
            self.e, self.passing = None, False
            logging.info("WanRT step cache: %s", self.cache.summary())
