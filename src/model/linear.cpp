#include "model/linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "model/linear_kernel.h"

namespace mustdrop::model {

namespace {

constexpr int64_t kParallelWork = int64_t{1} << 18;  // multiply-adds per thread's band, at least

bool matvec_fits(const at::Tensor& x, const at::Tensor& w) {
  if (!x.device().is_cpu() || !w.device().is_cpu()) return false;  // a host kernel (a GPU has its own products)
  const at::ScalarType t = x.scalar_type();
  if ((t != at::kFloat && t != at::kBFloat16) || w.scalar_type() != t) return false;
  if (x.dim() != 2 || w.dim() != 2 || x.size(0) > kernel::kMatvecMaxRows || x.size(1) != w.size(1)) return false;
  return w.is_contiguous() && kernel::matvec_supported(t == at::kBFloat16);
}

}  // namespace

at::Tensor dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (!matvec_fits(x, w)) return b.defined() ? at::addmm(b, x, w.t()) : at::mm(x, w.t());
  const at::Tensor xc = x.contiguous();
  const int64_t rows = xc.size(0), n_in = xc.size(1), n_out = w.size(0);
  at::Tensor y = at::empty({rows, n_out}, xc.options());
  const bool bf16 = xc.scalar_type() == at::kBFloat16;
  // Each thread streams its own contiguous band of weight rows, of at least kParallelWork
  // multiply-adds: small layers stay on the calling thread (and open no OpenMP pool).
  const int64_t grain = std::max<int64_t>(16, kParallelWork / std::max<int64_t>(1, n_in * rows));
  at::parallel_for(0, n_out, grain, [&](int64_t begin, int64_t end) {
    kernel::matvec(bf16, xc.data_ptr(), rows, w.data_ptr(), n_in, n_out, begin, end, y.data_ptr());
  });
  if (b.defined()) y.add_(b);
  return y;
}

}  // namespace mustdrop::model
