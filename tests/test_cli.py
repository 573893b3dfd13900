"""``wanrt`` / ``python -m wanrt`` as a newcomer meets it: plain help, a one-line make-tiny
summary, an honest demo, the process set up before torch loads."""

import os
import subprocess
import sys

import pytest

from wanrt.__main__ import main


@pytest.mark.parametrize("argv", [["--help"], ["make-tiny", "--help"], ["run", "--help"], ["serve", "--help"]])
def test_help_is_plain_text(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and ":func:" not in text
    if argv[0] == "make-tiny":
        assert "outdir" in text and "--models-dir" in text  # the argument says what it is for


def test_make_tiny_prints_a_one_line_summary(tmp_path, capsys):
    assert main(["make-tiny", str(tmp_path)]) == 0
    [line] = capsys.readouterr().out.splitlines()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert line.startswith(f"wrote {len(files)} tiny checkpoint files (")
    assert "diffusion_models (" in line and "vae (" in line and str(tmp_path) in line


def test_demo_on_cpu_says_no_fused_kernel_ran(capsys, monkeypatch):
    monkeypatch.setenv("WANRT_PLATFORM", "cpu")
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "no fused kernel is available on this platform (cpu)" in out
    assert "|fused - torch|" not in out


def test_the_cli_lets_idle_openmp_threads_sleep_unless_the_user_chose():
    """Set before torch loads (tiny CPU runs were 10x slower with spinning threads on a busy
    machine); importing the package alone loads no torch, so the setting takes effect."""
    probe = ("import os, sys; import wanrt.__main__; "
             "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["PASSIVE", "False"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["ACTIVE", "False"]
