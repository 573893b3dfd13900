"""Per-task defaults (the official CLI's) and the size rules every pipeline enforces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskDefaults:
    steps: int
    shift: float
    cfg: float
    frames: int
    fps: int
    width: int
    height: int
    cfg_low: float | None = None  # A14B: guidance of the low-noise expert
    boundary: float | None = None  # A14B: switch to the low-noise expert below boundary * 1000


# Keys: task names used by the pipelines and the nodes.
DEFAULTS: dict[str, TaskDefaults] = {
    "t2v-1.3B": TaskDefaults(50, 5.0, 5.0, 81, 16, 832, 480),
    "t2v-14B": TaskDefaults(50, 5.0, 5.0, 81, 16, 1280, 720),
    "i2v-14B": TaskDefaults(40, 5.0, 5.0, 81, 16, 1280, 720),  # shift 3.0 at 480p (official)
    "flf2v-14B": TaskDefaults(50, 16.0, 5.0, 81, 16, 1280, 720),
    "ti2v-5B": TaskDefaults(50, 5.0, 5.0, 121, 24, 1280, 704),
    "t2v-A14B": TaskDefaults(40, 12.0, 4.0, 81, 16, 1280, 720, cfg_low=3.0, boundary=0.875),
    "i2v-A14B": TaskDefaults(40, 5.0, 3.5, 81, 16, 1280, 720, cfg_low=3.5, boundary=0.900),
}


def video_size_problems(*, frames: int | None, height: int | None, width: int | None,
                        spatial_step: int) -> dict[str, str]:
    """Each size input's own problem, by name (``frames``, ``height``, ``width``; None: unknown).
    Frames must be ``4n + 1`` and width / height multiples of ``spatial_step`` (16 for the Wan 2.1
    VAE with patch 2, 32 for the Wan 2.2 VAE); each message names the nearest valid values."""
    problems = {}
    if frames is not None and (frames < 1 or (frames - 1) % 4):
        lo = max(1, (frames - 1) // 4 * 4 + 1)
        problems["frames"] = f"frames={frames} is not 4n+1 (nearest valid: {lo} or {lo + 4})"
    for name, value in (("width", width), ("height", height)):
        if value is not None and (value < spatial_step or value % spatial_step):
            lo = max(spatial_step, value // spatial_step * spatial_step)
            hi = lo + spatial_step if value > lo else lo
            near = f"{lo}" if lo == hi else f"{lo} or {hi}"
            problems[name] = (f"{name}={value} is not a multiple of {spatial_step} "
                              f"(nearest valid: {near})")
    return problems


def check_video_size(*, frames: int, height: int, width: int, spatial_step: int) -> None:
    """Raise ValueError listing every problem :func:`video_size_problems` finds."""
    problems = video_size_problems(frames=frames, height=height, width=width, spatial_step=spatial_step)
    if problems:
        raise ValueError("invalid video size: " + "; ".join(problems.values()))
