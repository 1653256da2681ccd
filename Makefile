# The two commands: `make demo` and `make test`. Both install what is missing first
# (scripts/install-deps, apt only), then build with CMake in $(BUILD).
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=

.PHONY: all deps configure build demo test bench clean

all: build

deps:
	@scripts/install-deps

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# The main job on its embedded defaults.
demo: build
	@$(BUILD)/sparselink demo

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600

bench: build
	@$(BUILD)/routing_benchmark --benchmark_min_time=0.2 --benchmark_counters_tabular=true

clean:
	@rm -rf $(BUILD)
