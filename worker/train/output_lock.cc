#include "worker/train/output_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/util/error.h"

namespace dpo {

OutputDirLock::OutputDirLock(const std::string& output_dir) {
  const std::string path = (std::filesystem::path(output_dir) / ".lock").string();
  fd_ = UniqueFd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd_.valid()) {
    Fail("output.dir", "cannot open the lock file " + path + ": " + std::strerror(errno), ErrorCode::kIo);
  }
  if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    if (error != EWOULDBLOCK) {
      Fail("output.dir", "cannot lock " + path + ": " + std::strerror(error), ErrorCode::kIo);
    }
    char holder[128] = {};
    const ssize_t n = ::pread(fd_.get(), holder, sizeof holder - 1, 0);
    std::string who(holder, n > 0 ? static_cast<size_t>(n) : 0);
    while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
    Fail("output.dir",
         "\"" + output_dir + "\" is in use by another worker (" + (who.empty() ? std::string("holder unknown") : who) +
             "); two workers must never write one output directory",
         ErrorCode::kOutputLocked);
  }
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const std::string who = "pid " + std::to_string(::getpid()) + " on " + host + "\n";
  if (::ftruncate(fd_.get(), 0) != 0 ||
      ::pwrite(fd_.get(), who.data(), who.size(), 0) != static_cast<ssize_t>(who.size())) {
    Fail("output.dir", "cannot write " + path + ": " + std::strerror(errno), ErrorCode::kIo);
  }
}

}  // namespace dpo
