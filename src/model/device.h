// Where the model computes (model.device: cpu | cuda | cuda:N), and the one door through which
// tensors cross between host and device. Heavy tensors (weights, hidden states, the KV and prefix
// caches, frames) live on the model's device; bookkeeping (positions, index lists, token sizes,
// the attention rows and scores a pruner reads) lives on the host. Every crossing goes through
// to_host / to_device, which count what they move, so a report can show it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mustdrop::config {
struct ModelSettings;
}

namespace mustdrop::model {

struct LoadOptions;

// "cpu", "cuda" (= cuda:0) or "cuda:N". ConfigError naming `setting` on anything else.
c10::Device parse_device(const std::string& text, const std::string& setting = "model.device");
// ModelError when `device` cannot compute in this process: this LibTorch was built without CUDA,
// no GPU is visible, or the index is past the last GPU.
void check_device(const c10::Device& device);
// GPUs this process can compute on: 0 where LibTorch has no CUDA or no GPU is visible.
int64_t cuda_device_count();

// Host <-> device crossings, process-wide totals since start.
struct TransferStats {
  int64_t to_device = 0, to_device_bytes = 0;
  int64_t to_host = 0, to_host_bytes = 0;
};
TransferStats transfer_stats();
TransferStats operator-(const TransferStats& a, const TransferStats& b);

// `t` itself where it already is on the host; else a counted copy.
at::Tensor to_host(const at::Tensor& t);
// `t` itself where it already is on `device` (or undefined); else a counted copy.
at::Tensor to_device(const at::Tensor& t, const c10::Device& device);
// Waits until the work queued on `device` is done (nothing on the host): a timer read after it
// measures the work, not the queueing. Not counted as a crossing.
void synchronize(const c10::Device& device);
// An int64 index tensor over `v` on `device` (built on the host; one counted copy off it).
at::Tensor index_tensor(const std::vector<int64_t>& v, const c10::Device& device);

// What the model section asks for: model.device parsed (ConfigError for a bad string) and
// model.dtype resolved: auto is bf16 on a GPU, or where the CPU computes bf16 natively (the choice
// is logged), else f32. Whether the device and dtype can compute here is the loader's check
// (VisionLanguageModel::load and ::random), before any weight is read.
LoadOptions load_options(const config::ModelSettings& settings);
// A compute dtype as the config spells it: "f32", "bf16", "f16".
const char* compute_dtype_name(at::ScalarType dtype);

// The build's attention and library facts, for --version and `mustdrop config`:
// "LibTorch 1.13.0 (CPU only)", "fused scaled-dot-product attention" or not.
std::string torch_version();
std::string attention_backends();

}  // namespace mustdrop::model
