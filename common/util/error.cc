#include "common/util/error.h"

namespace dpo {

void Fail(std::string_view context, std::string_view message) {
  std::string text(context);
  if (!text.empty()) text += ": ";
  text += message;
  throw Error(text);
}

}  // namespace dpo
