// One core's single-precision FMA peak, AVX-512 and AVX2 (docs/PERFORMANCE.md, "Every preset,
// every path"): 12 independent FMA chains kept in registers, per CPU-second and wall clock.
//
//   gcc -O3 -funroll-all-loops -o /tmp/fma_peak bench/fma_peak.c && /tmp/fma_peak
//
// Check that the loop stayed in registers: `objdump -d /tmp/fma_peak | grep -c 'vfmadd.*zmm'`
// counts many FMAs (72 with gcc 12); at -O2 gcc keeps the chains in memory and measures a
// store-forwarding latency instead of the peak.
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(clockid_t c){struct timespec t;clock_gettime(c,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define CH 12
__attribute__((target("avx512f"))) static float run512(long n){
  __m512 a[CH]; __m512 b=_mm512_set1_ps(0.999999f), c=_mm512_set1_ps(1e-7f);
  for(int i=0;i<CH;i++) a[i]=_mm512_set1_ps((float)i);
  for(long k=0;k<n;k++){ for(int i=0;i<CH;i++) a[i]=_mm512_fmadd_ps(a[i],b,c); }
  float s=0; for(int i=0;i<CH;i++) s+=_mm512_reduce_add_ps(a[i]); return s;}
__attribute__((target("avx2,fma"))) static float run256(long n){
  __m256 a[CH]; __m256 b=_mm256_set1_ps(0.999999f), c=_mm256_set1_ps(1e-7f);
  for(int i=0;i<CH;i++) a[i]=_mm256_set1_ps((float)i);
  for(long k=0;k<n;k++){ for(int i=0;i<CH;i++) a[i]=_mm256_fmadd_ps(a[i],b,c); }
  float s=0; float t[8]; for(int i=0;i<CH;i++){_mm256_storeu_ps(t,a[i]); for(int j=0;j<8;j++) s+=t[j];} return s;}
int main(){
  long n=400000000L/CH*4;
  for(int rep=0;rep<3;rep++){
    double w0=now(CLOCK_MONOTONIC), c0=now(CLOCK_PROCESS_CPUTIME_ID); float s=run512(n);
    double w=now(CLOCK_MONOTONIC)-w0, c=now(CLOCK_PROCESS_CPUTIME_ID)-c0;
    double fl=(double)n*CH*16*2; printf("avx512: %.1f GFLOP/s per CPU-s, %.1f wall (%g)\n", fl/c/1e9, fl/w/1e9, s);
    w0=now(CLOCK_MONOTONIC); c0=now(CLOCK_PROCESS_CPUTIME_ID); s=run256(n);
    w=now(CLOCK_MONOTONIC)-w0; c=now(CLOCK_PROCESS_CPUTIME_ID)-c0;
    fl=(double)n*CH*8*2; printf("avx2:   %.1f GFLOP/s per CPU-s, %.1f wall (%g)\n", fl/c/1e9, fl/w/1e9, s);
  }
}
