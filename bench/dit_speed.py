"""Wan DiT forward speed in one process: diffusers eager and regionally compiled, ours eager and in
every ``compile_dit`` mode, and one CFG sampling step, ours eager vs compiled.

Real sizes on CUDA: Wan 2.1 1.3B and 14B with random bf16 weights (built on the meta device,
materialised on the GPU; diffusers 0.42.1 ``WanTransformer3DModel`` gets the same weights),
832x480x81 frames = latent [1, 16, 21, 60, 104] = 32,760 tokens (``--hd``: the 14B also at
1280x720x81 = 75,600 tokens), context [1, 512, 4096], t = 999. Ours runs with fused q/k/v and
k/v projections and the ``--attn`` attention backend.

Per row: the first call (compile included) timed on its own, then the median and min of ``--runs``
timed calls; peak = allocator peak during the timed calls; graphs = graphs Dynamo compiled for the
row, recompiles = those compiled after the first call; rel. L2 = output vs ours eager (bf16
rounding, <= 1e-2 expected). The CFG step is ``sampling.Guidance`` as the sampler runs it: cond and
uncond as one batch-2 forward, then ``v_u + g (v_c - v_u)``.

FLOPs of one forward, counting a multiply-add as 2 and only GEMMs and attention (embeddings and
head are < 0.1 %), L tokens, width d, FFN width f, 512 text tokens, per block:

    8·L·d²       self-attention q, k, v, o projections
  + 4·L²·d       self-attention scores and weighted sum
  + 4·L·d²       cross-attention q and o projections
  + 4·512·d²     cross-attention k and v of the text tokens
  + 4·L·512·d    cross-attention scores and weighted sum
  + 4·L·d·f      feed-forward

times the number of blocks. TFLOP/s = FLOPs / median time.

    python bench/dit_speed.py                         # CUDA: 1.3B and 14B, every mode
    python bench/dit_speed.py --models 1.3B --profile # + per-op breakdown of the fastest mode
    python bench/dit_speed.py --tiny                  # CPU smoke run: tiny model, backend eager
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import traceback
from dataclasses import dataclass, field

import torch
from torch._dynamo.utils import counters

import harness
from dit_eager import CONFIGS, diffusers_like  # bench/ is on sys.path when run as a script
from wanrt.wan_core.attention import BACKENDS
from wanrt.wan_core.compile import MODES, compile_dit, compile_summary
from wanrt.wan_core.dit import DiTConfig, WanModel, init_random_
from wanrt.wan_core.layers import CustomOp
from wanrt.wan_core.runtime import RuntimeOptions, apply
from wanrt.wan_core.sampling import Guidance

LATENTS = {"480p": (21, 60, 104), "720p": (21, 90, 160), "tiny": (3, 8, 12)}
TEXT_TOKENS = 512
CFG_SCALE = 5.0
# Rough first-call costs (s) for the time budget: ours/diffusers regional, ours full.
COMPILE_GUESS = {"eager": 0, "layers": 40, "blocks": 40, "blocks-torch": 40, "regional": 40,
                 "full": 150}
START = time.perf_counter()


def log(message: str) -> None:
    print(f"# [{time.perf_counter() - START:6.1f} s] {message}", flush=True)


def block_flops(tokens: int, d: int, f: int, text: int = TEXT_TOKENS) -> int:
    """FLOPs of one Wan block (see the module docstring)."""
    return (8 * tokens * d**2 + 4 * tokens**2 * d + 4 * tokens * d**2 + 4 * text * d**2
            + 4 * tokens * text * d + 4 * tokens * d * f)


def forward_flops(config: DiTConfig, tokens: int) -> int:
    return config.num_layers * block_flops(tokens, config.dim, config.ffn_dim)


@dataclass
class Row:
    model: str
    tokens: int
    impl: str
    flops: int
    times_ms: list[float] = field(default_factory=list)
    first_s: float = float("nan")
    peak_gib: float = float("nan")
    graphs: int = 0
    recompiles: int = 0
    rel_l2: float = float("nan")
    note: str = ""
    out: torch.Tensor | None = None
    profile: list[tuple[str, float]] | None = None  # (kernel name, device µs) of one call

    @property
    def ms(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")


HEADER = ("| model | tokens | implementation | median ms | min ms | TFLOP/s | vs diffusers regional "
          "| vs ours eager | first call s | peak GiB | graphs | recompiles | rel. L2 vs ours eager "
          "| note |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def fmt(row: Row, regional: Row | None, eager: Row | None) -> str:
    def ratio(ref):
        return f"{row.ms / ref.ms:.3f}" if ref is not None and ref.times_ms and row.times_ms else "–"

    def num(value, spec):
        return "–" if math.isnan(value) else format(value, spec)  # NaN: not measured here
    cells = [row.model, str(row.tokens), row.impl]
    if row.times_ms:
        cells += [f"{row.ms:.1f}", f"{min(row.times_ms):.1f}",
                  f"{row.flops / (row.ms * 1e-3) / 1e12:.3g}", ratio(regional), ratio(eager),
                  f"{row.first_s:.1f}", num(row.peak_gib, ".1f"), str(row.graphs),
                  str(row.recompiles), num(row.rel_l2, ".1e")]
    else:
        cells += ["–"] * 10
    return "| " + " | ".join(cells + [row.note.replace("|", "/")]) + " |"


class Bench:
    def __init__(self, args, device: torch.device, dtype: torch.dtype):
        self.args, self.device, self.dtype = args, device, dtype
        self.rows: list[Row] = []
        self.first_call_s: dict[str, float] = {}  # measured first calls, for the time budget

    def build(self, config: DiTConfig, *, fused_kernels: bool = True,
              fuse: bool = True) -> WanModel:
        """Ours with seed-0 random weights (the same on every call); layers bind their
        implementation at construction, so ``fused_kernels=False`` builds torch layers."""
        with torch.device("meta"):
            model = WanModel(config, dtype=self.dtype, attention_backend=self.args.attn)
        options = RuntimeOptions.from_env(attention=model.attention_options)
        apply(model, options if fused_kernels else options.replace(fused_kernels=False))
        model = init_random_(model.to_empty(device=self.device), seed=0).eval()
        model.requires_grad_(False)
        return model.fuse_projections() if fuse and not self.args.no_fuse else model

    def measure(self, row: Row, fn, runs: int) -> None:
        """The first call of ``fn`` (compiles), then ``runs`` timed calls, all under
        ``torch.inference_mode``; fills ``row``."""
        counters.clear()
        with torch.inference_mode():
            row.first_s, out = harness.first_call(fn, self.device)
            first_graphs = counters["stats"]["unique_graphs"]
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for _ in range(runs):
                start = time.perf_counter()
                out = fn()
                harness.sync(self.device)
                row.times_ms.append((time.perf_counter() - start) * 1e3)
            if self.device.type == "cuda":
                row.peak_gib = torch.cuda.max_memory_allocated() / 2**30
            row.out = out.float()
            if self.args.profile and self.device.type == "cuda":
                row.profile = profile_kernels(fn)
        row.graphs = counters["stats"]["unique_graphs"]
        row.recompiles = row.graphs - first_graphs

    def run(self, row: Row, compile_kind: str, calls_s: float, body) -> Row:
        """``body(row)`` unless the time budget is spent; an error is recorded in the row."""
        cost = calls_s + self.first_call_s.get(compile_kind, COMPILE_GUESS[compile_kind])
        left = self.args.budget_s - (time.perf_counter() - START)
        if cost > left:
            row.note = f"skipped: needs ~{cost:.0f} s, {max(left, 0):.0f} s of --budget-s left"
        else:
            log(f"{row.model}: {row.impl} ...")
            torch._dynamo.reset()
            try:
                body(row)
                if compile_kind != "eager":
                    self.first_call_s[compile_kind] = max(
                        self.first_call_s.get(compile_kind, 0.0), 1.2 * row.first_s)
            except Exception as e:  # noqa: BLE001 - one failing configuration must not end the run
                row.times_ms, row.out = [], None
                row.note = f"error: {type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"
                print("".join(traceback.format_exc().splitlines(True)[-12:]), flush=True)
            finally:
                torch._dynamo.reset()
                harness.free(self.device)
        self.rows.append(row)
        print(fmt(row, None, None), flush=True)
        return row

    def model(self, name: str, config: DiTConfig, latent: tuple[int, int, int]) -> None:
        """Every row of one model at one latent size."""
        args, device, dtype = self.args, self.device, self.dtype
        tokens = latent[0] * (latent[1] // 2) * (latent[2] // 2)
        flops = forward_flops(config, tokens)
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(1, config.in_dim, *latent, generator=g).to(device, dtype)
        context = torch.randn(1, TEXT_TOKENS, config.text_dim, generator=g).to(device, dtype)
        negative = torch.randn(1, TEXT_TOKENS, config.text_dim, generator=g).to(device, dtype)
        t = torch.tensor([999.0], device=device)
        forward_s = flops / 300e12 if device.type == "cuda" else 0.1  # until measured
        first = len(self.rows)

        def row(impl: str, calls: int = 1) -> Row:
            return Row(name, tokens, impl, calls * flops)

        # diffusers: eager, then regional compile of the same module
        ref = None

        def diffusers_eager(r):
            nonlocal ref
            ours = self.build(config, fuse=False)  # official parameter names
            ref = diffusers_like(ours, dtype, device)
            del ours
            harness.free(self.device)
            self.measure(r, lambda: ref(x, t, context, return_dict=False)[0], args.runs)

        def diffusers_regional(r):
            if ref is None:
                raise RuntimeError("no diffusers model: its eager row failed or was skipped")
            mode = {"mode": args.inductor_mode} if args.inductor_mode else {}
            ref.compile_repeated_blocks(fullgraph=True, backend=args.backend, **mode)
            self.measure(r, lambda: ref(x, t, context, return_dict=False)[0], args.runs)

        runs_s = (args.runs + 1) * forward_s
        self.run(row("diffusers eager"), "eager", runs_s, diffusers_eager)
        self.run(row("diffusers compile_repeated_blocks"), "regional", runs_s, diffusers_regional)
        ref = None
        harness.free(self.device)

        # ours: eager, then each compile mode on a fresh copy of the same weights
        def ours(r, mode="off", torch_layers=False):
            model = self.build(config, fused_kernels=not torch_layers)
            compile_dit(model, mode, backend=args.backend, inductor_mode=args.inductor_mode)
            self.measure(r, lambda: model(x, t, context), args.runs)

        eager = self.run(row(f"ours eager ({args.attn})"), "eager", runs_s, ours)
        if eager.times_ms:
            forward_s = eager.ms * 1e-3
            runs_s = (args.runs + 1) * forward_s

        def cfg_step(r, mode):
            guide = Guidance(context, negative, clip_fea=None, y=None, batched=True)
            latents = x.float()  # the sampler keeps latents in fp32
            model = self.build(config)
            compile_dit(model, mode, backend=args.backend, inductor_mode=args.inductor_mode)
            self.measure(r, lambda: guide(model, latents, t, CFG_SCALE), args.cfg_runs)

        def cfg_rows():
            cfg_s = (args.cfg_runs + 1) * 2 * forward_s
            for mode in ("off", args.cfg_mode):
                label = "eager" if mode == "off" else mode
                self.run(row(f"CFG step ours {label} (batch 2)", calls=2),
                         "eager" if mode == "off" else mode, cfg_s,
                         lambda r, mode=mode: cfg_step(r, mode))

        for mode in args.modes:
            if mode == "layers" and not layers_mode_compiles():
                same = Row(name, tokens, "ours layers", flops, eager.times_ms, eager.first_s,
                           eager.peak_gib, out=eager.out, profile=eager.profile,
                           note="the eager model itself: " + compile_summary("layers"))
                self.rows.append(same)
                print(fmt(same, None, None), flush=True)
            elif mode == "blocks-torch":
                self.run(row("ours blocks, torch layers (inductor fuses them)"), mode, runs_s,
                         lambda r: ours(r, "blocks", torch_layers=True))
            elif mode != "off":
                self.run(row(f"ours {mode}"), mode, runs_s, lambda r, mode=mode: ours(r, mode))
            if mode == args.cfg_mode:
                cfg_rows()
        if args.cfg_mode != "none" and args.cfg_mode not in args.modes:
            cfg_rows()

        rows = self.rows[first:]
        cfg_eager = next((r for r in rows if r.impl == "CFG step ours eager (batch 2)"), None)
        for r in rows:
            ref_row = cfg_eager if r.impl.startswith("CFG") else eager
            if r.out is not None and ref_row is not None and ref_row.out is not None:
                r.rel_l2 = ((r.out - ref_row.out).norm() / ref_row.out.norm()).item()
        if args.profile:
            print_profile(name, rows)
        for r in rows:
            r.out = None


def print_profile(name: str, rows: list[Row]) -> None:
    """Kernel time by group and the top kernels of the fastest ours row."""
    timed = [r for r in rows if r.profile and r.impl.startswith("ours")]
    if not timed:
        return
    best = min(timed, key=lambda r: r.ms)
    total = sum(us for _, us in best.profile)
    print(f"\n### {name}: where the time goes in `{best.impl}` (one forward, "
          f"{total / 1e3:.1f} ms of kernels)\n")
    groups: dict[str, float] = {}
    for kernel, us in best.profile:
        groups[kernel_group(kernel)] = groups.get(kernel_group(kernel), 0.0) + us
    print("| group | ms | % |\n|---|---|---|")
    for group, us in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {group} | {us / 1e3:.1f} | {100 * us / total:.1f} |")
    print("\n| kernel | group | ms | % |\n|---|---|---|---|")
    for kernel, us in sorted(best.profile, key=lambda kv: -kv[1])[:15]:
        short = kernel if len(kernel) <= 90 else kernel[:87] + "..."
        print(f"| `{short}` | {kernel_group(kernel)} | {us / 1e3:.2f} | {100 * us / total:.1f} |")
    print(flush=True)


def layers_mode_compiles() -> bool:
    """Whether ``compile_dit(..., "layers")`` compiles anything here (not where every layer runs a
    Triton kernel)."""
    return any(cls.choose_impl() == "native" for cls in CustomOp.layer_types)


GROUPS = (("attention", ("flash", "fmha", "attention", "sdpa", "cudnn")),
          ("GEMM", ("gemm", "nvjet", "cutlass", "cublas", "xmma", "matmul", "splitk")),
          ("elementwise / norm", ("triton", "row_kernel", "rotary", "elementwise", "vectorized",
                                  "reduce", "norm", "copy", "cat", "gelu", "silu", "fill")))


def kernel_group(kernel: str) -> str:
    name = kernel.lower()
    return next((group for group, keys in GROUPS if any(k in name for k in keys)), "other")


def profile_kernels(fn) -> list[tuple[str, float]]:
    """(kernel name, total device µs) of the GPU kernels one ``fn()`` launches."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels_us = []
    for event in prof.key_averages():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            us = getattr(event, "self_device_time_total", None)
            if us is None:
                us = event.self_cuda_time_total
            kernels_us.append((event.key, float(us)))
    return kernels_us


def goals(rows: list[Row]) -> list[str]:
    """The issue's goals against this run's rows."""
    lines = []
    by = {(r.model, r.impl): r for r in rows if r.times_ms}
    for model, goal in (("1.3B", 0.90), ("14B", 0.93)):
        regional = by.get((model, "diffusers compile_repeated_blocks"))
        ours = [r for (m, impl), r in by.items() if m == model and impl.startswith("ours")]
        if regional and ours:
            best = min(ours, key=lambda r: r.ms)
            ratio = best.ms / regional.ms
            lines.append(f"{model}: fastest ours ({best.impl}) = {ratio:.3f}x diffusers regional "
                         f"(goal <= {goal}): {'met' if ratio <= goal else 'missed'}")
    for r in rows:
        if r.model == "1.3B" and r.impl.startswith("ours") and r.graphs and r.times_ms:
            lines.append(f"1.3B {r.impl}: first call {r.first_s:.1f} s (goal <= 20 s): "
                         f"{'met' if r.first_s <= 20 else 'missed'}")
    for model in dict.fromkeys(r.model for r in rows):
        eager = by.get((model, "CFG step ours eager (batch 2)"))
        compiled = [r for (m, impl), r in by.items()
                    if m == model and impl.startswith("CFG step") and r is not eager]
        if eager and compiled:
            speedup = eager.ms / compiled[0].ms
            lines.append(f"{model}: {compiled[0].impl} is {speedup:.3f}x as fast as ours eager "
                         f"(goal >= 1.15): {'met' if speedup >= 1.15 else 'missed'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="1.3B,14B", help="comma-separated: 1.3B, 14B")
    parser.add_argument("--modes", default="off,blocks,full,layers,blocks-torch",
                        help=f"ours, comma-separated, in order: {', '.join(MODES)}, blocks-torch "
                             f"(blocks mode over the torch layers instead of the Triton kernels)")
    parser.add_argument("--attn", default="auto", choices=sorted(BACKENDS),
                        help="our attention backend")
    parser.add_argument("--runs", type=int, default=5, help="timed forwards per row")
    parser.add_argument("--cfg-runs", type=int, default=3, help="timed CFG steps per row")
    parser.add_argument("--cfg-mode", default="blocks", choices=["none", *MODES[1:]],
                        help="compile mode of the compiled CFG-step row (none: no CFG rows)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--inductor-mode", default=None, help="e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--no-fuse", action="store_true", help="keep q/k/v projections apart")
    parser.add_argument("--hd", action="store_true", help="also the 14B at 1280x720x81")
    parser.add_argument("--profile", action="store_true",
                        help="per-kernel breakdown (torch.profiler) of the fastest ours mode")
    parser.add_argument("--budget-s", type=float, default=520,
                        help="skip rows that would end after this many seconds of the run")
    parser.add_argument("--tiny", action="store_true",
                        help="CPU smoke run: tiny model, fp32, backend eager")
    parser.add_argument("--warm-caches", action="store_true",
                        help="compile from the existing Inductor/Triton caches (default: fresh "
                             "empty ones, so every first call is a cold compile)")
    args = parser.parse_args()
    caches = "the existing ones (warm)" if args.warm_caches else (
        f"fresh under {harness.use_fresh_caches()} (cold first calls)")
    args.modes = args.modes.split(",")
    unknown = [m for m in args.modes if m not in (*MODES, "blocks-torch")]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}, blocks-torch")

    if args.tiny:
        device, dtype = torch.device("cpu"), torch.float32
        args.backend, args.runs, args.cfg_runs = "eager", min(args.runs, 3), min(args.cfg_runs, 2)
        jobs = [("tiny", CONFIGS["tiny"], LATENTS["tiny"])]
    else:
        if not torch.cuda.is_available():
            parser.error("needs a CUDA GPU (or --tiny)")
        device, dtype = torch.device("cuda"), torch.bfloat16
        jobs = [(n, CONFIGS[n], LATENTS["480p"]) for n in args.models.split(",")]
        if args.hd and "14B" in args.models.split(","):
            jobs.append(("14B 720p", CONFIGS["14B"], LATENTS["720p"]))
    print(f"latent [1, 16, F, H, W] per row, context [1, {TEXT_TOKENS}, 4096], {dtype}, "
          f"ours: attention {args.attn}, {'separate' if args.no_fuse else 'fused'} projections, "
          f"backend {args.backend}, inductor mode {args.inductor_mode}; median of {args.runs} "
          f"forwards ({args.cfg_runs} CFG steps) after the first call")
    print("\n".join(harness.settings(
        channels_last="not used (the DiT has no convolutions on its hot path)", caches=caches,
        attention=args.attn)))
    for mode in dict.fromkeys(m if m != "blocks-torch" else "blocks" for m in args.modes):
        print(f"policy: {compile_summary(mode)}")
    print(HEADER, flush=True)

    bench = Bench(args, device, dtype)
    for name, config, latent in jobs:
        bench.model(name, config, latent)

    print("\n## Result\n")
    print(HEADER)
    for r in bench.rows:
        regional = next((e for e in bench.rows if e.model == r.model
                         and e.impl == "diffusers compile_repeated_blocks"), None)
        eager_name = "CFG step ours eager (batch 2)" if r.impl.startswith("CFG") else None
        eager = next((e for e in bench.rows if e.model == r.model and (
            e.impl == eager_name if eager_name else e.impl.startswith("ours eager"))), None)
        print(fmt(r, None if r.impl.startswith("CFG") else regional, eager))
    print()
    for line in goals(bench.rows):
        print(f"- {line}")
    print(f"\ntotal {time.perf_counter() - START:.0f} s", flush=True)


if __name__ == "__main__":
    main()
