#include "coordinator/token_store.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include <cctype>
#include <chrono>

#include "common/util/error.h"

namespace dpo {
namespace {

std::string Hex(const unsigned char* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string text;
  for (size_t i = 0; i < n; ++i) {
    text += kDigits[bytes[i] >> 4];
    text += kDigits[bytes[i] & 15];
  }
  return text;
}

// A user name is also a directory name under the write root (job_service.cc): no "." or "..".
bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64 || !std::isalnum(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '@' && c != '-') return false;
  }
  return true;
}

}  // namespace

TokenStore::TokenStore(const std::string& path) : path_(path) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK) {
    const std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    Fail(path, "cannot open the token database: " + why);
  }
  sqlite3_busy_timeout(db_, 5000);
  Exec(
      "CREATE TABLE IF NOT EXISTS tokens (name TEXT PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE,"
      " admin INTEGER NOT NULL, created_ms INTEGER NOT NULL)");
}

TokenStore::~TokenStore() { sqlite3_close(db_); }

void TokenStore::Exec(const std::string& sql) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string why = message ? message : sqlite3_errmsg(db_);
    sqlite3_free(message);
    Fail(path_, "SQLite: " + why);
  }
}

namespace {

// Runs `sql` with text/integer parameters, calling `row` for each result row.
template <typename Row>
void Query(sqlite3* db, const std::string& where, const char* sql, const std::vector<std::string>& text,
           std::optional<int64_t> number, Row row) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK)
    Fail(where, std::string("SQLite: ") + sqlite3_errmsg(db));
  int index = 1;
  for (const std::string& t : text)
    sqlite3_bind_text(stmt, index++, t.data(), static_cast<int>(t.size()), SQLITE_TRANSIENT);
  if (number) sqlite3_bind_int64(stmt, index, *number);
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) row(stmt);
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) Fail(where, std::string("SQLite: ") + sqlite3_errmsg(db));
}

std::string Column(sqlite3_stmt* stmt, int column) {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, column));
  return text ? text : "";
}

}  // namespace

std::string TokenStore::Add(const std::string& name, bool admin) {
  if (!ValidName(name))
    Fail("token add", "name \"" + name +
                          "\": use 1-64 letters, digits, '.', '_', '@' or '-', "
                          "starting with a letter or digit");
  unsigned char secret[32];
  if (RAND_bytes(secret, sizeof secret) != 1) Fail("token add", "no randomness from OpenSSL");
  std::string token = "dpo_" + Hex(secret, sizeof secret);
  Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest.data());
  const int64_t now =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  std::lock_guard lock(mutex_);
  bool exists = false;
  Query(db_, path_, "SELECT 1 FROM tokens WHERE name = ?", {name}, std::nullopt, [&](sqlite3_stmt*) { exists = true; });
  if (exists) Fail("token add", "user \"" + name + "\" already has a token (revoke it first)");
  Query(db_, path_, "INSERT INTO tokens (name, sha256, admin, created_ms) VALUES (?, ?, ?, ?)",
        {name, Hex(digest.data(), digest.size()), admin ? "1" : "0"}, now, [](sqlite3_stmt*) {});
  data_version_ = -1;
  return token;
}

std::vector<TokenInfo> TokenStore::List() {
  std::lock_guard lock(mutex_);
  std::vector<TokenInfo> tokens;
  Query(db_, path_, "SELECT name, admin, created_ms FROM tokens ORDER BY name", {}, std::nullopt, [&](sqlite3_stmt* s) {
    tokens.push_back({Column(s, 0), sqlite3_column_int(s, 1) != 0, sqlite3_column_int64(s, 2)});
  });
  return tokens;
}

bool TokenStore::Revoke(const std::string& name) {
  std::lock_guard lock(mutex_);
  Query(db_, path_, "DELETE FROM tokens WHERE name = ?", {name}, std::nullopt, [](sqlite3_stmt*) {});
  data_version_ = -1;
  return sqlite3_changes(db_) == 1;
}

bool TokenStore::Any() {
  std::lock_guard lock(mutex_);
  Reload();
  return !cache_.empty();
}

void TokenStore::Reload() {
  int64_t version = 0;
  Query(db_, path_, "PRAGMA data_version", {}, std::nullopt,
        [&](sqlite3_stmt* s) { version = sqlite3_column_int64(s, 0); });
  if (version == data_version_) return;
  cache_.clear();
  Query(db_, path_, "SELECT sha256, name, admin FROM tokens", {}, std::nullopt, [&](sqlite3_stmt* s) {
    const std::string hex = Column(s, 0);
    Digest digest{};
    for (size_t i = 0; i < digest.size() && 2 * i + 1 < hex.size(); ++i) {
      digest[i] = static_cast<unsigned char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
    }
    cache_.emplace_back(digest, Principal{Column(s, 1), sqlite3_column_int(s, 2) != 0});
  });
  data_version_ = version;
}

std::optional<Principal> TokenStore::Authenticate(std::string_view token) {
  Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest.data());
  std::lock_guard lock(mutex_);
  Reload();
  std::optional<Principal> found;
  for (const auto& [stored, principal] : cache_) {  // every entry, so the time tells nothing
    if (CRYPTO_memcmp(stored.data(), digest.data(), digest.size()) == 0) found = principal;
  }
  return found;
}

}  // namespace dpo
