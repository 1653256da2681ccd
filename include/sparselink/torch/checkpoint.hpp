// Checkpoints of a training run: one file per process, DIR/rank-R.ckpt (rank 0 for a run in
// one process), written at the end of every epoch, from which a resumed run continues with
// the next epoch exactly as the uninterrupted run would have (the trainer and the pipeline
// fill and read the sections: model, optimizer, random generators, epoch figures, every
// boundary end's maps, contract, negotiation history and counters).
//
// The file (docs/formats.md has the byte layout): a 56-byte header (magic "SLCK", format
// version, rank, world size, the epoch it was written after, the fingerprint of the run's
// configuration, the payload's size and XXH3-64, and the header's own XXH3-64), then the
// payload: the configuration as text ("key=value" lines, what a resumed run must match), then
// named sections of bytes. It is written to DIR/rank-R.ckpt.partial, fsync'ed, renamed over
// the old file and the directory fsync'ed, so a reader finds the previous checkpoint or the
// whole new one, never a mix.
//
// Cost and threads: each call is one pass over the file's bytes (read or write, one XXH3-64
// pass, two fsyncs when writing); the functions keep no state and may run on any thread, one
// call per path at a time.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sparselink/status.hpp"

namespace sparselink::torch_adapter {

inline constexpr uint32_t kCheckpointFormatVersion = 1;
inline constexpr size_t kCheckpointHeaderBytes = 56;

// What a run does with checkpoints (TrainOptions::checkpoint).
struct CheckpointOptions {
  // Non-empty: after every epoch, write CheckpointPath(dir, rank) (the directory is created).
  std::filesystem::path dir;
  // Non-empty: continue from CheckpointPath(resume, rank), with the epoch after the one it
  // was written after. Every rank of a pipeline must find its file of the same epoch.
  std::filesystem::path resume;
  // > 0: end the run after this epoch, its checkpoint written, as if the job had been killed
  // there: resumed with the same options, the run ends as one that was never stopped (the
  // learning rate's schedule spans all `epochs`, so a run of fewer epochs would not).
  int stop_after = 0;
  // "key=value" lines, one per setting a resumed run must share with the checkpoint, added to
  // the lines the trainer derives itself (batch, seed, optimizer, the boundaries' options,
  // the model's shapes, a hash of the data, the world size). Not the number of epochs, so
  // that a run can be extended.
  std::string config;
};

// One checkpoint file in memory.
struct Checkpoint {
  uint32_t rank = 0;
  uint32_t world_size = 1;
  uint32_t epoch = 0;  // epochs completed
  std::string config;  // "key=value" lines; the header holds ConfigFingerprint(config)
  std::vector<std::pair<std::string, std::vector<uint8_t>>> sections;

  void Add(std::string name, std::vector<uint8_t> bytes) {
    sections.emplace_back(std::move(name), std::move(bytes));
  }
  // The section called `name`, or null.
  const std::vector<uint8_t>* Find(std::string_view name) const;
};

// DIR/rank-R.ckpt.
std::filesystem::path CheckpointPath(const std::filesystem::path& dir, int rank);

// XXH3-64 of the configuration text.
uint64_t ConfigFingerprint(std::string_view config);

// The file's bytes. Allocates the whole file.
std::vector<uint8_t> EncodeCheckpoint(const Checkpoint& checkpoint);

// Checks, in order: the magic (a foreign file says so, however short), the header's size and
// checksum, the format version, the payload's size (a truncated file, or bytes after it) and
// checksum, then every field against the bytes left. Errors (kInvalidArgument for a file that
// is not a checkpoint, kUnsupported for another format version, kCorruptPacket for the rest)
// say what is wrong, without the file's name. Allocates in proportion to `bytes` only.
Result<Checkpoint> DecodeCheckpoint(std::span<const uint8_t> bytes);

// Writes `checkpoint` to `path` atomically (see above), creating its directory. Errors: kIo
// naming the path and the call that failed; the old file is then left as it was.
Status WriteCheckpoint(const std::filesystem::path& path, const Checkpoint& checkpoint);

// Reads and verifies the checkpoint at `path` for rank `rank` of `world_size` of a run
// configured as `config`. Every error is one line "checkpoint = <path>: <what is wrong>":
// missing or unreadable (kIo), not a checkpoint, another rank's or world's, another
// configuration (naming the first setting that differs) (kInvalidArgument), another format
// version (kUnsupported), truncated or corrupt (kCorruptPacket).
Result<Checkpoint> ReadCheckpoint(const std::filesystem::path& path, uint32_t rank,
                                  uint32_t world_size, std::string_view config);

}  // namespace sparselink::torch_adapter
