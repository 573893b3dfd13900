"""Video files: formats decode back, ComfyUI-style metadata and counters, atomic writes."""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from wanrt.wan_core import video_io
from wanrt.wan_core.video_io import (VideoWriteError, read_metadata, read_video, save_video,
                                     to_uint8_frames)

METADATA = {"prompt": {"3": {"class_type": "KSampler", "inputs": {"text": "a=b; #c \\ d\n"}}},
            "workflow": {"nodes": [{"id": 3}], "links": [], "version": 0.4}}


def frames(t=5, h=32, w=48):
    """Smooth, distinct RGB frames in [0, 1]: red ramps along x, green along y, blue with t."""
    y, x = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    return np.stack([np.stack([x, y, np.full_like(x, i / max(t - 1, 1))], -1)
                     for i in range(t)]).astype(np.float32)


def files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_mp4_decodes_back_to_the_frames(tmp_path):
    video = frames()
    [saved] = save_video(video, tmp_path, "Wan", format="mp4", fps=16, crf=10)
    assert saved.filename == "Wan_00001_.mp4" and saved.subfolder == ""
    decoded = read_video(saved.path)
    assert decoded.shape == (5, 32, 48, 3)
    # H.264 at crf 10 on smooth ramps: a few levels of error at most, channels in RGB order.
    assert np.abs(decoded.astype(float) - video * 255).mean() < 3


def test_mp4_pads_odd_sizes_to_even_by_repeating_the_edge(tmp_path):
    video = frames(h=33, w=47)
    [saved] = save_video(video, tmp_path, "odd", crf=10)
    decoded = read_video(saved.path).astype(float)
    assert decoded.shape == (5, 34, 48, 3)
    assert np.abs(decoded[:, :33, :47] - video * 255).mean() < 3
    assert np.abs(decoded[:, :, 47] - decoded[:, :, 46]).mean() < 3  # repeated column


def test_mp4_embeds_each_metadata_key_as_a_json_container_tag(tmp_path):
    [saved] = save_video(frames(t=2), tmp_path, "Wan", metadata=METADATA)
    assert read_metadata(saved.path) == METADATA


def test_webp_frames_and_comfyui_exif_tags(tmp_path):
    [saved] = save_video(frames(t=6), tmp_path, "anim", format="webp", fps=24, metadata=METADATA)
    assert saved.filename == "anim_00001_.webp"
    assert read_video(saved.path).shape == (6, 32, 48, 3)
    with Image.open(saved.path) as image:
        exif = image.getexif()
        assert exif[0x0110].startswith('prompt:{"3": ')
        assert exif[0x010F].startswith('workflow:{"nodes": ')
    assert read_metadata(saved.path) == METADATA


def test_gif_frames(tmp_path):
    [saved] = save_video(frames(t=7, h=20, w=30), tmp_path, "anim", format="gif", fps=10)
    assert saved.path.suffix == ".gif" and read_video(saved.path).shape == (7, 20, 30, 3)


def test_png_frames_are_numbered_files_with_text_chunks(tmp_path):
    video = to_uint8_frames(frames(t=3))
    saved = save_video(video, tmp_path, "shots/Wan", format="png", metadata=METADATA)
    assert [s.filename for s in saved] == ["Wan_00001_.png", "Wan_00002_.png", "Wan_00003_.png"]
    assert {s.subfolder for s in saved} == {"shots"}
    for s, frame in zip(saved, video):
        assert np.array_equal(np.asarray(Image.open(s.path)), frame)  # png is lossless
    assert read_metadata(saved[0].path) == METADATA


def test_counter_continues_past_existing_files_of_the_prefix(tmp_path):
    (tmp_path / "Wan_00007_.png").write_bytes(b"keep")
    (tmp_path / "Wan_notes.txt").write_text("not a counter")
    (tmp_path / "Other_00050_.mp4").write_bytes(b"other prefix")
    first = save_video(frames(t=2), tmp_path, "Wan", format="gif")[0]
    second = save_video(frames(t=2), tmp_path, "Wan", format="gif")[0]
    assert (first.filename, second.filename) == ("Wan_00008_.gif", "Wan_00009_.gif")
    assert (tmp_path / "Wan_00007_.png").read_bytes() == b"keep"


def test_a_file_taken_meanwhile_is_never_overwritten(tmp_path, monkeypatch):
    """Another writer took the counter between the scan and the rename."""
    (tmp_path / "Wan_00001_.gif").write_bytes(b"theirs")
    monkeypatch.setattr(video_io, "next_counter", lambda folder, name: 1)
    [saved] = save_video(frames(t=2), tmp_path, "Wan", format="gif")
    assert saved.filename == "Wan_00002_.gif"
    assert (tmp_path / "Wan_00001_.gif").read_bytes() == b"theirs"
    assert files(tmp_path) == ["Wan_00001_.gif", "Wan_00002_.gif"]


def test_without_hard_links_the_rename_still_skips_taken_names(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError("hard links not supported (simulated)")

    (tmp_path / "Wan_00001_.gif").write_bytes(b"theirs")
    monkeypatch.setattr(video_io, "next_counter", lambda folder, name: 1)
    monkeypatch.setattr(video_io.os, "link", no_links)
    [saved] = save_video(frames(t=2), tmp_path, "Wan", format="gif")
    assert saved.filename == "Wan_00002_.gif" and read_video(saved.path).shape[0] == 2
    assert (tmp_path / "Wan_00001_.gif").read_bytes() == b"theirs"
    assert files(tmp_path) == ["Wan_00001_.gif", "Wan_00002_.gif"]


def test_prefix_subfolders_are_created(tmp_path):
    [saved] = save_video(frames(t=2), tmp_path, "video/day1/Wan", format="gif")
    assert saved.subfolder == "video/day1"
    assert saved.path == tmp_path / "video" / "day1" / "Wan_00001_.gif"
    assert saved.ui() == {"filename": "Wan_00001_.gif", "subfolder": "video/day1", "type": "output"}


@pytest.mark.parametrize("prefix", ["../Wan", "video/../../Wan", "/tmp/Wan", "", "."])
def test_prefixes_outside_the_output_folder_or_without_a_name_are_rejected(tmp_path, prefix):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="filename_prefix"):
        save_video(frames(t=1), out, prefix, format="gif")
    assert files(tmp_path) == []


def test_a_symlink_out_of_the_output_folder_is_rejected(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir(), elsewhere.mkdir()
    (out / "link").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="leads outside"):
        save_video(frames(t=1), out, "link/Wan", format="gif")
    assert files(elsewhere) == []


def test_a_failing_encoder_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(video_io, "_ffmpeg_exe", lambda: shutil.which("false"))
    with pytest.raises(VideoWriteError, match=r"ffmpeg failed \(exit 1\) writing 5 frames 48x32"):
        save_video(frames(), tmp_path, "Wan")
    assert files(tmp_path) == []


def test_a_png_series_failing_midway_removes_the_frames_already_written(tmp_path, monkeypatch):
    save = Image.Image.save
    calls = []

    def failing_save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 3:
            with open(fp, "wb") as f:
                f.write(b"partial")
            raise OSError("disk full (simulated)")
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_video(frames(t=4), tmp_path, "Wan", format="png")
    assert len(calls) == 3 and files(tmp_path) == []


def test_float_frames_are_clipped_and_rounded():
    got = to_uint8_frames(torch.tensor([-0.5, 0.2, 0.5, 1.5]).view(1, 1, 4, 1).expand(1, 1, 4, 3))
    assert got[0, 0, :, 0].tolist() == [0, 51, 128, 255]


@pytest.mark.parametrize("video,kwargs,match", [
    (np.zeros((2, 8, 8, 4), np.uint8), {}, r"\[T, H, W, 3\] .* got \(2, 8, 8, 4\)"),
    (np.zeros((0, 8, 8, 3), np.uint8), {}, r"T, H, W > 0"),
    (np.zeros((2, 8, 8, 3), np.int32), {}, "float in \\[0, 1\\] or uint8, got int32"),
    (np.zeros((2, 8, 8, 3), np.uint8), {"format": "avi"}, "format 'avi' is unknown"),
    (np.zeros((2, 8, 8, 3), np.uint8), {"crf": 60}, "crf must be in 0..51"),
    (np.zeros((2, 8, 8, 3), np.uint8), {"fps": 0}, "fps must be > 0"),
])
def test_bad_arguments_are_named(tmp_path, video, kwargs, match):
    with pytest.raises(ValueError, match=match):
        save_video(video, tmp_path, "Wan", **kwargs)
    assert not os.listdir(tmp_path)
