// Opens a region compiled for AVX-512 (F, BW, VL, VNNI, with AVX2, FMA and F16C); close it with
// quant/avx512_end.hpp. Include only where `__x86_64__` and `__GNUC__` hold; the code inside runs
// only where the CPU reports those extensions (the callers' dispatch checks).
// No include guard: each region includes it once.
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
// GCC 12 reports the "undefined" pass-through operand of unmasked 512-bit intrinsics
// (_mm512_cvtepu8_epi32, _mm512_srlv_epi32, _mm512_permutex2var_epi32, ...) as maybe
// uninitialized, and in the Q8_0 tiles' 32 instances that of _mm512_inserti64x4 /
// _mm512_extracti64x4_epi64 as uninitialized: false positives.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
