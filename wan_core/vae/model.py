"""The Wan 2.1 / 2.2 video VAE: causal 3-D encoder and decoder streamed chunk by chunk.

Module and parameter names are the official ones (``encoder``, ``conv1``, ``conv2``, ``decoder``),
so official ``.pth`` and ComfyUI files load as they are. ``WanVAE.encode`` / ``decode`` also do
what the official wrapper does around the network: per-channel latent normalisation and the clamp.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..parallel import once
from .blocks import (AttentionBlock, AvgDown3D, CausalConv3d, DownBlock, DupUp3D, Resample,
                     ResidualBlock, RMS_norm, UpBlock)
from .config import LATENT_MEAN, LATENT_STD, VAEConfig
from .tiling import tile_spans, tiled_apply

# Default spatial tiling, in pixels: tiles of at most 384×384 evenly spread with ≥ 64 px overlap
# (832×480 → 2×3 tiles of 272×320 px, ≈ 1.3× the untiled work).
TILE_SIZE = 384
TILE_OVERLAP = 64


class Encoder3d(nn.Module):
    """``[B, 3·p², T, H, W]`` → ``[B, 2·z, T', H/8, W/8]``, one chunk of frames per call
    (``T' = 1`` for the first single-frame chunk, ``T/4`` after)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        dims = [cfg.dim * u for u in (1, *cfg.dim_mult)]
        last = len(cfg.dim_mult) - 1
        self.conv1 = CausalConv3d(3 * cfg.patch_size ** 2, dims[0], 3, padding=1)
        stages: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = i < last and cfg.temporal_downsample[i]
            layers = [ResidualBlock(in_dim if j == 0 else out_dim, out_dim)
                      for j in range(cfg.num_res_blocks)]
            if i < last:
                layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
            if cfg.residual_stages:
                shortcut = AvgDown3D(in_dim, out_dim, 2 if temporal else 1, 2 if i < last else 1)
                stages.append(DownBlock(layers, shortcut))
            else:
                stages += layers
        self.downsamples = nn.Sequential(*stages)
        dim = dims[-1]
        self.middle = nn.Sequential(ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim))
        self.head = nn.Sequential(RMS_norm(dim, images=False), nn.SiLU(),
                                  CausalConv3d(dim, 2 * cfg.z_dim, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        x = self.conv1(x, cache)
        for layer in (*self.downsamples, *self.middle):
            x = layer(x, cache)
        return self.head[2](x, cache, pre=self.head[0])


class Decoder3d(nn.Module):
    """``[B, z, 1, h, w]`` (one latent frame per call) → ``[B, 3·p², T', 8h, 8w]`` with ``T' = 1``
    for the first latent frame and 4 after."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        dims = [cfg.dec_dim * u for u in (cfg.dim_mult[-1], *reversed(cfg.dim_mult))]
        temporal_upsample = cfg.temporal_downsample[::-1]
        last = len(cfg.dim_mult) - 1
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]),
                                    ResidualBlock(dims[0], dims[0]))
        stages: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = i < last and temporal_upsample[i]
            if i > 0 and not cfg.residual_stages:
                in_dim //= 2  # 2.1: every upsampling conv halves the width
            layers = [ResidualBlock(in_dim if j == 0 else out_dim, out_dim)
                      for j in range(cfg.num_res_blocks + 1)]
            if i < last:
                layers.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d",
                                       out_dim if cfg.residual_stages else out_dim // 2))
            if cfg.residual_stages:
                shortcut = DupUp3D(in_dim, out_dim, 2 if temporal else 1, 2) if i < last else None
                stages.append(UpBlock(layers, shortcut))
            else:
                stages += layers
        self.upsamples = nn.Sequential(*stages)
        self.head = nn.Sequential(RMS_norm(dims[-1], images=False), nn.SiLU(),
                                  CausalConv3d(dims[-1], 3 * cfg.patch_size ** 2, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        x = self.conv1(x, cache)
        for layer in (*self.middle, *self.upsamples):
            x = layer(x, cache)
        return self.head[2](x, cache, pre=self.head[0])


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``[B, C, T, H·p, W·p]`` → ``[B, C·p·p, T, H, W]``; channel ``c·p² + r·p + q`` holds the pixel
    at height offset ``q``, width offset ``r`` (the official order)."""
    if p == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    if p == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.reshape(b, c // (p * p), p, p, t, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, c // (p * p), t, h * p, w * p)


@contextmanager
def _cudnn_benchmark(enabled: bool):
    """Let cuDNN pick the fastest conv algorithms (every chunk after the first has one shape)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


class WanVAE(nn.Module):
    """Wan video VAE. ``encode``: video in [-1, 1] → normalised latents; ``decode``: the inverse.

    Attributes: ``version`` ("2.1" / "2.2"), ``z_dim`` (16 / 48), ``spatial_compression`` (8 / 16),
    ``temporal_compression`` (4). Runs in the weights' dtype (bf16 recommended on GPUs);
    channels-last on CUDA. Outputs are float32.
    """

    cudnn_benchmark = True  # let cuDNN time its conv algorithms (False: its default choice)

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder3d(config)
        self.conv1 = CausalConv3d(2 * config.z_dim, 2 * config.z_dim, 1)
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder3d(config)

    version = property(lambda self: self.config.version)
    z_dim = property(lambda self: self.config.z_dim)
    spatial_compression = property(lambda self: self.config.spatial_compression)
    temporal_compression = property(lambda self: self.config.temporal_compression)

    def laid_out_for(self, device: torch.device | str) -> "WanVAE":
        """Channels-last conv weights where ``device`` computes with them (CUDA), else as is."""
        return self.use_channels_last() if torch.device(device).type == "cuda" else self

    def use_channels_last(self) -> "WanVAE":
        """Store conv weights channels-last (what CUDA inputs use; avoids per-call transposes)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                fmt = torch.channels_last_3d if m.weight.dim() == 5 else torch.channels_last
                m.weight.data = m.weight.data.contiguous(memory_format=fmt)
        return self

    # -- public API ---------------------------------------------------------------------------

    @once
    @torch.no_grad()
    def encode(self, video: torch.Tensor, *, tiled: bool = False, tile_size: int = TILE_SIZE,
               tile_overlap: int = TILE_OVERLAP) -> torch.Tensor:
        """``[B, 3, T, H, W]`` in [-1, 1] → latents ``[B, z, (T−1)/4 + 1, H/s, W/s]`` (float32),
        normalised per channel: ``(μ − mean) / std``. ``T = 4n + 1``; ``H``, ``W`` multiples of
        ``s = spatial_compression``. ``tiled``: encode overlapping spatial tiles of at most
        ``tile_size`` pixels (≥ ``tile_overlap`` pixels shared) and blend them linearly."""
        self._check_video(video)
        s = self.spatial_compression
        x = video.to(self._param.device, self._param.dtype)
        with _cudnn_benchmark(x.is_cuda and self.cudnn_benchmark):
            if tiled:
                tile, overlap = self._tile_grid(tile_size, tile_overlap)
                mu = tiled_apply(self._encode_mean, x, scale_in=s, scale_out=1, tile=tile,
                                 overlap=overlap)
            else:
                mu = self._encode_mean(x)
        mean, inv_std = self._latent_stats(mu.device)
        return (mu.float() - mean) * inv_std

    @once
    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, tiled: bool = False, tile_size: int = TILE_SIZE,
               tile_overlap: int = TILE_OVERLAP,
               progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Normalised latents ``[B, z, t, h, w]`` → video ``[B, 3, 4(t−1) + 1, h·s, w·s]`` in
        [-1, 1] (float32). ``tiled``: decode overlapping spatial tiles of at most ``tile_size``
        pixels (≥ ``tile_overlap`` pixels shared) and blend them linearly. ``progress(done,
        total)`` is called after each latent frame (of each tile)."""
        self._check_latents(latents)
        mean, inv_std = self._latent_stats(latents.device)
        z = latents.float() / inv_std + mean
        z = self.conv2(z.to(self._param.device, self._param.dtype))
        tiles = 1
        if tiled:
            tile, overlap = self._tile_grid(tile_size, tile_overlap)
            tiles = len(tile_spans(z.shape[3], tile, overlap)) * len(tile_spans(z.shape[4], tile, overlap))
        done, total = itertools.count(1), tiles * z.shape[2]
        on_frame = (lambda: progress(next(done), total)) if progress else None
        decode_frames = functools.partial(self._decode_frames, on_frame=on_frame)
        with _cudnn_benchmark(z.is_cuda and self.cudnn_benchmark):
            if tiled:
                video = tiled_apply(decode_frames, z, scale_in=1,
                                    scale_out=self.spatial_compression, tile=tile, overlap=overlap)
            else:
                video = decode_frames(z)
        return video.clamp_(-1, 1)

    # -- streaming ----------------------------------------------------------------------------

    def _encode_mean(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` → encoder mean ``μ`` ``[B, z, T', H/s, W/s]`` (weights' dtype).
        Frames go through the encoder in chunks of 1, 4, 4, … (one latent frame each)."""
        x = self._memory_format(patchify(video, self.config.patch_size))
        z, tc = self.z_dim, self.temporal_compression
        weight, bias = self.conv1.weight[:z], self.conv1.bias[:z]   # conv1's μ half (no logvar)
        f = self.spatial_compression // self.config.patch_size
        b, _, t, h, w = x.shape
        mu = x.new_empty((b, z, (t - 1) // tc + 1, h // f, w // f))
        cache: dict = {}
        for i, start in enumerate(range(1 - tc, t, tc)):   # frames [0, 1), [1, 5), [5, 9), …
            chunk = x[:, :, max(start, 0):start + tc]
            mu[:, :, i:i + 1] = F.conv3d(self.encoder(chunk, cache), weight, bias)
        return mu

    def _decode_frames(self, z: torch.Tensor, on_frame: Callable[[], None] | None = None) -> torch.Tensor:
        """``conv2``-ed latents ``[B, z, t, h, w]`` → video ``[B, 3, 4(t−1)+1, H, W]`` (float32),
        one latent frame at a time (``on_frame()`` after each)."""
        z = self._memory_format(z)
        b, _, t, h, w = z.shape
        s, tc = self.spatial_compression, self.temporal_compression
        video = torch.empty((b, 3, tc * (t - 1) + 1, h * s, w * s), device=z.device)
        cache: dict = {}
        for i in range(t):
            frames = unpatchify(self.decoder(z[:, :, i:i + 1], cache), self.config.patch_size)
            start = 0 if i == 0 else 1 + tc * (i - 1)
            video[:, :, start:start + frames.shape[2]] = frames
            if on_frame is not None:
                on_frame()
        return video

    # -- helpers ------------------------------------------------------------------------------

    @property
    def _param(self) -> torch.Tensor:
        return self.conv2.weight

    @staticmethod
    def _memory_format(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d) if x.is_cuda else x

    def _latent_stats(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``mean`` and ``1/std`` as ``[1, z, 1, 1, 1]`` float32 (the official scale)."""
        mean = torch.tensor(LATENT_MEAN[self.z_dim], device=device).view(1, -1, 1, 1, 1)
        std = torch.tensor(LATENT_STD[self.z_dim], device=device).view(1, -1, 1, 1, 1)
        return mean, 1.0 / std

    def _tile_grid(self, tile_size: int, tile_overlap: int) -> tuple[int, int]:
        """Pixel tile size / overlap → latent-grid units."""
        s = self.spatial_compression
        tile, overlap = tile_size // s, -(-tile_overlap // s)
        if tile < 2 or not 0 <= overlap < tile:
            raise ValueError(f"tiling needs tile_size ≥ {2 * s} px and 0 ≤ tile_overlap < tile_size "
                             f"(in whole {s}-px latent cells); got tile_size={tile_size}, "
                             f"tile_overlap={tile_overlap}")
        return tile, overlap

    def _check_video(self, video) -> None:
        s = self.spatial_compression
        if (not isinstance(video, torch.Tensor) or not video.is_floating_point()
                or video.dim() != 5 or video.shape[1] != 3):
            shape = (f"{tuple(video.shape)} {video.dtype}" if isinstance(video, torch.Tensor)
                     else type(video).__name__)
            raise ValueError(f"Wan {self.version} VAE encode: video must be a float tensor "
                             f"[B, 3, T, H, W] (RGB in [-1, 1]), got {shape}")
        t, h, w = video.shape[2:]
        if t % 4 != 1:
            lower = max(1, (t - 1) // 4 * 4 + 1)
            raise ValueError(f"Wan {self.version} VAE encode: the frame count must be 4n+1 "
                             f"(1, 5, 9, …, 81), got {t}; nearest valid: {lower} or {lower + 4}")
        if h % s or w % s:
            raise ValueError(f"Wan {self.version} VAE encode: height and width must be multiples of "
                             f"{s}, got {h}×{w} (e.g. {h // s * s}×{w // s * s})")

    def _check_latents(self, latents) -> None:
        if (not isinstance(latents, torch.Tensor) or latents.dim() != 5
                or latents.shape[1] != self.z_dim or 0 in latents.shape):
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"Wan {self.version} VAE decode: latents must be [B, {self.z_dim}, T, H, W], "
                             f"got {shape}")
