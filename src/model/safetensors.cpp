// Safetensors reading (mmap + strict header validation) and writing (temporary file + rename).
// Layout: u64 little-endian header length N, N bytes of JSON header, then the data area.
#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace mustdrop::model {
namespace {

using OrderedJson = nlohmann::ordered_json;

// The reference implementation refuses larger headers; so do we (a corrupt length would
// otherwise make us parse hundreds of megabytes of tensor data as JSON).
constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;
constexpr DType kAllDTypes[] = {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64,
                                DType::kI32, DType::kI16, DType::kI8,  DType::kU8,   DType::kBool};

std::string errno_text(int err) { return std::strerror(err); }

// JSON type in words for messages ("string", "an array", ...).
std::string json_kind(const OrderedJson& j) {
  if (j.is_number_integer()) return "integer " + j.dump();
  if (j.is_number_float()) return "number " + j.dump();
  if (j.is_array()) return "an array";
  if (j.is_object()) return "an object";
  if (j.is_string()) return "string " + j.dump();
  if (j.is_boolean()) return "boolean " + j.dump();
  return "null";
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

bool parse_dtype(const std::string& name, DType& out) {
  for (DType d : kAllDTypes) {
    if (name == dtype_name(d)) {
      out = d;
      return true;
    }
  }
  return false;
}

std::string known_dtypes() {
  std::string out;
  for (DType d : kAllDTypes) out += (out.empty() ? "" : ", ") + std::string(dtype_name(d));
  return out;
}

// numel * dtype size, or false on overflow.
bool byte_count(const std::vector<int64_t>& shape, DType dtype, uint64_t& out) {
  uint64_t n = dtype_size(dtype);
  for (int64_t dim : shape) {
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(dim), &n)) return false;
  }
  out = n;
  return true;
}

// Header parsing, with the file path in every message.
class HeaderParser {
 public:
  HeaderParser(const std::string& path, uint64_t data_bytes) : path_(path), data_bytes_(data_bytes) {}

  [[noreturn]] void fail(const std::string& message) const { throw ModelError(path_ + ": " + message); }

  void parse_metadata(const OrderedJson& j, std::map<std::string, std::string>& out) const {
    if (!j.is_object()) fail("__metadata__ must be an object of strings, found " + json_kind(j));
    for (const auto& [key, value] : j.items()) {
      if (!value.is_string()) {
        fail("__metadata__ entry '" + key + "' must be a string, found " + json_kind(value));
      }
      out[key] = value.get<std::string>();
    }
  }

  // One tensor entry; `base` is the first byte of the data area.
  TensorView parse_tensor(const std::string& name, const OrderedJson& j, const uint8_t* base) const {
    const std::string where = "tensor '" + name + "'";
    if (!j.is_object()) fail(where + ": expected an object {dtype, shape, data_offsets}, found " + json_kind(j));
    TensorView view;
    view.name = name;

    auto dtype_it = j.find("dtype");
    if (dtype_it == j.end()) fail(where + ": missing \"dtype\"");
    if (!dtype_it->is_string()) fail(where + ": dtype must be a string, found " + json_kind(*dtype_it));
    if (!parse_dtype(dtype_it->get<std::string>(), view.dtype)) {
      fail(where + ": unknown dtype '" + dtype_it->get<std::string>() + "' (known: " + known_dtypes() + ")");
    }

    auto shape_it = j.find("shape");
    if (shape_it == j.end()) fail(where + ": missing \"shape\"");
    if (!shape_it->is_array()) fail(where + ": shape must be an array of integers, found " + json_kind(*shape_it));
    for (size_t i = 0; i < shape_it->size(); ++i) {
      const OrderedJson& dim = (*shape_it)[i];
      if (!dim.is_number_integer()) {
        fail(where + ": shape entry " + std::to_string(i) + " is not an integer (found " + json_kind(dim) + ")");
      }
      if (dim.is_number_unsigned() && dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail(where + ": shape entry " + std::to_string(i) + " (" + dim.dump() + ") is too large");
      }
      int64_t value = dim.get<int64_t>();
      if (value < 0) {
        std::string dims;
        for (const OrderedJson& d : *shape_it) dims += (dims.empty() ? "" : ", ") + d.dump();
        fail(where + ": shape [" + dims + "] has a negative dimension (" + dim.dump() + ")");
      }
      view.shape.push_back(value);
    }

    auto offsets_it = j.find("data_offsets");
    if (offsets_it == j.end()) fail(where + ": missing \"data_offsets\"");
    const OrderedJson& offsets = *offsets_it;
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      fail(where + ": data_offsets must be two non-negative integers [begin, end], found " + offsets.dump());
    }
    uint64_t begin = offsets[0].get<uint64_t>();
    uint64_t end = offsets[1].get<uint64_t>();
    const std::string offsets_text = "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
    if (begin > end) fail(where + ": data_offsets " + offsets_text + " end before they begin");

    uint64_t expected = 0;
    if (!byte_count(view.shape, view.dtype, expected)) {
      fail(where + ": shape " + shape_text(view.shape) + " x " + dtype_name(view.dtype) + " overflows 64 bits");
    }
    if (end - begin != expected) {
      fail(where + ": data_offsets " + offsets_text + " do not match shape " + shape_text(view.shape) + " x " +
           dtype_name(view.dtype) + " (" + std::to_string(expected) + " bytes)");
    }
    if (end > data_bytes_) {
      fail(where + ": data ends at byte " + std::to_string(end) + " but the data area holds " +
           std::to_string(data_bytes_) + " (truncated file?)");
    }
    view.data = base + begin;
    view.n_bytes = static_cast<size_t>(expected);
    return view;
  }

  // Rejects tensors whose byte ranges share at least one byte.
  void check_overlaps(const std::vector<TensorView>& tensors, const uint8_t* base) const {
    std::vector<const TensorView*> by_offset;
    for (const TensorView& t : tensors) {
      if (t.n_bytes > 0) by_offset.push_back(&t);
    }
    std::sort(by_offset.begin(), by_offset.end(),
              [](const TensorView* a, const TensorView* b) { return a->data < b->data; });
    auto range = [base](const TensorView* t) {
      size_t begin = static_cast<size_t>(t->data - base);
      return "[" + std::to_string(begin) + ", " + std::to_string(begin + t->n_bytes) + "]";
    };
    for (size_t i = 1; i < by_offset.size(); ++i) {
      const TensorView* prev = by_offset[i - 1];
      const TensorView* cur = by_offset[i];
      if (cur->data < prev->data + prev->n_bytes) {
        fail("tensor '" + cur->name + "': data_offsets " + range(cur) + " overlap tensor '" + prev->name + "' " +
             range(prev));
      }
    }
  }

 private:
  const std::string& path_;
  uint64_t data_bytes_;
};

// Writes all of `data` to `fd`, retrying short writes; false with errno set on failure.
bool write_all(int fd, const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF64:
    case DType::kI64:
      return 8;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16:
      return 2;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool:
      return 1;
  }
  throw InternalError("dtype_size: invalid DType value " + std::to_string(static_cast<int>(dtype)));
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF64:
      return "F64";
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI64:
      return "I64";
    case DType::kI32:
      return "I32";
    case DType::kI16:
      return "I16";
    case DType::kI8:
      return "I8";
    case DType::kU8:
      return "U8";
    case DType::kBool:
      return "BOOL";
  }
  throw InternalError("dtype_name: invalid DType value " + std::to_string(static_cast<int>(dtype)));
}

void TensorView::release_pages() const {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(data), end = begin + n_bytes;
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;
  return n;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ModelError(path + ": cannot open (" + errno_text(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw ModelError(path + ": cannot stat (" + errno_text(err) + ")");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ModelError(path + ": not a regular file");
  }
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes == 0) {
    ::close(fd);
    throw ModelError(path + ": empty file (a safetensors file starts with an 8-byte header length)");
  }
  if (file_bytes < 8) {
    ::close(fd);
    throw ModelError(path + ": file is " + std::to_string(file_bytes) +
                     " bytes, shorter than the 8-byte header length that starts a safetensors file");
  }
  void* map = ::mmap(nullptr, static_cast<size_t>(file_bytes), PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  ::close(fd);
  if (map == MAP_FAILED) throw ModelError(path + ": cannot mmap (" + errno_text(map_err) + ")");
  map_ = map;
  map_size_ = static_cast<size_t>(file_bytes);

  try {
    const auto* bytes = static_cast<const uint8_t*>(map_);
    uint64_t header_bytes = 0;
    for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | bytes[i];
    if (header_bytes > file_bytes - 8) {
      throw ModelError(path + ": header length " + std::to_string(header_bytes) + " runs past the end of the file (" +
                       std::to_string(file_bytes) + " bytes)");
    }
    if (header_bytes > kMaxHeaderBytes) {
      throw ModelError(path + ": header length " + std::to_string(header_bytes) + " exceeds the limit of " +
                       std::to_string(kMaxHeaderBytes) + " bytes");
    }
    const uint8_t* header = bytes + 8;
    const uint8_t* base = header + header_bytes;
    HeaderParser parser(path_, file_bytes - 8 - header_bytes);

    OrderedJson j;
    try {
      j = OrderedJson::parse(header, base);
    } catch (const OrderedJson::parse_error& e) {
      parser.fail("header is not valid JSON (" + std::string(e.what()) + ")");
    }
    if (!j.is_object()) parser.fail("header must be a JSON object, found " + json_kind(j));

    for (const auto& [name, entry] : j.items()) {
      if (name == "__metadata__") {
        parser.parse_metadata(entry, metadata_);
        continue;
      }
      index_[name] = tensors_.size();
      tensors_.push_back(parser.parse_tensor(name, entry, base));
    }
    parser.check_overlaps(tensors_, base);
  } catch (...) {
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  OrderedJson header = OrderedJson::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const TensorData& t : tensors) {
    const std::string where = path + ": tensor '" + t.name + "'";
    if (t.name == "__metadata__") throw InternalError(where + ": the name is reserved for metadata");
    if (!names.insert(t.name).second) throw InternalError(where + ": appears twice");
    for (int64_t dim : t.shape) {
      if (dim < 0) throw InternalError(where + ": shape " + shape_text(t.shape) + " has a negative dimension");
    }
    uint64_t expected = 0;
    if (!byte_count(t.shape, t.dtype, expected) || t.bytes.size() != expected) {
      throw InternalError(where + ": " + std::to_string(t.bytes.size()) + " bytes do not match shape " +
                          shape_text(t.shape) + " x " + dtype_name(t.dtype) + " (" + std::to_string(expected) +
                          " bytes)");
    }
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + expected}}};
    offset += expected;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw InternalError(path + ": cannot encode the header (" + std::string(e.what()) + ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data area starts 8-byte aligned
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));

  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw ModelError(path + ": cannot create " + tmp + " (" + errno_text(errno) + ")");
  auto fail = [&](const std::string& what) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw ModelError(path + ": " + what + " (" + errno_text(err) + ")");
  };
  bool ok = write_all(fd, length, sizeof length) && write_all(fd, text.data(), text.size());
  for (size_t i = 0; ok && i < tensors.size(); ++i) ok = write_all(fd, tensors[i].bytes.data(), tensors[i].bytes.size());
  if (!ok) fail("cannot write " + tmp);
  if (::fsync(fd) != 0) fail("cannot flush " + tmp);
  int rc = ::close(fd);
  fd = -1;
  if (rc != 0) fail("cannot close " + tmp);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename " + tmp + " to the final name");
}

}  // namespace mustdrop::model
