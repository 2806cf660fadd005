// Tokenizer over the dlopen'ed SentencePiece shim (spm_shim.cpp): finds and opens the shim once
// per process, reads the Hugging Face tokenizer files, splits out added tokens, applies the
// checkpoint's prefix-space rule, skips special tokens in decode, and streams text.
#include "model/tokenizer.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/error.h"

// Set by src/model/CMakeLists.txt; the fallbacks only keep a stray build compiling (the
// MUSTDROP_SPM_SHIM environment variable still works then).
#ifndef MUSTDROP_SPM_SHIM_NAME
#define MUSTDROP_SPM_SHIM_NAME "mustdrop_spm_shim.so"
#endif
#ifndef MUSTDROP_SPM_SHIM_BUILD_PATH
#define MUSTDROP_SPM_SHIM_BUILD_PATH ""
#endif

// AddressSanitizer refuses RTLD_DEEPBIND, so ASan builds load the shim without it: fine for the
// torch-free binaries, while an ASan binary that also links LibTorch may meet the clash again.
#if defined(__SANITIZE_ADDRESS__)
#define MUSTDROP_SPM_DEEPBIND 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MUSTDROP_SPM_DEEPBIND 0
#endif
#endif
#ifndef MUSTDROP_SPM_DEEPBIND
#define MUSTDROP_SPM_DEEPBIND RTLD_DEEPBIND
#endif

namespace mustdrop::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kShimAbiVersion = 2;  // must match kAbiVersion in spm_shim.cpp
constexpr int kErrLen = 1024;
constexpr std::string_view kMeta = "\xE2\x96\x81";  // U+2581 "▁", SentencePiece's space

// Piece kinds as md_spm_piece_kind reports them.
enum PieceKind : signed char { kNormal = 0, kUnknown = 1, kControl = 2, kByte = 3, kUnused = 4 };

// Which stretches of text (between added tokens) get the word prefix "▁" (docs/model.md).
enum class PrefixRule {
  kDummyEach,      // SentencePiece's dummy prefix on every stretch (legacy=true, Prepend("▁"))
  kSlowNonLegacy,  // transformers' slow LlamaTokenizer with legacy=false
  kAlways,         // Metaspace "always": every stretch that does not start with a space
  kFirst,          // Metaspace "first": only a stretch at offset 0 that does not, either
  kNever,          // Metaspace "never", or tokenizer.json with neither: no stretch
};

// The shim's C functions (see spm_shim.cpp for their contracts).
struct SpmApi {
  int (*abi_version)() = nullptr;
  void* (*load)(const char*, char*, int) = nullptr;
  void* (*load_without_dummy_prefix)(const char*, char*, int) = nullptr;
  void (*free)(void*) = nullptr;
  int (*encode)(const void*, const char*, int, int*, int, char*, int) = nullptr;
  int (*decode)(const void*, const int*, int, char*, int, char*, int) = nullptr;
  int (*piece_size)(const void*) = nullptr;
  int (*id_to_piece)(const void*, int, char*, int) = nullptr;
  int (*piece_kind)(const void*, int) = nullptr;
  int (*bos_id)(const void*) = nullptr;
  int (*eos_id)(const void*) = nullptr;
  int (*unk_id)(const void*) = nullptr;
  int (*pad_id)(const void*) = nullptr;
};

template <typename Fn>
void bind_symbol(void* lib, const std::string& path, const char* name, Fn* out) {
  dlerror();
  void* sym = dlsym(lib, name);
  if (sym == nullptr) {
    const char* why = dlerror();
    throw ModelError(path + ": no symbol " + name + " (" + (why ? why : "null") + ")");
  }
  *out = reinterpret_cast<Fn>(sym);
}

SpmApi bind_shim(void* lib, const std::string& path) {
  SpmApi api;
  bind_symbol(lib, path, "md_spm_abi_version", &api.abi_version);
  if (api.abi_version() != kShimAbiVersion) {
    throw ModelError(path + ": shim ABI version " + std::to_string(api.abi_version()) +
                     ", expected " + std::to_string(kShimAbiVersion) + " (a stale build?)");
  }
  bind_symbol(lib, path, "md_spm_load", &api.load);
  bind_symbol(lib, path, "md_spm_load_without_dummy_prefix", &api.load_without_dummy_prefix);
  bind_symbol(lib, path, "md_spm_free", &api.free);
  bind_symbol(lib, path, "md_spm_encode", &api.encode);
  bind_symbol(lib, path, "md_spm_decode", &api.decode);
  bind_symbol(lib, path, "md_spm_piece_size", &api.piece_size);
  bind_symbol(lib, path, "md_spm_id_to_piece", &api.id_to_piece);
  bind_symbol(lib, path, "md_spm_piece_kind", &api.piece_kind);
  bind_symbol(lib, path, "md_spm_bos_id", &api.bos_id);
  bind_symbol(lib, path, "md_spm_eos_id", &api.eos_id);
  bind_symbol(lib, path, "md_spm_unk_id", &api.unk_id);
  bind_symbol(lib, path, "md_spm_pad_id", &api.pad_id);
  return api;
}

// Where the shim may be: $MUSTDROP_SPM_SHIM alone if set; else next to the running executable
// (installed layout, build/), then the path CMake built it at (test binaries).
std::vector<std::string> shim_candidates() {
  const char* env = std::getenv("MUSTDROP_SPM_SHIM");
  if (env != nullptr && *env != '\0') return {env};
  std::vector<std::string> paths;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) paths.push_back((exe.parent_path() / MUSTDROP_SPM_SHIM_NAME).string());
  const std::string build_path = MUSTDROP_SPM_SHIM_BUILD_PATH;
  if (!build_path.empty() && std::find(paths.begin(), paths.end(), build_path) == paths.end()) {
    paths.push_back(build_path);
  }
  return paths;
}

SpmApi open_shim() {
  std::string tried;
  for (const auto& path : shim_candidates()) {
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      tried += "\n  " + path + ": no such file";
      continue;
    }
    // RTLD_LOCAL|RTLD_DEEPBIND: SentencePiece and its protobuf resolve their own symbols first
    // and never join the global scope where LibTorch's protobuf lives.
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | MUSTDROP_SPM_DEEPBIND);
    if (lib == nullptr) {
      const char* why = dlerror();
      tried += "\n  " + path + ": " + (why ? why : "dlopen failed");
      continue;
    }
    try {
      return bind_shim(lib, path);  // the library stays loaded for the life of the process
    } catch (const ModelError& e) {
      dlclose(lib);
      tried += std::string("\n  ") + e.what();
    }
  }
  throw ModelError("cannot load the SentencePiece shim " MUSTDROP_SPM_SHIM_NAME
                   " (build the mustdrop_spm_shim target or set MUSTDROP_SPM_SHIM); tried:" +
                   tried);
}

// The shim, opened once per process (thread-safe; a failed attempt is retried next time).
const SpmApi& spm_api() {
  static const SpmApi api = open_shim();
  return api;
}

// The JSON object in `path` (only the top-level keys in `keep` if given), or nullopt when the
// file is absent; ModelError naming the file when it is unreadable, malformed or not an object.
std::optional<json> read_json(const fs::path& path, const std::vector<std::string>& keep = {}) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelError(path.string() + ": cannot open");
  // Drops other top-level values while parsing (tokenizer.json's vocabulary is megabytes).
  const json::parser_callback_t filter = [&keep](int depth, json::parse_event_t event,
                                                 json& parsed) {
    if (keep.empty() || depth != 1 || event != json::parse_event_t::key) return true;
    return std::find(keep.begin(), keep.end(), parsed.get<std::string>()) != keep.end();
  };
  try {
    json j = json::parse(in, filter);
    if (!j.is_object()) throw ModelError(path.string() + ": expected a JSON object");
    return j;
  } catch (const json::exception& e) {
    throw ModelError(path.string() + ": malformed JSON: " + e.what());
  }
}

// A token written as "<s>" or {"content": "<s>", ...}; nullopt for null/absent.
std::optional<std::string> token_content(const json& value, const std::string& file,
                                         const std::string& key) {
  if (value.is_null()) return std::nullopt;
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  throw ModelError(file + ": " + key + " must be a string or an object with a string \"content\"");
}

// The rule tokenizer.json sets: a Prepend("▁") normalizer, else a Metaspace pre-tokenizer's
// prepend_scheme (or older add_prefix_space), else none; both may sit inside a "Sequence".
// ModelError naming the file and key when these fields have the wrong shape.
PrefixRule fast_prefix_rule(const json& j, const std::string& file) {
  const auto components = [&](const json& node, const char* key, const char* list_key) {
    std::vector<const json*> out;
    std::vector<const json*> todo = {&node};
    while (!todo.empty()) {
      const json* n = todo.back();
      todo.pop_back();
      if (n->is_null()) continue;
      if (!n->is_object() || !n->contains("type") || !(*n)["type"].is_string()) {
        throw ModelError(file + ": " + key + " must be null or an object with a string \"type\"");
      }
      if ((*n)["type"] != "Sequence") {
        out.push_back(n);
        continue;
      }
      if (!n->contains(list_key) || !(*n)[list_key].is_array()) {
        throw ModelError(file + ": " + key + " of type Sequence needs an array \"" + list_key +
                         "\"");
      }
      const json& list = (*n)[list_key];
      for (auto it = list.rbegin(); it != list.rend(); ++it) todo.push_back(&*it);
    }
    return out;
  };
  const json null_node;
  const json& normalizer = j.contains("normalizer") ? j["normalizer"] : null_node;
  for (const json* n : components(normalizer, "normalizer", "normalizers")) {
    if ((*n)["type"] == "Prepend" && n->value("prepend", json()) == std::string(kMeta)) {
      return PrefixRule::kDummyEach;
    }
  }
  const json& pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : null_node;
  for (const json* p : components(pre, "pre_tokenizer", "pretokenizers")) {
    if ((*p)["type"] != "Metaspace") continue;
    if (p->contains("prepend_scheme")) {
      const json& scheme = (*p)["prepend_scheme"];
      if (scheme == "always") return PrefixRule::kAlways;
      if (scheme == "first") return PrefixRule::kFirst;
      if (scheme == "never") return PrefixRule::kNever;
      throw ModelError(file + ": pre_tokenizer Metaspace prepend_scheme " + scheme.dump() +
                       " is not \"always\", \"first\" or \"never\"");
    }
    const json& add = p->value("add_prefix_space", json(true));
    if (!add.is_boolean()) {
      throw ModelError(file + ": pre_tokenizer Metaspace add_prefix_space must be true or false");
    }
    return add.get<bool>() ? PrefixRule::kAlways : PrefixRule::kNever;
  }
  return PrefixRule::kNever;
}

// A boolean key of a tokenizer_config.json; `fallback` when absent or null, ModelError naming
// the file and key when it is not a boolean.
bool config_flag(const std::optional<json>& config, const std::string& file, const char* key,
                 bool fallback) {
  if (!config || !config->contains(key) || (*config)[key].is_null()) return fallback;
  if (!(*config)[key].is_boolean()) throw ModelError(file + ": " + key + " must be true or false");
  return (*config)[key].get<bool>();
}

bool starts_with_space(std::string_view text) {
  return (!text.empty() && text[0] == ' ') || text.substr(0, kMeta.size()) == kMeta;
}

// Value of a "<0xAB>" byte piece, or -1.
int byte_piece_value(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  try {
    return std::stoi(piece.substr(3, 2), nullptr, 16);
  } catch (const std::exception&) {
    return -1;
  }
}

}  // namespace

struct Tokenizer::Impl {
  const SpmApi* api = nullptr;
  void* sp = nullptr;                            // shim handle, the model as stored
  void* sp_plain = nullptr;                      // the model without dummy prefix, or null
  std::string model_path;                        // DIR/tokenizer.model, for messages
  int piece_size = 0;                            // SentencePiece pieces (ids 0..piece_size-1)
  std::vector<std::string> pieces;               // id -> piece
  std::vector<signed char> kinds;                // id -> PieceKind
  std::vector<int> byte_values;                  // id -> byte of a "<0xAB>" piece, or -1
  std::map<int, std::string> added_by_id;        // added token id -> text
  std::vector<std::string> added_longest_first;  // added token texts
  bool added_first_byte[256] = {};               // bytes that start some added token
  int pad_id = -1;                               // -1 if none
  std::vector<char> special;                     // id -> skipped by decode (special token)
  PrefixRule prefix_rule = PrefixRule::kDummyEach;
  bool add_prefix_space = true;                  // tokenizer_config.json, for kSlowNonLegacy
  std::string unk_text = "<unk>";                // its pieces are cut off again (see encode)
  size_t unk_text_pieces = 0;                    // their number under sp_plain
  int meta_piece = -1;                           // id of the lone "▁" piece, or -1

  ~Impl() {
    if (sp != nullptr) api->free(sp);
    if (sp_plain != nullptr) api->free(sp_plain);
  }

  bool is_special(int id) const {
    return id >= 0 && static_cast<size_t>(id) < special.size() && special[static_cast<size_t>(id)];
  }

  std::vector<int> sp_encode(const void* handle, std::string_view text) const {
    std::vector<int> ids(text.size() + 8);
    char err[kErrLen] = {};
    for (;;) {
      const int n = api->encode(handle, text.data(), static_cast<int>(text.size()), ids.data(),
                                static_cast<int>(ids.size()), err, kErrLen);
      if (n < 0) throw ModelError(model_path + ": SentencePiece encode failed: " + err);
      if (static_cast<size_t>(n) <= ids.size()) {
        ids.resize(static_cast<size_t>(n));
        return ids;
      }
      ids.resize(static_cast<size_t>(n));  // normalisation expanded the text; retry
    }
  }

  // `text` through the model without dummy prefix, keeping a leading space or "▁": such a text
  // is encoded behind unk_text, whose pieces are then cut off.
  std::vector<int> encode_plain(std::string_view text) const {
    if (!starts_with_space(text)) return sp_encode(sp_plain, text);
    std::vector<int> ids = sp_encode(sp_plain, unk_text + std::string(text));
    if (ids.size() >= unk_text_pieces) ids.erase(ids.begin(), ids.begin() + unk_text_pieces);
    return ids;
  }

  // Ids of one stretch between added tokens; at_start: it begins the (rewritten) text.
  std::vector<int> encode_stretch(std::string_view stretch, bool at_start) const {
    switch (prefix_rule) {
      case PrefixRule::kDummyEach:
        return sp_encode(sp, stretch);
      case PrefixRule::kSlowNonLegacy:
      case PrefixRule::kNever:
        return encode_plain(stretch);
      case PrefixRule::kAlways:
      case PrefixRule::kFirst:
        // Metaspace adds "▁" only where the stretch does not begin with a space already.
        if (starts_with_space(stretch) || (prefix_rule == PrefixRule::kFirst && !at_start)) {
          return encode_plain(stretch);
        }
        return encode_plain(std::string(kMeta) + std::string(stretch));
    }
    return {};
  }

  // The last ids of `ids` that decode exactly like the end of decode(ids): back to an added
  // token that splits the run, or to a piece with visible text (SentencePiece strips a leading
  // space only from the first such piece), so the cost does not grow with ids.size().
  std::vector<int> tail_window(const std::vector<int>& ids) const {
    constexpr size_t kMinWindow = 4;
    constexpr size_t kMaxWindow = 64;
    std::vector<int> window;
    for (size_t i = ids.size(); i-- > 0;) {
      const int t = ids[i];
      if (is_special(t)) continue;  // skipped by decode without splitting the run
      if (added_by_id.count(t) != 0) break;
      window.push_back(t);
      if (window.size() >= kMinWindow && is_window_start(t)) break;
      if (window.size() >= kMaxWindow && starts_character(t)) break;
    }
    std::reverse(window.begin(), window.end());
    return window;
  }

  std::string sp_decode(const std::vector<int>& ids) const {
    if (ids.empty()) return "";
    std::string text(ids.size() * 8 + 16, '\0');
    char err[kErrLen] = {};
    for (;;) {
      const int n = api->decode(sp, ids.data(), static_cast<int>(ids.size()), text.data(),
                                static_cast<int>(text.size()), err, kErrLen);
      if (n < 0) throw ModelError(model_path + ": SentencePiece decode failed: " + err);
      if (static_cast<size_t>(n) <= text.size()) {
        text.resize(static_cast<size_t>(n));
        return text;
      }
      text.resize(static_cast<size_t>(n));
    }
  }

  bool is_sp_piece(int id) const { return id >= 0 && id < piece_size; }

  // A safe place to start a decode window: a piece with visible text, so SentencePiece's
  // "strip the first leading space" rule is spent on it and nothing after it changes.
  bool is_window_start(int id) const {
    if (!is_sp_piece(id) || kinds[static_cast<size_t>(id)] != kNormal) return false;
    return pieces[static_cast<size_t>(id)].find_first_not_of(kMeta) != std::string::npos;
  }

  // Start of a character: a piece with visible text, or a byte piece that is not a UTF-8
  // continuation byte (for long runs of byte-fallback text, where visible pieces are rare).
  bool starts_character(int id) const {
    const int b = is_sp_piece(id) ? byte_values[static_cast<size_t>(id)] : -1;
    return is_window_start(id) || (b >= 0 && (b & 0xC0) != 0x80);
  }

  // How many trailing ids of `ids` are byte pieces of a UTF-8 character that is not complete
  // yet (a lead byte plus fewer continuation bytes than it announces); 0 if none.
  size_t incomplete_utf8_tail(const std::vector<int>& ids) const {
    size_t n_cont = 0;
    for (size_t i = ids.size(); i-- > 0;) {
      const int id = ids[i];
      const int b = is_sp_piece(id) ? byte_values[static_cast<size_t>(id)] : -1;
      if (b < 0) return 0;
      if ((b & 0xC0) == 0x80) {  // continuation byte
        if (++n_cont > 3) return 0;
        continue;
      }
      const size_t need = (b & 0xE0) == 0xC0   ? 2
                          : (b & 0xF0) == 0xE0 ? 3
                          : (b & 0xF8) == 0xF0 ? 4
                                               : 1;
      return n_cont + 1 < need ? n_cont + 1 : 0;
    }
    return 0;
  }
};

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& dir) {
  const fs::path root(dir);
  const std::string model_path = (root / "tokenizer.model").string();
  std::error_code ec;
  if (!fs::exists(model_path, ec)) {
    throw ModelError(model_path +
                     ": missing (a Hugging Face model directory needs its SentencePiece "
                     "tokenizer.model)");
  }
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  tok->impl_ = std::make_unique<Impl>();
  Impl& impl = *tok->impl_;
  impl.api = &spm_api();
  impl.model_path = model_path;
  char err[kErrLen] = {};
  impl.sp = impl.api->load(model_path.c_str(), err, kErrLen);
  if (impl.sp == nullptr) {
    throw ModelError(model_path + ": not a readable SentencePiece model: " + err);
  }

  impl.piece_size = impl.api->piece_size(impl.sp);
  impl.pieces.resize(static_cast<size_t>(impl.piece_size));
  impl.kinds.resize(static_cast<size_t>(impl.piece_size));
  impl.byte_values.resize(static_cast<size_t>(impl.piece_size));
  std::vector<char> buf(256);
  for (int id = 0; id < impl.piece_size; ++id) {
    int n = impl.api->id_to_piece(impl.sp, id, buf.data(), static_cast<int>(buf.size()));
    if (n > static_cast<int>(buf.size())) {
      buf.resize(static_cast<size_t>(n));
      n = impl.api->id_to_piece(impl.sp, id, buf.data(), static_cast<int>(buf.size()));
    }
    const auto i = static_cast<size_t>(id);
    impl.pieces[i] = n > 0 ? std::string(buf.data(), static_cast<size_t>(n)) : std::string();
    impl.kinds[i] = static_cast<signed char>(impl.api->piece_kind(impl.sp, id));
    impl.byte_values[i] = impl.kinds[i] == kByte ? byte_piece_value(impl.pieces[i]) : -1;
  }
  tok->bos_id_ = impl.api->bos_id(impl.sp);
  tok->eos_id_ = impl.api->eos_id(impl.sp);
  tok->unk_id_ = impl.api->unk_id(impl.sp);
  impl.pad_id = impl.api->pad_id(impl.sp);

  // Added tokens: added_tokens.json {"<image>": 32000}, then tokenizer_config.json's
  // added_tokens_decoder {"32000": {"content": "<image>", "special": true}} (newer format, wins
  // on conflict). Old-format tokens it does not describe count as special (in LLaVA checkpoints
  // they are placeholders and padding).
  std::vector<int> special_ids;  // added or named tokens that decode skips
  std::vector<int> old_format_ids;
  std::set<int> described;
  const fs::path added_path = root / "added_tokens.json";
  if (auto j = read_json(added_path)) {
    for (const auto& [text, value] : j->items()) {
      if (!value.is_number_integer() || value.get<long long>() < 0 ||
          value.get<long long>() > (1LL << 30)) {
        throw ModelError(added_path.string() + ": \"" + text +
                         "\" must map to a non-negative integer id");
      }
      tok->added_[text] = value.get<int>();
      old_format_ids.push_back(value.get<int>());
    }
  }
  const fs::path config_path = root / "tokenizer_config.json";
  const fs::path special_path = root / "special_tokens_map.json";
  std::optional<json> config = read_json(config_path);
  if (config && config->contains("added_tokens_decoder")) {
    const json& decoder = (*config)["added_tokens_decoder"];
    if (!decoder.is_object()) {
      throw ModelError(config_path.string() + ": added_tokens_decoder must be an object");
    }
    for (const auto& [key, value] : decoder.items()) {
      size_t used = 0;
      int id = -1;
      try {
        id = std::stoi(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != key.size() || id < 0) {
        throw ModelError(config_path.string() + ": added_tokens_decoder key \"" + key +
                         "\" is not a token id");
      }
      const auto text = token_content(value, config_path.string(), "added_tokens_decoder." + key);
      if (text) tok->added_[*text] = id;
      described.insert(id);
      const json special = value.is_object() ? value.value("special", json(false)) : json(false);
      if (!special.is_boolean()) {
        throw ModelError(config_path.string() + ": added_tokens_decoder." + key +
                         ".special must be true or false");
      }
      if (special.get<bool>()) special_ids.push_back(id);
    }
  }
  for (const int id : old_format_ids) {
    if (described.count(id) == 0) special_ids.push_back(id);
  }
  int max_added = -1;
  for (const auto& [text, id] : tok->added_) {
    if (text.empty()) continue;
    impl.added_by_id[id] = text;
    impl.added_longest_first.push_back(text);
    impl.added_first_byte[static_cast<unsigned char>(text[0])] = true;
    max_added = std::max(max_added, id);
  }
  std::stable_sort(impl.added_longest_first.begin(), impl.added_longest_first.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  tok->vocab_size_ = std::max(impl.piece_size, max_added + 1);

  // bos/eos/unk/pad and additional_special_tokens named by tokenizer_config.json, overridden by
  // special_tokens_map.json.
  std::optional<json> special = read_json(special_path);
  const std::pair<const std::optional<json>*, const fs::path*> named_in[] = {
      {&config, &config_path}, {&special, &special_path}};
  const auto find_token = [&](const std::string& name) {
    if (auto it = tok->added_.find(name); it != tok->added_.end()) return it->second;
    const auto piece = std::find(impl.pieces.begin(), impl.pieces.end(), name);
    return piece == impl.pieces.end() ? -1 : static_cast<int>(piece - impl.pieces.begin());
  };
  std::string unk_name;
  const auto resolve = [&](const std::string& key, int* id, std::string* name_out) {
    for (const auto& [j, path] : named_in) {
      if (!*j || !(*j)->contains(key)) continue;
      const auto name = token_content((*j)->at(key), path->string(), key);
      if (!name) continue;
      *id = find_token(*name);
      if (*id < 0) {
        throw ModelError(path->string() + ": " + key + " \"" + *name +
                         "\" is neither a SentencePiece piece of " + model_path +
                         " nor an added token");
      }
      if (name_out != nullptr) *name_out = *name;
    }
  };
  resolve("bos_token", &tok->bos_id_, nullptr);
  resolve("eos_token", &tok->eos_id_, nullptr);
  resolve("unk_token", &tok->unk_id_, &unk_name);
  resolve("pad_token", &impl.pad_id, nullptr);
  for (const auto& [j, path] : named_in) {
    if (!*j || !(*j)->contains("additional_special_tokens")) continue;
    const json& list = (*j)->at("additional_special_tokens");
    if (!list.is_array()) {
      throw ModelError(path->string() + ": additional_special_tokens must be an array");
    }
    for (const json& entry : list) {
      const auto name = token_content(entry, path->string(), "additional_special_tokens");
      if (name && find_token(*name) >= 0) special_ids.push_back(find_token(*name));
    }
  }
  impl.special.assign(static_cast<size_t>(tok->vocab_size_), 0);
  for (int id = 0; id < impl.piece_size; ++id) {
    if (impl.kinds[static_cast<size_t>(id)] == kControl) special_ids.push_back(id);
  }
  special_ids.insert(special_ids.end(), {tok->bos_id_, tok->eos_id_, tok->unk_id_, impl.pad_id});
  for (const int id : special_ids) {
    if (id >= 0 && id < tok->vocab_size_) impl.special[static_cast<size_t>(id)] = 1;
  }

  // The prefix-space rule: tokenizer.json where present (transformers then uses the fast
  // tokenizer), else tokenizer_config.json's legacy (absent or null: true).
  const fs::path fast_path = root / "tokenizer.json";
  if (auto fast = read_json(fast_path, {"normalizer", "pre_tokenizer"})) {
    impl.prefix_rule = fast_prefix_rule(*fast, fast_path.string());
  } else if (!config_flag(config, config_path.string(), "legacy", true)) {
    impl.prefix_rule = PrefixRule::kSlowNonLegacy;
    impl.add_prefix_space = config_flag(config, config_path.string(), "add_prefix_space", true);
  }
  const auto meta = std::find(impl.pieces.begin(), impl.pieces.end(), kMeta);
  impl.meta_piece = meta == impl.pieces.end() ? -1 : static_cast<int>(meta - impl.pieces.begin());
  if (impl.prefix_rule != PrefixRule::kDummyEach) {
    impl.sp_plain = impl.api->load_without_dummy_prefix(model_path.c_str(), err, kErrLen);
    if (impl.sp_plain == nullptr) {
      throw ModelError(model_path + ": cannot load it without its dummy prefix: " + err);
    }
    if (!unk_name.empty()) {
      impl.unk_text = unk_name;
    } else if (impl.is_sp_piece(tok->unk_id_)) {
      impl.unk_text = impl.pieces[static_cast<size_t>(tok->unk_id_)];
    }
    impl.unk_text_pieces = impl.sp_encode(impl.sp_plain, impl.unk_text).size();
  }
  return tok;
}

Tokenizer::~Tokenizer() = default;

int Tokenizer::added_token_id(const std::string& text) const {
  const auto it = added_.find(text);
  return it == added_.end() ? -1 : it->second;
}

std::vector<int> Tokenizer::encode(const std::string& text, bool add_bos) const {
  const Impl& impl = *impl_;
  std::vector<int> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  // transformers' slow non-legacy tokenizer first rewrites the whole text: "▁" becomes a space
  // and, with add_prefix_space, one "▁" goes in front.
  std::string rewritten;
  if (impl.prefix_rule == PrefixRule::kSlowNonLegacy && !text.empty()) {
    if (impl.add_prefix_space) rewritten = kMeta;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text.compare(i, kMeta.size(), kMeta) == 0) {
        rewritten += ' ';
        i += kMeta.size() - 1;
      } else {
        rewritten += text[i];
      }
    }
  }
  const std::string& input = rewritten.empty() ? text : rewritten;
  const size_t content_begin = ids.size();
  size_t first_added = std::string::npos;  // index in ids of the first added token
  const auto append_segment = [&](size_t begin, size_t end) {
    if (end <= begin) return;  // empty stretches produce nothing
    const auto seg = impl.encode_stretch(std::string_view(input).substr(begin, end - begin),
                                         begin == 0);
    ids.insert(ids.end(), seg.begin(), seg.end());
  };
  size_t segment_begin = 0;
  size_t i = 0;
  while (i < input.size()) {
    const std::string* match = nullptr;
    if (impl.added_first_byte[static_cast<unsigned char>(input[i])]) {
      for (const auto& added : impl.added_longest_first) {  // longest match first
        if (input.compare(i, added.size(), added) == 0) {
          match = &added;
          break;
        }
      }
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    append_segment(segment_begin, i);
    if (first_added == std::string::npos) first_added = ids.size();
    ids.push_back(added_.at(*match));
    i += match->size();
    segment_begin = i;
  }
  append_segment(segment_begin, input.size());
  // ... and drops a lone "▁" that the prepended space left in front of a special token.
  if (impl.prefix_rule == PrefixRule::kSlowNonLegacy && first_added == content_begin + 1 &&
      ids[content_begin] == impl.meta_piece && impl.is_special(ids[first_added])) {
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(content_begin));
  }
  return ids;
}

// Non-special added tokens render as their text with nothing around them (Hugging Face's slow
// decode would add spaces with spaces_between_special_tokens); each run of SentencePiece ids
// between them decodes on its own, so a run loses its leading "▁" like the start of a text does.
std::string Tokenizer::decode(const std::vector<int>& ids) const {
  const Impl& impl = *impl_;
  std::string text;
  std::vector<int> run;  // consecutive SentencePiece ids, decoded together
  for (const int id : ids) {
    if (impl.is_special(id)) continue;  // skip_special_tokens; does not split a run
    if (const auto it = impl.added_by_id.find(id); it != impl.added_by_id.end()) {
      text += impl.sp_decode(run);
      run.clear();
      text += it->second;
    } else if (impl.is_sp_piece(id)) {
      run.push_back(id);
    } else {
      throw ModelError(impl.model_path + ": token id " + std::to_string(id) +
                       " is outside the tokenizer's vocabulary (" + std::to_string(vocab_size_) +
                       " ids)");
    }
  }
  return text + impl.sp_decode(run);
}

std::string Tokenizer::decode_next(const std::vector<int>& previous, int id) const {
  const Impl& impl = *impl_;
  if (impl.is_special(id)) return "";
  // The text of ids, holding back a trailing UTF-8 character whose byte pieces are not all
  // there yet (it renders as U+FFFD until complete, so it is emitted with its last byte).
  const auto stable_text = [&](std::vector<int> ids) {
    ids.resize(ids.size() - impl.incomplete_utf8_tail(ids));
    return decode(ids);
  };
  std::vector<int> window = impl.tail_window(previous);
  std::string before = stable_text(window);
  window.push_back(id);
  std::string after = stable_text(window);
  if (after.compare(0, before.size(), before) != 0) {
    // Not expected with SentencePiece; fall back to the whole history.
    std::vector<int> all = previous;
    before = stable_text(all);
    all.push_back(id);
    after = stable_text(all);
    size_t common = 0;
    while (common < before.size() && common < after.size() && before[common] == after[common]) {
      ++common;
    }
    return after.substr(common);
  }
  return after.substr(before.size());
}

std::string Tokenizer::held_back_text(const std::vector<int>& ids) const {
  const Impl& impl = *impl_;
  std::vector<int> window = impl.tail_window(ids);
  const std::string full = decode(window);
  window.resize(window.size() - impl.incomplete_utf8_tail(window));
  const std::string stable = decode(window);
  if (full.compare(0, stable.size(), stable) == 0) return full.substr(stable.size());
  std::vector<int> all = ids;  // not expected; the whole history
  const std::string full_all = decode(all);
  all.resize(all.size() - impl.incomplete_utf8_tail(all));
  return full_all.substr(std::min(decode(all).size(), full_all.size()));
}

TextStream::TextStream(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}

std::string TextStream::push(int id) {
  std::string text = tokenizer_->decode_next(ids_, id);
  ids_.push_back(id);
  return text;
}

std::string TextStream::finish() { return tokenizer_->held_back_text(ids_); }

}  // namespace mustdrop::model
