// The YAML-free form of a configuration document: a tree of maps, lists and scalars that keeps
// where each value was written. config.cpp builds it from YAML text (yaml-cpp stays there) and
// prints it back; decode.h turns it into typed structs. Code outside config/ (a pruner decoding
// its own section) sees only this tree.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace mustdrop::config {

// A place in the document (0-based line and column); null when unknown (a --set value).
struct Mark {
  int line = -1;
  int column = -1;
  bool is_null() const { return line < 0; }
};

struct Node {
  enum class Kind { kNull, kScalar, kSequence, kMap };
  Kind kind = Kind::kNull;
  std::string scalar;                          // kScalar: the text as written
  bool quoted = false;                         // kScalar: quoted or tagged !!str: a string whatever it looks like
  bool flow = false;                           // kSequence, when printed: on one line ([a, b])
  Mark mark;
  std::vector<Node> items;                     // kSequence
  std::vector<std::pair<Node, Node>> entries;  // kMap: key and value, in document order

  bool is_null() const { return kind == Kind::kNull; }
  bool is_scalar() const { return kind == Kind::kScalar; }
  bool is_sequence() const { return kind == Kind::kSequence; }
  bool is_map() const { return kind == Kind::kMap; }
  // kMap: the value of the scalar key `key`, or nullptr.
  const Node* find(const std::string& key) const;
  static Node scalar_of(std::string text, bool quoted = false);
};

// Where a document came from: a file or text (messages carry line:col) or one --set argument
// (messages carry the argument).
struct Origin {
  std::string name;
  bool has_marks = true;
};

// Throws ConfigError "origin:line:col: message" (no line:col without marks).
[[noreturn]] void fail(const Origin& origin, const Mark& mark, const std::string& message);

// One section of a document, cut out for whoever decodes it (a pruner's options): its tree,
// its dotted key path ("mustdrop.lsm") and the document it came from. A section the document
// does not have is a null node (all defaults).
struct Section {
  Node node;
  std::string path;
  Origin origin;
};

}  // namespace mustdrop::config
