"""Process faults: SIGINT, SIGTERM and SIGKILL at each stage of ``wanrt run``, a full disk, and
concurrent runs on one prefix. After each: the exit status says what happened, the encoder is
gone, no temporary file is left (SIGKILL's is removed by the next run once stale), earlier
outputs are intact and nothing is written outside the output folder."""

import multiprocessing
import os
import pathlib
import signal
import time

import fault_driver
import pytest
from runner_fakes import write_model
from multiprocessing import forkserver

from wanrt.wan_core import video_io
from wanrt.wan_core.video_io import read_video

WAIT = 60  # seconds for a child to reach its stage (never reached when it works)
PROMPT_EXIT = 10  # seconds a signalled child may take to exit: "promptly", with room for a busy CI


@pytest.fixture(scope="module")
def children():
    """A forkserver that imported WanRT once: each run is a cheap fork of it. (Python 3.11's
    forkserver ignores the parent's sys.path, so the tests folder reaches it by PYTHONPATH.)"""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["fault_driver"])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join([str(pathlib.Path(fault_driver.__file__).parent),
                                                  os.environ.get("PYTHONPATH", "")]))
        forkserver.ensure_running()
    return context


@pytest.fixture
def workdir(tmp_path):
    """A work folder whose output already holds an earlier video of the same prefix."""
    earlier = tmp_path / "output" / "fault" / "v_00001_.mp4"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"an earlier output")
    write_model(tmp_path / "models")
    return tmp_path


def start(children, workdir, stage=None, **kwargs):
    child = children.Process(target=fault_driver.run, args=(str(workdir), stage), kwargs=kwargs)
    child.start()
    return child


def wait_for_stage(child, workdir) -> str:
    marker = workdir / fault_driver.MARKER
    deadline = time.monotonic() + WAIT
    while not marker.exists():
        assert child.is_alive(), f"the child exited ({child.exitcode}) before its stage: {stderr(workdir)}"
        assert time.monotonic() < deadline, "the child never reached its stage"
        time.sleep(0.01)
    time.sleep(0.05)  # the marker is written just before the stall
    return marker.read_text()


def stderr(workdir) -> str:
    return "".join(p.read_text() for p in sorted(workdir.glob("stderr-*.txt")))


def gone(pid: int, timeout: float = PROMPT_EXIT) -> bool:
    """Whether process ``pid`` ended (and was reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def outputs(workdir) -> list[str]:
    """Every file under the work folder but the child's own bookkeeping, relative."""
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file()
                  and not p.name.startswith(("stderr-", "workflow-")) and p.name != fault_driver.MARKER
                  and "models" not in p.parts)


def assert_earlier_output_intact(workdir):
    assert (workdir / "output" / "fault" / "v_00001_.mp4").read_bytes() == b"an earlier output"


@pytest.mark.parametrize("stage", fault_driver.STAGES)
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_at_any_stage_ends_the_run_promptly_and_cleanly(children, workdir, stage, signum, status):
    child = start(children, workdir, stage)
    note = wait_for_stage(child, workdir)
    os.kill(child.pid, signum)
    child.join(PROMPT_EXIT)
    if child.is_alive():
        child.kill()
        pytest.fail(f"{signal.Signals(signum).name} at {stage}: the run did not end within {PROMPT_EXIT} s")
    assert child.exitcode == status, stderr(workdir)
    assert "interrupted" in stderr(workdir)
    if stage == "save":
        assert gone(int(note)), "the encoder was left running"
    assert outputs(workdir) == ["output/fault/v_00001_.mp4"]  # no .part, no new file
    assert_earlier_output_intact(workdir)


@pytest.mark.parametrize("stage", fault_driver.STAGES)
def test_sigkill_at_any_stage_leaves_earlier_outputs_and_the_next_run_cleans_up(children, workdir, stage):
    child = start(children, workdir, stage)
    note = wait_for_stage(child, workdir)
    os.kill(child.pid, signal.SIGKILL)
    child.join(PROMPT_EXIT)
    assert child.exitcode == -signal.SIGKILL
    if stage == "save":
        assert gone(int(note), WAIT)  # the orphaned encoder ends once its input is closed
    left = [p for p in outputs(workdir) if p != "output/fault/v_00001_.mp4"]
    assert all(pathlib.Path(p).name.endswith(".part") for p in left), left  # nothing published
    assert len(left) == (1 if stage == "save" else 0)
    for part in left:  # as if the killed run was an hour ago
        old = time.time() - video_io.STALE_PART_SECONDS - 1
        os.utime(workdir / part, (old, old))
    (workdir / fault_driver.MARKER).unlink()
    rerun = start(children, workdir)
    rerun.join(WAIT)
    assert rerun.exitcode == 0, stderr(workdir)
    assert outputs(workdir) == ["output/fault/v_00001_.mp4", "output/fault/v_00002_.mp4"]
    assert_earlier_output_intact(workdir)


def test_a_fresh_temporary_file_of_a_live_writer_is_never_cleaned(tmp_path):
    fresh = tmp_path / ".v_0123456789ab.mp4.part"
    old = tmp_path / ".v_ba9876543210.mp4.part"
    not_ours = tmp_path / ".v_notours.mp4.part"
    for path in (fresh, old, not_ours):
        path.write_bytes(b"x")
    for path in (old, not_ours):
        os.utime(path, (1, 1))
    (tmp_path / ".v_aaaaaaaaaaaa.mp4.part").symlink_to(not_ours)
    os.utime(tmp_path / ".v_aaaaaaaaaaaa.mp4.part", (1, 1), follow_symlinks=False)
    assert video_io.remove_stale_parts(tmp_path) == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [fresh.name, not_ours.name, ".v_aaaaaaaaaaaa.mp4.part"])


@pytest.mark.parametrize("format", ["mp4", "webp"])
def test_a_full_disk_fails_the_save_node_cleanly(children, workdir, format):
    child = start(children, workdir, format=format, frames=8, size=128, file_size_limit=32 * 1024)
    child.join(WAIT)
    assert child.exitcode == 1
    report = stderr(workdir)
    assert "node 5 (WanRTSaveVideo) failed" in report
    assert ("ffmpeg failed" in report) if format == "mp4" else ("File too large" in report), report
    assert outputs(workdir) == ["output/fault/v_00001_.mp4"]
    assert_earlier_output_intact(workdir)


def test_concurrent_runs_on_one_prefix_each_get_their_own_file(children, workdir):
    runs = [start(children, workdir, seed=seed) for seed in (1, 2, 3)]
    for run in runs:
        run.join(WAIT)
    assert [run.exitcode for run in runs] == [0, 0, 0], stderr(workdir)
    assert outputs(workdir) == [f"output/fault/v_0000{i}_.mp4" for i in (1, 2, 3, 4)]
    assert_earlier_output_intact(workdir)
    videos = [read_video(workdir / "output" / "fault" / f"v_0000{i}_.mp4") for i in (2, 3, 4)]
    assert all(v.shape == (8, 64, 64, 3) for v in videos)
    assert len({v.tobytes() for v in videos}) == 3  # three different runs, none overwritten
