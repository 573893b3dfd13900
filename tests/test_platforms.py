"""Platform detection and the override switch."""

from types import SimpleNamespace

import pytest

from wanrt import kernels
from wanrt.kernels import platforms


@pytest.fixture(autouse=True)
def _fresh_detection():
    platforms._platform_for.cache_clear()
    yield
    platforms._platform_for.cache_clear()


def test_detects_cpu_without_accelerators(monkeypatch):
    monkeypatch.delenv("WANRT_PLATFORM", raising=False)
    assert kernels.current_platform().name == "cpu"


@pytest.mark.parametrize("name", list(kernels.PLATFORMS))
def test_override_selects_each_platform(monkeypatch, name):
    monkeypatch.setenv("WANRT_PLATFORM", name)
    assert kernels.current_platform().name == name


def test_unknown_platform_lists_valid_names(monkeypatch):
    monkeypatch.setenv("WANRT_PLATFORM", "tpu9")
    with pytest.raises(ValueError, match="valid names: .*cuda.*musa.*npu.*cpu"):
        kernels.current_platform()


def test_capabilities_match_the_vendor_facts():
    caps = {name: cls() for name, cls in kernels.PLATFORMS.items()}
    assert not caps["musa"].float64 and not caps["mps"].float64 and caps["cuda"].float64
    assert not caps["npu"].compile
    assert {p.name: p.distributed_backend for p in caps.values()} == {
        "rocm": "nccl", "cuda": "nccl", "musa": "mccl", "npu": "hccl", "xpu": "xccl",
        "mps": "gloo", "cpu": "gloo"}


@pytest.mark.parametrize("device_type, expected", [
    ("cuda", True), ("cpu", True), ("xpu", True), ("npu", True), ("mps", False), ("musa", False),
    ("meta", True)])
def test_float64_support_follows_the_platform_table(device_type, expected):
    """Each device type answers its platform's ``float64``; a type no platform names counts as
    supporting it. (``torch.device("musa")`` only parses once torch_musa is loaded, so the test
    passes a stand-in with the one attribute read, ``.type``.)"""
    assert kernels.float64_supported(SimpleNamespace(type=device_type)) is expected
