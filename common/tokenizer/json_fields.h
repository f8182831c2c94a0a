// Readers for tokenizer.json's component nodes (normalizer, pre_tokenizer, decoder), whose
// errors name the JSON path of the field: "tokenizer.json: decoder.decoders[1].content: ...".
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/util/error.h"

namespace dpo::tok {

// node[key] as a string. Throws dpo::Error "<context>.<key>: missing or not a string".
inline std::string RequiredString(const nlohmann::json& node, const char* key, const std::string& context) {
  auto it = node.find(key);
  if (it == node.end() || !it->is_string()) Fail(context + "." + key, "missing or not a string");
  return it->get<std::string>();
}

// Calls add(element, "<context>.<key>[i]") for each element of the array node[key] (the steps of
// a "Sequence" node). Throws dpo::Error "<context>.<key>: missing array".
template <typename Add>
void ForEachSequenceStep(const nlohmann::json& node, const char* key, const std::string& context, Add add) {
  auto it = node.find(key);
  const std::string path = context + "." + key;
  if (it == node.end() || !it->is_array()) Fail(path, "missing array");
  for (size_t i = 0; i < it->size(); ++i) add((*it)[i], path + "[" + std::to_string(i) + "]");
}

}  // namespace dpo::tok
