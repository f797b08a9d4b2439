// The best a plain register tile of the GEMM kernel's kind reaches on this core, in C, as a
// yardstick for src/engine/kernel.rs (docs/PERFORMANCE.md, "A training step without parameter
// copies"): C[MR x 16NV] tiles of a (MR * (128 / MR)) x 128 by 128 x 16NV product (the conditioner's
// hidden layer, feature-major: weights times a slab of events), B hot in L1, A read with a row
// stride as the kernel reads the weights, bias and ReLU in the epilogue. Compare with
// bench/fma_peak.c on the same machine, in the same minute.
//
//   for t in "6 4" "8 3" "12 2"; do set -- $t
//     gcc -O3 -march=native -DMR=$1 -DNV=$2 -o /tmp/tile_$1_$2 bench/tile_peak.c && /tmp/tile_$1_$2
//   done
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
#ifndef MR
#define MR 6
#endif
#ifndef NV
#define NV 4
#endif
#define M (MR * (128 / MR))
#define K 128
#define W (16 * NV)
static float B[K * W] __attribute__((aligned(64)));
static float A[M * K] __attribute__((aligned(64)));
static float C[M * W] __attribute__((aligned(64)));
static float bias[W];
__attribute__((noinline)) static void tile(const float *a, long rsa, const float *b, float *c) {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; r++)
    for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
  for (int p = 0; p < K; p++) {
    __m512 bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) bv[v] = _mm512_load_ps(b + p * W + 16 * v);
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
      __m512 av = _mm512_set1_ps(a[r * rsa + p]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  __m512 z = _mm512_setzero_ps();
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++)
      _mm512_storeu_ps(c + r * W + 16 * v,
                       _mm512_max_ps(_mm512_add_ps(acc[r][v], _mm512_loadu_ps(bias + 16 * v)), z));
}
int main(void) {
  for (int i = 0; i < K * W; i++) B[i] = 0.001f * (i % 7);
  for (int i = 0; i < M * K; i++) A[i] = 0.001f * (i % 5);
  long n = 160000L * 64 / W;
  struct timespec t0, t1;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
  for (long rep = 0; rep < n; rep++)
    for (int i = 0; i < M; i += MR) tile(A + i * K, K, B, C + i * W);
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
  double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
  printf("MR=%d NV=%d: %.1f GFLOP/s per CPU-s (check %f)\n", MR, NV, n * (double)M * K * W * 2 / s / 1e9, C[100]);
  return 0;
}
