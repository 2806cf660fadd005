// The tensors of a Hugging Face model directory, across one or many safetensors files, under
// canonical names, checked strictly against what an architecture expects.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/safetensors.h"

namespace mustdrop::model {

using ShapeMap = std::map<std::string, std::vector<int64_t>>;

// Maps the newer Hugging Face prefixes onto the older ones used internally:
// "model.language_model.X" -> "language_model.model.X", "lm_head.X" -> "language_model.lm_head.X",
// "model.vision_tower.X" -> "vision_tower.X" (likewise video_tower, image_tower,
// multi_modal_projector). Other names are returned unchanged.
std::string canonical_tensor_name(const std::string& name);

class Weights {
 public:
  // Opens DIR/model.safetensors, or the shards named by DIR/model.safetensors.index.json, or
  // else every DIR/*.safetensors. Throws ModelError naming the file at fault (no weights, a
  // shard the index names but the directory lacks, a tensor missing from its listed shard,
  // the same tensor in two files, any malformed file).
  static std::unique_ptr<Weights> open(const std::string& dir);
  // Tensors held in memory (tests, generated and preset models): name -> tensor.
  static std::unique_ptr<Weights> from_tensors(std::map<std::string, at::Tensor> tensors);
  ~Weights();

  // Where get() and get_stored() put tensors (the host by default). On a GPU each tensor goes
  // there in the dtype it is stored in and is converted there; the host never holds a converted copy.
  void set_device(const c10::Device& device) { device_ = device; }
  const c10::Device& device() const { return device_; }

  // One ModelError listing every missing, unexpected and wrong-shaped tensor (canonical names),
  // naming the directory. Returns normally when the names and shapes match exactly.
  void check(const ShapeMap& expected) const;
  // The tensor `name` (canonical) in `dtype`; ModelError if absent. Where a file already stores it
  // in `dtype`, the result reads the mapped bytes themselves (read-only: weights are never
  // written; the mapping lives as long as any such tensor); otherwise it is converted once, and
  // the mapped pages it came from leave the resident set.
  at::Tensor get(const std::string& name, at::ScalarType dtype) const;
  // The tensor `name` in the dtype it is stored in, over the mapped bytes where the file allows
  // (f32, f16, bf16, element-aligned); else as get(name, fallback). For a table read a few rows
  // at a time (token embeddings): only the pages of rows read are resident. In-memory weights
  // (generated, preset) are written to an unlinked temporary file and mapped, so a preset costs
  // what its checkpoint would (262 MB less for LLaVA-1.5-7B in bf16).
  at::Tensor get_stored(const std::string& name, at::ScalarType fallback) const;
  bool has(const std::string& name) const;
  // Canonical names and shapes of everything held.
  ShapeMap shapes() const;
  const std::string& where() const { return where_; }

 private:
  Weights() = default;
  struct Entry {
    const TensorView* view = nullptr;  // in a mapped file, or
    at::Tensor tensor;                 // held in memory
    std::shared_ptr<const SafetensorsFile> file;
  };
  at::Tensor get_on_host(const std::string& name, at::ScalarType dtype) const;
  std::string where_;
  std::map<std::string, Entry> entries_;
  c10::Device device_ = c10::Device(c10::DeviceType::CPU);
};

// Random weights for `shapes` from `seed` (the usual initialisation: normal with std 0.02,
// biases std 0.01, normalisation weights 1), for generated and preset models. On a GPU they are
// drawn there, from its generator (other numbers than the host's for the same seed).
std::map<std::string, at::Tensor> random_weights(const ShapeMap& shapes, uint64_t seed, at::ScalarType dtype = at::kFloat,
                                                 const c10::Device& device = c10::Device(c10::DeviceType::CPU));

// Converts a tensor to safetensors bytes (contiguous, little-endian) in `dtype` (kF32, kF16 or kBF16).
TensorData to_tensor_data(const std::string& name, const at::Tensor& tensor, DType dtype);

}  // namespace mustdrop::model
