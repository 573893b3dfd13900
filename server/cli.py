"""``python -m wanrt serve``: the arguments and the entry point."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from ..runner.cli import add_memory_arguments, add_parallel_arguments, join_parallel, memory_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", nargs="?", const="0.0.0.0", default="127.0.0.1", metavar="IP",
                        help="address to listen on (default 127.0.0.1; --listen alone: 0.0.0.0, every interface)")
    parser.add_argument("--port", type=int, default=8188, help="port (default 8188, as ComfyUI)")
    parser.add_argument("--models-dir", help="a ComfyUI-style models folder (diffusion_models/, text_encoders/, "
                                             "vae/, clip_vision/, ...); default $WANRT_MODELS_DIR")
    parser.add_argument("--extra-model-paths", metavar="YAML", help="ComfyUI extra_model_paths.yaml naming more "
                                                                    "model folders")
    parser.add_argument("--output-dir", default="output", help="where videos are saved (default ./output)")
    parser.add_argument("--input-dir", default="input", help="where uploaded images go and Load Image reads "
                                                             "(default ./input; the example images are copied "
                                                             "there if missing)")
    parser.add_argument("--temp-dir", help="temporary outputs (default: the system temp folder/wanrt)")
    parser.add_argument("--user-dir", default="user", help="settings and saved workflows (default ./user)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="a Host name, besides localhost and loopback addresses, that requests arriving on "
                             "a loopback address may use, e.g. the name a reverse proxy forwards (repeatable); "
                             "other names are refused as DNS rebinding")
    parser.add_argument("--max-upload-size", type=float, default=100, metavar="MB",
                        help="largest request body in MiB, uploads included (default 100, as ComfyUI)")
    add_parallel_arguments(parser)
    add_memory_arguments(parser)


def serve(args: argparse.Namespace) -> int:
    mesh = join_parallel(args, "wanrt serve")
    try:
        return _serve(args, mesh)
    finally:
        if mesh is not None:
            from ..wan_core import parallel
            parallel.shutdown()


def _serve(args: argparse.Namespace, mesh) -> int:
    try:
        from ..nodes.host import HeadlessHost
        from .app import MiB, PromptServer, serve as serve_forever
        from .templates import WORKFLOWS_DIR
    except ImportError as e:
        print(f"wanrt serve: {e}\n  install the server extra: pip install 'comfyui-wanrt[server]'", file=sys.stderr)
        return 2
    try:
        host = HeadlessHost.from_paths(args.models_dir, args.extra_model_paths, output_dir=args.output_dir,
                                       input_dir=args.input_dir, temp_dir=args.temp_dir,
                                       memory=memory_options(args))
        if mesh is not None:
            host.take_part(mesh)
        if mesh is not None and not mesh.is_writer:  # rank 0 serves; the others follow it
            from ..nodes import runner_node_classes
            from .worker import follow
            follow(host, runner_node_classes())
            return 0
        _copy_missing(os.path.join(WORKFLOWS_DIR, "inputs"), host.input_dir())
        server = PromptServer(host, user_dir=args.user_dir, max_body=int(args.max_upload_size * MiB),
                              allowed_hosts=args.allow_host)
    except (OSError, ValueError, ImportError) as e:
        print(f"wanrt serve: {e}", file=sys.stderr)
        return 2
    serve_forever(server, args.listen, args.port)
    return 0


def _copy_missing(source: str, dest: str) -> None:
    """The example workflows' input images, into the input folder (existing files are kept)."""
    os.makedirs(dest, exist_ok=True)
    if os.path.isdir(source):
        for name in os.listdir(source):
            if not os.path.exists(os.path.join(dest, name)):
                shutil.copy2(os.path.join(source, name), dest)
