// std::mutex with Clang's thread-safety annotations (Abseil's macros, which come with gRPC), so
// that `-Wthread-safety` checks every ABSL_GUARDED_BY member of the coordinator is touched only
// under its lock. The annotations compile to nothing under g++.
#pragma once

#include <absl/base/thread_annotations.h>

#include <mutex>

namespace dpo {

// A BasicLockable mutex: std::condition_variable_any waits on it directly (the caller holds it
// through a MutexLock before and after the wait, as the analysis assumes).
class ABSL_LOCKABLE Mutex {
 public:
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mutex_.lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { mutex_.unlock(); }

 private:
  std::mutex mutex_;
};

// Holds a Mutex for its scope.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex& mutex) ABSL_EXCLUSIVE_LOCK_FUNCTION(mutex) : mutex_(mutex) { mutex_.lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mutex_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mutex_;
};

}  // namespace dpo
