/*
 * The binmx operator library as a whole: lib_api's entry point `initialize`, which MXNet calls
 * once when `mx.library.load` opens libbinmx_ops.so (it refuses MXNet older than 1.9.0, whose
 * lib_api differs), and ResetErrorMessages (op_common.h), which every operator's
 * caller-thread entry points use to drop the error messages of earlier failures.
 */
#include <sstream>
#include <vector>

#include "mxnet/lib_api.h"
#include "op_common.h"

namespace binmx {
namespace ops {
namespace {

// Access to MXerrorMsgs' private message list through the explicit-instantiation rule
// (access checks do not apply to the template arguments of an explicit instantiation).
struct MessagesTag {
  using type = std::vector<std::stringstream*> mxnet::ext::MXerrorMsgs::*;
  friend type MessagesMember(MessagesTag);
};
template <typename Tag, typename Tag::type kMember>
struct MemberAccess {
  friend typename Tag::type MessagesMember(Tag) { return kMember; }
};
template struct MemberAccess<MessagesTag, &mxnet::ext::MXerrorMsgs::messages>;

}  // namespace

void ResetErrorMessages() {
  auto& messages = mxnet::ext::MXerrorMsgs::get()->*MessagesMember(MessagesTag());
  for (std::stringstream* m : messages) delete m;
  messages.clear();
}

}  // namespace ops
}  // namespace binmx

mxnet::ext::MXReturnValue initialize(int version) {
  if (version < 10900) {
    MX_ERROR_MSG << "binmx operators need MXNet >= 1.9.0, got version " << version;
    return mxnet::ext::MX_FAIL;
  }
  return mxnet::ext::MX_SUCCESS;
}
