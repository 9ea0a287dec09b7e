/*
 * binmx core: the packed file format of k-bit weight levels (docs/design.md §2), header-only.
 * Framework-free (no MXNet, no Python).
 *
 * A QConvolution / QFullyConnected with weight_bit k in 1..8 (any act_bit but the 1-bit layers,
 * act_bit = weight_bit = 1, which keep the sign words of conv.h) stores its weight, converted,
 * as the weight levels lw of kbit.h, n = F * C/g * kh * kw of them in OIHW order (H * D in
 * [H][D] order for a dense layer), in one LSB-first bit stream of uint64 words:
 *
 *   level i = bits [i*k, i*k + k) of the stream, its least significant bit first;
 *   stream bit b = bit b % 64 of word b / 64 (a level may straddle two words);
 *   KbitPackedWords(n, k) = ceil(n * k / 64) words; the bits past n * k in the last word are 0.
 *
 * So the stream takes n * k bits rounded up to a word: k/32 of the float weights' bytes plus at
 * most 7 bytes. Decoding is one shift (two at a word boundary) and a mask per level, in
 * PrepareKbitConvLevels' input order, with no float round trip.
 * Functions check their arguments and throw std::invalid_argument.
 */
#ifndef BINMX_KBIT_PACK_H_
#define BINMX_KBIT_PACK_H_

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace binmx {

// Words of a stream of n levels at `bits` bits each (n >= 0, bits in 1..8).
inline int64_t KbitPackedWords(int64_t n, int bits) {
  if (bits < 1 || bits > 8) {
    throw std::invalid_argument("packed k-bit weights: weight_bit must be in 1..8, got " +
                                std::to_string(bits));
  }
  if (n < 0 || n > (int64_t{1} << 56)) {
    throw std::invalid_argument("packed k-bit weights: bad level count " + std::to_string(n));
  }
  return (n * bits + 63) / 64;
}

// Packs levels[0..n) (each < 2^bits) into out[0..KbitPackedWords(n, bits)), tail bits 0.
inline void PackKbitLevels(const uint8_t* levels, int64_t n, int bits, uint64_t* out) {
  const int64_t words = KbitPackedWords(n, bits);
  for (int64_t w = 0; w < words; ++w) out[w] = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t v = levels[i];
    if (v >> bits) {
      throw std::invalid_argument("packed k-bit weights: level " + std::to_string(v) + " at " +
                                  std::to_string(i) +
                                  " does not fit weight_bit=" + std::to_string(bits));
    }
    const int64_t b = i * bits;
    const int s = static_cast<int>(b & 63);
    out[b >> 6] |= v << s;
    if (s + bits > 64) out[(b >> 6) + 1] |= v >> (64 - s);
  }
}

// Unpacks n levels from words[0..n_words) into out[0..n). Throws std::invalid_argument when
// n_words is not KbitPackedWords(n, bits) or a bit past the last level is set (a stream written
// for another layer size or weight_bit, or corrupt), naming the word and its value.
inline void UnpackKbitLevels(const uint64_t* words, int64_t n_words, int64_t n, int bits,
                             uint8_t* out) {
  const int64_t want = KbitPackedWords(n, bits);
  if (n_words != want) {
    throw std::invalid_argument("packed k-bit weights: expected " + std::to_string(want) +
                                " words for " + std::to_string(n) + " levels at weight_bit=" +
                                std::to_string(bits) + ", got " + std::to_string(n_words));
  }
  const int used = static_cast<int>((n * bits) & 63);
  if (used != 0 && (words[want - 1] >> used) != 0) {
    char hex[24];
    std::snprintf(hex, sizeof(hex), "0x%016llx", static_cast<unsigned long long>(words[want - 1]));
    throw std::invalid_argument("packed k-bit weights: bits past the last level are set (word " +
                                std::to_string(want - 1) + " = " + hex + ", only its low " +
                                std::to_string(used) +
                                " bits hold levels at weight_bit=" + std::to_string(bits) + ")");
  }
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = i * bits;
    const int s = static_cast<int>(b & 63);
    uint64_t v = words[b >> 6] >> s;
    if (s + bits > 64) v |= words[(b >> 6) + 1] << (64 - s);
    out[i] = static_cast<uint8_t>(v & mask);
  }
}

}  // namespace binmx

#endif  // BINMX_KBIT_PACK_H_
