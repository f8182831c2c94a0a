#include "coordinator/job_store.h"

#include <sqlite3.h>

#include <chrono>
#include <utility>

#include "common/util/error.h"

namespace dpo {
namespace {

constexpr JobState kAllStates[] = {JobState::kQueued, JobState::kRunning, JobState::kSucceeded,
                                   JobState::kFailed, JobState::kCancelled};

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

JobState ParseState(std::string_view text, const std::string& where) {
  for (JobState s : kAllStates) {
    if (ToString(s) == text) return s;
  }
  Fail(where, "unknown job state \"" + std::string(text) + "\" in the jobs table");
}

// One prepared statement (RAII): bind, step, read columns, finalized on destruction.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql, const std::string& where) : db_(db), where_(where) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK) Check(SQLITE_ERROR);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& Bind(int index, int64_t value) {
    Check(sqlite3_bind_int64(stmt_, index, value));
    return *this;
  }
  Statement& Bind(int index, const std::string& value) {
    Check(sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT));
    return *this;
  }
  // True while a row is available.
  bool Step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) Check(rc);
    return false;
  }
  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::string Text(int column) const {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return text ? std::string(text, static_cast<size_t>(sqlite3_column_bytes(stmt_, column))) : "";
  }

 private:
  void Check(int rc) const {
    if (rc != SQLITE_OK) Fail(where_, std::string("SQLite: ") + sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string where_;
};

constexpr const char* kColumns =
    "id, name, state, spec_yaml, output_dir, submitted_ms, started_ms, finished_ms, exit_code, "
    "error, attempts, cancel_requested, data_prepared";

JobRecord ReadRecord(const Statement& s, const std::string& where) {
  JobRecord r;
  r.id = s.Int(0);
  r.name = s.Text(1);
  r.state = ParseState(s.Text(2), where);
  r.spec_yaml = s.Text(3);
  r.output_dir = s.Text(4);
  r.submitted_unix_ms = s.Int(5);
  r.started_unix_ms = s.Int(6);
  r.finished_unix_ms = s.Int(7);
  r.exit_code = static_cast<int>(s.Int(8));
  r.error = s.Text(9);
  r.attempts = static_cast<int>(s.Int(10));
  r.cancel_requested = s.Int(11) != 0;
  r.data_prepared = s.Int(12) != 0;
  return r;
}

}  // namespace

std::string_view ToString(JobState state) {
  switch (state) {
    case JobState::kQueued: return "queued";
    case JobState::kRunning: return "running";
    case JobState::kSucceeded: return "succeeded";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
  }
  return "unknown";
}

bool IsFinished(JobState state) {
  return state == JobState::kSucceeded || state == JobState::kFailed ||
         state == JobState::kCancelled;
}

JobStore::JobStore(const std::string& path) : path_(path) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    const std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    Fail(path, "cannot open the job database: " + why);
  }
  sqlite3_busy_timeout(db_, 5000);
  Exec("PRAGMA journal_mode=WAL");
  Exec("PRAGMA synchronous=FULL");
  Exec(
      "CREATE TABLE IF NOT EXISTS jobs ("
      " id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, state TEXT NOT NULL,"
      " spec_yaml TEXT NOT NULL, output_dir TEXT NOT NULL, submitted_ms INTEGER NOT NULL,"
      " started_ms INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER NOT NULL DEFAULT 0,"
      " exit_code INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',"
      " attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,"
      " data_prepared INTEGER NOT NULL DEFAULT 0)");
}

JobStore::~JobStore() { sqlite3_close(db_); }

void JobStore::Exec(const std::string& sql) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string why = message ? message : sqlite3_errmsg(db_);
    sqlite3_free(message);
    Fail(path_, "SQLite: " + why);
  }
}

JobStore::InsertResult JobStore::Insert(const std::string& name, const std::string& spec_yaml,
                                       const std::string& output_dir) {
  std::lock_guard lock(mutex_);
  Statement busy(db_, std::string("SELECT ") + kColumns +
                          " FROM jobs WHERE output_dir = ? AND state IN ('queued', 'running') LIMIT 1",
                 path_);
  if (busy.Bind(1, output_dir).Step()) return {ReadRecord(busy, path_), false};
  Statement s(db_,
              "INSERT INTO jobs (name, state, spec_yaml, output_dir, submitted_ms) "
              "VALUES (?, 'queued', ?, ?, ?)",
              path_);
  s.Bind(1, name).Bind(2, spec_yaml).Bind(3, output_dir).Bind(4, NowUnixMs()).Step();
  const int64_t id = sqlite3_last_insert_rowid(db_);
  Statement read(db_, std::string("SELECT ") + kColumns + " FROM jobs WHERE id = ?", path_);
  read.Bind(1, id).Step();
  return {ReadRecord(read, path_), true};
}

std::optional<JobRecord> JobStore::Get(int64_t id) {
  std::lock_guard lock(mutex_);
  Statement s(db_, std::string("SELECT ") + kColumns + " FROM jobs WHERE id = ?", path_);
  if (!s.Bind(1, id).Step()) return std::nullopt;
  return ReadRecord(s, path_);
}

std::vector<JobRecord> JobStore::List(int limit, std::optional<JobState> state) {
  std::lock_guard lock(mutex_);
  Statement s(db_, std::string("SELECT ") + kColumns +
                       " FROM jobs WHERE ? = '' OR state = ? ORDER BY id DESC LIMIT ?", path_);
  const std::string wanted = state ? std::string(ToString(*state)) : "";
  s.Bind(1, wanted).Bind(2, wanted).Bind(3, limit > 0 ? limit : -1);
  std::vector<JobRecord> jobs;
  while (s.Step()) jobs.push_back(ReadRecord(s, path_));
  return jobs;
}

std::optional<JobRecord> JobStore::OldestQueued(bool data_prepared) {
  std::lock_guard lock(mutex_);
  Statement s(db_, std::string("SELECT ") + kColumns +
                       " FROM jobs WHERE state = 'queued' AND data_prepared = ? ORDER BY id LIMIT 1",
              path_);
  if (!s.Bind(1, data_prepared ? 1 : 0).Step()) return std::nullopt;
  return ReadRecord(s, path_);
}

std::optional<JobRecord> JobStore::NextToPrepare() { return OldestQueued(false); }

std::optional<JobRecord> JobStore::NextQueued() { return OldestQueued(true); }

bool JobStore::MarkPrepared(int64_t id) {
  std::lock_guard lock(mutex_);
  Statement s(db_, "UPDATE jobs SET data_prepared = 1 WHERE id = ? AND state = 'queued'", path_);
  s.Bind(1, id).Step();
  return sqlite3_changes(db_) == 1;
}

bool JobStore::MarkRunning(int64_t id) {
  std::lock_guard lock(mutex_);
  Statement s(db_,
              "UPDATE jobs SET state = 'running', started_ms = ?, attempts = attempts + 1 "
              "WHERE id = ? AND state = 'queued'",
              path_);
  s.Bind(1, NowUnixMs()).Bind(2, id).Step();
  return sqlite3_changes(db_) == 1;
}

void JobStore::MarkFinished(int64_t id, JobState state, int exit_code, const std::string& error) {
  std::lock_guard lock(mutex_);
  Statement s(db_,
              "UPDATE jobs SET state = ?, finished_ms = ?, exit_code = ?, error = ? "
              "WHERE id = ? AND state IN ('queued', 'running')",
              path_);
  s.Bind(1, std::string(ToString(state))).Bind(2, NowUnixMs()).Bind(3, exit_code).Bind(4, error).Bind(5, id).Step();
}

bool JobStore::RequestCancel(int64_t id) {
  std::lock_guard lock(mutex_);
  Statement read(db_, "SELECT state FROM jobs WHERE id = ?", path_);
  if (!read.Bind(1, id).Step()) Fail("job " + std::to_string(id), "no such job");
  const JobState state = ParseState(read.Text(0), path_);
  if (IsFinished(state)) {
    Fail("job " + std::to_string(id), "already " + std::string(ToString(state)));
  }
  if (state == JobState::kQueued) {
    Statement s(db_, "UPDATE jobs SET state = 'cancelled', finished_ms = ? WHERE id = ?", path_);
    s.Bind(1, NowUnixMs()).Bind(2, id).Step();
    return true;
  }
  Statement s(db_, "UPDATE jobs SET cancel_requested = 1 WHERE id = ?", path_);
  s.Bind(1, id).Step();
  return false;
}

int JobStore::RequeueInterrupted() {
  std::lock_guard lock(mutex_);
  // A job whose cancel was requested before the stop stays stopped.
  Statement cancelled(db_,
                      "UPDATE jobs SET state = 'cancelled', finished_ms = ? "
                      "WHERE state = 'running' AND cancel_requested = 1",
                      path_);
  cancelled.Bind(1, NowUnixMs()).Step();
  Statement s(db_, "UPDATE jobs SET state = 'queued' WHERE state = 'running'", path_);
  s.Step();
  return sqlite3_changes(db_);
}

std::vector<std::pair<JobState, int64_t>> JobStore::CountByState() {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<JobState, int64_t>> counts;
  for (JobState state : kAllStates) counts.emplace_back(state, 0);
  Statement s(db_, "SELECT state, COUNT(*) FROM jobs GROUP BY state", path_);
  while (s.Step()) {
    const JobState state = ParseState(s.Text(0), path_);
    for (auto& [st, n] : counts) {
      if (st == state) n = s.Int(1);
    }
  }
  return counts;
}

}  // namespace dpo
