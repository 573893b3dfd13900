"""The host adapter, headless and under a stub ComfyUI (fake folder_paths / comfy.* modules)."""

import os
import subprocess
import sys
import textwrap
import types

import pytest
from comfy_stub import StubInterrupt, install_comfy
from runner_fakes import FAKE_NODES, Sample, fixture

from wanrt.nodes import host
from wanrt.nodes.host import ComfyHost, HeadlessHost, Interrupted, ModelNotFoundError
from wanrt.runner import Executor


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def models(tmp_path):
    root = tmp_path / "models"
    touch(root / "unet" / "wan2.1_t2v_1.3B_fp16.safetensors")
    touch(root / "diffusion_models" / "wan2.2" / "high_noise.safetensors")
    touch(root / "diffusion_models" / "readme.txt")
    touch(root / "clip" / "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    touch(root / "vae" / "wan_2.1_vae.safetensors")
    return root


# --- headless ---------------------------------------------------------------------------------

def test_models_dir_is_searched_like_comfyui_models(models):
    h = HeadlessHost.from_paths(models)
    files = ["wan2.1_t2v_1.3B_fp16.safetensors", "wan2.2/high_noise.safetensors"]
    assert h.model_files("diffusion_models") == files
    assert h.model_files("unet") == files  # legacy alias
    assert h.model_files("text_encoders") == h.model_files("clip") == ["umt5_xxl_fp8_e4m3fn_scaled.safetensors"]
    assert h.model_files("clip_vision") == []
    assert h.model_path("vae", "wan_2.1_vae.safetensors") == str(models / "vae" / "wan_2.1_vae.safetensors")
    assert h.model_path("unet", "wan2.2/high_noise.safetensors") == str(
        models / "diffusion_models" / "wan2.2" / "high_noise.safetensors")


def test_missing_model_names_the_folders_searched(models):
    with pytest.raises(ModelNotFoundError) as e:
        HeadlessHost.from_paths(models).model_path("diffusion_models", "wan2.1_t2v_14B_bf16.safetensors")
    assert str(e.value) == (f"model file 'wan2.1_t2v_14B_bf16.safetensors' not found in the 'diffusion_models' "
                            f"folders: {models / 'unet'}, {models / 'diffusion_models'}")


def test_no_models_configured_says_how_to_configure(monkeypatch):
    monkeypatch.delenv("WANRT_MODELS_DIR", raising=False)
    with pytest.raises(ModelNotFoundError, match="pass --models-dir, set WANRT_MODELS_DIR"):
        HeadlessHost.from_paths().model_path("vae", "wan_2.1_vae.safetensors")


def test_model_names_cannot_leave_their_folder(models, tmp_path):
    touch(tmp_path / "secret.safetensors")
    with pytest.raises(ModelNotFoundError):
        HeadlessHost.from_paths(models).model_path("vae", "../../secret.safetensors")


def test_unknown_folder_kind_is_an_error(models):
    with pytest.raises(ValueError, match="unknown model folder 'checkpoint'"):
        HeadlessHost.from_paths(models).model_files("checkpoint")


def test_env_var_names_the_models_dir(models, monkeypatch):
    monkeypatch.setenv("WANRT_MODELS_DIR", str(models))
    assert HeadlessHost.from_paths().model_files("vae") == ["wan_2.1_vae.safetensors"]


def test_missing_models_dir_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="models directory .*nope.* does not exist"):
        HeadlessHost.from_paths(tmp_path / "nope")


def test_extra_model_paths_yaml(models, tmp_path):
    pytest.importorskip("yaml")
    touch(tmp_path / "shared" / "big" / "wan2.1_i2v_480p_14B_fp16.safetensors")
    touch(tmp_path / "elsewhere" / "vae" / "wan2.2_vae.safetensors")
    config = tmp_path / "conf" / "extra_model_paths.yaml"
    config.parent.mkdir()
    config.write_text(textwrap.dedent("""\
        # ComfyUI's format: sections of folder names, base_path relative to this file
        shared:
            base_path: ../shared
            is_default: true
            unet: |
                big
                missing
        other:
            vae: ../elsewhere/vae
        empty:
        """))
    h = HeadlessHost.from_paths(models, config)
    assert h.model_folders("diffusion_models") == [
        str(tmp_path / "shared" / "missing"), str(tmp_path / "shared" / "big"),  # is_default: first
        str(models / "unet"), str(models / "diffusion_models")]
    assert "wan2.1_i2v_480p_14B_fp16.safetensors" in h.model_files("diffusion_models")
    assert h.model_files("vae") == ["wan2.2_vae.safetensors", "wan_2.1_vae.safetensors"]


def test_progress_reports_and_checks_the_interrupt_flag():
    h = HeadlessHost(show_progress=False)
    seen = []
    h.on_progress = lambda value, total, preview: seen.append((value, total, preview))
    bar = h.progress(4)
    bar.update(1)
    bar.update_absolute(3, preview="img")
    bar.update(5)  # clamped to the total, like ComfyUI's ProgressBar
    assert seen == [(1, 4, None), (3, 4, "img"), (4, 4, None)]
    h.interrupt()
    with pytest.raises(Interrupted):
        h.progress(2).update(1)
    h.throw_if_interrupted()  # the flag is consumed by the exception


def test_headless_devices_follow_the_platform(monkeypatch):
    import torch

    from wanrt.kernels import platforms

    monkeypatch.setenv("WANRT_PLATFORM", "cpu")
    platforms._platform_for.cache_clear()
    h = HeadlessHost()
    assert (h.device(), h.offload_device()) == (torch.device("cpu"), torch.device("cpu"))
    platforms._platform_for.cache_clear()


def test_current_is_headless_outside_comfyui_and_activate_overrides(monkeypatch):
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    assert isinstance(host.current(), HeadlessHost)
    mine = HeadlessHost()
    with host.activate(mine):
        assert host.current() is mine
    assert host.current() is not mine


def test_importing_the_package_never_imports_comfyui():
    code = textwrap.dedent("""\
        import importlib.abc, sys
        attempts = []
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("folder_paths", "comfy", "comfy_api", "comfy_extras"):
                    attempts.append(name)
                return None
        sys.meta_path.insert(0, Block())
        import wanrt, wanrt.nodes.host, wanrt.nodes.base, wanrt.runner, wanrt.runner.cli
        print(attempts)
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


# --- under a stub ComfyUI ---------------------------------------------------------------------

@pytest.fixture
def comfy(tmp_path, monkeypatch):
    """Fake ``folder_paths``, ``comfy.utils`` and ``comfy.model_management`` modules that record
    how they are called, with real folders under ``tmp_path``."""
    log = types.SimpleNamespace(progress=[], interrupted=False, filename_lists=[])
    folders = {"diffusion_models": [str(tmp_path / "comfy" / "models" / "diffusion_models")],
               "vae": [str(tmp_path / "comfy" / "models" / "vae")]}
    touch(tmp_path / "comfy" / "models" / "diffusion_models" / "tiny.safetensors").write_text("5")

    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_folder_paths = lambda name: folders[name]

    def get_filename_list(name):
        log.filename_lists.append(name)
        return sorted(os.listdir(folders[name][0]))

    def get_full_path(name, filename):
        path = os.path.join(folders[name][0], filename)
        return path if os.path.isfile(path) else None

    folder_paths.get_filename_list = get_filename_list
    folder_paths.get_full_path = get_full_path
    folder_paths.get_output_directory = lambda: str(tmp_path / "comfy" / "output")
    folder_paths.get_input_directory = lambda: str(tmp_path / "comfy" / "input")
    folder_paths.get_temp_directory = lambda: str(tmp_path / "comfy" / "temp")

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            log.progress.append((value, total or self.total))

    install_comfy(monkeypatch, log, folder_paths=folder_paths, progress_bar=ProgressBar,
                  device="stub-gpu", offload_device="stub-cpu")
    return log


def test_inside_comfyui_the_host_delegates_to_comfyui(comfy, tmp_path):
    h = host.current()
    assert isinstance(h, ComfyHost)
    assert h.model_files("unet") == ["tiny.safetensors"] and comfy.filename_lists == ["diffusion_models"]
    with pytest.raises(ModelNotFoundError, match=f"not found in the 'vae' folders: {tmp_path / 'comfy'}"):
        h.model_path("vae", "wan_2.1_vae.safetensors")
    assert h.output_dir() == str(tmp_path / "comfy" / "output")
    assert (h.device(), h.offload_device()) == ("stub-gpu", "stub-cpu")
    h.progress(10).update(1)
    assert comfy.progress == [(1, 10)]
    h.interrupt()
    with pytest.raises(StubInterrupt):
        h.throw_if_interrupted()


def test_a_node_graph_runs_through_the_comfyui_host(comfy, tmp_path, monkeypatch):
    import wanrt  # the root package imports fine with ComfyUI's modules present

    assert wanrt.NODE_CLASS_MAPPINGS is not None
    executor = Executor(host.current(), FAKE_NODES)
    result = executor.run(fixture("ui_basic.json"), {"1.model_name": "tiny.safetensors"})
    assert result.ok
    assert (tmp_path / "comfy" / "output" / "basic" / "number_00001_.txt").read_text() == "47"  # 5 + seed 42
    assert comfy.progress == [(1, 3), (2, 3), (3, 3)]  # Sample's 3 steps went to comfy.utils.ProgressBar

    # ComfyUI's interrupt flag, checked at every progress update: the sampler stops at its next step.
    monkeypatch.setattr(Sample, "on_step", executor.interrupt)
    result = executor.run(fixture("ui_basic.json"), {"5.seed": 1})
    assert result.status == "interrupted" and result.error["node_id"] == "5"
