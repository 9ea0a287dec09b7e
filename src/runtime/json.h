/*
 * binmx runtime: a small JSON reader (RFC 8259) for MXNet symbol files.
 *
 * Why our own code: the one C++ JSON library on PyPI is `nlohmann-json`, a third-party
 * repackaging of nlohmann/json's headers whose include directory is found through Python
 * (nlohmann_json.get_include()). The runtime must also build with plain CMake where neither pip
 * nor Python is present (binmx-run, the C example), so a PyPI header package would still need a
 * vendored fallback; the Python JSON packages (orjson, simdjson, ...) are Python modules. A
 * ~500-line reader that throws our Error with file:line:column messages, caps nesting, and is
 * fuzzed in full here (tests/loader_fuzz_test.cc) is the smaller dependency. See docs/design.md
 * (runtime: file formats).
 *
 * Data model: a Json value is null, a bool, a number (double), a string (UTF-8 bytes), an array
 * (std::vector<Json>) or an object (members in file order; for Find, the last of duplicate keys
 * wins). ParseJson accepts exactly RFC 8259: a UTF-8 byte order mark is skipped, strings must be
 * valid UTF-8 without raw control characters, \uXXXX escapes (surrogate pairs included) become
 * UTF-8, numbers follow the JSON grammar and must fit a double. Nesting is limited to 512 levels
 * (an error, never a stack overflow); errors name the input, the line and the column.
 */
#ifndef BINMX_RT_JSON_H_
#define BINMX_RT_JSON_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace binmx {
namespace rt {

class Json {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Json() = default;  // null

  static Json MakeBool(bool value);
  static Json MakeNumber(double value);
  static Json MakeString(std::string value);
  static Json MakeArray(std::vector<Json> items);
  static Json MakeObject(std::vector<std::pair<std::string, Json>> members);

  Type type() const { return type_; }
  bool IsNull() const { return type_ == Type::kNull; }
  bool IsBool() const { return type_ == Type::kBool; }
  bool IsNumber() const { return type_ == Type::kNumber; }
  bool IsString() const { return type_ == Type::kString; }
  bool IsArray() const { return type_ == Type::kArray; }
  bool IsObject() const { return type_ == Type::kObject; }

  // Typed access; on a type mismatch these throw Error("<what>: expected a string, got a number").
  const std::string& AsString(const char* what) const;
  double AsNumber(const char* what) const;
  bool AsBool(const char* what) const;
  // A number that is integral and within [-2^53, 2^53] (exact in a double), else Error.
  int64_t AsInt(const char* what) const;

  // Number of items (array) or members (object); 0 for every other type.
  size_t size() const;
  // Array item i; throws Error when this is not an array or i >= size().
  const Json& at(size_t i) const;
  // Object member by key (the last one when a key repeats); nullptr when absent or not an object.
  const Json* Find(const std::string& key) const;
  // The members of an object / items of an array in file order (empty for other types).
  const std::vector<std::pair<std::string, Json>>& members() const { return members_; }
  const std::vector<Json>& items() const { return items_; }

 private:
  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

// "null", "bool", "number", "string", "array", "object".
const char* JsonTypeName(Json::Type type);

// Parses `text` as one JSON value; `what` (usually the file name) starts every error message:
// "model-symbol.json:3:14: expected ',' or '}' after an object member, got 'x'".
Json ParseJson(const std::string& text, const std::string& what);

constexpr int kJsonMaxDepth = 512;

}  // namespace rt
}  // namespace binmx

#endif  // BINMX_RT_JSON_H_
