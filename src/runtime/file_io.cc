/*
 * binmx runtime: ByteSource and WriteFileAtomically (see file_io.h). POSIX file calls; every
 * failure becomes an Error naming the path and strerror(errno).
 */
#include "file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "rt_common.h"

namespace binmx {
namespace rt {

void ByteSource::FileCloser::operator()(std::FILE* f) const {
  if (f) std::fclose(f);
}

ByteSource::ByteSource(const uint8_t* data, size_t size, std::string what)
    : what_(std::move(what)), data_(data), size_(size) {
  if (data_ == nullptr && size_ != 0) Fail(what_ + ": null data pointer with a non-zero size");
}

ByteSource::ByteSource(const std::string& path) : what_(path) {
  if (path.empty()) Fail("cannot open a file with an empty path");
  // O_NONBLOCK so that opening a FIFO cannot hang; it is cleared once the file is known to be
  // a regular file.
  const int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) Fail("cannot open '" + path + "': " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    Fail("cannot stat '" + path + "': " + std::strerror(err));
  }
  const bool regular = S_ISREG(st.st_mode);
  if (!regular || st.st_size < 0 || fcntl(fd, F_SETFL, 0) != 0) {
    close(fd);
    Fail("cannot read '" + path + "': " +
         (S_ISDIR(st.st_mode) ? "Is a directory"
          : regular           ? "cannot use the file"
                              : "not a regular file"));
  }
  std::FILE* f = fdopen(fd, "rb");
  if (f == nullptr) {
    const int err = errno;
    close(fd);
    Fail("cannot open '" + path + "': " + std::strerror(err));
  }
  file_.reset(f);
  size_ = static_cast<size_t>(st.st_size);
}

void ByteSource::Read(void* dst, size_t n, const char* field) {
  if (n > remaining()) {
    Fail(what_ + ": truncated at byte " + std::to_string(offset_) + ": " + field + " needs " +
         std::to_string(n) + " bytes but the file has " + std::to_string(remaining()) + " left");
  }
  if (n == 0) return;
  if (data_ != nullptr) {
    std::memcpy(dst, data_ + offset_, n);
  } else {
    const size_t got = std::fread(dst, 1, n, file_.get());
    if (got != n) {
      const bool error = std::ferror(file_.get()) != 0;
      Fail(what_ + ": read error at byte " + std::to_string(offset_ + got) + " (" + field +
           "): " + (error ? std::strerror(errno) : "the file ended early (changed while read?)"));
    }
  }
  offset_ += n;
}

void ByteSource::Skip(size_t n, const char* field) {
  if (n > remaining()) {
    Fail(what_ + ": truncated at byte " + std::to_string(offset_) + ": " + field + " needs " +
         std::to_string(n) + " bytes but the file has " + std::to_string(remaining()) + " left");
  }
  if (data_ == nullptr && n != 0) {
    if (fseeko(file_.get(), static_cast<off_t>(offset_ + n), SEEK_SET) != 0) {
      Fail(what_ + ": seek error at byte " + std::to_string(offset_) + ": " + std::strerror(errno));
    }
  }
  offset_ += n;
}

std::string ReadWholeFile(const std::string& path, size_t max_bytes) {
  ByteSource src(path);
  if (src.size() > max_bytes) {
    Fail("cannot read '" + path + "': the file is " + std::to_string(src.size()) +
         " bytes, more than the limit of " + std::to_string(max_bytes));
  }
  std::string out(src.size(), '\0');
  src.Read(out.data(), out.size(), "the file");
  return out;
}

namespace {

[[noreturn]] void WriteError(const std::string& path, int err) {
  Fail("cannot write '" + path + "': " + std::strerror(err));
}

}  // namespace

void WriteFileAtomically(const std::string& path, const void* data, size_t size) {
  if (path.empty()) Fail("cannot write a file with an empty path");
  if (path.back() == '/') WriteError(path, EISDIR);
  // A unique name beside the destination: same file system, so rename() is atomic. Created
  // with O_EXCL and mode 0666 so the process umask applies as for any new file.
  static std::atomic<unsigned> counter{0};
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    tmp = path + ".tmp-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) WriteError(path, errno);
  }
  if (fd < 0) WriteError(path, EEXIST);
  const uint8_t* p = static_cast<const uint8_t*>(data);
  size_t left = size;
  while (left > 0) {
    const ssize_t n = write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      close(fd);
      unlink(tmp.c_str());
      WriteError(path, err);
    }
    if (n == 0) {
      close(fd);
      unlink(tmp.c_str());
      WriteError(path, ENOSPC);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (close(fd) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    WriteError(path, err);
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    WriteError(path, err);
  }
}

}  // namespace rt
}  // namespace binmx
