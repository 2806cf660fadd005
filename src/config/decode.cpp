// The non-template half of decode.h: scalar parsing, leaf decoders and printers, messages.
#include "config/decode.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <set>
#include <sstream>
#include <system_error>

#include "core/error.h"

namespace mustdrop::config {

void fail(const Origin& origin, const Mark& mark, const std::string& message) {
  std::ostringstream os;
  os << origin.name;
  if (origin.has_marks && !mark.is_null()) os << ':' << mark.line + 1 << ':' << mark.column + 1;
  os << ": " << message;
  throw ConfigError(os.str());
}

const Node* Node::find(const std::string& key) const {
  for (const auto& e : entries) {
    if (e.first.is_scalar() && e.first.scalar == key) return &e.second;
  }
  return nullptr;
}

Node Node::scalar_of(std::string text, bool quoted) {
  Node n;
  n.kind = Kind::kScalar;
  n.scalar = std::move(text);
  n.quoted = quoted;
  return n;
}

namespace detail {

std::string join_path(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::vector<std::string> split_key_path(const std::string& path) {
  std::vector<std::string> out;
  std::stringstream segments(path);
  for (std::string segment; std::getline(segments, segment, '.');) out.push_back(segment);
  return out;
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
std::string describe(const Node& node) {
  switch (node.kind) {
    case Node::Kind::kNull:
      return "an empty value";
    case Node::Kind::kSequence:
      return "a list";
    case Node::Kind::kMap:
      return "a map";
    case Node::Kind::kScalar:
      break;
  }
  const std::string& text = node.scalar;
  if (node.quoted) return "the string \"" + text + "\"";
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
Mark value_mark(const Node& value, const Mark& key_mark) {
  return value.is_null() || value.mark.is_null() ? key_mark : value.mark;
}

// Plain scalar text of `node`, or a type error naming `expected`.
const std::string& plain_scalar(const Node& node, const Site& site, const char* expected) {
  if (!node.is_scalar() || node.quoted) site.fail(std::string("expected ") + expected + ", found " + describe(node));
  return node.scalar;
}

double decode_number(const Node& node, const Site& site) {
  double value = 0;
  if (!parse_double(plain_scalar(node, site, "a number"), value)) {
    site.fail("expected a number, found " + describe(node));
  }
  return value;
}

void decode_leaf(const Node& node, int& out, const Limits& limits, const Site& site) {
  long long value = 0;
  if (!parse_int(plain_scalar(node, site, "an integer"), value)) {
    site.fail("expected an integer, found " + describe(node));
  }
  site.check(range_violation(static_cast<double>(value), limits));
  if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max()) {
    site.fail("value " + node.scalar + " does not fit in an integer");
  }
  out = static_cast<int>(value);
}

void decode_leaf(const Node& node, double& out, const Limits& limits, const Site& site) {
  double value = decode_number(node, site);
  site.check(range_violation(value, limits));
  out = value;
}

void decode_leaf(const Node& node, bool& out, const Limits&, const Site& site) {
  if (!parse_bool(plain_scalar(node, site, "a boolean (true or false)"), out)) {
    site.fail("expected a boolean (true or false), found " + describe(node));
  }
}

void decode_leaf(const Node& node, std::string& out, const Limits& limits, const Site& site) {
  if (!node.is_scalar()) site.fail("expected a string, found " + describe(node));
  site.check(choice_violation(node.scalar, limits));
  out = node.scalar;
}

void decode_leaf(const Node& node, std::vector<double>& out, const Limits& limits, const Site& site) {
  if (!node.is_sequence()) site.fail("expected a list of numbers, found " + describe(node));
  site.check(size_violation(node.items.size(), limits, "numbers"));
  std::vector<double> values;
  for (std::size_t i = 0; i < node.items.size(); ++i) {
    Site element{site.origin, site.path + "[" + std::to_string(i) + "]", value_mark(node.items[i], site.mark)};
    values.push_back(decode_number(node.items[i], element));
    element.check(range_violation(values.back(), limits));
  }
  out = std::move(values);
}

void decode_leaf(const Node& node, std::vector<int>& out, const Limits& limits, const Site& site) {
  if (!node.is_sequence()) site.fail("expected a list of integers, found " + describe(node));
  site.check(size_violation(node.items.size(), limits, "integers"));
  std::vector<int> values;
  for (std::size_t i = 0; i < node.items.size(); ++i) {
    Site element{site.origin, site.path + "[" + std::to_string(i) + "]", value_mark(node.items[i], site.mark)};
    int value = 0;
    decode_leaf(node.items[i], value, limits, element);
    values.push_back(value);
  }
  out = std::move(values);
}

void decode_leaf(const Node& node, std::vector<std::string>& out, const Limits& limits,
                                  const Site& site) {
  if (!node.is_sequence()) site.fail("expected a list of strings, found " + describe(node));
  site.check(size_violation(node.items.size(), limits, "strings"));
  std::vector<std::string> values;
  for (std::size_t i = 0; i < node.items.size(); ++i) {
    Site element{site.origin, site.path + "[" + std::to_string(i) + "]", value_mark(node.items[i], site.mark)};
    if (!node.items[i].is_scalar()) element.fail("expected a string, found " + describe(node.items[i]));
    element.check(choice_violation(node.items[i].scalar, limits));
    values.push_back(node.items[i].scalar);
  }
  out = std::move(values);
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

std::string unknown_key_message(const std::vector<std::string>& names, const std::string& section_path,
                                const std::string& key) {
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

int index_of(const std::vector<const char*>& names, const std::string& name) {
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (name == names[i]) return static_cast<int>(i);
  }
  return -1;
}

Node print_leaf(int v) { return Node::scalar_of(std::to_string(v)); }
Node print_leaf(double v) { return Node::scalar_of(format_double(v)); }
Node print_leaf(bool v) { return Node::scalar_of(v ? "true" : "false"); }

// Strings another YAML reader would take for a number or boolean are quoted (the emitter itself
// quotes null-like and special-character strings).
Node print_leaf(const std::string& v) {
  static const std::set<std::string> yaml11_bools = {"y",  "Y",  "yes", "Yes", "YES", "n",   "N",   "no",
                                                     "No", "NO", "on",  "On",  "ON",  "off", "Off", "OFF"};
  long long i = 0;
  double d = 0;
  bool b = false;
  return Node::scalar_of(v, parse_int(v, i) || parse_double(v, d) || parse_bool(v, b) || yaml11_bools.count(v) > 0);
}

namespace {

template <class T>
Node print_list(const std::vector<T>& v) {
  Node n;
  n.kind = Node::Kind::kSequence;
  n.flow = true;
  for (const auto& x : v) n.items.push_back(print_leaf(x));
  return n;
}

template <class T>
std::string list_violation(const std::vector<T>& v, const Limits& l, const char* what) {
  std::string out = size_violation(v.size(), l, what);
  for (const auto& x : v) out = out.empty() ? violation_of(x, l) : out;
  return out;
}

}  // namespace

Node print_leaf(const std::vector<double>& v) { return print_list(v); }
Node print_leaf(const std::vector<int>& v) { return print_list(v); }
Node print_leaf(const std::vector<std::string>& v) { return print_list(v); }

std::string violation_of(const std::vector<double>& v, const Limits& l) { return list_violation(v, l, "numbers"); }
std::string violation_of(const std::vector<int>& v, const Limits& l) { return list_violation(v, l, "integers"); }
std::string violation_of(const std::vector<std::string>& v, const Limits& l) { return list_violation(v, l, "strings"); }

void Validator::throw_invalid_default(const std::string& path, const std::string& violation) {
  throw InternalError("built-in default of config key '" + path + "' is invalid: " + violation);
}

}  // namespace detail
}  // namespace mustdrop::config
