#include "coordinator/token_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "common/util/error.h"

namespace dpo {
namespace {

class TokenStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::temp_directory_path() / ("tokens_" + std::to_string(::getpid()) + ".db")).string();
    std::filesystem::remove(path_);
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::string path_;
};

TEST_F(TokenStoreTest, AuthenticatesTheHolderOfAToken) {
  TokenStore store(path_);
  EXPECT_FALSE(store.Any());
  const std::string alice = store.Add("alice", false), root = store.Add("root", true);
  EXPECT_TRUE(store.Any());
  EXPECT_NE(alice, root);
  const auto who = store.Authenticate(alice);
  ASSERT_TRUE(who);
  EXPECT_EQ(who->name, "alice");
  EXPECT_FALSE(who->admin);
  EXPECT_TRUE(store.Authenticate(root)->admin);
  EXPECT_FALSE(store.Authenticate(alice.substr(0, alice.size() - 1)));
  EXPECT_FALSE(store.Authenticate(""));
  ASSERT_EQ(store.List().size(), 2u);
  EXPECT_EQ(store.List()[0].name, "alice");
}

TEST_F(TokenStoreTest, ChangesByAnotherConnectionCountAtOnce) {
  TokenStore server(path_);
  const std::string token = TokenStore(path_).Add("bob", false);  // the `token add` command
  EXPECT_TRUE(server.Authenticate(token));
  EXPECT_TRUE(TokenStore(path_).Revoke("bob"));
  EXPECT_FALSE(server.Authenticate(token));
  EXPECT_FALSE(server.Revoke("bob"));
}

TEST_F(TokenStoreTest, RefusesNamesThatAreNotPlainDirectoryNames) {
  TokenStore store(path_);
  for (const char* name : {"", "..", ".hidden", "a/b", "a b"}) {
    EXPECT_THROW(store.Add(name, false), Error) << name;
  }
  store.Add("carol", false);
  EXPECT_THROW(store.Add("carol", true), Error);  // one token per user
}

}  // namespace
}  // namespace dpo
