// What `kos driver` writes at the end of a run: the summary table (stdout), the JSON
// summary for scripts (--json) and the HTML report (--report) with latency CDFs and a
// timeline drawn as inline SVG (no scripts, no external resources). No I/O here.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "driver/plan.h"
#include "driver/tracker.h"

namespace kos::driver {

struct RunReport {
  std::string run_id;
  std::vector<std::pair<std::string, std::string>> parameters;  // flag -> value, in order
  Tracker::Results results;
  bool measure_implemented = false;
  bool measure_tested = false;
  bool measure_policy = false;
  uint64_t nodes = 0, vnis = 0;
  double target_rate = 0;
  double achieved_rate = 0;     // measured creates per second of the measured phase
  double measured_seconds = 0;  // first to last measured create start
  Summary schedule_lag;         // how late create calls started against the schedule
  std::vector<std::string> notes;  // remarks for the reader (dropped nodes, log overflow, ...)
  uint32_t windows = 0;  // > 1: percentiles per window of creation order (flatness)
  // Moments marked by whoever ran the driver (--marks: a kill, a restart), seconds since
  // the start of the run, drawn on the timelines.
  std::vector<std::pair<double, std::string>> marks;
};

// The measured attachments split by creation order into `windows` equal groups: per
// group and stage, the percentiles of its successes. As the run goes on more attachments
// exist, so the last group against the first shows whether latency grows with size.
struct Window {
  uint64_t from = 0, to = 0;  // creation order [from, to)
  std::map<Stage, Summary> stages;
};
std::vector<Window> windows(const RunReport& r);

// The summary table: count, failures, cancelled, p50/p90/p99/max (ms) per stage, then
// the notes and the first failure reasons.
std::string summary_table(const RunReport& r);
std::string summary_json(const RunReport& r);
std::string html_report(const RunReport& r);

// One CDF plot of latencies (seconds) as an SVG element: x logarithmic in time, y the
// fraction of samples at or below x. Series with no samples are listed but not drawn.
struct Series {
  std::string name;
  std::vector<double> values;
  std::string color;  // CSS color
};
std::string cdf_svg(const std::string& title, const std::vector<Series>& series);
// Events per second over the run (values: seconds since the start), with `marks`
// (seconds since the start, label) as labelled vertical lines.
using Marks = std::vector<std::pair<double, std::string>>;
std::string timeline_svg(const std::string& title, const std::vector<Series>& series, const Marks& marks = {});
// Latency against the time of the create: a dot per attachment (x seconds since the start,
// y its latency on a log scale), the marks as on the timeline.
std::string latency_timeline_svg(const std::string& title, const std::vector<std::pair<double, double>>& points,
                                 const Marks& marks);

std::string html_escape(const std::string& s);

}  // namespace kos::driver
