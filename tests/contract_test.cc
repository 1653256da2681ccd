#include "sparselink/contract.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace sparselink {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

bool Contains(const Status& s, std::string_view text) {
  return s.message().find(text) != std::string::npos;
}

// ---- contract basics -------------------------------------------------------------------

TEST(ContractKeptCount, BinaryRoundingNeverLosesAnEntry) {
  EXPECT_EQ(KeptCount(10, 0.3), 3u);  // 10 * 0.3 is 2.9999999999999996 in binary
  EXPECT_EQ(KeptCount(100, 0.07), 7u);
  EXPECT_EQ(KeptCount(1000, 0.001), 1u);
  for (size_t n = 1; n <= 300; ++n) {
    for (size_t k = 0; k <= n; ++k) {
      ASSERT_EQ(KeptCount(n, double(k) / double(n)), k) << n << " " << k;
    }
  }
}

TEST(ContractKeptCount, EdgeValues) {
  EXPECT_EQ(KeptCount(0, 0.5), 0u);
  EXPECT_EQ(KeptCount(10, 1.0), 10u);
  EXPECT_EQ(KeptCount(10, 0.0), 0u);
  EXPECT_EQ(KeptCount(10, 0.05), 0u);  // floor, as the seed's int(n * c / 100)
  EXPECT_EQ(KeptCount(10, 0.99), 9u);
  EXPECT_EQ(KeptCount(7, 1.0), 7u);
}

TEST(ContractFullCount, FloorsTheShareOfKept) {
  EXPECT_EQ(FullCount(10, 0.5), 5u);
  EXPECT_EQ(FullCount(3, 0.5), 1u);
  EXPECT_EQ(FullCount(0, 1.0), 0u);
  EXPECT_EQ(FullCount(10, 0.3), 3u);
  EXPECT_EQ(FullCount(10, 1.0), 10u);
  EXPECT_EQ(FullCount(10, 0.0), 0u);
}

TEST(KeepFromPercent, ConvertsPercentToFraction) {
  auto k = KeepFromPercent(7.5);
  ASSERT_TRUE(k.ok());
  EXPECT_DOUBLE_EQ(*k, 0.075);
  EXPECT_DOUBLE_EQ(*KeepFromPercent(100), 1.0);
}

TEST(KeepFromPercent, RejectsBadValuesNamingTheField) {
  for (double bad : {0.0, -1.0, 150.0, kNaN, kInf}) {
    auto k = KeepFromPercent(bad);
    ASSERT_FALSE(k.ok()) << bad;
    EXPECT_EQ(k.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(Contains(k.status(), "keep_percent = ")) << k.status().message();
  }
  auto named = KeepFromPercent(150, "boundary[2].keep");
  EXPECT_TRUE(Contains(named.status(), "boundary[2].keep = 150")) << named.status().message();
}

TEST(Contract, DefaultIsValid) { EXPECT_TRUE(Contract{}.Validate().ok()); }

TEST(Contract, ValidateNamesEachBadField) {
  struct Case {
    Contract c;
    const char* text;
  };
  const Case cases[] = {
      {{.keep = 0}, "contract.keep = 0"},
      {{.keep = 1.5}, "contract.keep = 1.5"},
      {{.keep = kNaN}, "contract.keep = nan"},
      {{.keep_full = -0.1}, "contract.keep_full = -0.1"},
      {{.keep_full = 1.1}, "contract.keep_full = 1.1"},
      {{.full_codec = static_cast<ValueCodec>(9)}, "contract.full_codec = 9"},
      {{.lossy_codec = static_cast<ValueCodec>(5)}, "contract.lossy_codec = 5"},
      {{.rest = static_cast<RestCodec>(2)}, "contract.rest = 2"},
      {{.granularity = static_cast<Granularity>(2)}, "contract.granularity = 2"},
      {{.bound_by = static_cast<BoundBy>(11)}, "contract.bound_by = 11"},
  };
  for (const Case& c : cases) {
    Status s = c.c.Validate();
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << c.text;
    EXPECT_TRUE(Contains(s, c.text)) << s.message();
  }
}

TEST(Contract, ToStringShowsKeepCodecsAndReason) {
  const Contract c{
      .version = 3, .keep = 0.075, .keep_full = 0.5, .bound_by = BoundBy::kSenderCoverage};
  EXPECT_EQ(c.ToString(), "b0 v3 keep=7.50% full=50% fp32/int8 element drop (sender_coverage)");
  EXPECT_DOUBLE_EQ(c.keep_percent(), 7.5);
}

TEST(Contract, EveryReasonAndStateHasAName) {
  for (size_t i = 0; i < kNumBoundBy; ++i)
    EXPECT_NE(BoundByName(static_cast<BoundBy>(i)), "unknown");
  for (int i = 0; i < 4; ++i)
    EXPECT_NE(NegotiationStateName(static_cast<NegotiationState>(i)), "unknown");
  EXPECT_EQ(NegotiationStateName(NegotiationState::kRefused), "refused");
}

TEST(ContractEstimateStepBytes, KnownAnswerForDenseFp32) {
  // 4 x 64 at keep 1: header 64 + checksum 8 + bitmap 32 + values 1024 + 2 section entries 24.
  const Contract c{.keep = 1.0};
  EXPECT_DOUBLE_EQ(EstimateStepBytes(c, 4, 64, false), 1152.0);
  // The gradient adds its own header, one section entry, checksum and 1024 value bytes.
  EXPECT_DOUBLE_EQ(EstimateStepBytes(c, 4, 64, true), 1152.0 + 64 + 12 + 8 + 1024);
}

// FitStepCost's line against the byte model it is fitted to: element granularity, and unit
// granularity with units too coarse for the floor and twice the floor to differ (32 channels
// of 196: both keep 0 units at a 1 % floor, which gave a zero slope the allocator refuses).
// Fitted near the floor, the line may only overstate the model higher up (with elements the
// index switches from delta-varint to the cheaper bitmap there), never understate it.
TEST(FitStepCost, LineFollowsTheByteModelForElementsAndCoarseUnits) {
  const size_t packets = 2, packet_rows = 64;
  struct Case {
    Granularity granularity;
    size_t cols, block;
  };
  for (const Case& c :
       {Case{Granularity::kElement, 1024, 1}, Case{Granularity::kUnit, 6272, 196}}) {
    const Contract contract{.keep = 0.3,
                            .full_codec = ValueCodec::kInt8,
                            .lossy_codec = ValueCodec::kInt8,
                            .granularity = c.granularity};
    const StepCostLine line =
        FitStepCost(contract, packets, packet_rows, c.cols, 0.01, ValueCodec::kInt8, c.block);
    EXPECT_GT(line.per_entry, 0.0) << c.cols;
    EXPECT_GE(line.fixed, 0.0) << c.cols;
    for (double keep : {0.25, 0.5}) {
      Contract at = contract;
      at.keep = keep;
      const size_t units = (c.cols + c.block - 1) / c.block;
      const double columns = c.granularity == Granularity::kUnit
                                 ? static_cast<double>(KeptCount(units, keep) * c.block)
                                 : static_cast<double>(KeptCount(c.cols, keep));
      const double model =
          packets * EstimateStepBytes(at, packet_rows, c.cols, true, ValueCodec::kInt8, c.block);
      const double fitted = line.fixed + line.per_entry * packets * packet_rows * columns;
      EXPECT_GE(fitted / model, 0.99) << c.cols << " keep " << keep;
      EXPECT_LE(fitted / model, 1.35) << c.cols << " keep " << keep;
    }
  }
}

TEST(ContractEstimateStepBytes, GrowsWithKeepAndShrinksWithCheaperCodecs) {
  Contract c{.keep = 0.1};
  const double low = EstimateStepBytes(c, 8, 256, false);
  c.keep = 0.5;
  const double mid = EstimateStepBytes(c, 8, 256, false);
  c.keep = 1.0;
  const double high = EstimateStepBytes(c, 8, 256, false);
  EXPECT_LT(low, mid);
  EXPECT_LT(mid, high);
  EXPECT_LT(high, 8.0 * 256 * 4 * 1.2);  // dense fp32 plus modest overhead
  c.full_codec = ValueCodec::kInt8;
  EXPECT_LT(EstimateStepBytes(c, 8, 256, false), high / 3);
  Contract unit{.keep = 0.1, .granularity = Granularity::kUnit};
  EXPECT_LT(EstimateStepBytes(unit, 8, 256, false), low);  // one index set for all rows
  EXPECT_GT(EstimateStepBytes(Contract{.keep = 0.1}, 8, 256, true), low);
}

// ---- negotiator -------------------------------------------------------------------------

SensitivityMap MapOf(const std::vector<float>& values) {
  auto map = SensitivityMap::Create({.num_neurons = values.size()});
  EXPECT_TRUE(map.ok());
  EXPECT_TRUE(map->Assign(values).ok());
  return std::move(map).value();
}

// n units, the first `hot` at 1 and the rest 0: coverage of tau is ceil(tau * hot) / n.
SensitivityMap HotMap(size_t n, size_t hot) {
  std::vector<float> v(n, 0.0f);
  for (size_t i = 0; i < hot; ++i) v[i] = 1.0f;
  return MapOf(v);
}

Negotiator MakeNegotiator(NegotiatorOptions o = {}, Contract initial = {}) {
  auto n = Negotiator::Create(o, initial);
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  return std::move(n).value();
}

NegotiationRecord NegotiateOk(Negotiator& n, const SenderView& s, const ReceiverView& r,
                              size_t rows, size_t cols, uint64_t step = 0) {
  auto rec = n.Negotiate(s, r, rows, cols, step);
  EXPECT_TRUE(rec.ok()) << rec.status().ToString();
  return std::move(rec).value();
}

TEST(Negotiator, CreateRejectsEachBadFieldByName) {
  struct Case {
    NegotiatorOptions o;
    const char* text;
  };
  const Case cases[] = {
      {{.tau_send = -0.1}, "negotiator.tau_send = -0.1"},
      {{.tau_send = 1.1}, "negotiator.tau_send = 1.1"},
      {{.tau_send = kNaN}, "negotiator.tau_send = nan"},
      {{.tau_recv = 2}, "negotiator.tau_recv = 2"},
      {{.keep_min = 0}, "negotiator.keep_min = 0: must be in (0, 1]"},
      {{.keep_min = 1.5}, "negotiator.keep_min = 1.5"},
      {{.keep_min = 0.5, .keep_max = 0.4}, "negotiator.keep_max = 0.4"},
      {{.keep_max = 1.2}, "negotiator.keep_max = 1.2"},
      {{.hysteresis = -0.01}, "negotiator.hysteresis = -0.01"},
      {{.hysteresis = 1}, "negotiator.hysteresis = 1"},
      {{.hysteresis = kNaN}, "negotiator.hysteresis = nan"},
  };
  for (const Case& c : cases) {
    auto n = Negotiator::Create(c.o, Contract{});
    ASSERT_FALSE(n.ok()) << c.text;
    EXPECT_EQ(n.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(Contains(n.status(), c.text)) << n.status().message();
  }
  auto bad_contract = Negotiator::Create({}, Contract{.keep = 0});
  ASSERT_FALSE(bad_contract.ok());
  EXPECT_TRUE(Contains(bad_contract.status(), "contract.keep = 0"));
}

// A negotiator rebuilt from a saved contract and history (a resumed run) negotiates on as the
// one it was saved from: the same next contract, version and history.
TEST(Negotiator, ResumeContinuesWhereTheSavedOneStopped) {
  auto original = MakeNegotiator();
  const auto first = HotMap(10, 3);
  const auto second = HotMap(10, 6);
  NegotiateOk(original, {&first}, {}, 4, 10, 5);
  auto resumed = Negotiator::Resume({}, original.contract(), original.history());
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_EQ(resumed->history().size(), 1u);
  NegotiateOk(original, {&second}, {}, 4, 10, 10);
  NegotiateOk(*resumed, {&second}, {}, 4, 10, 10);
  EXPECT_EQ(resumed->contract().version, original.contract().version);
  EXPECT_EQ(resumed->contract().keep, original.contract().keep);
  ASSERT_EQ(resumed->history().size(), 2u);
  EXPECT_EQ(resumed->history()[0].step, 5u);
  EXPECT_EQ(resumed->history()[1].contract.keep, original.history()[1].contract.keep);
  EXPECT_TRUE(
      Contains(Negotiator::Resume({}, Contract{.keep = 0}, {}).status(), "contract.keep = 0"));
}

TEST(Negotiator, NegotiateRejectsBadInputs) {
  auto n = MakeNegotiator();
  const auto map = HotMap(10, 3);
  auto no_map = n.Negotiate({}, {}, 4, 10, 0);
  EXPECT_TRUE(Contains(no_map.status(), "sender.map = null"));
  EXPECT_TRUE(Contains(n.Negotiate({&map}, {}, 0, 10, 0).status(), "rows = 0"));
  auto shape = n.Negotiate({&map}, {}, 4, 12, 0);
  EXPECT_EQ(shape.status().code(), ErrorCode::kShapeMismatch);
  EXPECT_TRUE(Contains(shape.status(), "sender.map.num_neurons = 10"));
  EXPECT_TRUE(
      Contains(n.Negotiate({&map, -1}, {}, 4, 10, 0).status(), "sender.link_bytes_per_step = -1"));
  EXPECT_TRUE(Contains(n.Negotiate({&map}, {nullptr, kNaN}, 4, 10, 0).status(),
                       "receiver.compute_entries_per_step = nan"));
  EXPECT_TRUE(Contains(n.Negotiate({&map}, {nullptr, kInf, -5}, 4, 10, 0).status(),
                       "receiver.buffer_bytes = -5"));
  EXPECT_TRUE(n.history().empty());
}

TEST(Negotiator, SenderCoverageDecidesWithoutReceiverOpinion) {
  auto n = MakeNegotiator();
  const auto map = HotMap(10, 3);
  const auto rec = NegotiateOk(n, {&map}, {}, 4, 10, 7);
  ASSERT_EQ(rec.stages.size(), 3u);
  EXPECT_EQ(rec.stages[0].state, NegotiationState::kProposed);
  EXPECT_EQ(rec.stages[1].state, NegotiationState::kCountered);
  EXPECT_EQ(rec.stages[2].state, NegotiationState::kAgreed);
  for (const auto& stage : rec.stages) {
    EXPECT_DOUBLE_EQ(stage.keep, 0.3);
    EXPECT_EQ(stage.reason, BoundBy::kSenderCoverage);
  }
  EXPECT_TRUE(rec.changed);
  EXPECT_EQ(rec.step, 7u);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.3);
  EXPECT_EQ(n.contract().bound_by, BoundBy::kSenderCoverage);
  EXPECT_EQ(n.contract().version, 1u);
  EXPECT_EQ(KeptCount(10, n.contract().keep), 3u);
}

TEST(Negotiator, ReceiverRaisesKeepWithMapOfDifferentSize) {
  auto n = MakeNegotiator();
  const auto send = HotMap(10, 3);
  const auto recv = HotMap(20, 10);  // coverage 0.5; only the share matters, not the size
  const auto rec = NegotiateOk(n, {&send}, {&recv}, 4, 10);
  EXPECT_DOUBLE_EQ(rec.stages[0].keep, 0.3);
  EXPECT_EQ(rec.stages[1].reason, BoundBy::kReceiverCoverage);
  EXPECT_DOUBLE_EQ(rec.stages[1].keep, 0.5);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.5);
  EXPECT_EQ(n.contract().bound_by, BoundBy::kReceiverCoverage);
}

TEST(Negotiator, ReceiverAskingLessDoesNotLowerKeep) {
  auto n = MakeNegotiator();
  const auto send = HotMap(10, 3);
  const auto recv = HotMap(10, 1);
  const auto rec = NegotiateOk(n, {&send}, {&recv}, 4, 10);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.3);
  EXPECT_EQ(rec.stages[1].reason, BoundBy::kSenderCoverage);
}

TEST(Negotiator, LinkBudgetCapsTheProposal) {
  const size_t rows = 8, cols = 100;
  auto n = MakeNegotiator();
  const auto map = HotMap(cols, 50);
  Contract probe{.keep = 0.2};
  const double budget = EstimateStepBytes(probe, rows, cols, true, probe.full_codec) + 0.5;
  const auto rec = NegotiateOk(n, {&map, budget}, {}, rows, cols);
  EXPECT_EQ(rec.stages[0].reason, BoundBy::kSenderLinkBudget);
  EXPECT_DOUBLE_EQ(rec.stages[0].keep, 0.2);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.2);
  EXPECT_EQ(n.contract().bound_by, BoundBy::kSenderLinkBudget);
  EXPECT_LE(EstimateStepBytes(n.contract(), rows, cols, true), budget);
  probe.keep = 0.21;
  EXPECT_GT(EstimateStepBytes(probe, rows, cols, true), budget);
}

TEST(Negotiator, LinkBudgetAlsoCapsTheReceiversRaise) {
  const size_t rows = 8, cols = 100;
  auto n = MakeNegotiator();
  const auto send = HotMap(cols, 10);
  const auto recv = HotMap(cols, 80);
  const double budget = EstimateStepBytes(Contract{.keep = 0.4}, rows, cols, true);
  const auto rec = NegotiateOk(n, {&send, budget}, {&recv}, rows, cols);
  EXPECT_EQ(rec.stages[0].reason, BoundBy::kSenderCoverage);
  EXPECT_EQ(rec.stages[1].reason, BoundBy::kSenderLinkBudget);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.4);
}

TEST(Negotiator, LinkBudgetPricesTheContractsCodecAndTheSendersGradientCodec) {
  const size_t rows = 8, cols = 100;
  const auto map = HotMap(cols, 90);
  const double budget = EstimateStepBytes(Contract{.keep = 0.3}, rows, cols, true);
  auto fp32 = MakeNegotiator();
  auto fp16_values = MakeNegotiator({}, Contract{.full_codec = ValueCodec::kFp16});
  auto fp16_both = MakeNegotiator({}, Contract{.full_codec = ValueCodec::kFp16});
  NegotiateOk(fp32, {&map, budget}, {}, rows, cols);
  NegotiateOk(fp16_values, {&map, budget}, {}, rows, cols);
  NegotiateOk(fp16_both,
              {.map = &map, .link_bytes_per_step = budget, .gradient_codec = ValueCodec::kFp16}, {},
              rows, cols);
  EXPECT_DOUBLE_EQ(fp32.contract().keep, 0.3);
  EXPECT_GT(fp16_values.contract().keep, 0.3);  // half the forward value bytes
  EXPECT_GT(fp16_both.contract().keep, 0.5);    // half the value bytes both ways
  EXPECT_GT(fp16_both.contract().keep, fp16_values.contract().keep);
  EXPECT_LE(EstimateStepBytes(fp16_both.contract(), rows, cols, true, ValueCodec::kFp16), budget);
}

TEST(Negotiator, ReceiverComputeCaps) {
  const size_t rows = 8, cols = 100;
  auto n = MakeNegotiator();
  const auto map = HotMap(cols, 60);
  const double compute = 8 * 25 + 3;  // 25 entries per row fit, 26 do not
  const auto rec = NegotiateOk(n, {&map}, {nullptr, compute}, rows, cols);
  EXPECT_EQ(rec.stages[1].reason, BoundBy::kReceiverCompute);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.25);
  EXPECT_LE(n.contract().keep * rows * cols, compute);
}

TEST(Negotiator, ReceiverBufferCaps) {
  const size_t rows = 8, cols = 100;
  auto n = MakeNegotiator();
  const auto map = HotMap(cols, 60);
  const double buffer = EstimateStepBytes(Contract{.keep = 0.15}, rows, cols, false);
  const auto rec = NegotiateOk(n, {&map}, {nullptr, kInf, buffer}, rows, cols);
  EXPECT_EQ(rec.stages[1].reason, BoundBy::kReceiverBuffer);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.15);
  EXPECT_EQ(n.contract().bound_by, BoundBy::kReceiverBuffer);
}

TEST(Negotiator, TightestCapWins) {
  const size_t rows = 8, cols = 100;
  auto n = MakeNegotiator();
  const auto map = HotMap(cols, 90);
  const double link = EstimateStepBytes(Contract{.keep = 0.4}, rows, cols, true);
  const double compute = 8 * 30;
  const double buffer = EstimateStepBytes(Contract{.keep = 0.35}, rows, cols, false);
  NegotiateOk(n, {&map, link}, {nullptr, compute, buffer}, rows, cols);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.3);
  EXPECT_EQ(n.contract().bound_by, BoundBy::kReceiverCompute);
}

TEST(Negotiator, FloorRaisesAnAllZeroMap) {
  auto n = MakeNegotiator({.keep_min = 0.05});
  const auto map = HotMap(100, 0);  // coverage 1/100
  const auto rec = NegotiateOk(n, {&map}, {}, 4, 100);
  EXPECT_DOUBLE_EQ(rec.stages[0].keep, 0.01);
  EXPECT_EQ(rec.stages[2].reason, BoundBy::kFloor);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.05);
  EXPECT_EQ(n.contract().bound_by, BoundBy::kFloor);
}

TEST(Negotiator, CeilingLowersAnAllEqualMap) {
  auto n = MakeNegotiator({.keep_max = 0.6});
  const auto map = MapOf(std::vector<float>(10, 1.0f));
  const auto rec = NegotiateOk(n, {&map}, {}, 4, 10);
  EXPECT_DOUBLE_EQ(rec.stages[0].keep, 1.0);
  EXPECT_EQ(rec.stages[2].reason, BoundBy::kCeiling);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.6);
}

// Caps below the floor: refused, and the contract falls to the floor, the nearest to the caps
// the receiver accepts (not the old keep, which may lie far above a hard cap).
TEST(Negotiator, RefusesWhenCapsAreBelowFloorAndFallsToTheFloor) {
  const size_t rows = 8, cols = 100;
  auto n = MakeNegotiator({.keep_min = 0.1}, Contract{.version = 4, .keep = 0.5});
  const auto map = HotMap(cols, 30);
  const double link = EstimateStepBytes(Contract{.keep = 0.05}, rows, cols, true);
  const auto rec = NegotiateOk(n, {&map, link}, {}, rows, cols, 11);
  ASSERT_EQ(rec.stages.size(), 3u);
  EXPECT_EQ(rec.stages[2].state, NegotiationState::kRefused);
  EXPECT_EQ(rec.stages[2].reason, BoundBy::kBudgetBelowFloor);
  EXPECT_DOUBLE_EQ(rec.stages[2].keep, 0.05);  // what the caps allowed
  EXPECT_TRUE(rec.changed);
  EXPECT_DOUBLE_EQ(rec.contract.keep, 0.1);
  EXPECT_EQ(rec.contract.bound_by, BoundBy::kBudgetBelowFloor);
  EXPECT_EQ(rec.contract.version, 5u);
  EXPECT_EQ(n.contract().version, 5u);
  ASSERT_EQ(n.history().size(), 1u);
  EXPECT_EQ(n.history()[0].stages[2].state, NegotiationState::kRefused);
  // Refused again: already at the floor, the contract stays.
  const auto again = NegotiateOk(n, {&map, link}, {}, rows, cols, 12);
  EXPECT_EQ(again.stages[2].state, NegotiationState::kRefused);
  EXPECT_FALSE(again.changed);
  EXPECT_EQ(n.contract().version, 5u);
  // An old contract below the floor (an initial one) stays too: it is nearer the caps.
  auto low = MakeNegotiator({.keep_min = 0.1}, Contract{.version = 1, .keep = 0.07});
  EXPECT_FALSE(NegotiateOk(low, {&map, link}, {}, rows, cols, 13).changed);
  EXPECT_DOUBLE_EQ(low.contract().keep, 0.07);
}

TEST(Negotiator, RefusesWhenNotOneEntryFitsTheLink) {
  auto n = MakeNegotiator();
  const auto map = HotMap(10, 3);
  const auto rec = NegotiateOk(n, {&map, 10.0}, {}, 4, 10);
  EXPECT_EQ(rec.stages.back().state, NegotiationState::kRefused);
  EXPECT_DOUBLE_EQ(rec.stages.back().keep, 0.0);
  EXPECT_DOUBLE_EQ(n.contract().keep, NegotiatorOptions{}.keep_min);
  EXPECT_EQ(n.contract().version, 1u);
}

TEST(Negotiator, HysteresisKeepsOldContractForSmallChanges) {
  const size_t cols = 1000;
  auto n = MakeNegotiator({.tau_send = 1.0, .hysteresis = 0.005});
  const auto first = HotMap(cols, 300);
  NegotiateOk(n, {&first}, {}, 2, cols);
  ASSERT_DOUBLE_EQ(n.contract().keep, 0.3);
  ASSERT_EQ(n.contract().version, 1u);

  const auto nudged = HotMap(cols, 303);  // 0.303: change 0.003 < 0.005
  const auto held = NegotiateOk(n, {&nudged}, {}, 2, cols);
  EXPECT_FALSE(held.changed);
  EXPECT_EQ(held.stages[2].reason, BoundBy::kHysteresis);
  EXPECT_DOUBLE_EQ(held.stages[2].keep, 0.3);
  EXPECT_DOUBLE_EQ(held.stages[1].keep, 0.303);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.3);
  EXPECT_EQ(n.contract().version, 1u);
  EXPECT_EQ(n.contract().bound_by, BoundBy::kSenderCoverage);

  const auto moved = HotMap(cols, 310);  // 0.31: change 0.01
  const auto rec = NegotiateOk(n, {&moved}, {}, 2, cols);
  EXPECT_TRUE(rec.changed);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.31);
  EXPECT_EQ(n.contract().version, 2u);
}

TEST(Negotiator, HysteresisNeverHoldsAContractAboveACap) {
  const size_t rows = 8, cols = 1000;
  auto n = MakeNegotiator({.tau_send = 1.0, .hysteresis = 0.005});
  const auto map = HotMap(cols, 300);
  NegotiateOk(n, {&map}, {}, rows, cols);
  ASSERT_DOUBLE_EQ(n.contract().keep, 0.3);
  const double compute = double(rows) * 298;  // cap 0.298, 0.002 below the old keep
  const auto rec = NegotiateOk(n, {&map}, {nullptr, compute}, rows, cols);
  EXPECT_TRUE(rec.changed);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.298);
  EXPECT_EQ(n.contract().bound_by, BoundBy::kReceiverCompute);
}

TEST(Negotiator, SameKeepDoesNotBumpVersion) {
  auto n = MakeNegotiator({.hysteresis = 0});
  const auto map = HotMap(10, 3);
  NegotiateOk(n, {&map}, {}, 4, 10);
  const auto again = NegotiateOk(n, {&map}, {}, 4, 10);
  EXPECT_FALSE(again.changed);
  EXPECT_EQ(n.contract().version, 1u);
}

TEST(Negotiator, VersionBumpsByOneOnEachChangeFromInitial) {
  auto n = MakeNegotiator({.hysteresis = 0}, Contract{.boundary = 2, .version = 7, .keep = 0.9});
  for (size_t hot : {1u, 5u, 2u, 9u}) {
    const auto map = HotMap(10, hot);
    const uint32_t before = n.contract().version;
    const auto rec = NegotiateOk(n, {&map}, {}, 4, 10);
    EXPECT_TRUE(rec.changed);
    EXPECT_EQ(n.contract().version, before + 1);
    EXPECT_EQ(rec.contract.boundary, 2u);
  }
  EXPECT_EQ(n.contract().version, 11u);
}

TEST(Negotiator, HistoryRecordsEveryNegotiation) {
  auto n = MakeNegotiator();
  const auto a = HotMap(10, 3), b = HotMap(10, 6);
  NegotiateOk(n, {&a}, {}, 4, 10, 100);
  NegotiateOk(n, {&b}, {}, 4, 10, 200);
  NegotiateOk(n, {&b, 1.0}, {}, 4, 10, 300);  // refused
  const auto& h = n.history();
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0].step, 100u);
  EXPECT_EQ(h[1].step, 200u);
  EXPECT_EQ(h[2].step, 300u);
  EXPECT_DOUBLE_EQ(h[0].contract.keep, 0.3);
  EXPECT_DOUBLE_EQ(h[1].contract.keep, 0.6);
  EXPECT_EQ(h[1].contract.version, 2u);
  EXPECT_EQ(h[2].stages.back().state, NegotiationState::kRefused);
  EXPECT_EQ(h[2].contract.version, 3u);  // fell to the floor
  for (const auto& rec : h) {
    ASSERT_EQ(rec.stages.size(), 3u);
    EXPECT_EQ(rec.stages[0].state, NegotiationState::kProposed);
    EXPECT_EQ(rec.stages[1].state, NegotiationState::kCountered);
  }
}

TEST(Negotiator, KeepsCodecsAndGranularityOfInitialContract) {
  const Contract initial{.keep_full = 0.5,
                         .full_codec = ValueCodec::kFp16,
                         .lossy_codec = ValueCodec::kInt4,
                         .rest = RestCodec::kSign1,
                         .granularity = Granularity::kUnit};
  auto n = MakeNegotiator({}, initial);
  const auto map = HotMap(16, 4);
  NegotiateOk(n, {&map}, {}, 4, 16);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.25);
  EXPECT_EQ(n.contract().full_codec, ValueCodec::kFp16);
  EXPECT_EQ(n.contract().lossy_codec, ValueCodec::kInt4);
  EXPECT_EQ(n.contract().rest, RestCodec::kSign1);
  EXPECT_EQ(n.contract().granularity, Granularity::kUnit);
  EXPECT_DOUBLE_EQ(n.contract().keep_full, 0.5);
}

TEST(Negotiator, BlockMapsUseUnitCoverage) {
  auto map = SensitivityMap::Create({.num_neurons = 20, .block = 4});  // 5 units
  ASSERT_TRUE(map.ok());
  ASSERT_TRUE(map->Assign(std::vector<float>{0, 1, 0, 0, 0}).ok());
  auto n = MakeNegotiator();
  NegotiateOk(n, {&*map}, {}, 4, 20);
  EXPECT_DOUBLE_EQ(n.contract().keep, 0.2);
}

}  // namespace
}  // namespace sparselink

namespace sparselink {
namespace {
TEST(NegotiatorSharedBudget, ACapFromASharedBudgetIsRecordedAsSuch) {
  auto map = SensitivityMap::Create({.num_neurons = 100});
  ASSERT_TRUE(map.ok());
  std::vector<float> values(100, 1.0f);
  ASSERT_TRUE(map->Assign(values).ok());
  auto n = Negotiator::Create({}, Contract{});
  ASSERT_TRUE(n.ok());
  const double budget = EstimateStepBytes(Contract{.keep = 0.2}, 8, 100, true);
  auto rec = n->Negotiate(
      {.map = &*map, .link_bytes_per_step = budget, .link_budget_reason = BoundBy::kSharedBudget},
      {}, 8, 100, 1);
  ASSERT_TRUE(rec.ok()) << rec.status().ToString();
  EXPECT_EQ(n->contract().bound_by, BoundBy::kSharedBudget);
  EXPECT_DOUBLE_EQ(n->contract().keep, 0.2);
}
}  // namespace
}  // namespace sparselink
