#include "driver/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>

#include <boost/json.hpp>

namespace kos::driver {

namespace {

namespace json = boost::json;

constexpr const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string ms(double seconds) { return fmt("%.2f", seconds * 1e3); }

bool stage_measured(const RunReport& r, Stage s) {
  if (s == Stage::kImplemented) return r.measure_implemented;
  if (s == Stage::kTested) return r.measure_tested;
  if (s == Stage::kInForce) return r.measure_policy;
  if (s == Stage::kMember) return r.measure_policy && r.measure_implemented;
  return true;
}

const char* not_measured_reason(Stage s) {
  if (s == Stage::kInForce) return "not measured (no --security-groups)";
  if (s == Stage::kMember) return "not measured (needs --security-groups and --agent-endpoints)";
  return s == Stage::kImplemented ? "not measured (no --agent-endpoints)" : "not measured (no --ping)";
}

// A latency tick label: "0.1 ms", "20 ms", "1 s".
std::string time_label(double seconds) {
  if (seconds >= 1) return fmt("%.3g s", seconds);
  return fmt("%.3g ms", seconds * 1e3);
}

struct Frame {
  double width = 760, height = 380, left = 70, right = 20, top = 40, bottom = 50;
  double pw() const { return width - left - right; }
  double ph() const { return height - top - bottom; }
};

std::string svg_open(const Frame& f, const std::string& title) {
  std::string out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt("%g", f.width) + "\" height=\"" +
                    fmt("%g", f.height) + "\" viewBox=\"0 0 " + fmt("%g", f.width) + " " + fmt("%g", f.height) +
                    "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  out += "<rect x=\"0\" y=\"0\" width=\"" + fmt("%g", f.width) + "\" height=\"" + fmt("%g", f.height) +
         "\" fill=\"white\"/>\n";
  out += "<text x=\"" + fmt("%g", f.width / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" +
         html_escape(title) + "</text>\n";
  return out;
}

std::string line(double x1, double y1, double x2, double y2, const std::string& style) {
  return "<line x1=\"" + fmt("%.1f", x1) + "\" y1=\"" + fmt("%.1f", y1) + "\" x2=\"" + fmt("%.1f", x2) + "\" y2=\"" +
         fmt("%.1f", y2) + "\" " + style + "/>\n";
}

std::string text(double x, double y, const std::string& s, const std::string& anchor = "middle") {
  return "<text x=\"" + fmt("%.1f", x) + "\" y=\"" + fmt("%.1f", y) + "\" text-anchor=\"" + anchor + "\">" +
         html_escape(s) + "</text>\n";
}

// The legend, under the plot (it never hides a line): one row per series.
std::string legend(const Frame& f, const std::vector<Series>& series, const std::vector<std::string>& extra) {
  std::string out;
  double y = f.top + f.ph() + 58;
  for (size_t i = 0; i < series.size(); ++i) {
    out += line(f.left + 8, y - 4, f.left + 28, y - 4, "stroke=\"" + series[i].color + "\" stroke-width=\"2\"");
    out += text(f.left + 34, y, series[i].name + extra[i], "start");
    y += 16;
  }
  return out;
}

// A frame with room for the legend of `n` series under the plot.
Frame frame_for(size_t n) {
  Frame f;
  f.height = 330 + 16 * static_cast<double>(n);
  f.bottom = 50 + 16 * static_cast<double>(n) + 10;
  return f;
}

}  // namespace

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string cdf_svg(const std::string& title, const std::vector<Series>& series) {
  Frame f = frame_for(series.size());
  std::string out = svg_open(f, title);
  double lo = INFINITY, hi = 0;
  for (const auto& s : series)
    for (double v : s.values) {
      double x = std::max(v, 1e-6);
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
  if (hi == 0) {
    out += text(f.width / 2, f.height / 2, "no samples");
    return out + "</svg>\n";
  }
  double dlo = std::floor(std::log10(lo)), dhi = std::ceil(std::log10(hi));
  if (dhi <= dlo) dhi = dlo + 1;
  auto X = [&](double v) { return f.left + (std::log10(std::max(v, 1e-6)) - dlo) / (dhi - dlo) * f.pw(); };
  auto Y = [&](double p) { return f.top + (1 - p) * f.ph(); };
  // Grid: decades (labelled) with 2x and 5x minor lines; fractions 0, .25, .5, .75, .9, .99, 1.
  for (double d = dlo; d <= dhi; ++d) {
    double v = std::pow(10.0, d);
    out += line(X(v), Y(0), X(v), Y(1), "stroke=\"#ccc\"");
    out += text(X(v), Y(0) + 16, time_label(v));
    if (d < dhi)
      for (double m : {2.0, 5.0}) out += line(X(v * m), Y(0), X(v * m), Y(1), "stroke=\"#eee\"");
  }
  for (double p : {0.0, 0.25, 0.5, 0.75, 0.9, 0.99}) {
    out += line(f.left, Y(p), f.left + f.pw(), Y(p), p == 0.9 || p == 0.99 ? "stroke=\"#ddd\" stroke-dasharray=\"4 3\"" : "stroke=\"#ccc\"");
    out += text(f.left - 6, Y(p) + 4, fmt("%g", p * 100) + "%", "end");
  }
  out += text(f.left + f.pw() / 2, f.top + f.ph() + 36, "latency (log scale)");
  std::vector<std::string> extra;
  for (const auto& s : series) {
    if (s.values.empty()) {
      extra.push_back(" (no samples)");
      continue;
    }
    std::vector<double> v = s.values;
    std::sort(v.begin(), v.end());
    auto sum = summarize(v);
    extra.push_back(" (n=" + std::to_string(v.size()) + ", p50 " + time_label(sum.p50) + ", p99 " + time_label(sum.p99) + ")");
    // A step function through at most ~1000 points (quantiles of large samples).
    const size_t n = v.size(), steps = std::min<size_t>(n, 1000);
    std::string pts = fmt("%.1f", X(v.front())) + "," + fmt("%.1f", Y(0));
    for (size_t k = 0; k < steps; ++k) {
      size_t i = steps == n ? k : (k + 1) * n / steps - 1;
      double p_before = steps == n ? static_cast<double>(k) / n : static_cast<double>(k * n / steps) / n;
      double p_after = static_cast<double>(i + 1) / n;
      pts += " " + fmt("%.1f", X(v[i])) + "," + fmt("%.1f", Y(p_before));
      pts += " " + fmt("%.1f", X(v[i])) + "," + fmt("%.1f", Y(p_after));
    }
    out += "<polyline fill=\"none\" stroke=\"" + s.color + "\" stroke-width=\"2\" points=\"" + pts + "\"/>\n";
  }
  out += "<rect x=\"" + fmt("%g", f.left) + "\" y=\"" + fmt("%g", f.top) + "\" width=\"" + fmt("%g", f.pw()) +
         "\" height=\"" + fmt("%g", f.ph()) + "\" fill=\"none\" stroke=\"#444\"/>\n";
  out += legend(f, series, extra);
  return out + "</svg>\n";
}

namespace {
// The marks as labelled vertical lines between y0 (bottom) and y1 (top), labels staggered
// so that close marks stay readable.
std::string draw_marks(const Marks& marks, const std::function<double(double)>& X, double y0, double y1) {
  std::string out;
  int k = 0;
  for (const auto& [t, label] : marks) {
    const double x = X(t);
    out += line(x, y0, x, y1, "stroke=\"#c00\" stroke-dasharray=\"3 3\"");
    out += "<text x=\"" + fmt("%.1f", x + 3) + "\" y=\"" + fmt("%.1f", y1 + 12 + 13 * (k++ % 4)) +
           "\" fill=\"#c00\" font-size=\"11\">" + html_escape(label) + "</text>\n";
  }
  return out;
}
}  // namespace

std::string timeline_svg(const std::string& title, const std::vector<Series>& series, const Marks& marks) {
  Frame f = frame_for(series.size());
  std::string out = svg_open(f, title);
  double end = 0;
  for (const auto& s : series)
    for (double v : s.values) end = std::max(end, v);
  for (const auto& m : marks) end = std::max(end, m.first);
  if (end <= 0) {
    out += text(f.width / 2, f.height / 2, "no events");
    return out + "</svg>\n";
  }
  // Bins of a round width giving at most ~50 of them.
  double bin = 600;
  for (double w : {0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0})
    if (end / w <= 50) {
      bin = w;
      break;
    }
  size_t bins = static_cast<size_t>(std::ceil(end / bin)) + 1;
  std::vector<std::vector<double>> rates;
  double top_rate = 1;
  for (const auto& s : series) {
    std::vector<double> r(bins, 0);
    for (double v : s.values) r[std::min(bins - 1, static_cast<size_t>(std::max(0.0, v) / bin))] += 1 / bin;
    for (double x : r) top_rate = std::max(top_rate, x);
    rates.push_back(std::move(r));
  }
  double ymax = std::pow(10.0, std::floor(std::log10(top_rate)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (ymax * m >= top_rate) {
      ymax *= m;
      break;
    }
  auto X = [&](double t) { return f.left + t / (static_cast<double>(bins) * bin) * f.pw(); };
  auto Y = [&](double r) { return f.top + (1 - r / ymax) * f.ph(); };
  for (int k = 0; k <= 5; ++k) {
    double r = ymax * k / 5;
    out += line(f.left, Y(r), f.left + f.pw(), Y(r), "stroke=\"#ddd\"");
    out += text(f.left - 6, Y(r) + 4, fmt("%g", r), "end");
  }
  double span = static_cast<double>(bins) * bin;
  double tick = std::pow(10.0, std::floor(std::log10(span / 2)));
  for (double t = 0; t <= span + 1e-9; t += tick) {
    out += line(X(t), Y(0), X(t), Y(0) + 4, "stroke=\"#444\"");
    out += text(X(t), Y(0) + 16, fmt("%g", t) + " s");
  }
  out += text(f.left + f.pw() / 2, f.top + f.ph() + 36, "time since the start of the run (per " + fmt("%g", bin) + " s bin)");
  out += "<text x=\"16\" y=\"" + fmt("%.1f", f.top + f.ph() / 2) + "\" transform=\"rotate(-90 16 " +
         fmt("%.1f", f.top + f.ph() / 2) + ")\" text-anchor=\"middle\">per second</text>\n";
  std::vector<std::string> extra;
  for (size_t i = 0; i < series.size(); ++i) {
    extra.push_back(" (" + std::to_string(series[i].values.size()) + ")");
    if (series[i].values.empty()) continue;
    std::string pts;
    for (size_t b = 0; b < bins; ++b)
      pts += (pts.empty() ? "" : " ") + fmt("%.1f", X((static_cast<double>(b) + 0.5) * bin)) + "," + fmt("%.1f", Y(rates[i][b]));
    out += "<polyline fill=\"none\" stroke=\"" + series[i].color + "\" stroke-width=\"1.5\" points=\"" + pts + "\"/>\n";
  }
  out += draw_marks(marks, X, Y(0), f.top);
  out += "<rect x=\"" + fmt("%g", f.left) + "\" y=\"" + fmt("%g", f.top) + "\" width=\"" + fmt("%g", f.pw()) +
         "\" height=\"" + fmt("%g", f.ph()) + "\" fill=\"none\" stroke=\"#444\"/>\n";
  out += legend(f, series, extra);
  return out + "</svg>\n";
}

std::string latency_timeline_svg(const std::string& title, const std::vector<std::pair<double, double>>& points,
                                 const Marks& marks) {
  Frame f = frame_for(0);
  std::string out = svg_open(f, title);
  if (points.empty()) {
    out += text(f.width / 2, f.height / 2, "no samples");
    return out + "</svg>\n";
  }
  double end = 0, lo = INFINITY, hi = 0;
  for (const auto& [t, l] : points) {
    end = std::max(end, t);
    lo = std::min(lo, std::max(l, 1e-6));
    hi = std::max(hi, std::max(l, 1e-6));
  }
  for (const auto& m : marks) end = std::max(end, m.first);
  end = std::max(end, 1e-3) * 1.02;
  double dlo = std::floor(std::log10(lo)), dhi = std::ceil(std::log10(hi));
  if (dhi <= dlo) dhi = dlo + 1;
  auto X = [&](double t) { return f.left + t / end * f.pw(); };
  auto Y = [&](double v) { return f.top + (1 - (std::log10(std::max(v, 1e-6)) - dlo) / (dhi - dlo)) * f.ph(); };
  for (double d = dlo; d <= dhi; ++d) {
    double v = std::pow(10.0, d);
    out += line(f.left, Y(v), f.left + f.pw(), Y(v), "stroke=\"#ccc\"");
    out += text(f.left - 6, Y(v) + 4, time_label(v), "end");
  }
  double tick = std::pow(10.0, std::floor(std::log10(end / 2)));
  for (double t = 0; t <= end + 1e-9; t += tick) {
    out += line(X(t), f.top + f.ph(), X(t), f.top + f.ph() + 4, "stroke=\"#444\"");
    out += text(X(t), f.top + f.ph() + 16, fmt("%g", t) + " s");
  }
  out += text(f.left + f.pw() / 2, f.top + f.ph() + 36, "create time, since the start of the run (latency on a log scale)");
  // At most ~4000 dots: one per group of k, the slowest of the group, so peaks show.
  const size_t k = std::max<size_t>(1, points.size() / 4000);
  for (size_t i = 0; i < points.size(); i += k) {
    auto p = points[i];
    for (size_t j = i; j < std::min(points.size(), i + k); ++j)
      if (points[j].second > p.second) p = points[j];
    out += "<circle cx=\"" + fmt("%.1f", X(p.first)) + "\" cy=\"" + fmt("%.1f", Y(p.second)) + "\" r=\"1.5\" fill=\"" +
           std::string(kColors[3]) + "\"/>\n";
  }
  out += draw_marks(marks, X, f.top + f.ph(), f.top);
  out += "<rect x=\"" + fmt("%g", f.left) + "\" y=\"" + fmt("%g", f.top) + "\" width=\"" + fmt("%g", f.pw()) +
         "\" height=\"" + fmt("%g", f.ph()) + "\" fill=\"none\" stroke=\"#444\"/>\n";
  return out + "</svg>\n";
}

std::vector<Window> windows(const RunReport& r) {
  std::vector<Window> out;
  uint64_t n = r.results.measured;
  if (r.windows < 2 || n == 0) return out;
  for (uint32_t w = 0; w < r.windows; ++w)
    out.push_back(Window{n * w / r.windows, n * (w + 1) / r.windows, {}});
  for (Stage s : kAllStages) {
    if (!stage_measured(r, s)) continue;
    const auto& st = r.results.stages[static_cast<size_t>(s)];
    if (s == Stage::kDelete || st.order.size() != st.seconds.size()) continue;  // not by creation order
    std::vector<std::vector<double>> per(out.size());
    for (size_t i = 0; i < st.seconds.size(); ++i) {
      size_t w = static_cast<size_t>(std::min<uint64_t>(st.order[i] * r.windows / n, r.windows - 1));
      per[w].push_back(st.seconds[i]);
    }
    for (size_t w = 0; w < out.size(); ++w) out[w].stages[s] = summarize(std::move(per[w]));
  }
  return out;
}

std::string summary_table(const RunReport& r) {
  std::string out;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "kos driver run %s: %llu measured attachments on %llu nodes over %llu VNIs; target %.4g creates/s, achieved %.4g/s\n",
                r.run_id.c_str(), static_cast<unsigned long long>(r.results.measured),
                static_cast<unsigned long long>(r.nodes), static_cast<unsigned long long>(r.vnis), r.target_rate,
                r.achieved_rate);
  out += buf;
  std::snprintf(buf, sizeof buf, "%-34s %8s %9s %10s %10s %10s %10s %10s\n", "stage", "count", "failures", "cancelled",
                "p50 ms", "p90 ms", "p99 ms", "max ms");
  out += buf;
  for (Stage s : kAllStages) {
    const auto& st = r.results.stages[static_cast<size_t>(s)];
    if (!stage_measured(r, s)) {
      std::snprintf(buf, sizeof buf, "%-34s %s\n", stage_label(s), not_measured_reason(s));
      out += buf;
      continue;
    }
    auto sum = summarize(st.seconds);
    std::snprintf(buf, sizeof buf, "%-34s %8zu %9llu %10llu %10s %10s %10s %10s\n", stage_label(s), sum.count,
                  static_cast<unsigned long long>(st.failures), static_cast<unsigned long long>(st.cancelled),
                  ms(sum.p50).c_str(), ms(sum.p90).c_str(), ms(sum.p99).c_str(), ms(sum.max).c_str());
    out += buf;
  }
  if (auto ws = windows(r); !ws.empty()) {
    out += "by creation order (p50/p99 ms):\n";
    std::snprintf(buf, sizeof buf, "%-16s", "attachments");
    out += buf;
    for (const auto& [s, _] : ws.front().stages) {
      std::snprintf(buf, sizeof buf, " %22s", stage_id(s));
      out += buf;
    }
    out += "\n";
    for (const auto& w : ws) {
      std::snprintf(buf, sizeof buf, "%-16s", (std::to_string(w.from) + "-" + std::to_string(w.to)).c_str());
      out += buf;
      for (const auto& [s, sum] : w.stages) {
        std::snprintf(buf, sizeof buf, " %22s", (ms(sum.p50) + " / " + ms(sum.p99)).c_str());
        out += buf;
      }
      out += "\n";
    }
  }
  for (const auto& n : r.notes) out += "note: " + n + "\n";
  for (Stage s : kAllStages)
    for (const auto& why : r.results.stages[static_cast<size_t>(s)].failure_samples)
      out += std::string("failure (") + stage_id(s) + "): " + why + "\n";
  return out;
}

namespace {

json::object stage_json(const StageResult& st) {
  auto sum = summarize(st.seconds);
  json::array samples;
  for (const auto& s : st.failure_samples) samples.push_back(json::string(s));
  return json::object{{"count", sum.count},         {"failures", st.failures}, {"cancelled", st.cancelled},
                      {"p50_ms", sum.p50 * 1e3},    {"p90_ms", sum.p90 * 1e3}, {"p99_ms", sum.p99 * 1e3},
                      {"max_ms", sum.max * 1e3},    {"mean_ms", sum.mean * 1e3},
                      {"failure_samples", std::move(samples)}};
}

}  // namespace

std::string summary_json(const RunReport& r) {
  json::object params;
  for (const auto& [k, v] : r.parameters) params[k] = v;
  json::object stages;
  for (Stage s : kAllStages)
    if (stage_measured(r, s)) stages[stage_id(s)] = stage_json(r.results.stages[static_cast<size_t>(s)]);
  json::array notes;
  for (const auto& n : r.notes) notes.push_back(json::string(n));
  json::array errs;
  for (const auto& n : r.results.status_error_samples) errs.push_back(json::string(n));
  json::object o{{"run_id", r.run_id},
                 {"parameters", std::move(params)},
                 {"measured_attachments", r.results.measured},
                 {"nodes", r.nodes},
                 {"vnis", r.vnis},
                 {"target_rate", r.target_rate},
                 {"achieved_rate", r.achieved_rate},
                 {"measured_seconds", r.measured_seconds},
                 {"schedule_lag_ms", json::object{{"p50", r.schedule_lag.p50 * 1e3},
                                                  {"p99", r.schedule_lag.p99 * 1e3},
                                                  {"max", r.schedule_lag.max * 1e3}}},
                 {"stages", std::move(stages)},
                 {"relevant_nodes", json::object{{"required", r.results.relevance.required},
                                                 {"programmed", r.results.relevance.programmed},
                                                 {"dropped", r.results.relevance.dropped}}},
                 {"status_errors", r.results.status_errors},
                 {"windows", [&] {
                    json::array a;
                    for (const auto& w : windows(r)) {
                      json::object st;
                      for (const auto& [s, sum] : w.stages)
                        st[stage_id(s)] = json::object{{"count", sum.count}, {"p50_ms", sum.p50 * 1e3},
                                                       {"p90_ms", sum.p90 * 1e3}, {"p99_ms", sum.p99 * 1e3}};
                      a.push_back(json::object{{"from", w.from}, {"to", w.to}, {"stages", std::move(st)}});
                    }
                    return a;
                  }()},
                 {"status_error_samples", std::move(errs)},
                 {"notes", std::move(notes)}};
  return json::serialize(o) + "\n";
}

std::string html_report(const RunReport& r) {
  std::string out =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>kos driver run " +
      html_escape(r.run_id) +
      "</title>\n<style>\nbody{font-family:sans-serif;margin:2em;color:#222}\ntable{border-collapse:collapse;margin:1em 0}\n"
      "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}\nth{background:#f4f4f4}\n"
      "td.l,th.l{text-align:left}\nfigure{margin:1.5em 0}\n.note{color:#a50}\n</style>\n</head>\n<body>\n";
  out += "<h1>kos driver run " + html_escape(r.run_id) + "</h1>\n";
  out += "<p>" + std::to_string(r.results.measured) + " measured attachments on " + std::to_string(r.nodes) +
         " nodes over " + std::to_string(r.vnis) + " VNIs; target " + fmt("%.4g", r.target_rate) +
         " creates/s, achieved " + fmt("%.4g", r.achieved_rate) + "/s over " + fmt("%.3g", r.measured_seconds) +
         " s. Latencies run from the start of the create call on the driver's clock; the agents' "
         "implementation times are on their clocks (same machine assumed).</p>\n";
  out += "<h2>Summary</h2>\n<table>\n<tr><th class=\"l\">stage</th><th>count</th><th>failures</th><th>cancelled</th>"
         "<th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th></tr>\n";
  for (Stage s : kAllStages) {
    const auto& st = r.results.stages[static_cast<size_t>(s)];
    if (!stage_measured(r, s)) {
      out += "<tr><td class=\"l\">" + html_escape(stage_label(s)) + "</td><td class=\"l\" colspan=\"7\">" +
             not_measured_reason(s) + "</td></tr>\n";
      continue;
    }
    auto sum = summarize(st.seconds);
    out += "<tr><td class=\"l\">" + html_escape(stage_label(s)) + "</td><td>" + std::to_string(sum.count) +
           "</td><td>" + std::to_string(st.failures) + "</td><td>" + std::to_string(st.cancelled) + "</td><td>" +
           ms(sum.p50) + "</td><td>" + ms(sum.p90) + "</td><td>" + ms(sum.p99) + "</td><td>" + ms(sum.max) +
           "</td></tr>\n";
  }
  out += "</table>\n";
  if (auto ws = windows(r); !ws.empty()) {
    out += "<h2>By creation order</h2>\n<p>p50 / p99 ms per group of measured attachments, in creation order "
           "(each group saw more existing attachments than the one before).</p>\n<table>\n<tr><th class=\"l\">"
           "attachments</th>";
    for (const auto& [st, _] : ws.front().stages) out += "<th>" + html_escape(stage_id(st)) + "</th>";
    out += "</tr>\n";
    for (const auto& w : ws) {
      out += "<tr><td class=\"l\">" + std::to_string(w.from) + "-" + std::to_string(w.to) + "</td>";
      for (const auto& [st, sum] : w.stages) out += "<td>" + ms(sum.p50) + " / " + ms(sum.p99) + "</td>";
      out += "</tr>\n";
    }
    out += "</table>\n";
  }
  if (r.measure_implemented)
    out += "<p>Relevant remote nodes over all measured attachments: " + std::to_string(r.results.relevance.required) +
           "; programmed the attachment: " + std::to_string(r.results.relevance.programmed) +
           "; stopped hosting the VNI first (not waited for): " + std::to_string(r.results.relevance.dropped) + ".</p>\n";
  out += "<p>Schedule lag (create call start after its scheduled time): p50 " + ms(r.schedule_lag.p50) + " ms, p99 " +
         ms(r.schedule_lag.p99) + " ms, max " + ms(r.schedule_lag.max) + " ms.</p>\n";
  for (const auto& n : r.notes) out += "<p class=\"note\">" + html_escape(n) + "</p>\n";
  std::string fails;
  for (Stage s : kAllStages)
    for (const auto& why : r.results.stages[static_cast<size_t>(s)].failure_samples)
      fails += "<li>" + html_escape(std::string(stage_id(s)) + ": " + why) + "</li>\n";
  for (const auto& e : r.results.status_error_samples) fails += "<li>status error: " + html_escape(e) + "</li>\n";
  if (!fails.empty()) out += "<h2>First failures</h2>\n<ul>\n" + fails + "</ul>\n";

  out += "<h2>Latency distributions</h2>\n";
  std::vector<Series> all;
  size_t c = 0;
  for (Stage s : kAllStages) {
    if (!stage_measured(r, s)) continue;
    all.push_back({stage_label(s), r.results.stages[static_cast<size_t>(s)].seconds, kColors[c++ % 6]});
  }
  out += "<figure>\n" + cdf_svg("All stages: cumulative distribution", all) + "</figure>\n";
  for (const auto& s : all) out += "<figure>\n" + cdf_svg(s.name, {s}) + "</figure>\n";
  out += "<h2>Timeline</h2>\n<figure>\n" +
         timeline_svg("Events per second",
                      {{"measured creates started", r.results.create_times, kColors[0]},
                       {"ready", r.results.ready_times, kColors[2]},
                       {"implemented on all nodes", r.results.implemented_times, kColors[3]}},
                      r.marks) +
         "</figure>\n<figure>\n" +
         latency_timeline_svg(std::string("Latency by create time: ") +
                                  (r.measure_implemented ? "create -> implemented on all nodes" : "create -> ready"),
                              r.results.latency_by_time, r.marks) +
         "</figure>\n";
  if (!r.marks.empty()) {
    out += "<table>\n<tr><th>at</th><th class=\"l\">mark</th></tr>\n";
    for (const auto& [t, label] : r.marks)
      out += "<tr><td>" + fmt("%.1f", t) + " s</td><td class=\"l\">" + html_escape(label) + "</td></tr>\n";
    out += "</table>\n";
  }
  out += "<h2>Parameters</h2>\n<table>\n";
  for (const auto& [k, v] : r.parameters)
    out += "<tr><td class=\"l\">" + html_escape(k) + "</td><td class=\"l\">" + html_escape(v) + "</td></tr>\n";
  out += "</table>\n</body>\n</html>\n";
  return out;
}

}  // namespace kos::driver
