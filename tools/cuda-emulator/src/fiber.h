// Fibers: the CUDA threads of one emulated block run as fibers of one OS thread, switched only at barriers,
// warp operations and exit. On x86-64 the switch is a few instructions (fiber.cpp); elsewhere ucontext.
#pragma once

#include <stddef.h>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace papo_emu {

struct FiberContext {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

// A fiber stack with a PROT_NONE guard page below it, so an overflow faults instead of corrupting memory.
struct FiberStack {
  void* map = nullptr;
  size_t mapBytes = 0;
  char* lo = nullptr;  // lowest usable byte
  char* hi = nullptr;  // one past the highest usable byte
  bool contains(const void* p) const { return p >= lo && p < hi; }
  bool guard_contains(const void* p) const { return (const char*)p >= (const char*)map && (const char*)p < lo; }
};
FiberStack fiber_stack_alloc(size_t bytes);
void fiber_stack_free(FiberStack& s);

// Prepares `c` to run entry(arg) on `stack` at its first fiber_switch; entry must never return.
void fiber_init(FiberContext* c, const FiberStack& stack, void (*entry)(void*), void* arg);
// Saves the running context in `from` and resumes `to`.
void fiber_switch(FiberContext* from, FiberContext* to);

}  // namespace papo_emu
