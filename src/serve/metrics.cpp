// Metrics registry and its Prometheus text rendering (exposition format 0.0.4). One mutex guards
// everything: updates are a map lookup and an addition, renders happen once per scrape.
#include "serve/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "core/error.h"

namespace mustdrop::serve {
namespace {

bool valid_name(const std::string& s, bool allow_colon) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// A number as Prometheus parses it: integers without exponent, otherwise the shortest text that
// reads back to the same double; NaN, +Inf, -Inf spelled as Go's ParseFloat accepts them.
std::string format_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == 0) return "0";  // also -0
  char buf[64];
  std::to_chars_result r;
  if (std::nearbyint(v) == v && std::fabs(v) < 1e15) {
    r = std::to_chars(buf, buf + sizeof buf, static_cast<int64_t>(v));
  } else {
    r = std::to_chars(buf, buf + sizeof buf, v);  // shortest round-trip, locale-independent
  }
  return std::string(buf, r.ptr);
}

// Label values escape backslash, double quote and newline; HELP text only backslash and newline.
std::string escape(const std::string& s, bool quote) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

// {a="x",b="y"} (plus le="..." for a histogram bucket); "" for no labels at all.
std::string label_text(const Labels& labels, const std::string* le) {
  if (labels.empty() && le == nullptr) return "";
  std::string out = "{";
  for (const auto& [key, val] : labels) {
    if (out.size() > 1) out += ',';
    out += key + "=\"" + escape(val, true) + "\"";
  }
  if (le != nullptr) out += std::string(out.size() > 1 ? "," : "") + "le=\"" + *le + "\"";
  return out + "}";
}

// The same key for the same pairs in any order (length-prefixed, so any byte may appear).
std::string series_key(const Labels& labels) {
  Labels sorted = labels;
  std::sort(sorted.begin(), sorted.end());
  std::string key;
  for (const auto& [k, v] : sorted) key += std::to_string(k.size()) + ":" + k + std::to_string(v.size()) + ":" + v;
  return key;
}

}  // namespace

struct Registry::Family {
  struct Series {
    Labels labels;                // as first seen
    double value = 0;             // counter or gauge
    std::vector<uint64_t> counts;  // histogram: per bucket (not cumulative), the last one +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  std::string name;
  std::string help;
  Kind kind = Kind::kGauge;
  std::vector<double> bounds;  // finite upper bounds, ascending
  std::vector<Series> series;  // insertion order
  std::map<std::string, size_t> index;

  const char* kind_name() const {
    switch (kind) {
      case Kind::kCounter: return "counter";
      case Kind::kGauge: return "gauge";
      case Kind::kHistogram: return "histogram";
    }
    return "?";
  }

  const Series* find(const Labels& labels) const {
    const auto it = index.find(series_key(labels));
    return it == index.end() ? nullptr : &series[it->second];
  }

  // The series for `labels`, created (after validating its label names) on first use.
  Series& at(const Labels& labels) {
    const std::string key = series_key(labels);
    const auto it = index.find(key);
    if (it != index.end()) return series[it->second];
    for (size_t i = 0; i < labels.size(); ++i) {
      const std::string& label = labels[i].first;
      std::string why;
      if (!valid_name(label, false)) why = "is not valid (expected [a-zA-Z_][a-zA-Z0-9_]*)";
      else if (label.compare(0, 2, "__") == 0) why = "is reserved (starts with __)";
      else if (kind == Kind::kHistogram && label == "le") why = "is reserved for histogram buckets";
      for (size_t j = 0; j < i && why.empty(); ++j) {
        if (labels[j].first == label) why = "appears twice";
      }
      if (!why.empty()) throw InternalError("metric '" + name + "': label name '" + label + "' " + why);
    }
    Series s;
    s.labels = labels;
    if (kind == Kind::kHistogram) s.counts.assign(bounds.size() + 1, 0);
    series.push_back(std::move(s));
    index.emplace(key, series.size() - 1);
    return series.back();
  }
};

Registry::Registry() = default;
Registry::~Registry() = default;

Registry::Family& Registry::declare(const std::string& name, const std::string& help, Kind kind,
                                    std::vector<double> buckets) {
  if (!valid_name(name, true)) {
    throw InternalError("metric '" + name + "': not a valid metric name (expected [a-zA-Z_:][a-zA-Z0-9_:]*)");
  }
  if (!buckets.empty() && std::isinf(buckets.back()) && buckets.back() > 0) buckets.pop_back();
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (!std::isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1]))) {
      throw InternalError("metric '" + name + "': histogram bucket bounds must be finite and strictly ascending, got " +
                          format_number(buckets[i]) + (i > 0 ? " after " + format_number(buckets[i - 1]) : ""));
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = by_name_.find(name);
  if (it != by_name_.end()) {
    Family& existing = *it->second;
    if (existing.kind != kind || existing.bounds != buckets) {
      throw InternalError("metric '" + name + "': already declared as a " + existing.kind_name() +
                          (existing.kind == Kind::kHistogram ? " with other buckets" : ""));
    }
    return existing;
  }
  auto family = std::make_unique<Family>();
  family->name = name;
  family->help = help;
  family->kind = kind;
  family->bounds = std::move(buckets);
  by_name_.emplace(name, family.get());
  families_.push_back(std::move(family));
  return *families_.back();
}

Registry::Family& Registry::family(const std::string& name, const char* use) const {
  const auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    throw InternalError("metric '" + name + "': not declared (" + use + " before counter/gauge/histogram)");
  }
  return *it->second;
}

void Registry::counter(const std::string& name, const std::string& help) { declare(name, help, Kind::kCounter, {}); }

void Registry::gauge(const std::string& name, const std::string& help) { declare(name, help, Kind::kGauge, {}); }

void Registry::histogram(const std::string& name, const std::string& help, std::vector<double> buckets) {
  declare(name, help, Kind::kHistogram, std::move(buckets));
}

void Registry::set(const std::string& name, const Labels& labels, double value) {
  std::lock_guard<std::mutex> lock(mutex_);
  Family& f = family(name, "set");
  if (f.kind == Kind::kHistogram) throw InternalError("metric '" + name + "': a histogram cannot be set; use observe()");
  f.at(labels).value = value;
}

void Registry::add(const std::string& name, const Labels& labels, double delta) {
  std::lock_guard<std::mutex> lock(mutex_);
  Family& f = family(name, "add");
  if (f.kind == Kind::kHistogram) throw InternalError("metric '" + name + "': a histogram cannot be added to; use observe()");
  if (f.kind == Kind::kCounter && !(delta >= 0)) {
    throw InternalError("metric '" + name + "': a counter only goes up, got add(" + format_number(delta) + ")");
  }
  f.at(labels).value += delta;
}

void Registry::observe(const std::string& name, const Labels& labels, double value) {
  std::lock_guard<std::mutex> lock(mutex_);
  Family& f = family(name, "observe");
  if (f.kind != Kind::kHistogram) {
    throw InternalError("metric '" + name + "': a " + f.kind_name() + " cannot observe; use set() or add()");
  }
  Family::Series& s = f.at(labels);
  // Buckets are inclusive upper bounds (value <= le); NaN and values past the last bound land in +Inf.
  const size_t bucket = static_cast<size_t>(std::lower_bound(f.bounds.begin(), f.bounds.end(), value) - f.bounds.begin());
  ++s.counts[std::isnan(value) ? f.bounds.size() : bucket];
  s.sum += value;
  ++s.count;
}

std::string Registry::render() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  for (const auto& f : families_) {
    out += "# HELP " + f->name + " " + escape(f->help, false) + "\n";
    out += "# TYPE " + f->name + " " + f->kind_name() + "\n";
    for (const Family::Series& s : f->series) {
      if (f->kind != Kind::kHistogram) {
        out += f->name + label_text(s.labels, nullptr) + " " + format_number(s.value) + "\n";
        continue;
      }
      uint64_t cumulative = 0;
      for (size_t i = 0; i <= f->bounds.size(); ++i) {
        cumulative += s.counts[i];
        const std::string le = i < f->bounds.size() ? format_number(f->bounds[i]) : "+Inf";
        out += f->name + "_bucket" + label_text(s.labels, &le) + " " + std::to_string(cumulative) + "\n";
      }
      out += f->name + "_sum" + label_text(s.labels, nullptr) + " " + format_number(s.sum) + "\n";
      out += f->name + "_count" + label_text(s.labels, nullptr) + " " + std::to_string(s.count) + "\n";
    }
  }
  return out;
}

double Registry::value(const std::string& name, const Labels& labels) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const Family& f = family(name, "value");
  const Family::Series* s = f.find(labels);
  if (s == nullptr) return 0;
  return f.kind == Kind::kHistogram ? static_cast<double>(s->count) : s->value;
}

}  // namespace mustdrop::serve
