// libFuzzer target: every parser of user text in the core (the CLI's flag values): bandwidths,
// value codecs, score policies, sensitivity modes, and keep percentages. A parser may refuse
// the text, but it must never crash; what it accepts must be in range, a name it accepts must
// print back as itself, and a refusal's message must name the text it refused.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "sparselink/contract.hpp"
#include "sparselink/link.hpp"
#include "sparselink/routing.hpp"
#include "sparselink/sensitivity.hpp"
#include "sparselink/types.hpp"

namespace {
// Parsing names back: an accepted name is the canonical one.
template <typename Parse, typename Name>
void CheckName(std::string_view text, Parse parse, Name name) {
  auto parsed = parse(text);
  if (parsed.ok()) SPARSELINK_CHECK(name(*parsed) == text);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparselink;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  auto bandwidth = ParseBandwidth(text);
  if (bandwidth.ok()) {
    SPARSELINK_CHECK(std::isfinite(*bandwidth) && *bandwidth > 0);
  } else {
    SPARSELINK_CHECK(bandwidth.status().code() == ErrorCode::kInvalidArgument);
    SPARSELINK_CHECK(bandwidth.status().message().find(std::string(text)) != std::string::npos);
  }
  CheckName(text, ParseValueCodec, [](ValueCodec c) { return Traits(c).name; });
  CheckName(text, ParseScoring, ScoringName);
  CheckName(text, ParseSensitivityMode, SensitivityModeName);

  // `--keep 12.5%` as the CLI reads it: strtod over the whole text, then the range check.
  std::string keep(text);
  if (!keep.empty() && keep.back() == '%') keep.pop_back();
  char* end = nullptr;
  const double percent = std::strtod(keep.c_str(), &end);
  if (!keep.empty() && end == keep.c_str() + keep.size()) {
    auto fraction = KeepFromPercent(percent, "--keep");
    if (fraction.ok()) SPARSELINK_CHECK(*fraction > 0 && *fraction <= 1);
  }
  return 0;
}
