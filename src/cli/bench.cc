#include "cli/bench.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <vector>

#include "cli/flags.hpp"
#include "simd/kernels.hpp"
#include "sparselink/codec.hpp"
#include "sparselink/routing.hpp"

namespace sparselink::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchCase {
  size_t rows;
  size_t cols;
  double keep;
  int threads;
  ValueCodec codec = ValueCodec::kFp16;
  SelectMethod select = SelectMethod::kFast;  // of the "fast" method: kFast or kApproximate
};

// The cases of issue "Routing at memory speed": the target shape first, then the sweeps.
std::vector<BenchCase> Cases(bool quick) {
  if (quick) return {{64, 1024, 0.1, 1}, {64, 1024, 0.1, 2}};
  return {
      {256, 4096, 0.10, 1},
      {256, 4096, 0.10, 2},
      {256, 4096, 0.01, 1},
      {256, 4096, 0.50, 1},
      {2048, 512, 0.10, 1},
      {16, 65536, 0.10, 1},
      {256, 4096, 0.10, 1, ValueCodec::kInt8},
      {256, 4096, 0.10, 1, ValueCodec::kFp16, SelectMethod::kApproximate},
      {256, 4096, 0.10, 2, ValueCodec::kFp16, SelectMethod::kApproximate},
  };
}

// Seconds per call of `op(i)` (i = the pool slot) over one round of at least `min_seconds`;
// `slot` carries on from round to round.
template <typename Op>
double OneRound(const BenchOptions& options, size_t pool, size_t& slot, Op& op) {
  size_t calls = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  do {
    op(slot++ % pool);
    ++calls;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < options.min_seconds);
  return elapsed / static_cast<double>(calls);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Seconds per call of `op(i)`, the median over `rounds` rounds.
template <typename Op>
double SecondsPerCall(const BenchOptions& options, size_t pool, Op op) {
  op(0);  // warm-up: first-touch allocations, thread start
  std::vector<double> per_call;
  size_t slot = 1;
  for (int round = 0; round < options.rounds; ++round)
    per_call.push_back(OneRound(options, pool, slot, op));
  return Median(per_call);
}

// A method on `threads` threads and on one, in alternating rounds: a change in the machine's
// load (other tenants, frequency) falls on both alike, which two separate timings minutes apart
// do not give. Seconds per call on one thread and on `threads` (medians), and the median of
// the rounds' ratios (the speed-up).
struct Scaled {
  double one = 0;
  double many = 0;
  double speedup = 0;
};
template <typename Op>
Scaled SecondsPerCallScaled(const BenchOptions& options, size_t pool, int threads, Op op) {
  omp_set_num_threads(1);
  op(0);
  omp_set_num_threads(threads);
  op(0);
  std::vector<double> one, many, ratio;
  size_t slot = 1;
  for (int round = 0; round < options.rounds; ++round) {
    omp_set_num_threads(1);
    one.push_back(OneRound(options, pool, slot, op));
    omp_set_num_threads(threads);
    many.push_back(OneRound(options, pool, slot, op));
    ratio.push_back(one.back() / many.back());
  }
  return {Median(one), Median(many), Median(ratio)};
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

struct CaseResult {
  BenchCase c;
  size_t pool_bytes = 0;  // the inputs it rotated through
  std::map<std::string, double> gbps;
  std::map<std::string, double> speedup;  // threads > 1: over one thread, interleaved rounds
  uint64_t wire_bytes = 0;
};

// Each row of an approximate route within its window [k, k + window].
Status CheckWindow(const RoutedTensor& routed, size_t k, double tolerance) {
  const size_t window = static_cast<size_t>(tolerance * double(k));
  for (size_t r = 0; r < routed.rows; ++r) {
    const size_t kept = routed.num_kept_in_row(r);
    if (kept < k || kept > k + window) {
      return Status(ErrorCode::kInvalidArgument,
                    "approximate route kept " + std::to_string(kept) + " in row " +
                        std::to_string(r) + ", outside [k, k + window] = [" + std::to_string(k) +
                        ", " + std::to_string(k + window) + "] (a bug: please report)");
    }
  }
  return Status::Ok();
}

// The baselines that only read the input: nth_element per row (routing's textbook cost), and
// a pass that only reads it, with the rows split over the threads as the router splits them
// (a vector finiteness check: no early exit, nothing written; the route reads its input once,
// so this is its ceiling on this machine).
Status TimeReadBaselines(
    const BenchOptions& options, const BenchCase& c, const std::vector<std::vector<float>>& inputs,
    size_t k, bool route, const std::function<double(double)>& gbps,
    const std::function<void(const std::string&, std::function<void(size_t)>)>& timed,
    CaseResult* result) {
  const size_t pool = inputs.size();
  if (route) {
    std::vector<float> row(c.cols);
    result->gbps["nth_element"] = gbps(SecondsPerCall(options, pool, [&](size_t i) {
      for (size_t r = 0; r < c.rows; ++r) {
        const float* a = inputs[i].data() + r * c.cols;
        for (size_t j = 0; j < c.cols; ++j) row[j] = std::fabs(a[j]);
        if (k > 0)
          std::nth_element(row.begin(), row.begin() + (k - 1), row.end(), std::greater<>());
      }
    }));
  }
  bool finite = true;
  timed("read", [&](size_t i) {
    const float* a = inputs[i].data();
    bool all = true;
#pragma omp parallel for schedule(static) reduction(&& : all)
    for (size_t r = 0; r < c.rows; ++r) all = simd::AllFinite(a + r * c.cols, c.cols) && all;
    finite = all;
  });
  if (!finite) {
    return Status(ErrorCode::kInvalidArgument,
                  "the read baseline found a non-finite input (a bug: please report)");
  }
  const size_t bytes = c.rows * c.cols * sizeof(float);
  std::vector<float> copy(c.rows * c.cols);
  result->gbps["memcpy"] = gbps(SecondsPerCall(
      options, pool, [&](size_t i) { std::memcpy(copy.data(), inputs[i].data(), bytes); }));
  return Status::Ok();
}

// Runs one case; an error means a method failed (it should not).
Result<CaseResult> RunCase(const BenchOptions& options, const BenchCase& c,
                           const TopkBaseline& torch_topk) {
  const size_t n = c.rows * c.cols;
  const size_t bytes = n * sizeof(float);
  const size_t pool = std::max<size_t>(2, (options.pool_bytes + bytes - 1) / bytes);
  std::vector<std::vector<float>> inputs(pool, std::vector<float>(n));
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& input : inputs) {
    for (float& v : input) v = normal(rng);
  }
  const auto view = [&](size_t i) { return ConstMatrix{inputs[i].data(), c.rows, c.cols}; };
  const size_t k = KeptCount(c.cols, c.keep);
  const Contract contract{.keep = c.keep, .keep_full = 1.0, .full_codec = c.codec};
  const EncodeOptions encode{.index_codec = IndexCodec::kBitmap};
  const bool route = options.what != "decode";
  const bool decode = options.what != "route";

  omp_set_num_threads(c.threads);
  CaseResult result{.c = c, .pool_bytes = pool * bytes};
  const auto gbps = [&](double seconds) { return static_cast<double>(bytes) / seconds / 1e9; };

  SPARSELINK_ASSIGN_OR_RETURN(Router fast,
                              Router::Create({.scoring = Scoring::kMagnitude, .select = c.select}));
  SPARSELINK_ASSIGN_OR_RETURN(
      Router reference,
      Router::Create({.scoring = Scoring::kMagnitude, .select = SelectMethod::kReference}));
  RoutedTensor routed;
  std::vector<uint8_t> packet;
  Status status;
  // The fast path is the sender's one call; the reference path routes, then encodes.
  const auto route_and_encode = [&](const Router& router, size_t i) {
    if (&router == &fast) {
      status =
          RouteAndEncode(fast, view(i), nullptr, contract, {.step = i}, encode, &routed, &packet);
      return;
    }
    status = router.Route(view(i), nullptr, contract, i, &routed);
    if (status.ok()) status = EncodeActivation(routed, contract, {.step = i}, encode, &packet);
  };

  // Decoding needs packets: one per pool slot, made by the fast path (checked against the
  // reference path's bytes on the first slot).
  std::vector<std::vector<uint8_t>> packets(pool);
  for (size_t i = 0; i < pool; ++i) {
    route_and_encode(fast, i);
    SPARSELINK_RETURN_IF_ERROR(status);
    packets[i] = packet;
    if (c.select == SelectMethod::kApproximate) {
      SPARSELINK_RETURN_IF_ERROR(CheckWindow(routed, k, fast.options().approx_tolerance));
    }
  }
  route_and_encode(reference, 0);
  SPARSELINK_RETURN_IF_ERROR(status);
  if (c.select == SelectMethod::kFast && packet != packets[0]) {
    return Status(ErrorCode::kInvalidArgument,
                  "fast and reference packets differ on the same input (a bug: please report)");
  }
  result.wire_bytes = packets[0].size();

  // A method timed at the case's thread count, and (threads > 1) at one thread in alternating
  // rounds as well: "<name>_one_thread" and the speed-up.
  const auto timed = [&](const std::string& name, auto op) {
    if (c.threads == 1) {
      result.gbps[name] = gbps(SecondsPerCall(options, pool, op));
      return;
    }
    const Scaled scaled = SecondsPerCallScaled(options, pool, c.threads, op);
    omp_set_num_threads(c.threads);
    result.gbps[name] = gbps(scaled.many);
    result.gbps[name + "_one_thread"] = gbps(scaled.one);
    result.speedup[name] = scaled.speedup;
  };
  if (route) {
    timed("fast", [&](size_t i) { route_and_encode(fast, i); });
    SPARSELINK_RETURN_IF_ERROR(status);
    result.gbps["reference"] =
        gbps(SecondsPerCall(options, pool, [&](size_t i) { route_and_encode(reference, i); }));
    SPARSELINK_RETURN_IF_ERROR(status);
    if (torch_topk) {
      result.gbps["torch_topk"] = gbps(SecondsPerCall(options, pool, [&](size_t i) {
        torch_topk(inputs[i].data(), c.rows, c.cols, k, c.threads);
      }));
    }
  }
  if (decode) {
    std::vector<float> dense(n);
    timed("fast_decode", [&](size_t i) {
      status = DecodeActivationToDense(packets[i], {dense.data(), c.rows, c.cols});
    });
    SPARSELINK_RETURN_IF_ERROR(status);
  }
  SPARSELINK_RETURN_IF_ERROR(TimeReadBaselines(options, c, inputs, k, route, gbps, timed, &result));
  return result;
}

double Ratio(const CaseResult& r, const char* a, const char* b) {
  const auto ia = r.gbps.find(a);
  const auto ib = r.gbps.find(b);
  if (ia == r.gbps.end() || ib == r.gbps.end() || ib->second <= 0) return 0;
  return ia->second / ib->second;
}

// One row of the table (and the speed-ups of a case on several threads).
void PrintCaseRow(const CaseResult& r, std::ostream& out) {
  const auto g = [&](const char* name) {
    const auto it = r.gbps.find(name);
    return it == r.gbps.end() ? 0.0 : it->second;
  };
  std::ostringstream shape;
  shape << r.c.rows << "x" << r.c.cols;
  out << "  " << std::left << std::setw(12) << shape.str() << std::right << std::fixed
      << std::setprecision(0) << std::setw(5) << r.c.keep * 100 << "% " << std::setw(5)
      << Traits(r.c.codec).name << std::setw(4) << r.c.threads << std::setw(7)
      << (r.c.select == SelectMethod::kFast ? "exact" : "approx") << " |" << std::fixed
      << std::setprecision(2);
  // A method this run did not time (decode only, or no LibTorch) prints "-", not 0.
  const auto cell = [&](double v, int width) {
    if (v > 0) {
      out << std::setw(width) << v;
    } else {
      out << std::setw(width) << "-";
    }
  };
  for (const char* name :
       {"fast", "fast_decode", "reference", "torch_topk", "nth_element", "memcpy"}) {
    cell(g(name), 7);
  }
  out << " | ";
  cell(Ratio(r, "fast", "memcpy"), 11);
  cell(Ratio(r, "fast", "torch_topk"), 10);
  cell(Ratio(r, "fast_decode", "memcpy"), 14);
  out << std::defaultfloat << "\n";
  if (!r.speedup.empty()) {
    out << std::string(40, ' ') << r.c.threads << " threads vs 1, alternating rounds:";
    const char* sep = " ";
    for (const auto& [name, x] : r.speedup) {
      out << sep << name << " " << std::fixed << std::setprecision(2) << x << "x";
      sep = ", ";
    }
    out << std::defaultfloat << "\n";
  }
}

// One case in the JSON.
nlohmann::json CaseJson(const CaseResult& r) {
  const auto ratio_json = [&](const char* a, const char* b) {
    const double v = Ratio(r, a, b);
    return v > 0 ? nlohmann::json(v) : nlohmann::json(nullptr);
  };
  nlohmann::json entry = {{"rows", r.c.rows},
                          {"cols", r.c.cols},
                          {"keep", r.c.keep},
                          {"threads", r.c.threads},
                          {"select", std::string(SelectMethodName(r.c.select))},
                          {"codec", std::string(Traits(r.c.codec).name)},
                          {"index", "bitmap"},
                          {"wire_bytes", r.wire_bytes},
                          {"pool_bytes", r.pool_bytes},
                          {"dense_bytes", r.c.rows * r.c.cols * 4},
                          {"gbps", r.gbps},
                          {"ratios",
                           {{"fast_vs_memcpy", ratio_json("fast", "memcpy")},
                            {"fast_vs_torch_topk", ratio_json("fast", "torch_topk")},
                            {"fast_vs_reference", ratio_json("fast", "reference")},
                            {"fast_vs_read", ratio_json("fast", "read")},
                            {"decode_vs_memcpy", ratio_json("fast_decode", "memcpy")}}}};
  // threads > 1: each method against itself on one thread, timed in alternating rounds.
  if (!r.speedup.empty()) entry["speedup_over_one_thread"] = r.speedup;
  return entry;
}

}  // namespace

int RunBench(const BenchOptions& options, const TopkBaseline& torch_topk, std::ostream& out,
             std::ostream& err) {
  if (options.what != "route" && options.what != "decode" && options.what != "all") {
    err << "sparselink bench: what = " << options.what << ": must be route, decode or all\n";
    return 1;
  }
  std::vector<BenchCase> cases = Cases(options.quick);
  if (options.only_case < 0 || static_cast<size_t>(options.only_case) > cases.size()) {
    err << "sparselink bench: --case = " << options.only_case << ": must be 1.." << cases.size()
        << " (0 = all)\n";
    return 1;
  }
  if (options.only_case > 0) cases = {cases[static_cast<size_t>(options.only_case) - 1]};
  if (!(options.min_seconds >= 0.001 && options.min_seconds <= 60.0)) {  // NaN included
    err << "sparselink bench: --min-time = " << options.min_seconds
        << ": must be in [0.001, 60] seconds\n";
    return 1;
  }
  if (Status s = ApplySimdFlag(options.simd); !s.ok()) {
    err << "sparselink bench: " << s.message() << "\n";
    return 1;
  }
  // The JSON goes through a temporary file, renamed into place once complete: a failed run
  // leaves any earlier file as it was. Whether the place is writable is tried now.
  const std::string json_partial = options.json_path + ".partial";
  if (!options.json_path.empty()) {
    std::ofstream probe(json_partial);
    if (!probe) {
      err << "sparselink bench: --json " << options.json_path << ": cannot open for writing\n";
      return 1;
    }
    probe.close();
    std::filesystem::remove(json_partial);
  }
  out << "sparselink bench: " << cases.size() << " cases on " << CpuModel() << ", "
      << simd::TargetName() << " kernels, inputs rotating through "
      << options.pool_bytes / (1 << 20)
      << " MiB per case (at least two inputs); GB/s of dense fp32 input\n";
  std::vector<CaseResult> results;
  const auto start = Clock::now();
  for (size_t i = 0; i < cases.size(); ++i) {
    const BenchCase& c = cases[i];
    Result<CaseResult> r = RunCase(options, c, torch_topk);
    if (!r.ok()) {
      err << "sparselink bench: case " << c.rows << "x" << c.cols << " keep " << c.keep << ": "
          << r.status().ToString() << "\n";
      return 1;
    }
    results.push_back(*r);
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    out << "[" << i + 1 << "/" << cases.size() << "] " << c.rows << "x" << c.cols << " keep "
        << std::setprecision(3) << c.keep * 100 << "% " << Traits(c.codec).name << " threads "
        << c.threads << " " << SelectMethodName(c.select) << ":";
    for (const auto& [name, g] : r->gbps) out << " " << name << " " << std::setprecision(3) << g;
    out << "  (" << std::fixed << std::setprecision(1) << elapsed << " s, ETA "
        << elapsed / static_cast<double>(i + 1) * static_cast<double>(cases.size() - i - 1) << " s)"
        << std::defaultfloat << "\n";
  }
  out << "\n  shape        keep  codec thr select |   fast  decode    ref  topk  nth_el memcpy | "
         "fast/memcpy fast/topk decode/memcpy\n";
  nlohmann::json json = {{"machine",
                          {{"cpu", CpuModel()},
                           {"simd_target", simd::TargetName()},
                           {"pool_bytes", options.pool_bytes}}},
                         {"cases", nlohmann::json::array()}};
  for (const CaseResult& r : results) {
    PrintCaseRow(r, out);
    json["cases"].push_back(CaseJson(r));
  }
  if (!options.json_path.empty()) {
    std::ofstream json_file(json_partial);
    json_file << json.dump(2) << "\n";
    json_file.close();  // the final flush happens here; check after it
    std::error_code ec;
    if (json_file.fail() || (std::filesystem::rename(json_partial, options.json_path, ec), ec)) {
      std::filesystem::remove(json_partial, ec);
      err << "sparselink bench: --json " << options.json_path << ": write failed\n";
      return 1;
    }
    out << "wrote " << options.json_path << "\n";
  }
  return 0;
}

}  // namespace sparselink::cli
