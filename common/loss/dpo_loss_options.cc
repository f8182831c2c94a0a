#include "common/loss/dpo_loss_options.h"

#include <algorithm>

#include "common/util/error.h"

namespace dpo {
namespace {

constexpr EnumName<LossType> kLossTypeNames[] = {{LossType::kSigmoid, "sigmoid"},
                                                 {LossType::kHinge, "hinge"},
                                                 {LossType::kIpo, "ipo"},
                                                 {LossType::kExoPair, "exo_pair"},
                                                 {LossType::kNcaPair, "nca_pair"},
                                                 {LossType::kRobust, "robust"},
                                                 {LossType::kBcoPair, "bco_pair"},
                                                 {LossType::kSppoHard, "sppo_hard"},
                                                 {LossType::kAot, "aot"},
                                                 {LossType::kAotUnpaired, "aot_unpaired"},
                                                 {LossType::kApoZero, "apo_zero"},
                                                 {LossType::kApoDown, "apo_down"},
                                                 {LossType::kDiscopop, "discopop"},
                                                 {LossType::kSft, "sft"},
                                                 {LossType::kSigmoidNorm, "sigmoid_norm"},
                                                 {LossType::kSimpo, "simpo"}};

constexpr EnumName<FDivergence> kFDivergenceNames[] = {{FDivergence::kReverseKl, "reverse_kl"},
                                                       {FDivergence::kForwardKl, "forward_kl"},
                                                       {FDivergence::kJsDivergence, "js_divergence"},
                                                       {FDivergence::kAlphaDivergence, "alpha_divergence"}};

// As TRL: only losses built on the chosen-rejected score difference have an f-DPO form.
bool HasFDivergenceForm(LossType t) {
  switch (t) {
    case LossType::kSigmoid:
    case LossType::kSigmoidNorm:
    case LossType::kHinge:
    case LossType::kIpo:
    case LossType::kExoPair:
    case LossType::kRobust:
    case LossType::kDiscopop:
    case LossType::kSft: return true;
    default: return false;
  }
}

}  // namespace

std::span<const EnumName<LossType>> LossTypeNames() { return kLossTypeNames; }
std::span<const EnumName<FDivergence>> FDivergenceNames() { return kFDivergenceNames; }

std::vector<LossOptionProblem> DpoLossOptions::Problems() const {
  std::vector<LossOptionProblem> problems;
  auto require = [&](bool ok, const char* key, std::string message) {
    if (!ok) problems.push_back({key, std::move(message)});
  };
  auto uses = [&](LossType t) { return std::find(loss_type.begin(), loss_type.end(), t) != loss_type.end(); };
  require(beta > 0, "beta", "must be > 0");
  require(!loss_type.empty(), "loss_type", "must name at least one loss type");
  require(!loss_weights || loss_weights->size() == loss_type.size(), "loss_weights",
          "has " + std::to_string(loss_weights ? loss_weights->size() : 0) + " entries but dpo.loss_type has " +
              std::to_string(loss_type.size()));
  if (uses(LossType::kRobust)) {
    // TRL only warns here, but at 0.5 robust divides by zero and above it flips the sign.
    require(label_smoothing >= 0 && label_smoothing < 0.5, "label_smoothing",
            "must be in [0, 0.5) for the robust loss");
  } else {
    require(label_smoothing >= 0 && label_smoothing < 1, "label_smoothing", "must be in [0, 1)");
  }
  if (uses(LossType::kExoPair)) {
    require(label_smoothing > 0, "label_smoothing", "must be > 0 for the exo_pair loss (the EXO paper suggests 1e-3)");
  }
  require(!ld_alpha || (*ld_alpha >= 0 && *ld_alpha <= 1), "ld_alpha", "must be in [0, 1]");
  if (f_divergence_type != FDivergence::kReverseKl) {
    for (LossType t : loss_type) {
      require(HasFDivergenceForm(t), "f_divergence_type",
              std::string(NameOf(FDivergenceNames(), f_divergence_type)) + " is not supported with loss type " +
                  std::string(NameOf(LossTypeNames(), t)));
    }
  }
  require(!use_weighting || !(uses(LossType::kAot) || uses(LossType::kAotUnpaired)), "use_weighting",
          "not supported with aot / aot_unpaired (they sort pairs)");
  require(discopop_tau > 0, "discopop_tau", "must be > 0");
  return problems;
}

void DpoLossOptions::Validate() const {
  const std::vector<LossOptionProblem> problems = Problems();
  if (problems.empty()) return;
  std::string text;
  for (const LossOptionProblem& p : problems) text += (text.empty() ? "" : "; ") + ("dpo." + p.key + ": " + p.message);
  Fail("DpoLossOptions", text);
}

}  // namespace dpo
