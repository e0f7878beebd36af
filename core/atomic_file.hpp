// Atomic file writes: content goes to a temporary file in the same directory, is fsynced, then renamed
// over the target, so a reader (or a resumed run) never sees a half-written artifact.
#pragma once

#include <functional>
#include <string>

namespace grm {

// Every failure (no space, I/O error, a failed fsync) is a grm::Error naming the file and the cause; the
// target is then unchanged and no temporary file is left.
void write_file_atomic(const std::string& path, const std::string& content);
// A directory written the same way: `fill` writes into DIR.partial, which is renamed to DIR when fill
// returns, replacing an older DIR; readers see a complete directory or none. When fill throws, the partial
// directory is removed and the error passes on. A DIR.partial left by a killed run is removed first.
void write_directory_atomic(const std::string& dir,
                            const std::function<void(const std::string& partial)>& fill);
// Renames the finished directory `from` to `to`, replacing an older `to`: the last step of a directory
// built in stages (an ensemble's members, one by one, in a DIR.partial of its own).
void replace_directory(const std::string& from, const std::string& to);
// Copies a file through write_file_atomic (so a full disk is an error naming the file, not a short copy).
void copy_file_atomic(const std::string& from, const std::string& to);
// Appends one line (a JSON record) and flushes it; a torn last line is skipped by readers.
void append_line(const std::string& path, const std::string& line);
std::string read_file(const std::string& path);

}  // namespace grm
