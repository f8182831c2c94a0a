// Bearer tokens of the coordinator's users, in a `tokens` table of the job database (its own
// connection). Only each token's SHA-256 is stored: `dpo-coordinator token add` prints the token
// once, and a stolen database file grants nothing.
//
// Authentication mode: a caller must present a token as soon as any token exists (or when the
// coordinator requires it: --require-auth, or a non-loopback --listen). Without tokens, on
// loopback, every caller is the local admin, which is the single-user mode of before.
//
// Thread-safe (one connection, serialized by a mutex). Errors throw dpo::Error naming the file.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct sqlite3;

namespace dpo {

// Who made a request.
struct Principal {
  std::string name;
  bool admin = false;
};

struct TokenInfo {
  std::string name;
  bool admin = false;
  int64_t created_unix_ms = 0;
};

class TokenStore {
 public:
  // Opens (creating if missing) the database at `path` and its tokens table.
  explicit TokenStore(const std::string& path);
  ~TokenStore();
  TokenStore(const TokenStore&) = delete;
  TokenStore& operator=(const TokenStore&) = delete;

  // A new random token for user `name` (letters, digits, "._@-", at most 64, starting with a
  // letter or digit), returned once.
  // Throws if `name` is invalid or already has a token.
  std::string Add(const std::string& name, bool admin);
  std::vector<TokenInfo> List();
  // False when `name` has no token.
  bool Revoke(const std::string& name);
  // Whether any token exists.
  bool Any();
  // The user whose token this is: its hash is compared with every stored hash in constant
  // time. Tokens added or revoked by another process (the `token` command) count at once.
  std::optional<Principal> Authenticate(std::string_view token);

 private:
  using Digest = std::array<unsigned char, 32>;
  void Exec(const std::string& sql);
  void Reload();  // under mutex_: the cache from the table, if another connection changed it

  std::string path_;
  sqlite3* db_ = nullptr;
  std::mutex mutex_;
  int64_t data_version_ = -1;  // PRAGMA data_version of the cache; -1: reload
  std::vector<std::pair<Digest, Principal>> cache_;
};

}  // namespace dpo
