"""``python -m wanrt <command>``: make-tiny, demo, run, serve."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Tiny CPU ops (make-tiny models, a small VAE decode) spend most of their time in OpenMP's
# spinning idle threads once anything else loads the machine: 12 s instead of 1.3 s for the README
# run on 2 busy cores. Sleeping idle threads cost nothing measurable on real sizes. Set before
# torch loads; the user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DESCRIPTION = ("WanRT: fast Wan 2.1 / 2.2 video generation. Run ComfyUI workflows headless (run), "
               "serve the ComfyUI frontend (serve), write tiny random test checkpoints "
               "(make-tiny), or show which kernels this machine uses (demo).")
PACKAGE_DIR = Path(__file__).resolve().parent


def isolate_sys_path() -> None:
    """Take the checkout off ``sys.path`` (``python -m`` puts the working directory there).

    The checkout *is* the package ``wanrt``; as a top-level import location its folders would
    shadow installed distributions (PyPI's ``kernels``) and ComfyUI's ``nodes``.
    """
    sys.path[:] = [entry for entry in sys.path if Path(entry or os.getcwd()).resolve() != PACKAGE_DIR]


def _demo(args) -> int:
    """Smoke demo: exercise every kernel on the current platform and report the choices."""
    import torch

    from . import kernels
    from .wan_core.layers import implementation_report

    platform = kernels.current_platform()
    print(f"platform: {platform.name}  capabilities: {platform.capabilities()}")
    print(f"default kernel implementation: {kernels.default_impl()}")
    for layer, impl in implementation_report().items():
        print(f"  {layer:28s} -> {impl}")
    device = platform.device() if platform.name != "cpu" else torch.device("cpu")
    x = torch.randn(1, 64, 1536, device=device)
    mod = torch.randn(1, 1, 1536, device=device)
    if not kernels.triton_usable(platform):
        print(f"no fused kernel is available on this platform ({platform.name}): "
              f"every layer runs native (plain torch operations)")
        return 0
    out = kernels.norm_modulate(x, mod, mod)
    ref = kernels.norm_modulate(x, mod, mod, impl="torch")
    print(f"norm_modulate [1, 64, 1536]: max |fused - torch| = {(out - ref).abs().max().item():.2e}")
    return 0


def _make_tiny(outdir: str) -> int:
    from .wan_core.tiny import make_tiny

    root = Path(outdir)
    files = [path for path in make_tiny(root) if path.is_file()]
    folders: dict[str, int] = {}
    for path in files:
        folder = path.relative_to(root).parts[0]
        folders[folder] = folders.get(folder, 0) + 1
    size = sum(path.stat().st_size for path in files) / 2**20
    print(f"wrote {len(files)} tiny checkpoint files ({size:.0f} MiB) under {root}: "
          + ", ".join(f"{folder} ({count})" for folder, count in sorted(folders.items())))
    return 0


def main(argv: list[str] | None = None) -> int:
    isolate_sys_path()
    parser = argparse.ArgumentParser(prog="wanrt", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="exercise the kernels and print what this platform picked")
    tiny = sub.add_parser("make-tiny", help="write tiny random checkpoints in every real layout",
                          description="Write tiny random Wan checkpoints (every model, every file "
                                      "layout users have, under the real file names) into a "
                                      "ComfyUI-style models folder, for tests and smoke runs.")
    tiny.add_argument("outdir", help="the models folder to write (diffusion_models/, vae/, ... "
                                     "are created inside); pass it to `wanrt run --models-dir`")
    from .runner.cli import add_arguments as add_run_arguments
    add_run_arguments(sub.add_parser("run", help="run a ComfyUI workflow (UI or API JSON) headless"))
    from .server.cli import add_arguments as add_serve_arguments
    add_serve_arguments(sub.add_parser("serve", help="serve the ComfyUI frontend and API on top of the runner"))
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "make-tiny":
        return _make_tiny(args.outdir)
    if args.command == "run":
        from .runner.cli import run
        return run(args)
    if args.command == "serve":
        from .server.cli import serve
        return serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
