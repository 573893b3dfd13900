"""Block swap (``wan_core.block_swap``) on the CPU: the device is the CPU too, copies are made
synchronously (no streams), and the scheduling, the weight exchange and the compile behaviour
are those of a GPU run. Outputs must be bit-identical: swapping copies weights, it never
changes them."""

from dataclasses import replace

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from wanrt.wan_core.block_swap import enable_block_swap
from wanrt.wan_core.compile import compile_dit
from wanrt.wan_core.dit import DiTConfig, WanModel, init_random_
from wanrt.wan_core.residency import Residency, device_footprint, module_tensors, tensor_bytes
from wanrt.wan_core.sampling import sample

CONFIG = DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=4, in_dim=16, out_dim=16,
                   text_dim=16, freq_dim=16)


def tiny(seed=0):
    return init_random_(WanModel(CONFIG), seed=seed).eval().fuse_projections()


def inputs():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, 16, 3, 4, 6, generator=g), torch.tensor([700.0]),
            torch.randn(1, 6, 16, generator=g))


@torch.no_grad()
@pytest.mark.parametrize("swapped, prefetch, log", [
    (1, 1, [(3, ())]),
    (3, 1, [(1, (2,)), (2, (3,)), (3, ())]),
    (4, 2, [(0, (1, 2)), (1, (2, 3)), (2, (3,)), (3, ())]),
    (4, 0, [(0, ()), (1, ()), (2, ()), (3, ())]),
])
def test_swapped_blocks_run_on_copies_fetched_ahead_and_the_output_is_bit_identical(
        swapped, prefetch, log):
    """The last ``swapped`` blocks run on fresh copies of their weights; while one runs, the
    next ``prefetch`` are being copied; afterwards every block holds its parked weights again."""
    model = tiny()
    expected = model(*inputs())
    parked = {id(t): t.data_ptr() for t in module_tensors(model)}
    enable_block_swap(model, swapped, device="cpu", prefetch=prefetch)
    model.block_swap.log = []
    ran_on = {}
    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda m, _, i=i: ran_on.__setitem__(
            i, {t.data_ptr() for t in module_tensors(m)} & set(parked.values())))
    out = model(*inputs())
    assert torch.equal(out, expected)
    assert model.block_swap.log == log
    first = CONFIG.num_layers - swapped
    assert all(not ran_on[i] for i in range(first, CONFIG.num_layers))  # copies, not parked
    assert all(ran_on[i] for i in range(first))  # resident blocks run in place
    assert {id(t): t.data_ptr() for t in module_tensors(model)} == parked


def test_an_error_inside_a_swapped_block_puts_the_parked_weights_back():
    model = tiny()
    enable_block_swap(model, 2, device="cpu")
    parked = [t.data_ptr() for t in module_tensors(model)]

    def fail(*_):
        raise RuntimeError("boom")
    model.blocks[2].register_forward_pre_hook(fail)
    try:
        model(*inputs())
    except RuntimeError as error:  # checked while the traceback, with the loop's frames, lives
        assert str(error) == "boom"
        assert [t.data_ptr() for t in module_tensors(model)] == parked
    else:
        pytest.fail("the block's error did not propagate")


@torch.no_grad()
def test_compiled_blocks_with_swapping_compile_once_over_a_sampling_run():
    """Regional compile (one graph shared by all blocks) with 3 of 4 blocks swapped, over four
    A14B steps with CFG: swapping a block's weights changes no guard, so nothing recompiles,
    and the result equals the eager unswapped run."""
    high, low = tiny(0), tiny(1)
    context, negative = inputs()[2], torch.randn(1, 6, 16)
    kwargs = dict(context=context, negative_context=negative, seed=0, steps=4, cfg=5.0,
                  cfg_low=3.0, shift=5.0, boundary=0.9)
    expected = sample(high, (1, 16, 3, 4, 6), low_noise_model=low, **kwargs)
    counter = CompileCounterWithBackend("eager")
    after_step = []
    for model in (high, low):
        enable_block_swap(model, 3, device="cpu")
        compile_dit(model, "blocks", backend=counter)
    out = sample(high, (1, 16, 3, 4, 6), low_noise_model=low,
                 callback=lambda *_: after_step.append(counter.frame_count), **kwargs)
    assert after_step == [1, 1, 1, 1]
    assert torch.equal(out, expected)


def test_block_swap_settings_are_checked():
    model = tiny()
    with pytest.raises(ValueError, match="between 0 and 4"):
        enable_block_swap(model, 5, device="cpu")
    with pytest.raises(ValueError, match="prefetch must be >= 0"):
        enable_block_swap(model, 1, device="cpu", prefetch=-1)
    enable_block_swap(model, 1, device="cpu")
    with pytest.raises(ValueError, match="'full' would trace the block swap"):
        compile_dit(model, "full", backend="eager")


def test_the_residency_policy_moves_only_the_resident_blocks():
    """A swapped DiT counts (and moves) only the blocks that are not swapped."""
    model = tiny()
    per_block = sum(t.numel() * 4 for t in module_tensors(model.blocks[0]))
    total = sum(t.numel() * 4 for t in module_tensors(model))
    enable_block_swap(model, 3, device="cpu")
    res = Residency("cpu", "cpu:1")
    res.register(model, "dit")
    assert res.resident() == [("diffusion model", total - 3 * per_block)]
    swapped = [t.data_ptr() for b in model.blocks[1:] for t in module_tensors(b)]
    res.park(model)
    assert [t.data_ptr() for b in model.blocks[1:] for t in module_tensors(b)] == swapped
    assert res.resident() == []


def test_per_token_timesteps_ti2v_swap_bit_identically():
    """A TI2V-shaped config (per-token timesteps) swaps the same way."""
    config = replace(CONFIG, in_dim=48, out_dim=48, num_layers=2)
    model = init_random_(WanModel(config)).eval()
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 48, 2, 4, 4, generator=g), torch.randn(1, 6, 16, generator=g)
    t = torch.full((1, 8), 500.0)
    t[:, :4] = 0
    with torch.no_grad():
        expected = model(x, t, context)
        enable_block_swap(model, 2, device="cpu", prefetch=3)
        assert torch.equal(model(x, t, context), expected)


def test_the_device_footprint_counts_the_swapped_blocks_in_flight_not_all_of_them():
    """What ComfyUI is told loading a block-swapped model needs: the blocks that stay, and
    ``prefetch + 2`` swapped blocks (the most on the device at once), not the whole model."""
    model = tiny()
    whole = tensor_bytes(module_tensors(model))
    block = tensor_bytes(module_tensors(model.blocks[0]))
    assert device_footprint(model) == whole
    enable_block_swap(model, 3, device="cpu", prefetch=0)
    assert device_footprint(model) == whole - 3 * block + 2 * block
    enable_block_swap(model, 3, device="cpu", prefetch=4)
    assert device_footprint(model) == whole


def test_fewer_swapped_blocks_join_the_rest_of_the_model(monkeypatch):
    """From 3 swapped blocks to 1, then to none: the blocks no longer swapped move to where
    the rest of the model is (on a GPU, off the CPU they were parked in)."""
    import wanrt.wan_core.block_swap as block_swap

    model = tiny()
    enable_block_swap(model, 3, device="cpu")
    moved = []
    move = block_swap.move_module
    monkeypatch.setattr(block_swap, "move_module", lambda module, device, skip=(): (
        moved.append((list(model.blocks).index(module), str(device))), move(module, device, skip)))
    enable_block_swap(model, 1, device="cpu")
    assert sorted(moved) == [(1, "cpu"), (2, "cpu"), (3, "cpu")]  # 3 stays swapped: re-parked
    moved.clear()
    enable_block_swap(model, 0, device="cpu")
    assert moved == [(3, "cpu")] and model.block_swap is None
