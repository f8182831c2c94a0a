#include "coordinator/path_policy.h"

#include <sys/stat.h>

#include <filesystem>

#include "common/util/error.h"

namespace dpo {
namespace fs = std::filesystem;

std::string ResolvePath(const std::string& path) {
  std::string text;
  for (char c : path) {  // "//x" is "/x": POSIX leaves a leading "//" to the implementation
    if (!(c == '/' && !text.empty() && text.back() == '/')) text += c;
  }
  std::error_code ec;
  fs::path p(text);
  if (p.is_relative()) p = fs::current_path(ec) / p;
  fs::path real = fs::weakly_canonical(p, ec);
  if (ec) real = p.lexically_normal();
  std::string s = real.string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

bool IsInside(std::string_view path, std::string_view root) {
  if (root == "/") return path.starts_with("/");
  return path == root || (path.starts_with(root) && path[root.size()] == '/');
}

namespace {

enum class Kind { kMissing, kFile, kDirectory, kOther };

Kind KindOf(const std::string& real_path) {
  struct stat st;
  if (::stat(real_path.c_str(), &st) != 0) return Kind::kMissing;  // stat, never open
  if (S_ISREG(st.st_mode)) return Kind::kFile;
  if (S_ISDIR(st.st_mode)) return Kind::kDirectory;
  return Kind::kOther;
}

std::string Quoted(const std::string& path) { return "\"" + path + "\""; }

class Confiner {
 public:
  explicit Confiner(const PathRoots& roots) : write_(roots.write.empty() ? "" : ResolvePath(roots.write)) {
    for (const std::string& root : roots.read) read_.push_back(ResolvePath(root));
  }

  // A path the worker or the preparer reads.
  void Input(const std::string& field, std::string& path) {
    if (HasNul(field, path)) return;
    const std::string real = ResolvePath(path);
    const bool confined = !read_.empty();
    if (confined && !InReadRoots(real)) return Refuse(field, Quoted(path) + " is not inside the read roots");
    switch (KindOf(real)) {
      case Kind::kOther: return Refuse(field, Quoted(path) + " is not a regular file or directory");
      case Kind::kMissing:
        if (confined) return Refuse(field, Quoted(path) + " does not exist");
        break;  // single-user mode: the worker reports it when it loads it, as before
      default: break;
    }
    path = real;
  }

  // A directory the worker or the preparer writes; false when refused.
  bool OutputDir(const std::string& field, std::string& path) {
    if (HasNul(field, path)) return false;
    const std::string real = ResolvePath(path);
    if (!write_.empty() && !IsInside(real, write_)) {
      Refuse(field, Quoted(path) + " is not inside the write root");
      return false;
    }
    const Kind kind = KindOf(real);
    if (kind != Kind::kMissing && kind != Kind::kDirectory) {
      Refuse(field, Quoted(path) + " is not a directory");
      return false;
    }
    path = real;
    return true;
  }

  // output.metrics_file: relative to output.dir (already resolved) unless absolute.
  void MetricsFile(std::string& file, const std::string& dir) {
    if (HasNul("output.metrics_file", file)) return;
    const std::string real = ResolvePath(fs::path(file).is_absolute() ? file : dir + "/" + file);
    if (real == dir || !IsInside(real, dir)) {
      return Refuse("output.metrics_file", Quoted(file) + " is not inside output.dir");
    }
    const Kind kind = KindOf(real);
    if (kind != Kind::kMissing && kind != Kind::kFile) {
      return Refuse("output.metrics_file", Quoted(file) + " is not a regular file");
    }
    file = real;
  }

  // Throws the refusals, one per line.
  void Finish() const {
    if (problems_.empty()) return;
    std::string text;
    for (const std::string& p : problems_) text += (text.empty() ? "" : "\n") + p;
    throw Error(text);
  }

 private:
  // A NUL byte would cut the path short in every system call: what is checked would not be what
  // is opened.
  bool HasNul(const std::string& field, const std::string& path) {
    if (path.find('\0') == std::string::npos) return false;
    Refuse(field, "contains a NUL byte");
    return true;
  }
  bool InReadRoots(const std::string& real) const {
    if (!write_.empty() && IsInside(real, write_)) return true;
    for (const std::string& root : read_) {
      if (IsInside(real, root)) return true;
    }
    return false;
  }
  void Refuse(const std::string& field, const std::string& why) { problems_.push_back(field + ": " + why); }

  std::vector<std::string> read_;
  std::string write_;
  std::vector<std::string> problems_;
};

}  // namespace

void ConfinePaths(JobSpec& spec, const PathRoots& roots) {
  Confiner c(roots);
  if (spec.model.path) c.Input("model.path", *spec.model.path);
  if (spec.model.random) c.Input("model.random.config", spec.model.random->config);
  if (!spec.tokenizer.path.empty()) c.Input("tokenizer.path", spec.tokenizer.path);
  c.Input("data.train", spec.data.train);
  if (spec.data.eval) c.Input("data.eval", *spec.data.eval);
  if (spec.reference.path) c.Input("reference.path", *spec.reference.path);
  if (spec.output.resume_from_checkpoint && *spec.output.resume_from_checkpoint != "latest") {
    c.Input("output.resume_from_checkpoint", *spec.output.resume_from_checkpoint);
  }
  c.OutputDir("data.prepared_dir", spec.data.prepared_dir);
  if (c.OutputDir("output.dir", spec.output.dir)) c.MetricsFile(spec.output.metrics_file, spec.output.dir);
  c.Finish();
}

}  // namespace dpo
