// The exclusive lock on a job's output directory: two workers never write one directory,
// whoever launched them. Rank 0 of a worker group holds it for the whole run (the other ranks
// write only through rank 0's protocol, and flock between ranks of one job would conflict).
#pragma once

#include <string>

#include "common/util/unique_fd.h"

namespace dpo {

class OutputDirLock {
 public:
  // Takes flock(LOCK_EX | LOCK_NB) on <output_dir>/.lock and writes this process's pid and host
  // into it. Throws dpo::Error (kOutputLocked) at once when another process holds it, naming
  // the directory and the holder's pid; kIo when the file cannot be opened.
  explicit OutputDirLock(const std::string& output_dir);
  // The lock goes with the descriptor (also when the process dies).

 private:
  UniqueFd fd_;
};

}  // namespace dpo
