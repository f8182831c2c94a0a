// Path and directory helpers for checkpoint directories, on POSIX calls. Code linked with
// LibTorch must not call std::filesystem: libtorch.so exports its own std::filesystem symbols
// (an older libstdc++ build), which the dynamic linker may bind instead of libstdc++'s, and
// some of them crash (e.g. remove_all jumps to a null pointer).
#pragma once

#include <string>

namespace dpo {

std::string JoinPath(const std::string& dir, const std::string& name);
// The part after the last '/', or the whole path when there is none.
std::string BaseName(const std::string& path);
// The part before the last '/', "." when there is none.
std::string DirName(const std::string& path);
bool PathExists(const std::string& path);
bool IsRegularFile(const std::string& path);
bool IsDirectory(const std::string& path);
// mkdir -p. Throws dpo::Error naming the path on failure.
void MakeDirectories(const std::string& path);
// Removes a file if present; other errors are ignored (used for stale files).
void RemoveFileIfExists(const std::string& path);
// rm -rf. Throws dpo::Error naming the path on failure.
void RemoveTree(const std::string& path);
// The whole file. Throws dpo::Error naming the path when it cannot be read.
std::string ReadWholeFile(const std::string& path);

}  // namespace dpo
