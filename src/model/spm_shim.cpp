// C-ABI shim over sentencepiece::SentencePieceProcessor, built as the MODULE mustdrop_spm_shim
// and the only code that links SentencePiece. tokenizer.cpp loads it with
// dlopen(RTLD_NOW|RTLD_LOCAL|RTLD_DEEPBIND) so SentencePiece's bundled protobuf 3.14 never meets
// LibTorch's protobuf 3.21 (docs/model.md). Only C types cross the boundary and no exception
// escapes it. Sizes follow snprintf: a function that writes a buffer returns the length it
// needs (without a terminating NUL) and writes at most `*_len` bytes; the caller retries bigger.
#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#define MD_SPM_EXPORT __attribute__((visibility("default")))

namespace {

// Bumped whenever a signature below changes; tokenizer.cpp refuses a shim of another version.
constexpr int kAbiVersion = 2;

// Copies `text` into out[0, out_len) (NUL-terminated when there is room) and returns its length.
int copy_out(const std::string& text, char* out, int out_len) {
  if (out != nullptr && out_len > 0) {
    const size_t n = std::min(text.size(), static_cast<size_t>(out_len));
    std::memcpy(out, text.data(), n);
    if (n < static_cast<size_t>(out_len)) out[n] = '\0';
  }
  return static_cast<int>(text.size());
}

const sentencepiece::SentencePieceProcessor* processor(const void* handle) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(handle);
}

// `sp` released as a handle when `status` is ok and the model has pieces; else nullptr with the
// reason in err.
void* checked_handle(std::unique_ptr<sentencepiece::SentencePieceProcessor> sp,
                     const sentencepiece::util::Status& status, char* err, int err_len) {
  if (!status.ok()) {
    copy_out(status.ToString(), err, err_len);
    return nullptr;
  }
  if (sp->GetPieceSize() <= 0) {
    copy_out("the model has no pieces", err, err_len);
    return nullptr;
  }
  return sp.release();
}

// A serialized ModelProto gains these bytes to turn add_dummy_prefix off: field 3
// (normalizer_spec, length-delimited, 2 bytes) holding field 3 (add_dummy_prefix, varint) = 0.
// Protobuf merges a repeated embedded message into the earlier one and the last scalar wins.
constexpr char kNoDummyPrefix[] = {0x1A, 0x02, 0x18, 0x00};

// Runs `load`, turning an exception into nullptr with its message in err (none crosses the C ABI).
template <class F>
void* guarded_load(char* err, int err_len, F&& load) {
  try {
    return load();
  } catch (const std::exception& e) {
    copy_out(e.what(), err, err_len);
  } catch (...) {
    copy_out("unknown exception in SentencePiece", err, err_len);
  }
  return nullptr;
}

}  // namespace

extern "C" {

// The shim's ABI version (kAbiVersion).
MD_SPM_EXPORT int md_spm_abi_version() { return kAbiVersion; }

// Loads a SentencePiece model file; a handle, or nullptr with SentencePiece's message in err.
MD_SPM_EXPORT void* md_spm_load(const char* path, char* err, int err_len) {
  return guarded_load(err, err_len, [&]() -> void* {
    auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = sp->Load(path);
    return checked_handle(std::move(sp), status, err, err_len);
  });
}

// Like md_spm_load, with the model's add_dummy_prefix turned off (no "▁" is added in front of
// the text); nullptr with the message in err when the file cannot be read or parsed.
MD_SPM_EXPORT void* md_spm_load_without_dummy_prefix(const char* path, char* err, int err_len) {
  return guarded_load(err, err_len, [&]() -> void* {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      copy_out("cannot open the file", err, err_len);
      return nullptr;
    }
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) {
      copy_out("cannot read the file", err, err_len);
      return nullptr;
    }
    bytes.append(kNoDummyPrefix, sizeof(kNoDummyPrefix));
    auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = sp->LoadFromSerializedProto(bytes);
    return checked_handle(std::move(sp), status, err, err_len);
  });
}

// Frees a handle from md_spm_load (nullptr is ignored).
MD_SPM_EXPORT void md_spm_free(void* handle) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

// Encodes text[0, text_len) into ids (at most max_ids written); returns the number of ids, or
// -1 with the message in err.
MD_SPM_EXPORT int md_spm_encode(const void* handle, const char* text, int text_len, int* out_ids,
                                int max_ids, char* err, int err_len) {
  try {
    const std::string input =
        text != nullptr && text_len > 0 ? std::string(text, static_cast<size_t>(text_len)) : "";
    std::vector<int> ids;
    const auto status = processor(handle)->Encode(input, &ids);
    if (!status.ok()) {
      copy_out(status.ToString(), err, err_len);
      return -1;
    }
    if (out_ids != nullptr && max_ids > 0) {
      std::copy_n(ids.begin(), std::min(ids.size(), static_cast<size_t>(max_ids)), out_ids);
    }
    return static_cast<int>(ids.size());
  } catch (const std::exception& e) {
    copy_out(e.what(), err, err_len);
  } catch (...) {
    copy_out("unknown exception in SentencePiece", err, err_len);
  }
  return -1;
}

// Decodes ids[0, n) into out (raw UTF-8, may hold any byte); returns the text's length, or -1
// with the message in err.
MD_SPM_EXPORT int md_spm_decode(const void* handle, const int* ids, int n, char* out, int out_len,
                                char* err, int err_len) {
  try {
    const std::vector<int> input = ids != nullptr && n > 0 ? std::vector<int>(ids, ids + n)
                                                           : std::vector<int>();
    std::string text;
    const auto status = processor(handle)->Decode(input, &text);
    if (!status.ok()) {
      copy_out(status.ToString(), err, err_len);
      return -1;
    }
    return copy_out(text, out, out_len);
  } catch (const std::exception& e) {
    copy_out(e.what(), err, err_len);
  } catch (...) {
    copy_out("unknown exception in SentencePiece", err, err_len);
  }
  return -1;
}

// Number of pieces in the model.
MD_SPM_EXPORT int md_spm_piece_size(const void* handle) {
  try {
    return processor(handle)->GetPieceSize();
  } catch (...) {
    return 0;
  }
}

// The piece text of `id` ("▁the", "<0x0A>", "<s>"); returns its length, -1 if id is out of range.
MD_SPM_EXPORT int md_spm_id_to_piece(const void* handle, int id, char* out, int out_len) {
  try {
    const auto* sp = processor(handle);
    if (id < 0 || id >= sp->GetPieceSize()) return -1;
    return copy_out(sp->IdToPiece(id), out, out_len);
  } catch (...) {
    return -1;
  }
}

// Kind of piece `id`: 0 normal or user-defined, 1 unknown, 2 control, 3 byte, 4 unused;
// -1 if out of range.
MD_SPM_EXPORT int md_spm_piece_kind(const void* handle, int id) {
  try {
    const auto* sp = processor(handle);
    if (id < 0 || id >= sp->GetPieceSize()) return -1;
    if (sp->IsUnknown(id)) return 1;
    if (sp->IsControl(id)) return 2;
    if (sp->IsByte(id)) return 3;
    if (sp->IsUnused(id)) return 4;
    return 0;
  } catch (...) {
    return -1;
  }
}

// 1 if `id` is a control piece (<s>, </s>), else 0.
MD_SPM_EXPORT int md_spm_is_control(const void* handle, int id) {
  return md_spm_piece_kind(handle, id) == 2 ? 1 : 0;
}

// Special ids of the model; -1 where the model has none.
MD_SPM_EXPORT int md_spm_bos_id(const void* handle) {
  try {
    return processor(handle)->bos_id();
  } catch (...) {
    return -1;
  }
}

MD_SPM_EXPORT int md_spm_eos_id(const void* handle) {
  try {
    return processor(handle)->eos_id();
  } catch (...) {
    return -1;
  }
}

MD_SPM_EXPORT int md_spm_unk_id(const void* handle) {
  try {
    return processor(handle)->unk_id();
  } catch (...) {
    return -1;
  }
}

MD_SPM_EXPORT int md_spm_pad_id(const void* handle) {
  try {
    return processor(handle)->pad_id();
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
