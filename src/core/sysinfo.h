// Small facts about this process.
#pragma once

#include <cstdint>

namespace mustdrop {

// Peak resident set size of this process in bytes (VmHWM), or -1 where /proc is unavailable.
int64_t peak_rss_bytes();
// Resident set size of this process now in bytes (VmRSS), or -1 where /proc is unavailable.
int64_t rss_bytes();
// Resets the peak to the current resident size (Linux /proc/self/clear_refs), so the next
// peak_rss_bytes() measures one phase; false where the kernel does not allow it.
bool reset_peak_rss();

// Whether this CPU computes bfloat16 natively (the avx512_bf16 or amx_bf16 flag in
// /proc/cpuinfo); false where that cannot be read.
bool cpu_has_native_bf16();

// Keeps large short-lived allocations (attention blocks, activations) in malloc's heaps instead
// of a fresh mmap/munmap each time: on oneTBB worker threads glibc otherwise page-faults through
// every one (prefill measured 6-8x slower). Call once at the start of main().
void tune_allocator();
// Gives the pages of free heap memory back to the system (malloc_trim over every arena). What
// tune_allocator keeps in the heaps stays resident after it is freed; an answer's KV cache (26 MB
// a layer for a 7B model at 3,200 tokens) would otherwise stay with the process after the answer.
void release_free_memory();

}  // namespace mustdrop
