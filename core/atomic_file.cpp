#include "core/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.hpp"

namespace grm {

void write_file_atomic(const std::string& path, const std::string& content) {
  std::filesystem::path target(path);
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path());
  std::string temporary = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail("{}: cannot write ({})", temporary, std::strerror(errno));
  size_t written = 0;
  while (written < content.size()) {
    ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      ::close(fd);
      ::unlink(temporary.c_str());
      fail("{}: write failed ({}); is the disk full?", temporary, std::strerror(saved));
    }
    written += static_cast<size_t>(n);
  }
  // A full disk can surface only here (delayed allocation, network file systems).
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int saved = errno;
    ::unlink(temporary.c_str());
    fail("{}: write failed ({}); is the disk full?", temporary, std::strerror(saved));
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    int saved = errno;
    ::unlink(temporary.c_str());
    fail("{}: cannot rename into place ({})", path, std::strerror(saved));
  }
}

void write_directory_atomic(const std::string& dir,
                            const std::function<void(const std::string& partial)>& fill) {
  namespace fs = std::filesystem;
  std::string partial = dir + ".partial";
  std::error_code ignored;
  fs::remove_all(partial, ignored);
  fs::create_directories(partial);
  try {
    fill(partial);
  } catch (...) {
    fs::remove_all(partial, ignored);
    throw;
  }
  try {
    replace_directory(partial, dir);
  } catch (...) {
    fs::remove_all(partial, ignored);
    throw;
  }
}

void replace_directory(const std::string& from, const std::string& to) {
  std::error_code error;
  std::filesystem::remove_all(to, error);
  if (!error) std::filesystem::rename(from, to, error);
  if (error) fail("{}: cannot move the finished directory {} into place ({})", to, from, error.message());
}

void copy_file_atomic(const std::string& from, const std::string& to) {
  write_file_atomic(to, read_file(from));
}

void append_line(const std::string& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  if (!out) fail("{}: cannot open for appending", path);
  out << line << '\n';
  out.flush();
  if (!out) fail("{}: append failed; is the disk full?", path);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open for reading", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace grm
