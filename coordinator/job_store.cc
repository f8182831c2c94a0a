#include "coordinator/job_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "common/util/error.h"

namespace dpo {
namespace {

constexpr JobState kAllStates[] = {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed,
                                   JobState::kCancelled};

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

JobState ParseState(std::string_view text, const std::string& where) {
  for (JobState s : kAllStates) {
    if (ToString(s) == text) return s;
  }
  Fail(where, "unknown job state \"" + std::string(text) + "\" in the jobs table");
}

// One prepared statement (RAII): bind, step, read columns, finalized on destruction.
// A state as the jobs table stores it, for binding: the names are ToString's, written nowhere else.
std::string Name(JobState state) { return std::string(ToString(state)); }

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
    "error, attempts, cancel_requested, data_prepared, launch_id, pgid, retries, not_before_ms, "
    "status_json, owner";

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
  r.launch_id = s.Text(13);
  r.pgid = s.Int(14);
  r.retries = static_cast<int>(s.Int(15));
  r.not_before_unix_ms = s.Int(16);
  r.status_json = s.Text(17);
  r.owner = s.Text(18);
  return r;
}

// The schema, one step per version: a database at user_version v runs steps v+1.. at open. Step 1
// is the table as the first coordinator made it (its databases carry user_version 0). A new
// column or table is a new step at the end; a step never changes once released.
constexpr const char* kMigrations[] = {
    // 1: the jobs table.
    "CREATE TABLE IF NOT EXISTS jobs ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, state TEXT NOT NULL,"
    " spec_yaml TEXT NOT NULL, output_dir TEXT NOT NULL, submitted_ms INTEGER NOT NULL,"
    " started_ms INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER NOT NULL DEFAULT 0,"
    " exit_code INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',"
    " attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,"
    " data_prepared INTEGER NOT NULL DEFAULT 0)",
    // 2: each launch's id and process group (restart adoption), retries with their backoff, the
    // worker's last status, and one row per attempt.
    "ALTER TABLE jobs ADD COLUMN launch_id TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN pgid INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN not_before_ms INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN status_json TEXT NOT NULL DEFAULT '';"
    "CREATE TABLE attempts ("
    " job_id INTEGER NOT NULL REFERENCES jobs(id), number INTEGER NOT NULL,"
    " launch_id TEXT NOT NULL, pgid INTEGER NOT NULL DEFAULT 0, started_ms INTEGER NOT NULL,"
    " finished_ms INTEGER NOT NULL DEFAULT 0, exit_code INTEGER NOT NULL DEFAULT 0,"
    " signal INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '',"
    " PRIMARY KEY (job_id, number))",
    // 3: the user who submitted each job (authorization, per-user listings and limits). Two
    // statements in one step (parenthesized: one element, not a missing comma).
    ("ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';"
     "CREATE INDEX jobs_by_owner ON jobs(owner, id)"),
    // 4: the runner's polls (the next job to prepare or launch, the running ones, the counts
    // by state) look jobs up by state: without an index each scanned the whole table under the
    // store's lock, every 200 ms, and every RPC waited behind it (p99 of GetJob).
    "CREATE INDEX jobs_by_state ON jobs(state, data_prepared, id)",
};

// Runs SQL without results (several statements allowed).
void ExecSql(sqlite3* db, const std::string& sql, const std::string& where) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string why = message ? message : sqlite3_errmsg(db);
    sqlite3_free(message);
    Fail(where, "SQLite: " + why);
  }
}

// BEGIN IMMEDIATE .. COMMIT on a connection the caller holds; rolled back when destroyed
// uncommitted (an exception unwinds).
class Transaction {
 public:
  Transaction(sqlite3* db, const std::string& where) : db_(db), where_(where) {
    ExecSql(db_, "BEGIN IMMEDIATE", where_);
  }
  ~Transaction() {
    if (!committed_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void Commit() {
    ExecSql(db_, "COMMIT", where_);
    committed_ = true;
  }

 private:
  sqlite3* db_;
  std::string where_;
  bool committed_ = false;
};

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
  return state == JobState::kSucceeded || state == JobState::kFailed || state == JobState::kCancelled;
}

int JobStore::SchemaVersion() { return static_cast<int>(std::size(kMigrations)); }

JobStore::JobStore(const std::string& path) : path_(path) {
  // The lock file, not the database: SQLite takes its own POSIX locks on the database and would
  // lose them when any descriptor of that file is closed.
  const std::string lock_path = path + ".lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) Fail(path, std::string("cannot open the job database: ") + std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(lock_fd_);
    Fail(path, error == EWOULDBLOCK
                   ? "the job database is in use by another dpo-coordinator (it holds " + lock_path + ")"
                   : std::string("cannot lock the job database: ") + std::strerror(error));
  }
  MutexLock lock(mutex_);
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    const std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    ::close(lock_fd_);
    Fail(path, "cannot open the job database: " + why);
  }
  try {
    sqlite3_busy_timeout(db_, 5000);
    Exec("PRAGMA journal_mode=WAL");
    Exec("PRAGMA synchronous=FULL");
    Migrate();
  } catch (const Error&) {
    sqlite3_close(db_);
    ::close(lock_fd_);
    throw;
  }
}

JobStore::~JobStore() {
  MutexLock lock(mutex_);
  sqlite3_close(db_);
  ::close(lock_fd_);  // releases the flock
}

void JobStore::Exec(const std::string& sql) { ExecSql(db_, sql, path_); }

void JobStore::Migrate() {
  Transaction transaction(db_, path_);
  Statement read(db_, "PRAGMA user_version", path_);
  read.Step();
  const int64_t version = read.Int(0);
  if (version > SchemaVersion()) {
    Fail(path_, "the job database has schema version " + std::to_string(version) +
                    ", newer than this dpo-coordinator's " + std::to_string(SchemaVersion()));
  }
  for (int64_t step = version; step < SchemaVersion(); ++step) Exec(kMigrations[step]);
  Exec("PRAGMA user_version = " + std::to_string(SchemaVersion()));
  transaction.Commit();
}

std::optional<JobRecord> JobStore::GetLocked(int64_t id) {
  Statement s(db_, std::string("SELECT ") + kColumns + " FROM jobs WHERE id = ?", path_);
  if (!s.Bind(1, id).Step()) return std::nullopt;
  return ReadRecord(s, path_);
}

JobStore::InsertResult JobStore::Insert(const std::string& name, const std::string& spec_yaml,
                                        const std::string& output_dir, const std::string& owner) {
  MutexLock lock(mutex_);
  Transaction transaction(db_, path_);
  Statement busy(db_, std::string("SELECT ") + kColumns + " FROM jobs WHERE output_dir = ? AND state IN (?, ?) LIMIT 1",
                 path_);
  if (busy.Bind(1, output_dir).Bind(2, Name(JobState::kQueued)).Bind(3, Name(JobState::kRunning)).Step()) {
    return {ReadRecord(busy, path_), false};
  }
  Statement s(db_,
              "INSERT INTO jobs (name, state, spec_yaml, output_dir, submitted_ms, owner) "
              "VALUES (?, ?, ?, ?, ?, ?)",
              path_);
  s.Bind(1, name).Bind(2, Name(JobState::kQueued)).Bind(3, spec_yaml).Bind(4, output_dir).Bind(5, NowUnixMs());
  s.Bind(6, owner).Step();
  InsertResult result{*GetLocked(sqlite3_last_insert_rowid(db_)), true};
  transaction.Commit();
  return result;
}

std::optional<JobRecord> JobStore::Get(int64_t id) {
  MutexLock lock(mutex_);
  return GetLocked(id);
}

std::vector<JobRecord> JobStore::List(int limit, std::optional<JobState> state) {
  MutexLock lock(mutex_);
  Statement s(db_, std::string("SELECT ") + kColumns + " FROM jobs WHERE ? = '' OR state = ? ORDER BY id DESC LIMIT ?",
              path_);
  const std::string wanted = state ? std::string(ToString(*state)) : "";
  s.Bind(1, wanted).Bind(2, wanted).Bind(3, limit > 0 ? limit : -1);
  std::vector<JobRecord> jobs;
  while (s.Step()) jobs.push_back(ReadRecord(s, path_));
  return jobs;
}

JobStore::ListPage JobStore::List(const ListQuery& query) {
  MutexLock lock(mutex_);
  Statement s(db_,
              std::string("SELECT ") + kColumns +
                  " FROM jobs WHERE (?1 = '' OR owner = ?1) AND (?2 = '' OR state = ?2)"
                  " AND (?3 = 0 OR id < ?3) ORDER BY id DESC LIMIT ?4",
              path_);
  s.Bind(1, query.owner).Bind(2, query.state ? std::string(ToString(*query.state)) : "");
  s.Bind(3, query.before_id).Bind(4, int64_t{query.page_size} + 1);  // one more: is there a next page?
  ListPage page;
  while (s.Step()) page.jobs.push_back(ReadRecord(s, path_));
  if (page.jobs.size() > static_cast<size_t>(query.page_size)) {
    page.jobs.pop_back();
    page.next_before_id = page.jobs.back().id;
  }
  return page;
}

std::optional<JobRecord> JobStore::NextToPrepare(const std::vector<int64_t>& busy) {
  MutexLock lock(mutex_);
  std::string sql = std::string("SELECT ") + kColumns + " FROM jobs WHERE state = ? AND data_prepared = 0";
  if (!busy.empty()) {
    sql += " AND id NOT IN (?";
    for (size_t i = 1; i < busy.size(); ++i) sql += ", ?";
    sql += ")";
  }
  Statement s(db_, sql + " ORDER BY id LIMIT 1", path_);
  s.Bind(1, Name(JobState::kQueued));
  for (size_t i = 0; i < busy.size(); ++i) s.Bind(static_cast<int>(i) + 2, busy[i]);
  if (!s.Step()) return std::nullopt;
  return ReadRecord(s, path_);
}

std::optional<JobRecord> JobStore::NextQueued() {
  MutexLock lock(mutex_);
  Statement s(db_,
              std::string("SELECT ") + kColumns +
                  " FROM jobs WHERE state = ? AND data_prepared = 1 AND not_before_ms <= ?"
                  " ORDER BY id LIMIT 1",
              path_);
  if (!s.Bind(1, Name(JobState::kQueued)).Bind(2, NowUnixMs()).Step()) return std::nullopt;
  return ReadRecord(s, path_);
}

bool JobStore::MarkPrepared(int64_t id) {
  MutexLock lock(mutex_);
  Statement s(db_, "UPDATE jobs SET data_prepared = 1 WHERE id = ? AND state = ?", path_);
  s.Bind(1, id).Bind(2, Name(JobState::kQueued)).Step();
  return sqlite3_changes(db_) == 1;
}

bool JobStore::MarkRunning(int64_t id, const std::string& launch_id) {
  MutexLock lock(mutex_);
  Transaction transaction(db_, path_);
  const int64_t now = NowUnixMs();
  Statement s(db_,
              "UPDATE jobs SET state = ?, started_ms = ?, attempts = attempts + 1, "
              "launch_id = ?, pgid = 0 WHERE id = ? AND state = ?",
              path_);
  s.Bind(1, Name(JobState::kRunning))
      .Bind(2, now)
      .Bind(3, launch_id)
      .Bind(4, id)
      .Bind(5, Name(JobState::kQueued))
      .Step();
  if (sqlite3_changes(db_) != 1) return false;
  Statement attempt(db_,
                    "INSERT INTO attempts (job_id, number, launch_id, started_ms) "
                    "SELECT id, attempts, launch_id, started_ms FROM jobs WHERE id = ?",
                    path_);
  attempt.Bind(1, id).Step();
  transaction.Commit();
  return true;
}

bool JobStore::RecordLaunch(int64_t id, const std::string& launch_id, int64_t pgid) {
  MutexLock lock(mutex_);
  Transaction transaction(db_, path_);
  Statement job(db_, "UPDATE jobs SET pgid = ? WHERE id = ? AND launch_id = ?", path_);
  job.Bind(1, pgid).Bind(2, id).Bind(3, launch_id).Step();
  Statement attempt(db_, "UPDATE attempts SET pgid = ? WHERE job_id = ? AND launch_id = ?", path_);
  attempt.Bind(1, pgid).Bind(2, id).Bind(3, launch_id).Step();
  Statement read(db_, "SELECT cancel_requested FROM jobs WHERE id = ?", path_);
  const bool cancel = read.Bind(1, id).Step() && read.Int(0) != 0;
  transaction.Commit();
  return cancel;
}

void JobStore::RecordStatus(int64_t id, const std::string& status_json) {
  MutexLock lock(mutex_);
  Statement s(db_, "UPDATE jobs SET status_json = ? WHERE id = ?", path_);
  s.Bind(1, status_json).Bind(2, id).Step();
}

void JobStore::CloseAttempt(int64_t id, const AttemptRecord& end) {
  Statement s(db_,
              "UPDATE attempts SET finished_ms = ?, exit_code = ?, signal = ?, reason = ? "
              "WHERE job_id = ? AND finished_ms = 0",
              path_);
  s.Bind(1, NowUnixMs()).Bind(2, end.exit_code).Bind(3, end.signal).Bind(4, end.reason).Bind(5, id).Step();
}

void JobStore::MarkFinished(int64_t id, JobState state, int exit_code, const std::string& error, int signal) {
  MutexLock lock(mutex_);
  Transaction transaction(db_, path_);
  Statement s(db_,
              "UPDATE jobs SET state = ?, finished_ms = ?, exit_code = ?, error = ? "
              "WHERE id = ? AND state IN (?, ?)",
              path_);
  s.Bind(1, Name(state)).Bind(2, NowUnixMs()).Bind(3, exit_code).Bind(4, error).Bind(5, id);
  s.Bind(6, Name(JobState::kQueued)).Bind(7, Name(JobState::kRunning)).Step();
  if (sqlite3_changes(db_) == 1) {
    AttemptRecord end;
    end.exit_code = exit_code;
    end.signal = signal;
    end.reason = state == JobState::kCancelled ? "cancelled" : error;
    CloseAttempt(id, end);
  }
  transaction.Commit();
}

JobState JobStore::Requeue(int64_t id, const AttemptRecord& end, bool retry, int64_t not_before_unix_ms) {
  MutexLock lock(mutex_);
  Transaction transaction(db_, path_);
  const auto job = GetLocked(id);
  if (!job || job->state != JobState::kRunning) return job ? job->state : JobState::kCancelled;
  CloseAttempt(id, end);
  if (job->cancel_requested) {
    Statement s(db_, "UPDATE jobs SET state = ?, finished_ms = ?, exit_code = ? WHERE id = ?", path_);
    s.Bind(1, Name(JobState::kCancelled)).Bind(2, NowUnixMs()).Bind(3, end.exit_code).Bind(4, id).Step();
  } else {
    Statement s(db_,
                "UPDATE jobs SET state = ?, pgid = 0, retries = retries + ?, not_before_ms = ? "
                "WHERE id = ?",
                path_);
    s.Bind(1, Name(JobState::kQueued)).Bind(2, retry ? 1 : 0).Bind(3, not_before_unix_ms).Bind(4, id).Step();
  }
  transaction.Commit();
  return job->cancel_requested ? JobState::kCancelled : JobState::kQueued;
}

bool JobStore::RequestCancel(int64_t id) {
  MutexLock lock(mutex_);
  Statement read(db_, "SELECT state FROM jobs WHERE id = ?", path_);
  if (!read.Bind(1, id).Step()) Fail("job " + std::to_string(id), "no such job");
  const JobState state = ParseState(read.Text(0), path_);
  if (IsFinished(state)) {
    Fail("job " + std::to_string(id), "already " + std::string(ToString(state)));
  }
  if (state == JobState::kQueued) {
    Statement s(db_, "UPDATE jobs SET state = ?, finished_ms = ? WHERE id = ?", path_);
    s.Bind(1, Name(JobState::kCancelled)).Bind(2, NowUnixMs()).Bind(3, id).Step();
    return true;
  }
  Statement s(db_, "UPDATE jobs SET cancel_requested = 1 WHERE id = ?", path_);
  s.Bind(1, id).Step();
  return false;
}

std::vector<AttemptRecord> JobStore::Attempts(int64_t id) {
  MutexLock lock(mutex_);
  Statement s(db_,
              "SELECT number, launch_id, pgid, started_ms, finished_ms, exit_code, signal, reason "
              "FROM attempts WHERE job_id = ? ORDER BY number",
              path_);
  s.Bind(1, id);
  std::vector<AttemptRecord> attempts;
  while (s.Step()) {
    AttemptRecord a;
    a.number = static_cast<int>(s.Int(0));
    a.launch_id = s.Text(1);
    a.pgid = s.Int(2);
    a.started_unix_ms = s.Int(3);
    a.finished_unix_ms = s.Int(4);
    a.exit_code = static_cast<int>(s.Int(5));
    a.signal = static_cast<int>(s.Int(6));
    a.reason = s.Text(7);
    attempts.push_back(std::move(a));
  }
  return attempts;
}

std::vector<std::pair<JobState, int64_t>> JobStore::CountByState() {
  MutexLock lock(mutex_);
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
