// YAML -> Config by walking each struct's visit() list: one visitor decodes a YAML map into a
// section, one resolves a --set path, one prints, one lists keys. yaml-cpp stays in this file.
#include "config/config.h"
#include "config/job_config.h"
#include "config/monitor_config.h"
#include "config/pipeline_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <system_error>

#include "core/error.h"
#include "core/log.h"

namespace mustdrop::config {
namespace {

// Where the YAML being decoded came from: a file or text (messages carry line:col) or one
// --set argument (messages carry the argument; its value is a one-line YAML snippet).
struct Origin {
  std::string name;
  bool has_marks = true;
};

[[noreturn]] void fail(const Origin& origin, const YAML::Mark& mark, const std::string& message) {
  std::ostringstream os;
  os << origin.name;
  if (origin.has_marks && !mark.is_null()) os << ':' << mark.line + 1 << ':' << mark.column + 1;
  os << ": " << message;
  throw ConfigError(os.str());
}

std::string join_path(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::string join_list(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

// Shortest text that parses back to exactly `value` (what to_yaml and messages print).
std::string format_double(double value) {
  if (std::isnan(value)) return ".nan";
  if (std::isinf(value)) return value > 0 ? ".inf" : "-.inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, value);
  std::string text(buf, res.ptr);
  if (text.find_first_of(".e") == std::string::npos) text += ".0";  // keep it a float in YAML
  return text;
}

// A number in a message: integers without a fraction, others as format_double.
std::string format_number(double value) {
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 1e15) {
    return std::to_string(static_cast<long long>(value));
  }
  return format_double(value);
}

// Quoted scalars ("16", '16', !!str 16) are strings whatever they look like.
bool is_quoted(const YAML::Node& node) {
  return node.Tag() == "!" || node.Tag() == "tag:yaml.org,2002:str";
}

bool parse_int(const std::string& text, long long& out) {
  const char* first = text.data();
  const char* last = first + text.size();
  if (first != last && *first == '+') ++first;
  auto res = std::from_chars(first, last, out);
  return res.ec == std::errc() && res.ptr == last && first != last;
}

bool parse_double(const std::string& text, double& out) {
  std::string t = text;
  double sign = 1.0;
  if (!t.empty() && (t[0] == '+' || t[0] == '-')) {
    if (t[0] == '-') sign = -1.0;
    t.erase(0, 1);
  }
  if (t == ".inf" || t == ".Inf" || t == ".INF") {
    out = sign * std::numeric_limits<double>::infinity();
    return true;
  }
  if ((t == ".nan" || t == ".NaN" || t == ".NAN") && text == t) {
    out = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  // from_chars would also take "inf"/"nan" and hex; YAML spells those differently, so only
  // plain decimal numbers get here.
  if (t.empty() || !(std::isdigit(static_cast<unsigned char>(t[0])) || t[0] == '.')) return false;
  auto res = std::from_chars(t.data(), t.data() + t.size(), out, std::chars_format::general);
  if (res.ec != std::errc() || res.ptr != t.data() + t.size()) return false;
  out *= sign;
  return true;
}

bool parse_bool(const std::string& text, bool& out) {
  if (text == "true" || text == "True" || text == "TRUE") {
    out = true;
    return true;
  }
  if (text == "false" || text == "False" || text == "FALSE") {
    out = false;
    return true;
  }
  return false;
}

// What a node is, for "expected X, found Y".
std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return "an empty value";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Scalar:
      break;
  }
  const std::string& text = node.Scalar();
  if (is_quoted(node)) return "the string \"" + text + "\"";
  long long i = 0;
  double d = 0;
  bool b = false;
  if (parse_int(text, i)) return "the integer " + text;
  if (parse_double(text, d)) return "the number " + text;
  if (parse_bool(text, b)) return "the boolean " + text;
  return "the string '" + text + "'";
}

// Empty if `value` satisfies the numeric range of `limits`, else why not.
std::string range_violation(double value, const Limits& limits) {
  if (value >= limits.min && value <= limits.max) return "";
  std::string range;
  if (std::isfinite(limits.min) && std::isfinite(limits.max)) {
    range = "[" + format_number(limits.min) + ", " + format_number(limits.max) + "]";
  } else if (std::isfinite(limits.min)) {
    range = ">= " + format_number(limits.min);
  } else {
    range = "<= " + format_number(limits.max);
  }
  return "value " + format_number(value) + " is out of range (allowed: " + range + ")";
}

std::string choice_violation(const std::string& value, const Limits& limits) {
  if (limits.choices.empty()) return "";
  if (std::find(limits.choices.begin(), limits.choices.end(), value) != limits.choices.end()) return "";
  return "'" + value + "' is not one of: " + join_list(limits.choices);
}

std::string size_violation(std::size_t size, const Limits& limits, const char* what) {
  if (limits.exact_size == 0 || size == limits.exact_size) return "";
  return std::string("expected a list of ") + std::to_string(limits.exact_size) + " " + what + ", found " +
         std::to_string(size) + " element" + (size == 1 ? "" : "s");
}

// The mark to quote for a value: an empty value has none worth quoting, so use its key's.
YAML::Mark value_mark(const YAML::Node& value, const YAML::Mark& key_mark) {
  return value.IsNull() || value.Mark().is_null() ? key_mark : value.Mark();
}

// Everything a leaf decoder needs to report a problem.
struct Site {
  const Origin& origin;
  std::string path;  // dotted key, e.g. video.sampler.frames
  YAML::Mark mark;   // of the value (or of its key when the value is empty)

  [[noreturn]] void fail(const std::string& message) const { config::fail(origin, mark, path + ": " + message); }
  void check(const std::string& violation) const {
    if (!violation.empty()) fail(violation);
  }
};

// Plain scalar text of `node`, or a type error naming `expected`.
const std::string& plain_scalar(const YAML::Node& node, const Site& site, const char* expected) {
  if (!node.IsScalar() || is_quoted(node)) site.fail(std::string("expected ") + expected + ", found " + describe(node));
  return node.Scalar();
}

double decode_number(const YAML::Node& node, const Site& site) {
  double value = 0;
  if (!parse_double(plain_scalar(node, site, "a number"), value)) {
    site.fail("expected a number, found " + describe(node));
  }
  return value;
}

void decode_leaf(const YAML::Node& node, int& out, const Limits& limits, const Site& site) {
  long long value = 0;
  if (!parse_int(plain_scalar(node, site, "an integer"), value)) {
    site.fail("expected an integer, found " + describe(node));
  }
  site.check(range_violation(static_cast<double>(value), limits));
  if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max()) {
    site.fail("value " + node.Scalar() + " does not fit in an integer");
  }
  out = static_cast<int>(value);
}

void decode_leaf(const YAML::Node& node, double& out, const Limits& limits, const Site& site) {
  double value = decode_number(node, site);
  site.check(range_violation(value, limits));
  out = value;
}

// No field is a bool or a list of strings yet; these are ready for the first one.
[[maybe_unused]] void decode_leaf(const YAML::Node& node, bool& out, const Limits&, const Site& site) {
  if (!parse_bool(plain_scalar(node, site, "a boolean (true or false)"), out)) {
    site.fail("expected a boolean (true or false), found " + describe(node));
  }
}

void decode_leaf(const YAML::Node& node, std::string& out, const Limits& limits, const Site& site) {
  if (!node.IsScalar()) site.fail("expected a string, found " + describe(node));
  site.check(choice_violation(node.Scalar(), limits));
  out = node.Scalar();
}

void decode_leaf(const YAML::Node& node, std::vector<double>& out, const Limits& limits, const Site& site) {
  if (!node.IsSequence()) site.fail("expected a list of numbers, found " + describe(node));
  site.check(size_violation(node.size(), limits, "numbers"));
  std::vector<double> values;
  for (std::size_t i = 0; i < node.size(); ++i) {
    Site element{site.origin, site.path + "[" + std::to_string(i) + "]", value_mark(node[i], site.mark)};
    values.push_back(decode_number(node[i], element));
    element.check(range_violation(values.back(), limits));
  }
  out = std::move(values);
}

void decode_leaf(const YAML::Node& node, std::vector<int>& out, const Limits& limits, const Site& site) {
  if (!node.IsSequence()) site.fail("expected a list of integers, found " + describe(node));
  site.check(size_violation(node.size(), limits, "integers"));
  std::vector<int> values;
  for (std::size_t i = 0; i < node.size(); ++i) {
    Site element{site.origin, site.path + "[" + std::to_string(i) + "]", value_mark(node[i], site.mark)};
    int value = 0;
    decode_leaf(node[i], value, limits, element);
    values.push_back(value);
  }
  out = std::move(values);
}

void decode_leaf(const YAML::Node& node, std::vector<std::string>& out, const Limits& limits,
                                  const Site& site) {
  if (!node.IsSequence()) site.fail("expected a list of strings, found " + describe(node));
  site.check(size_violation(node.size(), limits, "strings"));
  std::vector<std::string> values;
  for (std::size_t i = 0; i < node.size(); ++i) {
    Site element{site.origin, site.path + "[" + std::to_string(i) + "]", value_mark(node[i], site.mark)};
    if (!node[i].IsScalar()) element.fail("expected a string, found " + describe(node[i]));
    element.check(choice_violation(node[i].Scalar(), limits));
    values.push_back(node[i].Scalar());
  }
  out = std::move(values);
}

// Collects the key names of one section, in declaration order.
struct KeyNames {
  std::vector<std::string> names;
  template <class T>
  void operator()(const char* key, T&, const Limits&) { names.push_back(key); }
  template <class T>
  void operator()(const char* key, T&) { names.push_back(key); }
};

template <class T>
std::vector<std::string> key_names(T& section) {
  KeyNames names;
  section.visit(names);
  return names.names;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// "unknown key 'video.samplr' (valid keys under 'video': ...; did you mean 'sampler'?)"
template <class T>
std::string unknown_key(T& section, const std::string& section_path, const std::string& key) {
  std::vector<std::string> names = key_names(section);
  std::string message = "unknown key '" + join_path(section_path, key) + "' (valid keys ";
  message += section_path.empty() ? "at the top level" : "under '" + section_path + "'";
  message += ": " + join_list(names);
  std::string best;
  std::size_t best_distance = std::max<std::size_t>(2, key.size() / 3) + 1;
  for (const auto& name : names) {
    std::size_t d = edit_distance(key, name);
    if (d < best_distance) {
      best = name;
      best_distance = d;
    }
  }
  if (!best.empty()) message += "; did you mean '" + best + "'?";
  return message + ")";
}

template <class T>
void decode_section(T& section, const YAML::Node& node, const std::string& path, const Origin& origin);
template <class T>
void decode_list(std::vector<T>& list, const YAML::Node& node, const std::string& path, const Origin& origin,
                 const YAML::Mark& key_mark);

// Decodes `value` into the field called `key`, if the visited section has one.
class FieldDecoder {
 public:
  FieldDecoder(const std::string& key, const YAML::Node& value, const YAML::Mark& key_mark,
               const std::string& path, const Origin& origin)
      : key_(key), value_(value), key_mark_(key_mark), path_(path), origin_(origin) {}

  template <class T>
  void operator()(const char* key, T& member, const Limits& limits) {
    if (key_ != key) return;
    found_ = true;
    decode_leaf(value_, member, limits, Site{origin_, path_, value_mark(value_, key_mark_)});
  }
  template <class T>
  void operator()(const char* key, T& section) {
    if (key_ != key) return;
    found_ = true;
    decode_section(section, value_, path_, origin_);
  }
  template <class T>
  void operator()(const char* key, std::vector<T>& list) {
    if (key_ != key) return;
    found_ = true;
    decode_list(list, value_, path_, origin_, key_mark_);
  }
  bool found() const { return found_; }

 private:
  const std::string& key_;
  const YAML::Node& value_;
  YAML::Mark key_mark_;
  const std::string& path_;
  const Origin& origin_;
  bool found_ = false;
};

// Decodes a YAML map over `section`: listed keys overwrite, absent keys keep their values.
// An empty value (`video:` with everything below commented out) is an empty section.
template <class T>
void decode_section(T& section, const YAML::Node& node, const std::string& path, const Origin& origin) {
  if (node.IsNull()) return;
  if (!node.IsMap()) {
    if (path.empty()) fail(origin, node.Mark(), "expected a map of keys at the top level, found " + describe(node));
    fail(origin, node.Mark(), path + ": expected a section (a map of keys), found " + describe(node));
  }
  std::set<std::string> seen;
  for (const auto& entry : node) {
    const YAML::Node& key = entry.first;
    if (!key.IsScalar()) {
      std::string where = path.empty() ? "at the top level" : "under '" + path + "'";
      fail(origin, key.Mark(), "expected a key name " + where + ", found " + describe(key));
    }
    const std::string& name = key.Scalar();
    std::string full = join_path(path, name);
    if (!seen.insert(name).second) fail(origin, key.Mark(), "duplicate key '" + full + "'");
    FieldDecoder decoder(name, entry.second, key.Mark(), full, origin);
    section.visit(decoder);
    if (!decoder.found()) fail(origin, key.Mark(), unknown_key(section, path, name));
  }
}

// Decodes a YAML sequence of maps into a list of sections (each element starts from defaults).
// An empty value is an empty list.
template <class T>
void decode_list(std::vector<T>& list, const YAML::Node& node, const std::string& path, const Origin& origin,
                 const YAML::Mark& key_mark) {
  if (node.IsNull()) {
    list.clear();
    return;
  }
  if (!node.IsSequence()) {
    fail(origin, value_mark(node, key_mark), path + ": expected a list of sections, found " + describe(node));
  }
  std::vector<T> out(node.size());
  for (std::size_t i = 0; i < node.size(); ++i) {
    std::string element = path + "[" + std::to_string(i) + "]";
    if (!node[i].IsMap()) {
      fail(origin, value_mark(node[i], key_mark), element + ": expected a section (a map of keys), found " + describe(node[i]));
    }
    decode_section(out[i], node[i], element, origin);
  }
  list = std::move(out);
}

// Applies a --set value to the field at `segments` (from `index` on) of the visited section.
class PathSetter {
 public:
  PathSetter(const std::vector<std::string>& segments, std::size_t index, const YAML::Node& value,
             const Origin& origin)
      : segments_(segments), index_(index), value_(value), origin_(origin) {}

  template <class T>
  void operator()(const char* key, T& member, const Limits& limits) {
    if (segments_[index_] != key) return;
    found_ = true;
    std::string path = prefix(index_ + 1);
    if (index_ + 1 != segments_.size()) {
      fail(origin_, YAML::Mark::null_mark(),
           "unknown key '" + prefix(segments_.size()) + "' ('" + path + "' is a value, not a section)");
    }
    decode_leaf(value_, member, limits, Site{origin_, path, YAML::Mark::null_mark()});
  }
  template <class T>
  void operator()(const char* key, T& section) {
    if (segments_[index_] != key) return;
    found_ = true;
    std::string path = prefix(index_ + 1);
    if (index_ + 1 == segments_.size()) {
      decode_section(section, value_, path, origin_);
      return;
    }
    PathSetter next(segments_, index_ + 1, value_, origin_);
    section.visit(next);
    if (!next.found()) fail(origin_, YAML::Mark::null_mark(), unknown_key(section, path, segments_[index_ + 1]));
  }
  // A list of sections: "sources=[...]" replaces it; "sources.0.url=..." sets a key of one element.
  template <class T>
  void operator()(const char* key, std::vector<T>& list) {
    if (segments_[index_] != key) return;
    found_ = true;
    std::string path = prefix(index_ + 1);
    if (index_ + 1 == segments_.size()) {
      decode_list(list, value_, path, origin_, YAML::Mark::null_mark());
      return;
    }
    const std::string& at = segments_[index_ + 1];
    long long i = -1;
    if (!parse_int(at, i) || i < 0 || i >= static_cast<long long>(list.size())) {
      fail(origin_, YAML::Mark::null_mark(),
           "'" + path + "' is a list of " + std::to_string(list.size()) + " element(s): expected an index 0.." +
               std::to_string(static_cast<long long>(list.size()) - 1) + " after it, found '" + at + "'");
    }
    T& element = list[static_cast<std::size_t>(i)];
    std::string element_path = path + "." + at;
    if (index_ + 2 == segments_.size()) {
      decode_section(element, value_, element_path, origin_);
      return;
    }
    PathSetter next(segments_, index_ + 2, value_, origin_);
    element.visit(next);
    if (!next.found()) {
      fail(origin_, YAML::Mark::null_mark(), unknown_key(element, element_path, segments_[index_ + 2]));
    }
  }
  bool found() const { return found_; }

 private:
  std::string prefix(std::size_t n) const {
    std::string out;
    for (std::size_t i = 0; i < n; ++i) out = join_path(out, segments_[i]);
    return out;
  }

  const std::vector<std::string>& segments_;
  std::size_t index_;
  const YAML::Node& value_;
  const Origin& origin_;
  bool found_ = false;
};

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  std::size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// Applies one "a.b.c=value" argument to a Config or a JobConfig.
template <class Root>
void apply_override(Root& config, const std::string& arg) {
  Origin origin{"--set " + arg, false};
  std::size_t eq = arg.find('=');
  if (eq == std::string::npos) {
    fail(origin, YAML::Mark::null_mark(), "expected KEY=VALUE, e.g. --set video.sampler.frames=16");
  }
  std::string key = trim(arg.substr(0, eq));
  // "sources[0].url" (as messages print it) is "sources.0.url".
  for (size_t open = key.find('['); open != std::string::npos; open = key.find('[', open)) {
    size_t close = key.find(']', open);
    if (close == std::string::npos) break;
    key = key.substr(0, open) + "." + key.substr(open + 1, close - open - 1) + key.substr(close + 1);
  }
  std::vector<std::string> segments;
  std::stringstream ss(key);
  for (std::string segment; std::getline(ss, segment, '.');) segments.push_back(segment);
  if (key.empty() || key.back() == '.' ||
      std::any_of(segments.begin(), segments.end(), [](const std::string& s) { return s.empty(); })) {
    fail(origin, YAML::Mark::null_mark(), "'" + key + "' is not a key path (expected e.g. video.sampler.frames)");
  }
  YAML::Node value;
  try {
    value = YAML::Load(arg.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    fail(origin, YAML::Mark::null_mark(), "cannot parse the value as YAML: " + e.msg);
  }
  PathSetter setter(segments, 0, value, origin);
  config.visit(setter);
  if (!setter.found()) fail(origin, YAML::Mark::null_mark(), unknown_key(config, "", segments[0]));
}

// Re-checks every leaf against its limits (catches a default that breaks its own limits).
class Validator {
 public:
  template <class T>
  void operator()(const char* key, T& member, const Limits& limits) {
    std::string violation = violation_of(member, limits);
    if (!violation.empty()) {
      throw InternalError("built-in default of config key '" + join_path(path_, key) + "' is invalid: " + violation);
    }
  }
  template <class T>
  void operator()(const char* key, T& section) {
    Validator inner;
    inner.path_ = join_path(path_, key);
    section.visit(inner);
  }
  template <class T>
  void operator()(const char* key, std::vector<T>& list) {
    T fresh;  // an element's defaults, even when the list is empty
    Validator defaults;
    defaults.path_ = join_path(path_, key) + "[]";
    fresh.visit(defaults);
    for (std::size_t i = 0; i < list.size(); ++i) {
      Validator inner;
      inner.path_ = join_path(path_, key) + "[" + std::to_string(i) + "]";
      list[i].visit(inner);
    }
  }

 private:
  static std::string violation_of(int v, const Limits& l) { return range_violation(v, l); }
  static std::string violation_of(double v, const Limits& l) { return range_violation(v, l); }
  static std::string violation_of(bool, const Limits&) { return ""; }
  static std::string violation_of(const std::string& v, const Limits& l) { return choice_violation(v, l); }
  static std::string violation_of(const std::vector<double>& v, const Limits& l) {
    std::string out = size_violation(v.size(), l, "numbers");
    for (double x : v) out = out.empty() ? range_violation(x, l) : out;
    return out;
  }
  static std::string violation_of(const std::vector<int>& v, const Limits& l) {
    std::string out = size_violation(v.size(), l, "integers");
    for (int x : v) out = out.empty() ? range_violation(x, l) : out;
    return out;
  }
  static std::string violation_of(const std::vector<std::string>& v, const Limits& l) {
    std::string out = size_violation(v.size(), l, "strings");
    for (const auto& x : v) out = out.empty() ? choice_violation(x, l) : out;
    return out;
  }

  std::string path_;
};

template <class Root>
Root finish(Root config, const std::vector<std::string>& overrides) {
  for (const auto& arg : overrides) apply_override(config, arg);
  Validator validator;
  config.visit(validator);
  return config;
}

// Writes each field of the visited section into an emitter map.
class Printer {
 public:
  explicit Printer(YAML::Emitter& out) : out_(out) {}

  template <class T>
  void operator()(const char* key, T& member, const Limits&) {
    out_ << YAML::Key;
    emit(std::string(key));  // quoted where another reader would take it for a boolean ("on")
    out_ << YAML::Value;
    emit(member);
  }
  template <class T>
  void operator()(const char* key, T& section) {
    out_ << YAML::Key << key << YAML::Value << YAML::BeginMap;
    section.visit(*this);
    out_ << YAML::EndMap;
  }
  template <class T>
  void operator()(const char* key, std::vector<T>& list) {
    out_ << YAML::Key << key << YAML::Value << YAML::BeginSeq;
    for (auto& element : list) {
      out_ << YAML::BeginMap;
      element.visit(*this);
      out_ << YAML::EndMap;
    }
    out_ << YAML::EndSeq;
  }

 private:
  void emit(int v) { out_ << v; }
  void emit(double v) { out_ << format_double(v); }
  void emit(bool v) { out_ << (v ? "true" : "false"); }
  void emit(const std::string& v) {
    // Quote strings another YAML reader would take for a number or boolean (the emitter
    // already quotes null-like and special-character strings).
    static const std::set<std::string> yaml11_bools = {"y",  "Y",  "yes", "Yes", "YES", "n",   "N",   "no",
                                                       "No", "NO", "on",  "On",  "ON",  "off", "Off", "OFF"};
    long long i = 0;
    double d = 0;
    bool b = false;
    bool quote = parse_int(v, i) || parse_double(v, d) || parse_bool(v, b) || yaml11_bools.count(v) > 0;
    out_ << (quote ? YAML::DoubleQuoted : YAML::Auto) << v;
  }
  void emit(const std::vector<double>& v) {
    out_ << YAML::Flow << YAML::BeginSeq;
    for (double x : v) emit(x);
    out_ << YAML::EndSeq;
  }
  void emit(const std::vector<int>& v) {
    out_ << YAML::Flow << YAML::BeginSeq;
    for (int x : v) emit(x);
    out_ << YAML::EndSeq;
  }
  void emit(const std::vector<std::string>& v) {
    out_ << YAML::Flow << YAML::BeginSeq;
    for (const auto& x : v) emit(x);
    out_ << YAML::EndSeq;
  }

  YAML::Emitter& out_;
};

// Collects dotted leaf paths.
struct PathLister {
  std::string prefix;
  std::vector<std::string>* paths;
  template <class T>
  void operator()(const char* key, T&, const Limits&) {
    paths->push_back(join_path(prefix, key));
  }
  template <class T>
  void operator()(const char* key, T& section) {
    PathLister inner{join_path(prefix, key), paths};
    section.visit(inner);
  }
  template <class T>
  void operator()(const char* key, std::vector<T>&) {
    T element;
    PathLister inner{join_path(prefix, key) + "[]", paths};
    element.visit(inner);
  }
};

}  // namespace

namespace {

// Decodes one YAML document of `yaml` into a default T (strictly).
template <class T>
T decode_document(const std::string& yaml, const std::string& origin) {
  Origin where{origin, true};
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(yaml);
  } catch (const YAML::Exception& e) {  // ParserException and friends carry the mark
    fail(where, e.mark, e.msg);
  }
  if (docs.size() > 1) fail(where, docs[1].Mark(), "expected one YAML document, found " + std::to_string(docs.size()));
  T value;
  if (!docs.empty()) decode_section(value, docs[0], "", where);
  return value;
}

std::string read_config_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw ConfigError(path + ": config file not found");
  if (std::filesystem::is_directory(path, ec)) throw ConfigError(path + ": is a directory, not a config file");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  if (!in || in.bad()) throw ConfigError(path + ": cannot read config file");
  return text.str();
}

}  // namespace

Config load_string(const std::string& yaml, const std::string& origin, const std::vector<std::string>& overrides) {
  return finish(decode_document<Config>(yaml, origin), overrides);
}

PipelineConfig load_pipeline(const std::string& path) {
  return load_pipeline_string(read_config_file(path), path);
}

PipelineConfig load_pipeline_string(const std::string& yaml, const std::string& origin) {
  PipelineConfig p = decode_document<PipelineConfig>(yaml, origin);
  Validator validator;
  p.visit(validator);
  return p;
}

Config load(const std::string& path, const std::vector<std::string>& overrides) {
  Config config = load_string(read_config_file(path), path, overrides);
  MD_LOG_DEBUG("config", "loaded " << path << " with " << overrides.size() << " override(s)");
  return config;
}

Config defaults_with(const std::vector<std::string>& overrides) { return finish(Config{}, overrides); }

namespace {

template <class Root>
std::string print_yaml(const Root& config) {
  Root copy = config;  // visit() is non-const
  YAML::Emitter out;
  out << YAML::BeginMap;
  Printer printer(out);
  copy.visit(printer);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace

std::string to_yaml(const Config& config) { return print_yaml(config); }
std::string to_yaml(const JobConfig& job) { return print_yaml(job); }
std::string to_yaml(const PipelineConfig& pipeline) { return print_yaml(pipeline); }

namespace {

// Prints the section at one key path.
struct SectionFinder {
  std::string prefix;
  const std::string& target;
  std::string* out;
  template <class T>
  void operator()(const char*, T&, const Limits&) {}
  template <class T>
  void operator()(const char* key, T& section) {
    std::string path = join_path(prefix, key);
    if (path == target) {
      *out = print_yaml(section);
      return;
    }
    SectionFinder inner{path, target, out};
    section.visit(inner);
  }
  template <class T>
  void operator()(const char*, std::vector<T>&) {}
};

}  // namespace

std::string section_yaml(const PipelineConfig& pipeline, const std::string& key_path) {
  PipelineConfig copy = pipeline;
  std::string out;
  SectionFinder finder{"", key_path, &out};
  copy.visit(finder);
  return out;
}

JobConfig load_job_string(const std::string& yaml, const std::string& origin, const std::vector<std::string>& overrides) {
  return finish(decode_document<JobConfig>(yaml, origin), overrides);
}

JobConfig load_job(const std::string& path, const std::vector<std::string>& overrides) {
  return load_job_string(read_config_file(path), path, overrides);
}

namespace {

template <class Root>
std::vector<std::string> list_key_paths() {
  Root root;
  std::vector<std::string> paths;
  PathLister lister{"", &paths};
  root.visit(lister);
  return paths;
}

}  // namespace

std::vector<std::string> job_key_paths() { return list_key_paths<JobConfig>(); }
std::vector<std::string> monitor_key_paths() { return list_key_paths<MonitorConfig>(); }
std::vector<std::string> key_paths() { return list_key_paths<Config>(); }

namespace {

// What the types cannot say about a monitor: every id present, well-formed and unique, every
// question with a trigger and known sources.
void check_monitor(const MonitorConfig& m, const std::string& origin) {
  auto bad = [&](const std::string& path, const std::string& what) { throw ConfigError(origin + ": " + path + ": " + what); };
  auto check_id = [&](const std::string& path, const std::string& id) {
    if (id.empty()) bad(path, "an id is required");
    for (char c : id) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') {
        bad(path, "'" + id + "' may hold only letters, digits, '_', '-' and '.'");
      }
    }
  };
  if (m.sources.empty()) bad("sources", "at least one source is required");
  std::set<std::string> ids;
  for (std::size_t i = 0; i < m.sources.size(); ++i) {
    const std::string at = "sources[" + std::to_string(i) + "]";
    check_id(at + ".id", m.sources[i].id);
    if (!ids.insert(m.sources[i].id).second) bad(at + ".id", "'" + m.sources[i].id + "' names two sources");
    if (m.sources[i].url.empty()) bad(at + ".url", "a url (or a file or directory path) is required");
  }
  std::set<std::string> question_ids;
  for (std::size_t i = 0; i < m.questions.size(); ++i) {
    const MonitorQuestion& q = m.questions[i];
    const std::string at = "questions[" + std::to_string(i) + "]";
    check_id(at + ".id", q.id);
    if (!question_ids.insert(q.id).second) bad(at + ".id", "'" + q.id + "' names two questions");
    if (q.text.empty()) bad(at + ".text", "the question's text is required");
    if (q.every_sec <= 0 && q.on.empty()) {
      bad(at, "no trigger: set every_sec (seconds between askings) or on: scene_change");
    }
    for (const auto& s : q.sources) {
      if (!ids.count(s)) bad(at + ".sources", "unknown source '" + s + "' (sources: " + join_list({ids.begin(), ids.end()}) + ")");
    }
  }
}

}  // namespace

MonitorConfig load_monitor_string(const std::string& yaml, const std::string& origin,
                                  const std::vector<std::string>& overrides) {
  MonitorConfig m = finish(decode_document<MonitorConfig>(yaml, origin), overrides);
  check_monitor(m, origin);
  return m;
}

MonitorConfig load_monitor(const std::string& path, const std::vector<std::string>& overrides) {
  return load_monitor_string(read_config_file(path), path, overrides);
}

std::string to_yaml(const MonitorConfig& monitor) { return print_yaml(monitor); }

}  // namespace mustdrop::config
