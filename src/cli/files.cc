#include "cli/files.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <fstream>
#include <iomanip>
#include <ostream>
#include <sstream>

extern char** environ;

namespace sparselink::cli {

Status CheckWritable(const std::filesystem::path& path, std::string_view flag) {
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) return FieldError(ErrorCode::kIo, flag, path.string(), ec.message());
  if (std::filesystem::is_directory(path)) {
    return FieldError(ErrorCode::kIo, flag, path.string(), "is a directory");
  }
  const std::filesystem::path probe = path.string() + ".partial";
  std::ofstream file(probe);
  if (!file) return FieldError(ErrorCode::kIo, flag, path.string(), "cannot be written");
  file.close();
  std::filesystem::remove(probe, ec);
  return Status::Ok();
}

Status WriteAtomically(const std::filesystem::path& path, const std::string& text,
                       std::string_view flag) {
  const std::filesystem::path partial = path.string() + ".partial";
  std::error_code ec;
  std::ofstream file(partial, std::ios::trunc);
  file << text;
  file.close();  // the final flush happens here; check after it
  if (file.fail()) {
    std::filesystem::remove(partial, ec);
    return FieldError(ErrorCode::kIo, flag, path.string(), "write failed");
  }
  std::filesystem::rename(partial, path, ec);
  if (ec) return FieldError(ErrorCode::kIo, flag, path.string(), ec.message());
  return Status::Ok();
}

bool Spawn(std::vector<std::string> args, bool quiet) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (quiet) {
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = 0;
  int status = 0;
  const bool ok = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) == 0 &&
                  waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  posix_spawn_file_actions_destroy(&actions);
  return ok;
}

std::string Megabytes(double bytes) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(bytes < 1e7 ? 2 : 1) << bytes / 1e6 << " MB";
  return s.str();
}

int Fail(std::ostream& err, std::string_view command, const Status& s) {
  err << ("sparselink " + std::string(command) + ": " + s.ToString() + "\n");
  return 1;
}

}  // namespace sparselink::cli
