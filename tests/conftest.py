"""Shared test setup: Triton runs in its CPU interpreter; all tests are CPU, fp32 unless stated."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

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
