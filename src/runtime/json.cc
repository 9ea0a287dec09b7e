/*
 * binmx runtime: the JSON reader declared in json.h (RFC 8259, iterative, with an explicit stack).
 *
 * The parser is iterative: open arrays and objects live on an explicit stack capped at
 * kJsonMaxDepth (512), so no input can exhaust the machine stack (destroying a parsed value
 * recurses at most 512 levels); every loop is linear in the input.
 * Positions are byte offsets; an error converts the offset to line:column (1-based, columns in
 * code points) only when it is raised.
 */
#include "json.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "rt_common.h"

namespace binmx {
namespace rt {

// ---- Json accessors --------------------------------------------------------------------------

Json Json::MakeBool(bool value) {
  Json j;
  j.type_ = Type::kBool;
  j.bool_ = value;
  return j;
}

Json Json::MakeNumber(double value) {
  Json j;
  j.type_ = Type::kNumber;
  j.number_ = value;
  return j;
}

Json Json::MakeString(std::string value) {
  Json j;
  j.type_ = Type::kString;
  j.string_ = std::move(value);
  return j;
}

Json Json::MakeArray(std::vector<Json> items) {
  Json j;
  j.type_ = Type::kArray;
  j.items_ = std::move(items);
  return j;
}

Json Json::MakeObject(std::vector<std::pair<std::string, Json>> members) {
  Json j;
  j.type_ = Type::kObject;
  j.members_ = std::move(members);
  return j;
}

const char* JsonTypeName(Json::Type type) {
  switch (type) {
    case Json::Type::kNull:
      return "null";
    case Json::Type::kBool:
      return "bool";
    case Json::Type::kNumber:
      return "number";
    case Json::Type::kString:
      return "string";
    case Json::Type::kArray:
      return "array";
    case Json::Type::kObject:
      return "object";
  }
  return "unknown";
}

namespace {

[[noreturn]] void TypeMismatch(const char* what, const char* expected, Json::Type actual) {
  Fail(std::string(what ? what : "JSON value") + ": expected " + expected + ", got " +
       (actual == Json::Type::kArray || actual == Json::Type::kObject ? "an " : "a ") +
       JsonTypeName(actual));
}

}  // namespace

const std::string& Json::AsString(const char* what) const {
  if (type_ != Type::kString) TypeMismatch(what, "a string", type_);
  return string_;
}

double Json::AsNumber(const char* what) const {
  if (type_ != Type::kNumber) TypeMismatch(what, "a number", type_);
  return number_;
}

bool Json::AsBool(const char* what) const {
  if (type_ != Type::kBool) TypeMismatch(what, "a bool", type_);
  return bool_;
}

int64_t Json::AsInt(const char* what) const {
  const double v = AsNumber(what);
  constexpr double kMaxExact = 9007199254740992.0;  // 2^53
  if (!(v >= -kMaxExact && v <= kMaxExact) || v != std::floor(v)) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", v);
    Fail(std::string(what ? what : "JSON value") + ": expected an integer, got " + buf);
  }
  return static_cast<int64_t>(v);
}

size_t Json::size() const {
  if (type_ == Type::kArray) return items_.size();
  if (type_ == Type::kObject) return members_.size();
  return 0;
}

const Json& Json::at(size_t i) const {
  if (type_ != Type::kArray) TypeMismatch("JSON value", "an array", type_);
  if (i >= items_.size()) {
    Fail("JSON array index " + std::to_string(i) + " out of range (the array has " +
         std::to_string(items_.size()) + " items)");
  }
  return items_[i];
}

const Json* Json::Find(const std::string& key) const {
  if (type_ != Type::kObject) return nullptr;
  for (auto it = members_.rbegin(); it != members_.rend(); ++it) {
    if (it->first == key) return &it->second;
  }
  return nullptr;
}

// ---- parser ----------------------------------------------------------------------------------

namespace {

class Parser {
 public:
  Parser(const std::string& text, const std::string& what) : s_(text), what_(what) {}

  Json ParseDocument() {
    if (s_.size() >= 3 && static_cast<unsigned char>(s_[0]) == 0xEF &&
        static_cast<unsigned char>(s_[1]) == 0xBB && static_cast<unsigned char>(s_[2]) == 0xBF) {
      pos_ = 3;  // UTF-8 byte order mark (RFC 8259 section 8.1 allows ignoring it)
    }
    SkipSpace();
    if (pos_ >= s_.size()) ErrorAt(pos_, "empty document (expected a JSON value)");
    Json value = ParseValue();
    SkipSpace();
    if (pos_ < s_.size()) ErrorAt(pos_, "unexpected " + Describe(pos_) + " after the JSON value");
    return value;
  }

 private:
  [[noreturn]] void ErrorAt(size_t pos, const std::string& message) const {
    size_t line = 1, column = 1;
    const size_t end = pos < s_.size() ? pos : s_.size();
    for (size_t i = 0; i < end; ++i) {
      const unsigned char c = static_cast<unsigned char>(s_[i]);
      if (c == '\n') {
        ++line;
        column = 1;
      } else if ((c & 0xC0) != 0x80) {
        ++column;
      }
    }
    Fail(what_ + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message);
  }

  // A printable description of the byte at pos for error messages.
  std::string Describe(size_t pos) const {
    if (pos >= s_.size()) return "end of input";
    const unsigned char c = static_cast<unsigned char>(s_[pos]);
    if (c >= 0x20 && c < 0x7F) return std::string("'") + static_cast<char>(c) + "'";
    char buf[16];
    std::snprintf(buf, sizeof(buf), "byte 0x%02X", c);
    return buf;
  }

  void SkipSpace() {
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  void Expect(const char* literal, size_t start) {
    const size_t n = std::strlen(literal);
    if (s_.compare(pos_, n, literal) != 0)
      ErrorAt(start, "invalid literal (expected '" + std::string(literal) + "')");
    pos_ += n;
  }

  // One open array or object while its items are parsed.
  struct Frame {
    bool is_object;
    std::vector<Json> items;
    std::vector<std::pair<std::string, Json>> members;
    std::string key;  // the key of the member being parsed (objects)
  };

  // After '{' or ',' in an object: the key and the ':' (whitespace skipped around them).
  void ParseKey(Frame* frame) {
    SkipSpace();
    if (pos_ >= s_.size() || s_[pos_] != '"') {
      ErrorAt(pos_, "expected a string key in an object, got " + Describe(pos_));
    }
    frame->key = ParseString();
    SkipSpace();
    if (pos_ >= s_.size() || s_[pos_] != ':') {
      ErrorAt(pos_, "expected ':' after an object key, got " + Describe(pos_));
    }
    ++pos_;
  }

  // A scalar value at pos_ (the caller handles '[' and '{').
  Json ParseScalar() {
    if (pos_ >= s_.size()) ErrorAt(pos_, "unexpected end of input (expected a JSON value)");
    const char c = s_[pos_];
    switch (c) {
      case '"':
        return Json::MakeString(ParseString());
      case 't':
        Expect("true", pos_);
        return Json::MakeBool(true);
      case 'f':
        Expect("false", pos_);
        return Json::MakeBool(false);
      case 'n':
        Expect("null", pos_);
        return Json();
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return Json::MakeNumber(ParseNumber());
        ErrorAt(pos_, "unexpected " + Describe(pos_) + " (expected a JSON value)");
    }
  }

  // Iterative: open containers live on an explicit stack (at most kJsonMaxDepth), so the
  // machine stack does not grow with the nesting of the input.
  Json ParseValue() {
    std::vector<Frame> stack;
    while (true) {
      // A value starts here: open a container or read a scalar.
      SkipSpace();
      Json value;
      const char c = pos_ < s_.size() ? s_[pos_] : '\0';
      if (pos_ < s_.size() && (c == '[' || c == '{')) {
        if (stack.size() >= static_cast<size_t>(kJsonMaxDepth)) {
          ErrorAt(pos_, "nesting deeper than " + std::to_string(kJsonMaxDepth) + " levels");
        }
        ++pos_;
        stack.push_back(Frame{c == '{', {}, {}, {}});
        SkipSpace();
        const char close = c == '{' ? '}' : ']';
        if (pos_ < s_.size() && s_[pos_] == close) {
          ++pos_;
          stack.pop_back();
          value = c == '{' ? Json::MakeObject({}) : Json::MakeArray({});
        } else {
          if (c == '{') ParseKey(&stack.back());
          continue;  // parse the first item
        }
      } else {
        value = ParseScalar();
      }
      // A value is complete: add it to the open container; close containers that end here.
      while (true) {
        if (stack.empty()) return value;
        Frame& top = stack.back();
        if (top.is_object) {
          top.members.emplace_back(std::move(top.key), std::move(value));
        } else {
          top.items.push_back(std::move(value));
        }
        SkipSpace();
        if (pos_ >= s_.size()) {
          ErrorAt(pos_, std::string("unexpected end of input inside an ") +
                            (top.is_object ? "object" : "array"));
        }
        if (s_[pos_] == ',') {
          ++pos_;
          if (top.is_object) ParseKey(&top);
          break;  // parse the next item
        }
        if (s_[pos_] == (top.is_object ? '}' : ']')) {
          ++pos_;
          value = top.is_object ? Json::MakeObject(std::move(top.members))
                                : Json::MakeArray(std::move(top.items));
          stack.pop_back();
          continue;
        }
        ErrorAt(pos_, top.is_object
                          ? "expected ',' or '}' after an object member, got " + Describe(pos_)
                          : "expected ',' or ']' after an array item, got " + Describe(pos_));
      }
    }
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  // Four hex digits at pos_ (after "\u"); advances past them.
  uint32_t ParseHex4(size_t escape_start) {
    if (s_.size() - pos_ < 4) ErrorAt(escape_start, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_ + i];
      uint32_t d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        d = c - 'A' + 10;
      } else {
        ErrorAt(pos_ + i, "invalid hex digit " + Describe(pos_ + i) + " in a \\u escape");
      }
      v = v * 16 + d;
    }
    pos_ += 4;
    return v;
  }

  // Length of the valid UTF-8 sequence starting at pos (1..4), or 0 when it is invalid
  // (overlong forms, surrogates, code points above U+10FFFF and truncated sequences rejected).
  size_t Utf8Length(size_t pos) const {
    const size_t left = s_.size() - pos;
    const unsigned char c0 = static_cast<unsigned char>(s_[pos]);
    auto cont = [&](size_t i) {
      return i < left && (static_cast<unsigned char>(s_[pos + i]) & 0xC0) == 0x80;
    };
    if (c0 < 0x80) return 1;
    if (c0 >= 0xC2 && c0 <= 0xDF) return cont(1) ? 2 : 0;
    if (c0 >= 0xE0 && c0 <= 0xEF) {
      if (!cont(1) || !cont(2)) return 0;
      const unsigned char c1 = static_cast<unsigned char>(s_[pos + 1]);
      if (c0 == 0xE0 && c1 < 0xA0) return 0;   // overlong
      if (c0 == 0xED && c1 >= 0xA0) return 0;  // UTF-16 surrogate
      return 3;
    }
    if (c0 >= 0xF0 && c0 <= 0xF4) {
      if (!cont(1) || !cont(2) || !cont(3)) return 0;
      const unsigned char c1 = static_cast<unsigned char>(s_[pos + 1]);
      if (c0 == 0xF0 && c1 < 0x90) return 0;   // overlong
      if (c0 == 0xF4 && c1 >= 0x90) return 0;  // above U+10FFFF
      return 4;
    }
    return 0;
  }

  std::string ParseString() {
    const size_t start = pos_;
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) ErrorAt(start, "unterminated string");
      const unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) {
        ErrorAt(pos_,
                "raw control character " + Describe(pos_) + " in a string (it must be escaped)");
      }
      if (c == '\\') {
        const size_t escape_start = pos_;
        ++pos_;
        if (pos_ >= s_.size()) ErrorAt(start, "unterminated string");
        const char e = s_[pos_++];
        switch (e) {
          case '"':
            out.push_back('"');
            break;
          case '\\':
            out.push_back('\\');
            break;
          case '/':
            out.push_back('/');
            break;
          case 'b':
            out.push_back('\b');
            break;
          case 'f':
            out.push_back('\f');
            break;
          case 'n':
            out.push_back('\n');
            break;
          case 'r':
            out.push_back('\r');
            break;
          case 't':
            out.push_back('\t');
            break;
          case 'u': {
            uint32_t cp = ParseHex4(escape_start);
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
              ErrorAt(escape_start, "lone low surrogate in a \\u escape");
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (s_.size() - pos_ < 2 || s_[pos_] != '\\' || s_[pos_ + 1] != 'u') {
                ErrorAt(escape_start, "high surrogate \\u escape not followed by a low surrogate");
              }
              pos_ += 2;
              const uint32_t lo = ParseHex4(escape_start);
              if (lo < 0xDC00 || lo > 0xDFFF) {
                ErrorAt(escape_start, "high surrogate \\u escape not followed by a low surrogate");
              }
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            AppendUtf8(cp, &out);
            break;
          }
          default:
            ErrorAt(escape_start, "invalid escape '\\" + std::string(1, e) + "' in a string");
        }
        continue;
      }
      const size_t n = Utf8Length(pos_);
      if (n == 0) ErrorAt(pos_, "invalid UTF-8 " + Describe(pos_) + " in a string");
      out.append(s_, pos_, n);
      pos_ += n;
    }
  }

  static bool IsDigit(char c) { return c >= '0' && c <= '9'; }

  double ParseNumber() {
    const size_t start = pos_;
    size_t p = pos_;
    if (s_[p] == '-') ++p;
    if (p >= s_.size() || !IsDigit(s_[p])) ErrorAt(p, "invalid number: expected a digit");
    // Decimal order of magnitude of the first significant digit, for telling underflow from
    // overflow when the value does not fit a double.
    int64_t order = 0;
    bool significant = false;
    if (s_[p] == '0') {
      ++p;
      if (p < s_.size() && IsDigit(s_[p])) ErrorAt(p, "invalid number: leading zero");
    } else {
      significant = true;
      while (p < s_.size() && IsDigit(s_[p])) {
        ++p;
        if (order < (int64_t{1} << 40)) ++order;
      }
    }
    if (p < s_.size() && s_[p] == '.') {
      ++p;
      if (p >= s_.size() || !IsDigit(s_[p]))
        ErrorAt(p, "invalid number: expected a digit after '.'");
      while (p < s_.size() && IsDigit(s_[p])) {
        if (!significant) {
          if (s_[p] != '0') {
            significant = true;
          } else if (order > -(int64_t{1} << 40)) {
            --order;
          }
        }
        ++p;
      }
    }
    int64_t exponent = 0;
    if (p < s_.size() && (s_[p] == 'e' || s_[p] == 'E')) {
      ++p;
      bool negative = false;
      if (p < s_.size() && (s_[p] == '+' || s_[p] == '-')) negative = s_[p++] == '-';
      if (p >= s_.size() || !IsDigit(s_[p])) ErrorAt(p, "invalid number: expected an exponent");
      while (p < s_.size() && IsDigit(s_[p])) {
        if (exponent < (int64_t{1} << 40)) exponent = exponent * 10 + (s_[p] - '0');
        ++p;
      }
      if (negative) exponent = -exponent;
    }
    pos_ = p;
    double value = 0.0;
    const char* first = s_.data() + start;
    const char* last = s_.data() + p;
    const std::from_chars_result r = std::from_chars(first, last, value);
    if (r.ec == std::errc::result_out_of_range) {
      if (significant && order + exponent > 0) {
        ErrorAt(start, "number " + std::string(first, last) + " is out of the range of a double");
      }
      return s_[start] == '-' ? -0.0 : 0.0;  // underflow: the nearest double is (signed) zero
    }
    if (r.ec != std::errc() || r.ptr != last || !std::isfinite(value)) {
      ErrorAt(start, "invalid number " + std::string(first, last));
    }
    return value;
  }

  const std::string& s_;
  const std::string& what_;
  size_t pos_ = 0;
};

}  // namespace

Json ParseJson(const std::string& text, const std::string& what) {
  return Parser(text, what).ParseDocument();
}

}  // namespace rt
}  // namespace binmx
