"""``python -m wanrt run WORKFLOW.json``: run a workflow headless and report outputs and timings.

Exit status: 0 success, 1 rejected by validation or a node failed, 2 unreadable workflow or bad
arguments, 130 interrupted (Ctrl-C, SIGINT), 143 terminated (SIGTERM). An interrupt or SIGTERM at
any stage stops the running node (the video encoder too) and leaves no temporary file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", help="workflow JSON, UI format (as the ComfyUI frontend saves it) or API format")
    parser.add_argument("--models-dir", help="a ComfyUI-style models folder (diffusion_models/, text_encoders/, "
                                             "vae/, clip_vision/, ...); default $WANRT_MODELS_DIR")
    parser.add_argument("--extra-model-paths", metavar="YAML", help="ComfyUI extra_model_paths.yaml naming more "
                                                                    "model folders")
    parser.add_argument("--output-dir", default="output", help="where output files go (default: ./output)")
    parser.add_argument("--input-dir", help="where input images are read (default: the example images in "
                                            "workflows/inputs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE_ID.input=VALUE",
                        help="override an input, e.g. --set 3.seed=42; VALUE is JSON (42, 1.5, true, \"text\", "
                             "[\"4\", 0] for a link) or else taken as a string; repeatable")
    parser.add_argument("--attention", metavar="BACKEND",
                        help="attention backend of every diffusion model the workflow loads (its loaders' "
                             "attention input), e.g. sage8 for 8-bit attention; per-step / per-block "
                             "exclusions are inputs of the Compile node (--set ID.dense_first_steps=2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_parallel_arguments(parser)
    add_memory_arguments(parser)


def add_memory_arguments(parser: argparse.ArgumentParser) -> None:
    """``--low-vram``, ``--text-encoder-on-cpu``, ``--vram-budget`` (see :func:`memory_options`)."""
    memory = parser.add_argument_group("GPU memory (see wan_core/residency.py)")
    memory.add_argument("--low-vram", action="store_true", help="park the diffusion model in CPU "
                        "memory when sampling ends, so the encoders and the VAE get the whole GPU")
    memory.add_argument("--text-encoder-on-cpu", action="store_true",
                        help="run the text encoder on the CPU (slower; frees its GPU memory)")
    memory.add_argument("--vram-budget", type=float, metavar="GIB",
                        help="the most GPU memory all models may hold at once; older idle ones "
                             "are parked in CPU memory to stay under it")


def add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("several GPUs (under torchrun --nproc-per-node N; see "
                                      "wan_core/parallel)")
    group.add_argument("--parallel", metavar="MODE", help="split each sampling step over the "
                       "processes: cfg (cond / uncond on 2 ranks), ulysses or ring (tokens over "
                       "N ranks; ulysses needs N to divide the head count), cfg+ulysses, cfg+ring")
    group.add_argument("--parallel-timeout", type=float, default=600, metavar="SECONDS",
                       help="a rank that waits this long for another fails the run, naming the "
                            "rank that hung or died (default 600)")


def join_parallel(args: argparse.Namespace, prog: str):
    """``wan_core.parallel.init`` for ``--parallel`` (None without it); a usage error prints
    and raises SystemExit(EXIT_USAGE)."""
    if not args.parallel:
        return None
    from ..wan_core import parallel

    try:
        return parallel.init(args.parallel, timeout_s=args.parallel_timeout)
    except (parallel.ParallelConfigError, RuntimeError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


@contextlib.contextmanager
def writer_output(mesh):
    """Rank 0 prints as one process would; the other ranks print only their errors."""
    if mesh is None or mesh.is_writer:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def parse_overrides(items: list[str]) -> dict[str, object]:
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set {item!r}: expected NODE_ID.input=VALUE")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def memory_options(args: argparse.Namespace) -> dict:
    """The ``Residency`` options of the memory flags."""
    return {"low_vram": args.low_vram,
            "on_cpu": ("text_encoder",) if args.text_encoder_on_cpu else (),
            "budget_bytes": None if args.vram_budget is None else int(args.vram_budget * 2**30)}


def run(args: argparse.Namespace) -> int:
    mesh = join_parallel(args, "wanrt run")
    try:
        with writer_output(mesh):
            return _run(args, mesh)
    finally:
        if mesh is not None:
            from ..wan_core import parallel
            parallel.shutdown()


def _run(args: argparse.Namespace, mesh) -> int:
    from ..nodes.host import HeadlessHost
    from . import Executor, PromptError, load_workflow
    from .convert import is_ui_workflow

    prog = "wanrt run" if mesh is None else f"wanrt run (rank {mesh.rank})"
    writer = mesh is None or mesh.is_writer

    try:
        workflow = load_workflow(args.workflow)
        overrides = parse_overrides(args.overrides)
        if args.attention:
            from ..wan_core.attention import get_backend
            get_backend(args.attention)  # ValueError listing the names
        host = HeadlessHost.from_paths(args.models_dir, args.extra_model_paths, output_dir=args.output_dir,
                                       input_dir=args.input_dir, show_progress=not args.no_progress,
                                       memory=memory_options(args))
    except (OSError, ValueError, ImportError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_USAGE
    if mesh is not None:
        host.take_part(mesh)
    executor = Executor(host)
    start = time.perf_counter()
    with _sigterm_interrupts() as terminated:
        try:
            prompt = executor.prepare(workflow, overrides)
            if args.attention:
                set_attention(prompt, args.attention)
            executor.on_event = _Printer(prompt) if writer else None
            # Save nodes embed the UI workflow, as ComfyUI's frontend sends it in extra_pnginfo.
            extra = {"extra_pnginfo": {"workflow": workflow}} if is_ui_workflow(workflow) else None
            result = executor.run(prompt, extra_data=extra)
        except PromptError as e:
            print(f"{prog}: {args.workflow} was rejected before running:\n{e}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    _report(result, prompt, time.perf_counter() - start, prog)
    if mesh is not None and result.status == "error":
        from ..wan_core import parallel
        if (stalled := parallel.unresponsive_ranks()) is not None:
            print(f"{prog}: {stalled}", file=sys.stderr)
    interrupted = EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    return {"success": EXIT_OK, "interrupted": interrupted}.get(result.status, EXIT_FAILED)


@contextlib.contextmanager
def _sigterm_interrupts():
    """While running, SIGTERM raises KeyboardInterrupt like Ctrl-C, so the running node stops
    and cleans up (Python's default would end the process on the spot, leaving the encoder
    running and its temporary file behind). Yields a list that is non-empty once SIGTERM came."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def interrupt(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def set_attention(prompt: dict, backend: str) -> None:
    """Point the ``attention`` input of every diffusion-model loader of ``prompt`` at ``backend``."""
    for node in prompt.values():
        if node.get("class_type") == "WanRTLoadDiffusionModel":
            node["inputs"]["attention"] = backend


class _Printer:
    """Prints one line per node as it starts (progress bars come from the host)."""

    def __init__(self, prompt: dict):
        self.prompt = prompt

    def __call__(self, event: str, data: dict) -> None:
        if event == "executing" and data["node"] is not None:
            print(f"node {data['node']} ({_describe(self.prompt, data['node'])})", file=sys.stderr)
        elif event == "execution_cached" and data["nodes"]:
            print(f"cached: {', '.join(data['nodes'])}", file=sys.stderr)


def _describe(prompt: dict, node_id: str) -> str:
    node = prompt[node_id]
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, dict) else None
    return node["class_type"] + (f" '{title}'" if title and title != node["class_type"] else "")


def _report(result, prompt: dict, seconds: float, prog: str = "wanrt run") -> None:
    if result.outputs:
        print("outputs:")
        for node_id, ui in result.outputs.items():
            for key, items in ui.items():
                shown = [f"{i.get('subfolder') + '/' if i.get('subfolder') else ''}{i['filename']}"
                         if isinstance(i, dict) and "filename" in i else i for i in items]
                print(f"  node {node_id} ({_describe(prompt, node_id)}) {key}: {', '.join(map(str, shown))}")
    for path in result.files:
        print(f"wrote {path}")
    print("time per node:")
    for node_id, took in result.timings.items():
        print(f"  {took:8.2f} s  node {node_id} ({_describe(prompt, node_id)})")
    if result.cached:
        print(f"  {'cached':>10}  nodes {', '.join(result.cached)}")
    if result.status == "error":
        err = result.error
        print(f"{prog}: node {err['node_id']} ({_describe(prompt, err['node_id'])}) failed: "
              f"{err['exception_type']}: {err['exception_message']}", file=sys.stderr)
    elif result.status == "interrupted":
        print(f"{prog}: interrupted at node {result.error['node_id']}", file=sys.stderr)
    else:
        print(f"done in {seconds:.2f} s")
