// The decoder's dense layer, y = x W^T (+ b): a memory-bound matrix-vector kernel for the few
// rows of a decode step where the CPU has one (host tensors), a LibTorch matrix product otherwise
// (and on every GPU).
#pragma once

#include <ATen/core/Tensor.h>

namespace mustdrop::model {

// x [rows, n_in], w [n_out, n_in] (the checkpoint's layout), b [n_out] or undefined; the result
// has x's dtype. LibTorch raises on shapes that do not fit.
at::Tensor dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = at::Tensor());

}  // namespace mustdrop::model
