"""Depthwise convolutions on tiny feature maps as one batched matrix product: a speed fix, not a new layer.

At the small inputs tinyray trains on (8-64 px), the last stages of an EfficientNet run on 1x1 and 2x2 feature maps.
oneDNN, torch's CPU convolution backend, is slow there: a 3x3 depthwise convolution over 1152 channels of a 1x1 map
at batch 16 (one multiply a channel and image) takes about 10 ms forward and backward, as long as one over a 32x32
map. On a map of at most :data:`MAX_PIXELS` pixels, :class:`SmallMapDepthwiseConv2d` computes the same convolution as
a per-channel matrix (output pixels x input pixels, gathered from the kernel) times the input: 10-15x faster on 1x1
maps, about 3x on 2x2, and equal to ``F.conv2d`` within float rounding, gradients included (``tests/test_train.py``).
On larger maps, and for any convolution it does not cover, it is exactly :class:`torch.nn.Conv2d`. Its parameters
and ``state_dict`` are a Conv2d's, so checkpoints and exported weights do not know it was used.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn as nn

#: Feature maps of at most this many pixels take the matrix path (measured: no gain on 3x3 and 4x4 maps).
MAX_PIXELS = 4


@lru_cache(maxsize=256)
def _tap_index(height: int, width: int, kernel: int, stride: int, pad: int) -> tuple[torch.Tensor, int, int]:
    """For every (output pixel, input pixel) pair, the kernel tap that joins them (``kernel**2``: none)."""
    out_h = (height + 2 * pad - kernel) // stride + 1
    out_w = (width + 2 * pad - kernel) // stride + 1
    index = torch.full((out_h * out_w, height * width), kernel * kernel, dtype=torch.long)
    for oy in range(out_h):
        for ox in range(out_w):
            for iy in range(height):
                for ix in range(width):
                    ky, kx = iy - oy * stride + pad, ix - ox * stride + pad
                    if 0 <= ky < kernel and 0 <= kx < kernel:
                        index[oy * out_w + ox, iy * width + ix] = ky * kernel + kx
    return index, out_h, out_w


class SmallMapDepthwiseConv2d(nn.Conv2d):
    """A depthwise :class:`torch.nn.Conv2d` that multiplies matrices on feature maps of <= ``MAX_PIXELS`` pixels."""

    def _covered(self, x: torch.Tensor) -> bool:
        return (x.dim() == 4 and x.shape[-2] * x.shape[-1] <= MAX_PIXELS
                and self.groups == self.in_channels == self.out_channels
                and self.kernel_size[0] == self.kernel_size[1] and self.stride[0] == self.stride[1]
                and self.dilation == (1, 1) and self.padding_mode == "zeros" and not isinstance(self.padding, str)
                and self.padding[0] == self.padding[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._covered(x):
            return super().forward(x)
        batch, channels, height, width = x.shape
        kernel = self.kernel_size[0]
        index, out_h, out_w = _tap_index(height, width, kernel, self.stride[0], self.padding[0])
        taps = torch.cat([self.weight.reshape(channels, kernel * kernel), self.weight.new_zeros(channels, 1)], dim=1)
        matrix = taps[:, index.to(x.device)]  # channels x out pixels x in pixels
        out = torch.bmm(matrix, x.reshape(batch, channels, height * width).permute(1, 2, 0))  # channels x out x batch
        out = out.permute(2, 0, 1).reshape(batch, channels, out_h, out_w)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def use_small_map_depthwise(model: nn.Module) -> int:
    """Turn every depthwise ``nn.Conv2d`` of ``model`` into a :class:`SmallMapDepthwiseConv2d` in place; returns how
    many. Only the class changes: parameters, buffers and hooks stay."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Conv2d and module.groups > 1 and module.groups == module.in_channels == module.out_channels:
            module.__class__ = SmallMapDepthwiseConv2d
            count += 1
    return count
