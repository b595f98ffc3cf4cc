// Winograd's minimal filtering F(2x2, 3x3) for the CPU's 3x3, stride-1 convolutions (Lavin and
// Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016): each 2x2 block of
// outputs ("tile") comes from a 4x4 block of input through 16 products per channel pair
// instead of 36, a 2.25x cut in multiplications, which a 3x3 convolution spends nearly all its
// time on. With V = B^T d B (a 4x4 input block d), U = G g G^T (a 3x3 filter g) and
// Y = A^T M A:
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]
//   A^T = [1 1 1 0; 0 1 -1 -1]
// and for each of the 16 positions e of the 4x4 blocks, M[e] = U[e] V[e] is a GEMM
// [out channels, in channels] x [in channels, tiles]. The backward pass for the input is the
// same convolution of the output gradient with the filters flipped and transposed (padding
// 2 - p); for the weights, dU[e] = dM[e] V[e]^T with dM = A dY A^T, and dg = G^T dU G.
//
// The transforms add and subtract (and halve: exact), so the only roundings beyond a direct
// convolution's are the few in the transforms: float32 results agree with im2col + GEMM to a
// relative 2e-6 by norm (tests/test_nn.cpp). Not so for non-finite inputs or ones near the
// type's largest: the transforms subtract input values from each other, so an infinite one
// (or a difference that overflows) makes its tiles' outputs NaN where a direct sum gives
// +-inf or a finite value (any Winograd convolution does this; a non-finite activation stops
// fgvc-train at that step's loss either way). conv2d.cpp takes this path where it is faster:
// winograd_applies below.
#pragma once
#include "kernels/conv2d.h"

namespace fgvc {
namespace kernels {
namespace detail {

// Tiles per block for a convolution from `in` to `out` channels: a block's 16 GEMMs
// [out, in] x [in, block] stay within OpenBLAS's small-matrix kernel (m n k up to about 10^6,
// where it needs no packing; past it, packing the filters for a few tiles costs more than
// the products), at most 64 tiles (the block's transforms in the cache). 0 where fewer than
// 8 tiles would fit (in x out above 112,500: 336 x 336, 256 x 512, resnet50's 512 x 512): the
// GEMMs would be too thin to gain.
int64_t winograd_tile_block(int64_t in, int64_t out);
// A 3x3 kernel, stride 1, no dilation, padding at most 2 on each side (the input gradient's
// convolution then pads 2 - p), float32 or float64 (16-bit data reaches it through conv2d's
// float32 upcast), channels on both sides, and a tile block (above).
bool winograd_applies(const Shape& x_shape, const Shape& w_shape, const Conv2dGeometry& g, DType dtype);

// The three passes, for contiguous tensors where winograd_applies; no bias.
Tensor winograd_conv2d(const Tensor& x, const Tensor& w, const Conv2dGeometry& g);
Tensor winograd_backward_input(const Tensor& grad, const Tensor& w, const Shape& x_shape, const Conv2dGeometry& g);
Tensor winograd_backward_weight(const Tensor& grad, const Tensor& x, const Shape& w_shape, const Conv2dGeometry& g);

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
