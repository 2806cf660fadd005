// Safetensors files (https://huggingface.co/docs/safetensors format): strict memory-mapped
// reading and writing. No LibTorch here: tensors are raw little-endian views.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mustdrop::model {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
size_t dtype_size(DType dtype);
// The safetensors spelling ("F32", "BF16", ...).
const char* dtype_name(DType dtype);

// One tensor inside a mapped file; `data` stays valid while the SafetensorsFile lives.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t n_bytes = 0;
  int64_t numel() const;
  // Tells the kernel the mapped pages wholly inside this tensor's bytes are no longer needed:
  // they leave the process's resident set (they are read again from the file if touched).
  void release_pages() const;
};

class SafetensorsFile {
 public:
  // Maps `path` read-only and validates it: size >= 8, header length inside the file, header
  // JSON is an object of {dtype, shape, data_offsets} entries (plus optional __metadata__ of
  // strings), known dtype, non-negative shape, offsets inside the data area, begin <= end,
  // end - begin == numel * dtype size, no overlapping tensors. Throws ModelError naming the
  // file and the tensor/field at fault.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // All tensors in header order.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // The tensor called `name`, or nullptr.
  const TensorView* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: raw little-endian bytes, numel * dtype_size long.
struct TensorData {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// Writes `tensors` (in the given order, 8-byte aligned header) to `path`. Throws ModelError
// naming the file on I/O failure and InternalError if a tensor's byte count mismatches its shape.
void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace mustdrop::model
