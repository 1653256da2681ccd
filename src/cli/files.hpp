// Files and child processes the subcommands share: a report written all or nothing, a path
// checked writable before the work that fills it, and a helper program run without a shell.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "sparselink/status.hpp"

namespace sparselink::cli {

// Creates `path`'s directory and a temporary file beside it, so that a run does not end, hours
// later, in a report it cannot write. Errors name `flag`.
Status CheckWritable(const std::filesystem::path& path, std::string_view flag);

// Writes `text` to `path` through `path`.partial and a rename: a reader sees the old file or
// the whole new one. Errors name `flag`.
Status WriteAtomically(const std::filesystem::path& path, const std::string& text,
                       std::string_view flag);

// Runs `args` (argv[0] a full path; an argument vector, not a shell line, so paths with quotes
// or '$' stay paths) with its output dropped or kept; true when it exits 0. Blocks.
bool Spawn(std::vector<std::string> args, bool quiet);

// "12.34 MB": bytes in decimal megabytes for the tables.
std::string Megabytes(double bytes);

// One line on `err`, "sparselink <command>: <status>", and the exit code 1.
int Fail(std::ostream& err, std::string_view command, const Status& s);

}  // namespace sparselink::cli
