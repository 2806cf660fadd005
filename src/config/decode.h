// The decoding machinery every typed configuration uses: a struct lists its fields once in
// visit(), and the visitors here walk that list to decode a Node tree strictly (file:line:col,
// unknown keys with suggestions, types, ranges, choices), apply a --set path, re-check defaults,
// print, and list key paths. It works on the YAML-free tree of node.h, so a pruner can decode
// its own options section without seeing YAML.
//
//   struct MyOptions {
//     int layer = 2;  // one-line comment per field
//     template <class V> void visit(V& v) { v("layer", layer, range(0, 1000)); }
//   };
//   MyOptions o = config::decode<MyOptions>(section);
//
// Field types: int, double, bool, std::string, std::vector<int|double|std::string>, an enum
// class with `std::vector<const char*> enum_names(E)` declared beside it (names in enum order;
// the field's one_of() may allow a subset), a nested section (v("key", sub)) and a list of
// sections (v("key", std::vector<Sub>&)).
#pragma once

#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "config/node.h"

namespace mustdrop::config {

// Limits of one field: a numeric range (inclusive) and/or a list of allowed strings.
struct Limits {
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  std::vector<std::string> choices;
  std::size_t exact_size = 0;  // for lists: required length (0 = any)
};

inline Limits range(double lo, double hi) { return Limits{lo, hi, {}, 0}; }
inline Limits at_least(double lo) { return Limits{lo, std::numeric_limits<double>::infinity(), {}, 0}; }
inline Limits one_of(std::vector<std::string> choices) {
  Limits l;
  l.choices = std::move(choices);
  return l;
}
inline Limits list_of(std::size_t n, double lo, double hi) { return Limits{lo, hi, {}, n}; }
inline Limits any() { return Limits{}; }

namespace detail {

std::string join_path(const std::string& prefix, const std::string& key);
// "a.b.c" -> {a, b, c} (empty segments kept, so callers can reject them).
std::vector<std::string> split_key_path(const std::string& path);
std::string join_list(const std::vector<std::string>& items);
bool parse_int(const std::string& text, long long& out);
// Empty if the value satisfies the limits, else why not.
std::string range_violation(double value, const Limits& limits);
std::string choice_violation(const std::string& value, const Limits& limits);
std::string size_violation(std::size_t size, const Limits& limits, const char* what);
// "unknown key 'a.b' (valid keys under 'a': ...; did you mean '...'?)"
std::string unknown_key_message(const std::vector<std::string>& names, const std::string& section_path,
                                const std::string& key);
// What a node is, for "expected X, found Y".
std::string describe(const Node& node);
// The mark to quote for a value: an empty value has none worth quoting, so use its key's.
Mark value_mark(const Node& value, const Mark& key_mark);

// Everything a leaf decoder needs to report a problem.
struct Site {
  const Origin& origin;
  std::string path;  // dotted key, e.g. video.sampler.frames
  Mark mark;         // of the value (or of its key when the value is empty)

  [[noreturn]] void fail(const std::string& message) const { config::fail(origin, mark, path + ": " + message); }
  void check(const std::string& violation) const {
    if (!violation.empty()) fail(violation);
  }
};

void decode_leaf(const Node& node, int& out, const Limits& limits, const Site& site);
void decode_leaf(const Node& node, double& out, const Limits& limits, const Site& site);
void decode_leaf(const Node& node, bool& out, const Limits& limits, const Site& site);
void decode_leaf(const Node& node, std::string& out, const Limits& limits, const Site& site);
void decode_leaf(const Node& node, std::vector<double>& out, const Limits& limits, const Site& site);
void decode_leaf(const Node& node, std::vector<int>& out, const Limits& limits, const Site& site);
void decode_leaf(const Node& node, std::vector<std::string>& out, const Limits& limits, const Site& site);

// Index of `name` in `names`, or -1.
int index_of(const std::vector<const char*>& names, const std::string& name);

template <class E>
const char* enum_name(E v) {
  return enum_names(v)[static_cast<std::size_t>(v)];
}

template <class E, std::enable_if_t<std::is_enum<E>::value, int> = 0>
void decode_leaf(const Node& node, E& out, const Limits& limits, const Site& site) {
  const std::vector<const char*> names = enum_names(E{});
  Limits allowed = limits;
  if (allowed.choices.empty()) allowed.choices.assign(names.begin(), names.end());
  std::string text;
  decode_leaf(node, text, allowed, site);
  int i = index_of(names, text);
  if (i < 0) site.fail("'" + text + "' names no value of this setting");  // a one_of() outside enum_names
  out = static_cast<E>(i);
}

// Leaves as printed scalars (see print_leaf in decode.cpp for the quoting rule).
Node print_leaf(int v);
Node print_leaf(double v);
Node print_leaf(bool v);
Node print_leaf(const std::string& v);
Node print_leaf(const std::vector<double>& v);
Node print_leaf(const std::vector<int>& v);
Node print_leaf(const std::vector<std::string>& v);
template <class E, std::enable_if_t<std::is_enum<E>::value, int> = 0>
Node print_leaf(E v) {
  return print_leaf(std::string(enum_name(v)));
}

inline std::string violation_of(int v, const Limits& l) { return range_violation(v, l); }
inline std::string violation_of(double v, const Limits& l) { return range_violation(v, l); }
inline std::string violation_of(bool, const Limits&) { return ""; }
inline std::string violation_of(const std::string& v, const Limits& l) { return choice_violation(v, l); }
std::string violation_of(const std::vector<double>& v, const Limits& l);
std::string violation_of(const std::vector<int>& v, const Limits& l);
std::string violation_of(const std::vector<std::string>& v, const Limits& l);
template <class E, std::enable_if_t<std::is_enum<E>::value, int> = 0>
std::string violation_of(E v, const Limits& l) {
  const std::vector<const char*> names = enum_names(E{});
  const auto i = static_cast<std::size_t>(v);
  if (i >= names.size()) return "enum value " + std::to_string(i) + " has no name";
  return choice_violation(names[i], l);
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
std::string unknown_key(T& section, const std::string& section_path, const std::string& key) {
  KeyNames names;
  section.visit(names);
  return unknown_key_message(names.names, section_path, key);
}

template <class T>
void decode_section(T& section, const Node& node, const std::string& path, const Origin& origin);
template <class T>
void decode_list(std::vector<T>& list, const Node& node, const std::string& path, const Origin& origin,
                 const Mark& key_mark);

// Decodes `value` into the field called `key`, if the visited section has one.
class FieldDecoder {
 public:
  FieldDecoder(const std::string& key, const Node& value, const Mark& key_mark, const std::string& path,
               const Origin& origin)
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
  const Node& value_;
  Mark key_mark_;
  const std::string& path_;
  const Origin& origin_;
  bool found_ = false;
};

// Checks a map's keys (scalars, no duplicates) and calls `each(name, key, value)` per entry.
template <class F>
void for_each_key(const Node& node, const std::string& path, const Origin& origin, F each) {
  if (!node.is_map()) {
    if (path.empty()) fail(origin, node.mark, "expected a map of keys at the top level, found " + describe(node));
    fail(origin, node.mark, path + ": expected a section (a map of keys), found " + describe(node));
  }
  std::vector<std::string> seen;
  for (const auto& entry : node.entries) {
    const Node& key = entry.first;
    if (!key.is_scalar()) {
      std::string where = path.empty() ? "at the top level" : "under '" + path + "'";
      fail(origin, key.mark, "expected a key name " + where + ", found " + describe(key));
    }
    for (const auto& s : seen) {
      if (s == key.scalar) fail(origin, key.mark, "duplicate key '" + join_path(path, key.scalar) + "'");
    }
    seen.push_back(key.scalar);
    each(key.scalar, key, entry.second);
  }
}

// Decodes a map over `section`: listed keys overwrite, absent keys keep their values. An empty
// value (`video:` with everything below commented out) is an empty section.
template <class T>
void decode_section(T& section, const Node& node, const std::string& path, const Origin& origin) {
  if (node.is_null()) return;
  for_each_key(node, path, origin, [&](const std::string& name, const Node& key, const Node& value) {
    std::string full = join_path(path, name);
    FieldDecoder decoder(name, value, key.mark, full, origin);
    section.visit(decoder);
    if (!decoder.found()) fail(origin, key.mark, unknown_key(section, path, name));
  });
}

// Decodes a sequence of maps into a list of sections (each element starts from defaults). An
// empty value is an empty list.
template <class T>
void decode_list(std::vector<T>& list, const Node& node, const std::string& path, const Origin& origin,
                 const Mark& key_mark) {
  if (node.is_null()) {
    list.clear();
    return;
  }
  if (!node.is_sequence()) {
    fail(origin, value_mark(node, key_mark), path + ": expected a list of sections, found " + describe(node));
  }
  std::vector<T> out(node.items.size());
  for (std::size_t i = 0; i < node.items.size(); ++i) {
    std::string element = path + "[" + std::to_string(i) + "]";
    if (!node.items[i].is_map()) {
      fail(origin, value_mark(node.items[i], key_mark),
           element + ": expected a section (a map of keys), found " + describe(node.items[i]));
    }
    decode_section(out[i], node.items[i], element, origin);
  }
  list = std::move(out);
}

// Applies a --set value to the field at `segments` (from `index` on) of the visited section.
class PathSetter {
 public:
  PathSetter(const std::vector<std::string>& segments, std::size_t index, const Node& value, const Origin& origin)
      : segments_(segments), index_(index), value_(value), origin_(origin) {}

  template <class T>
  void operator()(const char* key, T& member, const Limits& limits) {
    if (segments_[index_] != key) return;
    found_ = true;
    std::string path = prefix(index_ + 1);
    if (index_ + 1 != segments_.size()) {
      fail(origin_, Mark{}, "unknown key '" + prefix(segments_.size()) + "' ('" + path + "' is a value, not a section)");
    }
    decode_leaf(value_, member, limits, Site{origin_, path, Mark{}});
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
    if (!next.found()) fail(origin_, Mark{}, unknown_key(section, path, segments_[index_ + 1]));
  }
  // A list of sections: "sources=[...]" replaces it; "sources.0.url=..." sets a key of one element.
  template <class T>
  void operator()(const char* key, std::vector<T>& list) {
    if (segments_[index_] != key) return;
    found_ = true;
    std::string path = prefix(index_ + 1);
    if (index_ + 1 == segments_.size()) {
      decode_list(list, value_, path, origin_, Mark{});
      return;
    }
    const std::string& at = segments_[index_ + 1];
    long long i = -1;
    if (!parse_int(at, i) || i < 0 || i >= static_cast<long long>(list.size())) {
      fail(origin_, Mark{},
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
    if (!next.found()) fail(origin_, Mark{}, unknown_key(element, element_path, segments_[index_ + 2]));
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
  const Node& value_;
  const Origin& origin_;
  bool found_ = false;
};

// Re-checks every leaf against its limits (catches a default that breaks its own limits).
class Validator {
 public:
  template <class T>
  void operator()(const char* key, T& member, const Limits& limits) {
    std::string violation = violation_of(member, limits);
    if (!violation.empty()) throw_invalid_default(join_path(path_, key), violation);
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
  [[noreturn]] static void throw_invalid_default(const std::string& path, const std::string& violation);
  std::string path_;
};

// Builds the printed tree of the visited section (every key, in declaration order).
class Printer {
 public:
  explicit Printer(Node& out) : out_(out) { out_.kind = Node::Kind::kMap; }

  template <class T>
  void operator()(const char* key, T& member, const Limits&) {
    out_.entries.emplace_back(print_leaf(std::string(key)), print_leaf(member));
  }
  template <class T>
  void operator()(const char* key, T& section) {
    Node sub;
    Printer inner(sub);
    section.visit(inner);
    out_.entries.emplace_back(Node::scalar_of(key), std::move(sub));
  }
  template <class T>
  void operator()(const char* key, std::vector<T>& list) {
    Node seq;
    seq.kind = Node::Kind::kSequence;
    for (auto& element : list) {
      Node item;
      Printer inner(item);
      element.visit(inner);
      seq.items.push_back(std::move(item));
    }
    out_.entries.emplace_back(Node::scalar_of(key), std::move(seq));
  }

 private:
  Node& out_;
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

}  // namespace detail

// The spelling of an enum value (its enum_names entry).
using detail::enum_name;

// The value of enum E named `name` (its enum_names spelling); false when none is.
template <class E>
bool enum_from_name(const std::string& name, E& out) {
  int i = detail::index_of(enum_names(E{}), name);
  if (i >= 0) out = static_cast<E>(i);
  return i >= 0;
}

// The tree as YAML text (config.cpp).
std::string emit_yaml(const Node& node);

// `section` decoded strictly over T's defaults, defaults re-checked.
template <class T>
T decode(const Section& section) {
  T value;
  detail::decode_section(value, section.node, section.path, section.origin);
  detail::Validator validator;
  value.visit(validator);
  return value;
}

// Every key of `value` as a tree (declaration order).
template <class T>
Node print(T value) {
  Node out;
  detail::Printer printer(out);
  value.visit(printer);
  return out;
}

// Every key of `value` as YAML text.
template <class T>
std::string print_yaml(const T& value) {
  return emit_yaml(print(value)) + "\n";
}

// Every leaf key path of T ("video.sampler.kind", "sources[].id", ...) in declaration order.
template <class T>
std::vector<std::string> list_key_paths() {
  T root;
  std::vector<std::string> paths;
  detail::PathLister lister{"", &paths};
  root.visit(lister);
  return paths;
}

}  // namespace mustdrop::config
