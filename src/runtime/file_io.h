/*
 * binmx runtime (internal): byte sources for the file readers and an atomic file writer.
 *
 * ByteSource reads a byte range sequentially from memory or from a file. The readers check every
 * length against remaining() BEFORE they allocate or read, so a file is never read out of bounds
 * and a size field cannot make them allocate more than the file holds; reading a file through
 * ByteSource copies each array straight into its destination (no whole-file buffer, so loading
 * a model costs the weights' memory once). Integers in the formats are little-endian; the
 * runtime supports little-endian hosts only (checked at compile time).
 *
 * WriteFileAtomically writes to a temporary file in the destination's directory and renames it
 * over the destination, so readers never see a half-written file; OS errors are named
 * ("No space left on device", "Is a directory").
 */
#ifndef BINMX_RT_FILE_IO_H_
#define BINMX_RT_FILE_IO_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the binmx runtime reads little-endian files and supports little-endian hosts only"
#endif

namespace binmx {
namespace rt {

class ByteSource {
 public:
  // A memory range (not owned; must outlive the source). `what` names it in errors.
  ByteSource(const uint8_t* data, size_t size, std::string what);
  // Opens a regular file for reading; Error naming the path and the reason (missing, a
  // directory, permission denied, not a regular file).
  explicit ByteSource(const std::string& path);

  const std::string& what() const { return what_; }
  size_t size() const { return size_; }
  size_t offset() const { return offset_; }
  size_t remaining() const { return size_ - offset_; }

  // Copies the next n bytes to dst. n must be <= remaining() (an Error otherwise, naming
  // `field`); a failed or short read of the file is an Error too.
  void Read(void* dst, size_t n, const char* field);
  void Skip(size_t n, const char* field);

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const;
  };
  std::string what_;
  const uint8_t* data_ = nullptr;
  std::unique_ptr<std::FILE, FileCloser> file_;
  size_t size_ = 0;
  size_t offset_ = 0;
};

// The whole content of a regular file (a symbol JSON, say); Error naming the path for a missing
// file, a directory, a FIFO or device, a read error, or a file larger than max_bytes.
std::string ReadWholeFile(const std::string& path, size_t max_bytes);

// Writes [data, data + size) to `path` through a temporary file in the same directory and a
// rename; Error "cannot write 'path': <OS reason>" on failure (the temporary file is removed).
void WriteFileAtomically(const std::string& path, const void* data, size_t size);

}  // namespace rt
}  // namespace binmx

#endif  // BINMX_RT_FILE_IO_H_
