/*
 * binmx runtime: the symbol graph as MXNet writes it (PREFIX-symbol.json) and the attribute
 * reader of its nodes.
 *
 * JSON: {"nodes": [{"op": "null" | OP, "name": NAME, "attrs" | "attr" | "param": {KEY: TEXT},
 * "inputs": [[NODE, OUTPUT, VERSION?], ...]}, ...], "arg_nodes": [...], "heads": [[NODE,
 * OUTPUT, VERSION?], ...]}. Nodes come in topological order: an input edge that names the node
 * itself or a later one (a cycle) is an error, as is any index out of range. Attribute values
 * are Python text ("(3, 3)", "True", "0.001").
 */
#ifndef BINMX_RT_GRAPH_H_
#define BINMX_RT_GRAPH_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace binmx {
namespace rt {

struct Edge {
  int node = 0;
  int output = 0;
};

struct Node {
  std::string op;  // "null" for a variable
  std::string name;
  std::map<std::string, std::string> attrs;
  std::vector<Edge> inputs;
};

struct Graph {
  std::vector<Node> nodes;
  std::vector<Edge> heads;
};

// Parses and checks the structure (what is named "what" in messages: the file name).
Graph ParseGraph(const std::string& json_text, const std::string& what);

// Reads one node's attributes; every accessor names the node, the op and the attribute in its
// errors. Finish() rejects attributes that no accessor asked about and that are not in
// `ignored` (names starting with "__" are MXNet's own and always ignored).
class AttrReader {
 public:
  explicit AttrReader(const Node& node) : node_(node) {}
  bool Has(const std::string& key) const { return node_.attrs.count(key) != 0; }
  std::string Str(const std::string& key, const std::string& def);
  bool Bool(const std::string& key, bool def);
  int64_t Int(const std::string& key, int64_t def, int64_t lo, int64_t hi, bool required = false);
  double Float(const std::string& key, double def);
  // Optional float: "None" or absent -> has = false.
  double OptFloat(const std::string& key, bool* has);
  // "(3, 3)" -> {3, 3}; a single int n -> n repeated `size` times; "()"/"None"/absent -> def.
  std::vector<int64_t> Tuple(const std::string& key, size_t size, const std::vector<int64_t>& def,
                             int64_t lo, int64_t hi, bool required = false);
  // Any-length tuple of ints (Reshape's shape, transpose's axes); absent -> def.
  std::vector<int64_t> IntList(const std::string& key, const std::vector<int64_t>& def);
  void Ignore(const std::string& key) { used_.insert(key); }
  void Finish();
  [[noreturn]] void Fail(const std::string& key, const std::string& message) const;
  [[noreturn]] void FailNode(const std::string& message) const;

 private:
  const std::string* Find(const std::string& key);
  const Node& node_;
  std::set<std::string> used_;
};

// "'name' (op)" for messages.
std::string NodeLabel(const Node& node);

}  // namespace rt
}  // namespace binmx

#endif  // BINMX_RT_GRAPH_H_
