// Metrics registry: render() against hand-written exposition text, number spelling, escaping,
// errors that name the metric, exact sums under concurrent updates.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "serve/metrics.h"

namespace mustdrop::serve {
namespace {

TEST(Metrics, RenderMatchesHandWrittenText) {
  Registry r;
  r.counter("md_frames_total", "Frames decoded.");
  r.gauge("md_kv_bytes", "KV cache bytes.");
  r.histogram("md_ttft_seconds", "Time to first token.", {0.1, 0.5, 1});
  r.add("md_frames_total", {{"camera", "front"}}, 3);
  r.add("md_frames_total", {{"camera", "back"}}, 2);
  r.add("md_frames_total", {{"camera", "front"}}, 4);
  r.set("md_kv_bytes", {}, 1000);
  r.set("md_kv_bytes", {}, 123456789);
  // 0.0625 <= 0.1; 0.5 <= 0.5 (bounds are inclusive); 0.75 <= 1; 2.5 only in +Inf.
  for (double v : {0.0625, 0.5, 0.75, 2.5}) r.observe("md_ttft_seconds", {{"camera", "front"}}, v);
  const std::string expected =
      "# HELP md_frames_total Frames decoded.\n"
      "# TYPE md_frames_total counter\n"
      "md_frames_total{camera=\"front\"} 7\n"
      "md_frames_total{camera=\"back\"} 2\n"
      "# HELP md_kv_bytes KV cache bytes.\n"
      "# TYPE md_kv_bytes gauge\n"
      "md_kv_bytes 123456789\n"
      "# HELP md_ttft_seconds Time to first token.\n"
      "# TYPE md_ttft_seconds histogram\n"
      "md_ttft_seconds_bucket{camera=\"front\",le=\"0.1\"} 1\n"
      "md_ttft_seconds_bucket{camera=\"front\",le=\"0.5\"} 2\n"
      "md_ttft_seconds_bucket{camera=\"front\",le=\"1\"} 3\n"
      "md_ttft_seconds_bucket{camera=\"front\",le=\"+Inf\"} 4\n"
      "md_ttft_seconds_sum{camera=\"front\"} 3.8125\n"
      "md_ttft_seconds_count{camera=\"front\"} 4\n";
  EXPECT_EQ(r.render(), expected);

  EXPECT_EQ(r.value("md_frames_total", {{"camera", "front"}}), 7);
  EXPECT_EQ(r.value("md_frames_total", {{"camera", "side"}}), 0);  // absent
  EXPECT_EQ(r.value("md_kv_bytes", {}), 123456789);
  EXPECT_EQ(r.value("md_ttft_seconds", {{"camera", "front"}}), 4);  // a histogram's count
}

TEST(Metrics, LabelOrderDoesNotSplitASeries) {
  Registry r;
  r.counter("reqs", "Requests.");
  r.add("reqs", {{"a", "1"}, {"b", "2"}}, 1);
  r.add("reqs", {{"b", "2"}, {"a", "1"}}, 1);
  EXPECT_EQ(r.render(), "# HELP reqs Requests.\n# TYPE reqs counter\nreqs{a=\"1\",b=\"2\"} 2\n");
  EXPECT_EQ(r.value("reqs", {{"b", "2"}, {"a", "1"}}), 2);
}

TEST(Metrics, NumbersAreSpelledForPrometheus) {
  Registry r;
  r.gauge("g", "h");
  const std::vector<std::pair<double, std::string>> cases = {
      {0, "0"},
      {-0.0, "0"},
      {-3, "-3"},
      {1000000, "1000000"},  // an integer, no exponent (shortest round-trip would give 1e+06)
      {1234567890123, "1234567890123"},
      {0.1, "0.1"},
      {2.5e-7, "2.5e-07"},
      {1e20, "1e+20"},
      {std::numeric_limits<double>::quiet_NaN(), "NaN"},
      {std::numeric_limits<double>::infinity(), "+Inf"},
      {-std::numeric_limits<double>::infinity(), "-Inf"},
  };
  for (const auto& [v, text] : cases) {
    r.set("g", {}, v);
    EXPECT_EQ(r.render(), "# HELP g h\n# TYPE g gauge\ng " + text + "\n") << v;
  }
}

TEST(Metrics, LabelValuesAndHelpAreEscaped) {
  Registry r;
  r.gauge("g", "back\\slash\nnew \"line\"");
  r.set("g", {{"path", "C:\\dir\n\"x\""}}, 1);
  EXPECT_EQ(r.render(), "# HELP g back\\\\slash\\nnew \"line\"\n"
                        "# TYPE g gauge\n"
                        "g{path=\"C:\\\\dir\\n\\\"x\\\"\"} 1\n");
}

// Runs `f`, expects InternalError whose message names `metric`.
template <typename F>
void expect_internal_error(F f, const std::string& metric) {
  try {
    f();
    ADD_FAILURE() << "no InternalError for '" << metric << "'";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("'" + metric + "'"), std::string::npos) << e.what();
  }
}

TEST(Metrics, MisuseThrowsNamingTheMetric) {
  Registry r;
  r.counter("c_total", "c");
  r.gauge("g", "g");
  r.histogram("h", "h", {1, 2});
  expect_internal_error([&] { r.set("nope", {}, 1); }, "nope");
  expect_internal_error([&] { r.add("nope", {}, 1); }, "nope");
  expect_internal_error([&] { r.observe("nope", {}, 1); }, "nope");
  expect_internal_error([&] { r.value("nope", {}); }, "nope");
  expect_internal_error([&] { r.observe("c_total", {}, 1); }, "c_total");
  expect_internal_error([&] { r.observe("g", {}, 1); }, "g");
  expect_internal_error([&] { r.set("h", {}, 1); }, "h");
  expect_internal_error([&] { r.add("h", {}, 1); }, "h");
  expect_internal_error([&] { r.add("c_total", {}, -1); }, "c_total");
  expect_internal_error([&] { r.gauge("c_total", "again, as another kind"); }, "c_total");
  expect_internal_error([&] { r.histogram("h", "h", {1, 3}); }, "h");
  for (const std::string bad : {"", "1abc", "a-b", "a b", "é"}) {
    expect_internal_error([&] { r.counter(bad, "x"); }, bad);
  }
  expect_internal_error([&] { r.histogram("h2", "x", {1, 0.5}); }, "h2");
  expect_internal_error([&] { r.histogram("h3", "x", {1, std::nan("")}); }, "h3");
  // Label names: grammar, reserved prefixes, "le" on a histogram, duplicates; the metric is named.
  expect_internal_error([&] { r.set("g", {{"bad-label", "v"}}, 1); }, "g");
  expect_internal_error([&] { r.set("g", {{"9x", "v"}}, 1); }, "g");
  expect_internal_error([&] { r.set("g", {{"__name", "v"}}, 1); }, "g");
  expect_internal_error([&] { r.set("g", {{"a", "1"}, {"a", "2"}}, 1); }, "g");
  expect_internal_error([&] { r.observe("h", {{"le", "1"}}, 1); }, "h");

  // What is allowed: a colon in metric names, redeclaring the same kind, a trailing +Inf bound.
  r.gauge("ns:sub_metric", "ok");
  r.counter("c_total", "same kind again");
  r.histogram("h", "h", {1, 2, std::numeric_limits<double>::infinity()});
  r.set("g", {{"_ok", "v"}, {"le", "fine on a gauge"}}, 1);
  // Nothing failed half-way left a series behind.
  EXPECT_EQ(r.render(),
            "# HELP c_total c\n# TYPE c_total counter\n"
            "# HELP g g\n# TYPE g gauge\ng{_ok=\"v\",le=\"fine on a gauge\"} 1\n"
            "# HELP h h\n# TYPE h histogram\n"
            "# HELP ns:sub_metric ok\n# TYPE ns:sub_metric gauge\n");
}

TEST(Metrics, ConcurrentUpdatesSumExactly) {
  Registry r;
  r.counter("hits_total", "Hits.");
  r.histogram("lat", "Latency.", {0.5});
  const int n_threads = 4;
  const int n_each = 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < n_threads; ++t) {
    threads.emplace_back([&r, t] {
      for (int i = 0; i < n_each; ++i) {
        r.add("hits_total", {{"shard", t % 2 == 0 ? "even" : "odd"}}, 1);
        r.observe("lat", {}, i % 2 == 0 ? 0.25 : 1.0);
        if (i % 1000 == 0) (void)r.render();  // scrapes race with updates
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(r.value("hits_total", {{"shard", "even"}}), 2.0 * n_each);
  EXPECT_EQ(r.value("hits_total", {{"shard", "odd"}}), 2.0 * n_each);
  EXPECT_EQ(r.value("lat", {}), 4.0 * n_each);
  const std::string text = r.render();
  EXPECT_NE(text.find("lat_bucket{le=\"0.5\"} 100000\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_bucket{le=\"+Inf\"} 200000\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_sum 125000\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace mustdrop::serve
