// YAML text <-> the Node tree of node.h, and the loaders of every configuration file. yaml-cpp
// stays in this file; decoding, printing and --set paths are the visitors of decode.h.
#include "config/config.h"
#include "config/job_config.h"
#include "config/monitor_config.h"
#include "config/pipeline_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/log.h"

namespace mustdrop::config {

using detail::join_list;

namespace {

Mark mark_of(const YAML::Mark& m) {
  if (m.is_null()) return Mark{};
  return Mark{m.line, m.column};
}

// Deeper than any configuration nests: only a recursive alias (`&a [*a]`) gets there.
constexpr int kMaxDepth = 64;

// The tree of a yaml-cpp node, marks and quoting kept.
Node to_node(const YAML::Node& y, const Origin& origin, int depth = 0) {
  Node n;
  n.mark = mark_of(y.Mark());
  if (depth > kMaxDepth) {
    fail(origin, n.mark, "values nest more than " + std::to_string(kMaxDepth) + " levels deep (a recursive alias?)");
  }
  switch (y.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      n.kind = Node::Kind::kNull;
      break;
    case YAML::NodeType::Scalar:
      n.kind = Node::Kind::kScalar;
      n.scalar = y.Scalar();
      // Quoted scalars ("16", '16', !!str 16) are strings whatever they look like.
      n.quoted = y.Tag() == "!" || y.Tag() == "tag:yaml.org,2002:str";
      break;
    case YAML::NodeType::Sequence:
      n.kind = Node::Kind::kSequence;
      for (const auto& item : y) n.items.push_back(to_node(item, origin, depth + 1));
      break;
    case YAML::NodeType::Map:
      n.kind = Node::Kind::kMap;
      for (const auto& entry : y) {
        n.entries.emplace_back(to_node(entry.first, origin, depth + 1), to_node(entry.second, origin, depth + 1));
      }
      break;
  }
  return n;
}

void emit(YAML::Emitter& out, const Node& n) {
  switch (n.kind) {
    case Node::Kind::kNull:
      out << YAML::Null;
      break;
    case Node::Kind::kScalar:
      out << (n.quoted ? YAML::DoubleQuoted : YAML::Auto) << n.scalar;
      break;
    case Node::Kind::kSequence:
      if (n.flow) out << YAML::Flow;
      out << YAML::BeginSeq;
      for (const auto& item : n.items) emit(out, item);
      out << YAML::EndSeq;
      break;
    case Node::Kind::kMap:
      out << YAML::BeginMap;
      for (const auto& e : n.entries) {
        out << YAML::Key;
        emit(out, e.first);
        out << YAML::Value;
        emit(out, e.second);
      }
      out << YAML::EndMap;
      break;
  }
}

// The one document of `yaml` as a tree (null when empty); parse errors carry file:line:col.
Node parse_document(const std::string& yaml, const Origin& where) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(yaml);
  } catch (const YAML::Exception& e) {  // ParserException and friends carry the mark
    fail(where, mark_of(e.mark), e.msg);
  }
  if (docs.size() > 1) {
    fail(where, mark_of(docs[1].Mark()), "expected one YAML document, found " + std::to_string(docs.size()));
  }
  return docs.empty() ? Node{} : to_node(docs[0], where);
}

// Decodes one YAML document of `yaml` into a default T (strictly).
template <class T>
T decode_document(const std::string& yaml, const std::string& origin) {
  Origin where{origin, true};
  T value;
  detail::decode_section(value, parse_document(yaml, where), "", where);
  return value;
}

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
    fail(origin, Mark{}, "expected KEY=VALUE, e.g. --set video.sampler.frames=16");
  }
  std::string key = trim(arg.substr(0, eq));
  // "sources[0].url" (as messages print it) is "sources.0.url".
  for (size_t open = key.find('['); open != std::string::npos; open = key.find('[', open)) {
    size_t close = key.find(']', open);
    if (close == std::string::npos) break;
    key = key.substr(0, open) + "." + key.substr(open + 1, close - open - 1) + key.substr(close + 1);
  }
  const std::vector<std::string> segments = detail::split_key_path(key);
  if (key.empty() || key.back() == '.' ||
      std::any_of(segments.begin(), segments.end(), [](const std::string& s) { return s.empty(); })) {
    fail(origin, Mark{}, "'" + key + "' is not a key path (expected e.g. video.sampler.frames)");
  }
  Node value;
  try {
    value = to_node(YAML::Load(arg.substr(eq + 1)), origin);
  } catch (const YAML::Exception& e) {
    fail(origin, Mark{}, "cannot parse the value as YAML: " + e.msg);
  }
  detail::PathSetter setter(segments, 0, value, origin);
  config.visit(setter);
  if (!setter.found()) fail(origin, Mark{}, detail::unknown_key(config, "", segments[0]));
}


template <class Root>
Root finish(Root config, const std::vector<std::string>& overrides) {
  for (const auto& arg : overrides) apply_override(config, arg);
  detail::Validator validator;
  config.visit(validator);
  return config;
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

std::string emit_yaml(const Node& node) {
  YAML::Emitter out;
  emit(out, node);
  return out.c_str();
}

Config load_string(const std::string& yaml, const std::string& origin, const std::vector<std::string>& overrides) {
  return finish(decode_document<Config>(yaml, origin), overrides);
}

Config load(const std::string& path, const std::vector<std::string>& overrides) {
  Config config = load_string(read_config_file(path), path, overrides);
  MD_LOG_DEBUG("config", "loaded " << path << " with " << overrides.size() << " override(s)");
  return config;
}

Config defaults_with(const std::vector<std::string>& overrides) { return finish(Config{}, overrides); }

std::string to_yaml(const Config& config) { return print_yaml(config); }
std::string to_yaml(const JobConfig& job) { return print_yaml(job); }
std::string to_yaml(const MonitorConfig& monitor) { return print_yaml(monitor); }

std::vector<std::string> job_key_paths() { return list_key_paths<JobConfig>(); }
std::vector<std::string> monitor_key_paths() { return list_key_paths<MonitorConfig>(); }
std::vector<std::string> key_paths() { return list_key_paths<Config>(); }

PipelineConfig load_pipeline_string(const std::string& yaml, const std::string& origin) {
  PipelineConfig p;
  p.origin = Origin{origin, true};
  p.sections.kind = Node::Kind::kMap;
  const Node doc = parse_document(yaml, p.origin);
  if (doc.is_null()) return p;
  detail::KeyNames names;
  p.visit(names);
  detail::for_each_key(doc, "", p.origin, [&](const std::string& name, const Node& key, const Node& value) {
    if (std::count(names.names.begin(), names.names.end(), name) == 0) {
      p.sections.entries.emplace_back(key, value);  // a pruner's section: its pruner decodes it
      return;
    }
    detail::FieldDecoder decoder(name, value, key.mark, name, p.origin);
    p.visit(decoder);
  });
  detail::Validator validator;
  p.visit(validator);
  return p;
}

PipelineConfig load_pipeline(const std::string& path) {
  return load_pipeline_string(read_config_file(path), path);
}

Section PipelineConfig::section(const std::string& key_path) const {
  Section out{Node{}, key_path, origin};
  const Node* at = &sections;
  std::string path;
  for (const std::string& segment : detail::split_key_path(key_path)) {
    if (at->is_null()) return out;  // `mustdrop:` with nothing under it
    if (!at->is_map()) {
      fail(origin, at->mark, path + ": expected a section (a map of keys), found " + detail::describe(*at));
    }
    path = detail::join_path(path, segment);
    at = at->find(segment);
    if (!at) return out;
  }
  if (!at->is_null() && !at->is_map()) {
    fail(origin, at->mark, key_path + ": expected a section (a map of keys), found " + detail::describe(*at));
  }
  out.node = *at;
  return out;
}

JobConfig load_job_string(const std::string& yaml, const std::string& origin, const std::vector<std::string>& overrides) {
  return finish(decode_document<JobConfig>(yaml, origin), overrides);
}

JobConfig load_job(const std::string& path, const std::vector<std::string>& overrides) {
  return load_job_string(read_config_file(path), path, overrides);
}

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

}  // namespace mustdrop::config