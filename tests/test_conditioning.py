"""Image conditioning and size rules shared by every pipeline."""

import pytest
import torch

from wanrt.wan_core.conditioning import clip_image, first_last_mask, fit_image
from wanrt.wan_core.presets import check_video_size


def official_i2v_mask(frames, h, w, last=False):
    """The mask exactly as wan/image2video.py and first_last_frame2video.py build it."""
    msk = torch.ones(1, frames, h, w)
    if last:
        msk[:, 1:-1] = 0
    else:
        msk[:, 1:] = 0
    msk = torch.concat([torch.repeat_interleave(msk[:, 0:1], repeats=4, dim=1), msk[:, 1:]], dim=1)
    msk = msk.view(1, msk.shape[1] // 4, 4, h, w)
    return msk.transpose(1, 2)[0]


@pytest.mark.parametrize("frames, last", [(1, False), (5, False), (81, False), (5, True), (81, True)])
def test_i2v_mask_matches_official_construction(frames, last):
    f_lat = (frames - 1) // 4 + 1
    assert torch.equal(first_last_mask(f_lat, frames, 3, 5, last=last),
                       official_i2v_mask(frames, 3, 5, last))


def test_fit_image_covers_then_centre_crops():
    # A wide image into a tall frame: the height is matched, the width is cropped equally.
    image = torch.zeros(1, 3, 20, 80)
    image[..., 38:42] = 1.0  # a narrow bright band in the horizontal centre
    out = fit_image(image, 40, 40)
    assert out.shape == (1, 3, 40, 40)
    assert out[..., :, 0].max() < 0.2 and out[..., :, -1].max() < 0.2  # crop removed the sides
    assert out[..., :, 20].min() > 0.8  # the centre band survived


def test_fit_image_keeps_exact_size_untouched():
    image = torch.rand(2, 3, 16, 32)
    assert torch.equal(fit_image(image, 16, 32), image)


def test_clip_image_interleaves_start_and_end_per_sample():
    start, end = torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    batch = clip_image(start, end)
    assert batch.shape == (4, 3, 8, 8)
    assert [float(b.mean()) for b in batch] == [0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("bad", [torch.zeros(3, 8, 8), torch.zeros(1, 4, 8, 8), torch.zeros(0, 3, 8, 8)])
def test_bad_images_are_rejected(bad):
    with pytest.raises(ValueError, match="start image"):
        clip_image(bad)


def test_size_rules_name_the_nearest_valid_values():
    check_video_size(frames=81, height=480, width=832, spatial_step=16)
    with pytest.raises(ValueError, match=r"frames=80 is not 4n\+1 \(nearest valid: 77 or 81\)"):
        check_video_size(frames=80, height=480, width=832, spatial_step=16)
    with pytest.raises(ValueError, match=r"width=840 is not a multiple of 32 \(nearest valid: 832 or 864\)"):
        check_video_size(frames=121, height=704, width=840, spatial_step=32)
