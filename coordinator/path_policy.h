// Confines the paths a submitted job spec names to the directories the coordinator was given:
// inputs (data, models, tokenizers, checkpoints to resume from) to the read roots, outputs to the
// write root. Every path is resolved to its real path first (symlinks and ".." followed; for a
// path that does not exist yet, the real path of its deepest existing ancestor plus the rest), so
// neither a symlink nor "../" leads out, and one directory has one name (/x, /x/, /./x and //x
// resolve alike, which is what the output-directory conflict check compares).
//
// Nothing here opens a path: types come from stat(2), so a FIFO or a device is refused before
// anything could block on it or read it. Refusals name the spec field and echo only the path as
// the caller wrote it; a path outside the roots gets one message whether it exists or not.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/config/job_spec.h"

namespace dpo {

struct PathRoots {
  // Directories inputs may be read from (outputs under `write` may be read too, e.g. a model an
  // earlier job trained). Default: none = inputs unconfined (single-user mode).
  std::vector<std::string> read;
  // The directory every output (output.dir, data.prepared_dir) must be inside.
  // Default: empty = outputs unconfined (single-user mode).
  std::string write;
};

// The real path of `path` (absolute, or relative to the current directory), as described above;
// no trailing separator. Never fails: an unresolvable path (e.g. a component not searchable) is
// returned lexically normalized.
std::string ResolvePath(const std::string& path);

// True when `path` is `root` or below it; both real paths.
bool IsInside(std::string_view path, std::string_view root);

// Checks every path of `spec` against `roots` and rewrites each to its real path (the metrics
// file to an absolute path, which must be inside output.dir). Inputs that exist must be regular
// files or directories, and with read roots configured they must exist. Throws dpo::Error
// listing every refused field ("data.train: ...", one per line).
void ConfinePaths(JobSpec& spec, const PathRoots& roots);

}  // namespace dpo
