/*
 * classify-example: the binmx runtime's C API in a plain C program.
 *
 *   classify-example PREFIX EPOCH C H W [input.f32]
 *
 * Loads PREFIX-symbol.json / PREFIX-EPOCH.params for a (1, C, H, W) input, reads the image as
 * raw float32 (C*H*W values, NCHW) from input.f32 (or uses a constant 0.5 image), runs the
 * model and prints the class with the highest score and the top-5 scores.
 */
#include <stdio.h>
#include <stdlib.h>

#include "binmx_runtime.h"

int main(int argc, char** argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: %s PREFIX EPOCH C H W [input.f32]\n", argv[0]);
    return 2;
  }
  int64_t shape[4] = {1, atoll(argv[3]), atoll(argv[4]), atoll(argv[5])};
  binmx_model* model = NULL;
  if (binmx_model_load(argv[1], atoi(argv[2]), shape, 4, 0, &model) != 0) {
    fprintf(stderr, "error: %s\n", binmx_last_error());
    return 1;
  }
  const int64_t n_in = binmx_model_input_size(model);
  const int64_t n_out = binmx_model_output_size(model);
  float* x = malloc(sizeof(float) * (size_t)n_in);
  float* y = malloc(sizeof(float) * (size_t)n_out);
  if (x == NULL || y == NULL) {
    fprintf(stderr, "error: out of memory\n");
    return 1;
  }
  if (argc > 6) {
    FILE* f = fopen(argv[6], "rb");
    if (f == NULL || fread(x, sizeof(float), (size_t)n_in, f) != (size_t)n_in) {
      fprintf(stderr, "error: cannot read %lld floats from %s\n", (long long)n_in, argv[6]);
      return 1;
    }
    fclose(f);
  } else {
    for (int64_t i = 0; i < n_in; ++i) x[i] = 0.5f;
  }
  if (binmx_model_run(model, x, n_in, y, n_out) != 0) {
    fprintf(stderr, "error: %s\n", binmx_last_error());
    return 1;
  }
  int best[5] = {-1, -1, -1, -1, -1};
  for (int k = 0; k < 5 && k < n_out; ++k) {
    for (int64_t i = 0; i < n_out; ++i) {
      int taken = 0;
      for (int j = 0; j < k; ++j) taken |= best[j] == i;
      if (!taken && (best[k] < 0 || y[i] > y[best[k]])) best[k] = (int)i;
    }
  }
  printf("class %d\n", best[0]);
  for (int k = 0; k < 5 && k < n_out; ++k) printf("  %d: %g\n", best[k], y[best[k]]);
  binmx_model_free(model);
  free(x);
  free(y);
  return 0;
}
