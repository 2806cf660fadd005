// A tiny thread-safe metrics registry rendered in the Prometheus text exposition format 0.0.4
// (served at /metrics by `mustdrop monitor`), with a snapshot read for other outputs.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace mustdrop::serve {

// Label name/value pairs of one sample; two sets with the same pairs in another order are the
// same series (rendered in the order first seen).
using Labels = std::vector<std::pair<std::string, std::string>>;

// Families are declared once (name, help, type); samples are set per label set. Every misuse
// (undeclared name, wrong kind, a name or label name outside the Prometheus grammar, a
// conflicting redeclaration, a negative counter increment) throws InternalError naming the metric.
class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Declares a counter; redeclaring the same name as the same kind is a no-op.
  void counter(const std::string& name, const std::string& help);
  // Declares a gauge; redeclaring the same name as the same kind is a no-op.
  void gauge(const std::string& name, const std::string& help);
  // Declares a histogram with finite, strictly ascending upper bounds (+Inf is added; a trailing
  // +Inf given here is dropped); redeclaring with the same bounds is a no-op.
  void histogram(const std::string& name, const std::string& help, std::vector<double> buckets);

  // Sets a gauge, or a counter to the running total its owner keeps.
  void set(const std::string& name, const Labels& labels, double value);
  // Adds `delta` to a gauge, or to a counter (delta >= 0).
  void add(const std::string& name, const Labels& labels, double delta);
  // Records one observation in a histogram.
  void observe(const std::string& name, const Labels& labels, double value);

  // The text format: # HELP / # TYPE once per family, families in declaration order, series in
  // insertion order; histograms as cumulative _bucket{le=...}, _sum, _count.
  std::string render() const;
  // A sample's value (a histogram: its observation count); 0 when that label set has none yet.
  double value(const std::string& name, const Labels& labels) const;

 private:
  struct Family;
  enum class Kind { kCounter, kGauge, kHistogram };
  Family& declare(const std::string& name, const std::string& help, Kind kind, std::vector<double> buckets);
  Family& family(const std::string& name, const char* use) const;

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Family>> families_;  // declaration order
  std::map<std::string, Family*> by_name_;
};

}  // namespace mustdrop::serve
