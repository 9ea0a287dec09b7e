// binmx runtime: symbol-graph parsing and node attributes (see graph.h).
#include "graph.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "json.h"
#include "rt_common.h"

namespace binmx {
namespace rt {

namespace {

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\n' || s[b] == '\r')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\n' || s[e - 1] == '\r')) {
    --e;
  }
  return s.substr(b, e - b);
}

// Strict integer parse of a whole string ("12", "-3", "12L" as old MXNet writes longs).
bool ParseInt(const std::string& text, int64_t* out) {
  std::string t = Trim(text);
  if (!t.empty() && (t.back() == 'L' || t.back() == 'l')) t.pop_back();
  if (t.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(t.c_str(), &end, 10);
  if (errno != 0 || end == t.c_str() || *end != '\0') return false;
  *out = static_cast<int64_t>(v);
  return true;
}

bool ParseDouble(const std::string& text, double* out) {
  const std::string t = Trim(text);
  if (t.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  if (end == t.c_str() || *end != '\0') return false;
  *out = v;
  return true;
}

// "(3, 3)", "[3,3]", "3", "(3,)", "()" -> items as text; false for malformed text.
bool SplitTuple(const std::string& text, std::vector<std::string>* items) {
  std::string t = Trim(text);
  items->clear();
  if (t.empty()) return true;
  if ((t.front() == '(' && t.back() == ')') || (t.front() == '[' && t.back() == ']')) {
    t = t.substr(1, t.size() - 2);
  }
  if (Trim(t).empty()) return true;
  size_t start = 0;
  for (;;) {
    const size_t comma = t.find(',', start);
    const std::string item =
        Trim(t.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (item.empty()) {
      if (comma == std::string::npos && !items->empty()) return true;  // "(3,)"
      return false;
    }
    items->push_back(item);
    if (comma == std::string::npos) return true;
    start = comma + 1;
  }
}

int ToIndex(const Json& v, const std::string& what) {
  const double d = v.AsNumber(what.c_str());
  if (!(d >= 0.0 && d <= 1e9) || std::floor(d) != d) {
    Fail(what + " must be a non-negative integer");
  }
  return static_cast<int>(d);
}

Edge ParseEdge(const Json& e, size_t num_nodes, const std::string& what) {
  if (!e.IsArray() || e.size() < 2 || e.size() > 3) {
    Fail(what + " must be a list [node, output(, version)]");
  }
  Edge edge;
  edge.node = ToIndex(e.at(0), what + " node index");
  edge.output = ToIndex(e.at(1), what + " output index");
  if (static_cast<size_t>(edge.node) >= num_nodes) {
    Fail(what + " names node " + std::to_string(edge.node) + " but the graph has " +
         std::to_string(num_nodes) + " nodes");
  }
  return edge;
}

}  // namespace

std::string NodeLabel(const Node& node) { return "node '" + node.name + "' (" + node.op + ")"; }

Graph ParseGraph(const std::string& json_text, const std::string& what) {
  const Json root = ParseJson(json_text, what);
  if (!root.IsObject()) Fail(what + ": expected a JSON object with \"nodes\" and \"heads\"");
  const Json* nodes = root.Find("nodes");
  if (nodes == nullptr || !nodes->IsArray()) {
    Fail(what + ": not a symbol graph (no \"nodes\" list)");
  }
  const Json* heads = root.Find("heads");
  if (heads == nullptr || !heads->IsArray())
    Fail(what + ": not a symbol graph (no \"heads\" list)");
  if (nodes->size() == 0) Fail(what + ": the graph has no nodes");
  if (nodes->size() > 1000000)
    Fail(what + ": too many nodes (" + std::to_string(nodes->size()) + ")");
  Graph g;
  g.nodes.resize(nodes->size());
  for (size_t i = 0; i < nodes->size(); ++i) {
    const Json& jn = nodes->at(i);
    const std::string where = what + ": node " + std::to_string(i);
    if (!jn.IsObject()) Fail(where + " is not an object");
    Node& n = g.nodes[i];
    const Json* op = jn.Find("op");
    const Json* name = jn.Find("name");
    if (op == nullptr) Fail(where + " has no \"op\"");
    if (name == nullptr) Fail(where + " has no \"name\"");
    n.op = op->AsString((where + " \"op\"").c_str());
    n.name = name->AsString((where + " \"name\"").c_str());
    for (const char* key : {"attrs", "attr", "param"}) {
      const Json* a = jn.Find(key);
      if (a == nullptr) continue;
      if (!a->IsObject()) Fail(where + " ('" + n.name + "'): \"" + key + "\" is not an object");
      for (const auto& kv : a->members()) {
        n.attrs[kv.first] =
            kv.second.AsString((where + " ('" + n.name + "') attribute " + kv.first).c_str());
      }
    }
    const Json* inputs = jn.Find("inputs");
    if (inputs != nullptr) {
      if (!inputs->IsArray()) Fail(where + " ('" + n.name + "'): \"inputs\" is not a list");
      for (size_t k = 0; k < inputs->size(); ++k) {
        Edge e = ParseEdge(inputs->at(k), g.nodes.size(),
                           where + " ('" + n.name + "') input " + std::to_string(k));
        if (static_cast<size_t>(e.node) >= i) {
          Fail(where + " ('" + n.name + "') reads node " + std::to_string(e.node) +
               ", which does not come before it (a cycle or an unsorted graph)");
        }
        n.inputs.push_back(e);
      }
    }
    if (n.op == "null" && !n.inputs.empty())
      Fail(where + " ('" + n.name + "'): a variable with inputs");
  }
  if (heads->size() == 0) Fail(what + ": the graph has no outputs (\"heads\" is empty)");
  for (size_t k = 0; k < heads->size(); ++k) {
    g.heads.push_back(
        ParseEdge(heads->at(k), g.nodes.size(), what + ": head " + std::to_string(k)));
  }
  return g;
}

const std::string* AttrReader::Find(const std::string& key) {
  used_.insert(key);
  auto it = node_.attrs.find(key);
  if (it == node_.attrs.end()) return nullptr;
  return &it->second;
}

void AttrReader::Fail(const std::string& key, const std::string& message) const {
  rt::Fail(NodeLabel(node_) + ": attribute `" + key + "`: " + message);
}

void AttrReader::FailNode(const std::string& message) const {
  rt::Fail(NodeLabel(node_) + ": " + message);
}

std::string AttrReader::Str(const std::string& key, const std::string& def) {
  const std::string* v = Find(key);
  return v == nullptr ? def : Trim(*v);
}

bool AttrReader::Bool(const std::string& key, bool def) {
  const std::string* v = Find(key);
  if (v == nullptr) return def;
  const std::string t = Trim(*v);
  if (t == "True" || t == "true" || t == "1") return true;
  if (t == "False" || t == "false" || t == "0") return false;
  Fail(key, "expected True or False, got '" + *v + "'");
}

int64_t AttrReader::Int(const std::string& key, int64_t def, int64_t lo, int64_t hi,
                        bool required) {
  const std::string* v = Find(key);
  if (v == nullptr || Trim(*v) == "None") {
    if (required) Fail(key, "is required");
    return def;
  }
  int64_t x = 0;
  if (!ParseInt(*v, &x)) Fail(key, "expected an integer, got '" + *v + "'");
  if (x < lo || x > hi) {
    Fail(key, "expected a value in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                  std::to_string(x));
  }
  return x;
}

double AttrReader::Float(const std::string& key, double def) {
  const std::string* v = Find(key);
  if (v == nullptr) return def;
  double x = 0.0;
  if (!ParseDouble(*v, &x)) Fail(key, "expected a number, got '" + *v + "'");
  return x;
}

double AttrReader::OptFloat(const std::string& key, bool* has) {
  const std::string* v = Find(key);
  *has = false;
  if (v == nullptr || Trim(*v) == "None" || Trim(*v).empty()) return 0.0;
  double x = 0.0;
  if (!ParseDouble(*v, &x)) Fail(key, "expected a number or None, got '" + *v + "'");
  *has = true;
  return x;
}

std::vector<int64_t> AttrReader::Tuple(const std::string& key, size_t size,
                                       const std::vector<int64_t>& def, int64_t lo, int64_t hi,
                                       bool required) {
  const std::string* v = Find(key);
  std::vector<std::string> items;
  if (v == nullptr || Trim(*v) == "None" || (SplitTuple(*v, &items) && items.empty())) {
    if (required) Fail(key, "is required");
    return def;
  }
  if (!SplitTuple(*v, &items)) Fail(key, "expected a tuple of integers, got '" + *v + "'");
  std::vector<int64_t> out;
  for (const std::string& it : items) {
    int64_t x = 0;
    if (!ParseInt(it, &x)) Fail(key, "expected a tuple of integers, got '" + *v + "'");
    if (x < lo || x > hi) {
      Fail(key, "expected values in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                    "], got '" + *v + "'");
    }
    out.push_back(x);
  }
  if (out.size() == 1 && size > 1) out.assign(size, out[0]);
  if (out.size() != size) {
    Fail(key, "expected " + std::to_string(size) + " values (2-D layers only), got '" + *v + "'");
  }
  return out;
}

std::vector<int64_t> AttrReader::IntList(const std::string& key, const std::vector<int64_t>& def) {
  const std::string* v = Find(key);
  if (v == nullptr || Trim(*v) == "None") return def;
  std::vector<std::string> items;
  if (!SplitTuple(*v, &items)) Fail(key, "expected a tuple of integers, got '" + *v + "'");
  std::vector<int64_t> out;
  for (const std::string& it : items) {
    int64_t x = 0;
    if (!ParseInt(it, &x) || x < -(int64_t{1} << 40) || x > (int64_t{1} << 40)) {
      Fail(key, "expected a tuple of integers, got '" + *v + "'");
    }
    out.push_back(x);
  }
  return out;
}

void AttrReader::Finish() {
  for (const auto& kv : node_.attrs) {
    if (kv.first.rfind("__", 0) == 0) continue;
    if (used_.count(kv.first) == 0) {
      rt::Fail(NodeLabel(node_) + ": attribute `" + kv.first + "`='" + kv.second +
               "' is not supported by the binmx runtime");
    }
  }
}

}  // namespace rt
}  // namespace binmx
