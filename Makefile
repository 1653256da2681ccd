# The two commands: `make demo` and `make test`. Both install what is missing first
# (scripts/install-deps, apt only), then build with CMake in $(BUILD).
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=

.PHONY: all deps configure build demo test test-sanitize fuzz bench experiments clean

all: build

deps:
	@scripts/install-deps

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

build: configure
	@env -u MAKEFLAGS -u MAKELEVEL cmake --build $(BUILD) -j $(JOBS)

# The main job on its embedded defaults (plus the dense baseline with the same seed, for the
# accuracy plot): report and plots under out/train/.
demo: build
	@$(BUILD)/sparselink train --compare-dense --report out/train/report.json --plot out/train/plots

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600

# The core suite under AddressSanitizer + UndefinedBehaviorSanitizer (LibTorch off: Debian's
# LibTorch is not built with the sanitizers).
test-sanitize: deps
	@cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPARSELINK_WITH_TORCH=OFF \
	  -DSPARSELINK_BUILD_BENCH=OFF -DSPARSELINK_SANITIZE="address;undefined" >/dev/null
	@cmake --build build-sanitize -j $(JOBS)
	@cd build-sanitize && ctest --output-on-failure -j $(JOBS) --timeout 900

# libFuzzer (clang) over every packet decoder and the sensitivity-map reader, seeded with
# real packets, FUZZ_SECONDS each.
FUZZ_SECONDS ?= 60
fuzz: deps
	@cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DSPARSELINK_WITH_TORCH=OFF -DSPARSELINK_BUILD_TESTS=OFF -DSPARSELINK_BUILD_BENCH=OFF \
	  -DSPARSELINK_BUILD_CLI=OFF -DSPARSELINK_FUZZ=ON -DSPARSELINK_SANITIZE="address;undefined" >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@build-fuzz/make_corpus build-fuzz/corpus
	@build-fuzz/packet_fuzzer -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus/packet
	@build-fuzz/sensitivity_fuzzer -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus/sensitivity

bench: build
	@$(BUILD)/routing_benchmark --benchmark_min_time=0.2 --benchmark_counters_tabular=true

# The accuracy/traffic experiments behind docs/RESULTS.md (long: about an hour on 2 cores).
experiments: build
	@scripts/experiments.sh out/experiments "1 2 3" mlp
	@EPOCHS=3 scripts/experiments.sh out/experiments "1 2 3" cnn

clean:
	@rm -rf $(BUILD)
