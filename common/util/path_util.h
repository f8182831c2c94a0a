// Path and directory helpers on POSIX calls, for the engine, the coordinator and their tests.
// Torch-free.
//
// Why RemoveTree and not std::filesystem::remove_all: libtorch.so exports its own build of
// libstdc++'s std::filesystem, and in a binary linked with LibTorch our calls bind to that copy
// (LD_DEBUG=bindings shows it). Its remove_all crashed there, jumping to a null pointer (commit
// 7f8ad51). So no code outside coordinator/ (which is never linked with LibTorch) calls
// remove_all -- tests/lint/check_sources.sh fails the build's tests on one. The rest of
// std::filesystem (paths, directory iterators, create_directories, rename, status queries) is
// used in torch-linked code and runs in its tests. (With torch 2.11 a probe of remove_all no
// longer crashes, but our calls still bind to torch's copy, so the rule stays.)
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
