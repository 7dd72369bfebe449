// Closes the region quant/avx512_begin.hpp opened. No include guard: each region includes it once.
#pragma GCC diagnostic pop
#pragma GCC pop_options
