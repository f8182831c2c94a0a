#include "common/config/data_preparation.h"

#include <filesystem>

#include "common/util/error.h"
#include "common/util/hash.h"

namespace fs = std::filesystem;

namespace dpo {

TokenizeOptions TokenizeOptionsFromSpec(const DataSection& data) {
  TokenizeOptions options;
  options.max_length = data.max_length.value_or(0);
  options.max_prompt_length = data.max_prompt_length.value_or(0);
  options.max_completion_length = data.max_completion_length.value_or(0);
  options.truncation_mode =
      data.truncation_mode == DataSection::Truncation::kKeepEnd ? TruncationMode::kKeepEnd : TruncationMode::kKeepStart;
  options.implicit_prompt = data.implicit_prompt == DataSection::ImplicitPrompt::kCommonPrefix
                                ? ImplicitPrompt::kCommonPrefix
                                : ImplicitPrompt::kAssistantTurn;
  switch (data.chat_template) {
    case DataSection::ChatTemplate::kAuto: options.chat_template = ""; break;
    default: options.chat_template = std::string(ToString(data.chat_template)); break;
  }
  return options;
}

std::string PreparedPath(const DataSection& data, const std::string& source) {
  return (fs::path(data.prepared_dir) / (fs::path(source).filename().string() + "." +
                                         Hasher().Update(fs::absolute(source).string()).HexDigest() + ".prepared"))
      .string();
}

PrepareResult PrepareForSpec(const Tokenizer& tokenizer, const DataSection& data, const std::string& source) {
  fs::create_directories(data.prepared_dir);
  PrepareOptions options;
  options.tokenize = TokenizeOptionsFromSpec(data);
  options.on_error = data.on_error == DataSection::OnError::kSkip ? OnError::kSkip : OnError::kFail;
  options.num_threads = static_cast<size_t>(data.num_workers.value_or(0));
  options.max_line_bytes = static_cast<size_t>(data.max_line_bytes);
  return PrepareDataset(tokenizer, source, PreparedPath(data, source), options);
}

}  // namespace dpo
