#include "model/device.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/version.h>

#include <atomic>
#include <cctype>

#include "config/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"
#include "model/attention.h"
#include "model/vlm.h"

namespace mustdrop::model {

namespace {

std::atomic<int64_t> n_to_device{0}, bytes_to_device{0}, n_to_host{0}, bytes_to_host{0};

// Host -> device copies up to this size (index lists, positions, merge weights, masks' inputs)
// go through pinned memory, asynchronously.
constexpr size_t kPinnedCopyBytes = size_t{1} << 20;

}  // namespace

c10::Device parse_device(const std::string& text, const std::string& setting) {
  if (text == "cpu") return c10::Device(c10::DeviceType::CPU);
  if (text == "cuda") return c10::Device(c10::DeviceType::CUDA, 0);
  const std::string prefix = "cuda:";
  if (text.size() > prefix.size() && text.compare(0, prefix.size(), prefix) == 0 && text.size() <= prefix.size() + 3) {
    bool digits = true;
    for (size_t i = prefix.size(); i < text.size(); ++i) digits = digits && std::isdigit(static_cast<unsigned char>(text[i]));
    const int index = digits ? std::stoi(text.substr(prefix.size())) : -1;
    if (index >= 0 && index <= 127) return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw ConfigError(setting + ": '" + text + "' is not a device (cpu, cuda or cuda:N)");
}

int64_t cuda_device_count() { return at::hasCUDA() ? static_cast<int64_t>(at::getNumGPUs()) : 0; }

void check_device(const c10::Device& device) {
  if (device.is_cpu()) return;
  if (!device.is_cuda()) throw ModelError("model.device " + device.str() + ": only cpu and cuda devices compute");
  if (!at::hasCUDA()) {
    throw ModelError("model.device " + device.str() + ": " + torch_version() +
                     " cannot use a GPU here (built without CUDA, or no GPU and driver visible); build against a "
                     "CUDA-enabled LibTorch (docs/gpu.md) or set model.device=cpu");
  }
  const int64_t n = cuda_device_count();
  if (device.index() >= n) {
    throw ModelError("model.device " + device.str() + ": this machine shows " + std::to_string(n) + " GPU(s) (cuda:0.." +
                     std::to_string(n - 1) + ")");
  }
}

TransferStats transfer_stats() {
  TransferStats s;
  s.to_device = n_to_device.load();
  s.to_device_bytes = bytes_to_device.load();
  s.to_host = n_to_host.load();
  s.to_host_bytes = bytes_to_host.load();
  return s;
}

TransferStats operator-(const TransferStats& a, const TransferStats& b) {
  return {a.to_device - b.to_device, a.to_device_bytes - b.to_device_bytes, a.to_host - b.to_host,
          a.to_host_bytes - b.to_host_bytes};
}

at::Tensor to_host(const at::Tensor& t) {
  if (!t.defined() || t.device().is_cpu()) return t;
  ++n_to_host;
  bytes_to_host += static_cast<int64_t>(t.nbytes());
  return t.to(at::kCPU);
}

at::Tensor to_device(const at::Tensor& t, const c10::Device& device) {
  if (!t.defined() || t.device() == device) return t;
  if (device.is_cpu()) return to_host(t);
  ++n_to_device;
  bytes_to_device += static_cast<int64_t>(t.nbytes());
  // A copy from pageable memory waits for everything queued on the device first; from pinned
  // memory it queues behind that work instead (LibTorch keeps the pinned block until the copy has
  // run). Weights (large, once) go the plain way.
  if (t.nbytes() <= kPinnedCopyBytes) return t.pin_memory().to(device, t.scalar_type(), /*non_blocking=*/true);
  return t.to(device);
}

void synchronize(const c10::Device& device) {
  if (device.is_cpu()) return;
  // A one-element copy to the host waits for the device's queue, in every LibTorch version.
  (void)at::empty({1}, at::TensorOptions().device(device)).to(at::kCPU);
}

at::Tensor index_tensor(const std::vector<int64_t>& v, const c10::Device& device) {
  return to_device(at::tensor(v, at::kLong), device);
}

LoadOptions load_options(const config::ModelSettings& settings) {
  LoadOptions o;
  o.device = parse_device(settings.device);  // a device this process cannot use: the loader says so
  switch (settings.dtype) {
    case config::ComputeDtype::kF32:
      o.dtype = at::kFloat;
      break;
    case config::ComputeDtype::kBf16:
      o.dtype = at::kBFloat16;
      break;
    case config::ComputeDtype::kF16:  // on a GPU only: the loader says so
      o.dtype = at::kHalf;
      break;
    case config::ComputeDtype::kAuto: {
      if (!o.device.is_cpu()) {
        o.dtype = at::kBFloat16;
        MD_LOG_INFO("model", "compute dtype bf16 (model.dtype auto on " << o.device.str() << ")");
        break;
      }
      const bool bf16 = cpu_has_native_bf16();
      MD_LOG_INFO("model", "compute dtype " << (bf16 ? "bf16" : "f32") << " (model.dtype auto: this CPU "
                                            << (bf16 ? "computes bf16 natively" : "has no native bf16") << ")");
      o.dtype = bf16 ? at::kBFloat16 : at::kFloat;
      break;
    }
  }
  return o;
}

const char* compute_dtype_name(at::ScalarType dtype) {
  return dtype == at::kBFloat16 ? "bf16" : dtype == at::kHalf ? "f16" : "f32";
}

std::string torch_version() {
#if defined(MUSTDROP_TORCH_CUDA) && MUSTDROP_TORCH_CUDA
  const std::string built = "built with CUDA, ";
#else
  const std::string built = "CPU only, ";
#endif
  return std::string("LibTorch ") + TORCH_VERSION + " (" + built + std::to_string(cuda_device_count()) +
         " GPU(s) usable)";
}

std::string attention_backends() {
  const std::string fused = attention_fused_built() ? "fused scaled-dot-product attention"
                                                    : "ATen reference (LibTorch < 2.1: no fused kernel)";
  std::string out = "cpu: " + (blocked_attention_runs(at::kFloat, 128) ? std::string("blocked AVX-512 kernel") : fused);
  out += "; cuda: " + fused;
  out += "; rows a pruner reads: computed explicitly";
  return out;
}

}  // namespace mustdrop::model
