// Atomic file writes: content goes to a temporary file in the same directory, is fsynced, then renamed
// over the target, so a reader (or a resumed run) never sees a half-written artifact.
#pragma once

#include <string>

namespace grm {

void write_file_atomic(const std::string& path, const std::string& content);
// Appends one line (a JSON record) and flushes it; a torn last line is skipped by readers.
void append_line(const std::string& path, const std::string& line);
std::string read_file(const std::string& path);

}  // namespace grm
