# The two commands: `make demo` and `make test`. Both install what is missing first
# (scripts/install-deps, apt only), then build with CMake in $(BUILD).
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=

.PHONY: all deps configure build install demo test test-sanitize test-sanitize-gloo test-tsan fuzz bench experiments clean

all: build

deps:
	@scripts/install-deps

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

build: configure
	@env -u MAKEFLAGS -u MAKELEVEL cmake --build $(BUILD) -j $(JOBS)

# Headers, libraries, the CMake package and sparselink.pc under PREFIX (examples/consumer uses
# them).
PREFIX ?= /usr/local
install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

# The main job on its embedded defaults (plus the dense baseline with the same seed, for the
# accuracy plot): report and plots under out/train/.
demo: build
	@$(BUILD)/sparselink train --compare-dense --report out/train/report.json --plot out/train/plots

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600

# Sanitizer builds at -O1 with line tables only (-g1): reports keep their file:line frames, and
# the builds, which are most of CI's time after `make test`, compile faster than at -O2 -g.
SANITIZE_FLAGS ?= -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG"

# The core suite under AddressSanitizer + UndefinedBehaviorSanitizer (LibTorch off: Debian's
# LibTorch is not built with the sanitizers). GCC's "undefined" leaves out float-to-integer
# casts of out-of-range values, so that check is asked for by name.
test-sanitize: deps
	@cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo $(SANITIZE_FLAGS) -DSPARSELINK_WITH_TORCH=OFF \
	  -DSPARSELINK_BUILD_BENCH=OFF -DSPARSELINK_SANITIZE="address;undefined;float-cast-overflow" >/dev/null
	@cmake --build build-sanitize -j $(JOBS)
	@cd build-sanitize && ctest --output-on-failure -j $(JOBS) --timeout 900

# The process-group (Gloo) link's conformance suite under ASan + UBSan, LibTorch itself left
# uninstrumented: not in CI (about 15 minutes on 2 cores, most of it the adapter's build).
test-sanitize-gloo: deps
	@cmake -S . -B build-asan-gloo -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPARSELINK_WITH_TORCH=ON \
	  -DSPARSELINK_BUILD_BENCH=OFF -DSPARSELINK_BUILD_CLI=OFF -DSPARSELINK_WITH_MPI=OFF \
	  -DSPARSELINK_SANITIZE="address;undefined" >/dev/null
	@cmake --build build-asan-gloo -j $(JOBS) --target process_group_link_test
	@build-asan-gloo/process_group_link_test --gtest_brief=1

# The threaded core (router, packet codec, links) under ThreadSanitizer: clang with LLVM's
# libomp, whose synchronization TSan sees through the Archer OMPT tool (libgomp is not
# instrumented and gives false positives). ignore_noninstrumented_modules drops reports whose
# accesses all come from libomp itself (its mutex set-up in a fresh worker), as Archer asks;
# races in our code are still reported. Two OpenMP threads are forced so the parallel paths
# (rows x cols >= 2^15 entries) really run in parallel.
TSAN_OMP_TOOL ?= $(shell clang++ -print-resource-dir 2>/dev/null | sed 's|/lib/clang/.*|/lib|')/libarcher.so
# The tests that take the parallel paths: every routing test (MakeRouter sets
# parallel_min_entries = 1; several set the OpenMP thread count), the packet tests that set
# parallel_min_entries = 1 or the thread count, and the links.
TSAN_TESTS = router_test select_test select_units_test select_fast_test select_one_pass_test \
  rest_tier_test mask_ops_test routed_tensor_test column_sums_test gradient_packet_test \
  packet_parallel_test link_test link_conformance_test
test-tsan: deps
	@cmake -S . -B build-tsan -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo $(SANITIZE_FLAGS) \
	  -DSPARSELINK_WITH_TORCH=OFF -DSPARSELINK_BUILD_BENCH=OFF -DSPARSELINK_BUILD_CLI=OFF \
	  -DSPARSELINK_SANITIZE=thread >/dev/null
	@cmake --build build-tsan -j $(JOBS) --target $(TSAN_TESTS)
	@for t in $(TSAN_TESTS); do \
	  echo "tsan: $$t"; \
	  OMP_NUM_THREADS=2 OMP_TOOL_LIBRARIES=$(TSAN_OMP_TOOL) TSAN_OPTIONS="halt_on_error=1 ignore_noninstrumented_modules=1" \
	    build-tsan/$$t --gtest_brief=1 || exit 1; \
	done

# libFuzzer (clang) over every reader of outside input: the packet decoders, the
# sensitivity-map reader, the idx dataset reader and the CLI's text parsers, seeded with real
# inputs, FUZZ_SECONDS each.
FUZZ_SECONDS ?= 60
fuzz: deps
	@cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DSPARSELINK_WITH_TORCH=OFF -DSPARSELINK_BUILD_TESTS=OFF -DSPARSELINK_BUILD_BENCH=OFF \
	  -DSPARSELINK_BUILD_CLI=OFF -DSPARSELINK_FUZZ=ON -DSPARSELINK_SANITIZE="address;undefined" >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@build-fuzz/make_corpus build-fuzz/corpus
	@build-fuzz/packet_fuzzer -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus/packet
	@build-fuzz/sensitivity_fuzzer -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus/sensitivity
	@build-fuzz/idx_fuzzer -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus/idx
	@mkdir -p build-fuzz/corpus/frame
	@build-fuzz/frame_fuzzer -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus/frame
	@build-fuzz/text_fuzzer -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus/text

bench: build
	@$(BUILD)/sparselink bench --json $(BUILD)/bench.json
	@/usr/bin/python3 scripts/plot_bench.py $(BUILD)/bench.json $(BUILD)/bench.png
	@$(BUILD)/routing_benchmark --benchmark_min_time=0.2 --benchmark_counters_tabular=true

# The accuracy/traffic experiments behind docs/RESULTS.md (long: about an hour on 2 cores).
experiments: build
	@SPARSELINK=$(BUILD)/sparselink scripts/experiments.sh out/experiments "1 2 3" mlp
	@SPARSELINK=$(BUILD)/sparselink EPOCHS=3 scripts/experiments.sh out/experiments "1 2 3" cnn
	@SPARSELINK=$(BUILD)/sparselink LINK_THROUGHPUT=$(BUILD)/link_throughput \
	  scripts/ranks-experiments.py --out out/ranks

clean:
	@rm -rf $(BUILD)
