"""Shared test setup: Triton runs in its CPU interpreter; all tests are CPU, fp32 unless stated."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `python -m wanrt` does: see __main__.py

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A ComfyUI-style models folder of tiny random checkpoints (``python -m wanrt make-tiny``)."""
    from wanrt.wan_core.tiny import make_tiny

    root = tmp_path_factory.mktemp("tiny-models")
    make_tiny(root)
    return root


@pytest.fixture(scope="session")
def dit_models(tmp_path_factory):
    """make-tiny's DiT files (``wan_core.tiny.dit``): every checkpoint layout, read-only."""
    from wanrt.wan_core.tiny import dit

    root = tmp_path_factory.mktemp("tiny-dit")
    dit.write(root, seed=0)
    return root


@pytest.fixture
def served(tiny_models, tmp_path):
    """``(url, output_dir)`` of a WanRT server running on the tiny models for one test."""
    from wanrt.nodes.host import HeadlessHost
    from wanrt.server.app import PromptServer, running

    host = HeadlessHost.from_paths(tiny_models, output_dir=tmp_path / "output",
                                   input_dir=tmp_path / "input", temp_dir=tmp_path / "temp",
                                   show_progress=False)
    with running(PromptServer(host, user_dir=tmp_path / "user")) as url:
        yield url, tmp_path / "output"


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory):
    """The vendored real ComfyUI, unpacked (``tests/vendored_comfyui.py``)."""
    from vendored_comfyui import ComfyUI

    return ComfyUI.unpack(tmp_path_factory.mktemp("comfyui"))


@pytest.fixture(scope="session")
def comfyui_server(comfyui, tiny_models, tmp_path_factory):
    """``(url, base_dir)``: ComfyUI's own server with this pack in custom_nodes and the tiny models."""
    base = comfyui.base_directory(tmp_path_factory.mktemp("comfyui-base"), tiny_models)
    with comfyui.serve(base) as url:
        yield url, base
