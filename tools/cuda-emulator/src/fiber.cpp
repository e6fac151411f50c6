#include "fiber.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace papo_emu {

namespace {

// A stack serves fiber after fiber, and a fiber that ends by switching away never returns through its frames, so
// their redzones stay poisoned in an ASan build; the next fiber's uninstrumented frames (ASan's own, such as
// __asan_handle_no_return before a call to a noreturn function) would land on that stale poison and be
// reported. Each fiber starts on clean shadow.
void fresh_shadow(const FiberStack& stack) {
#if defined(__SANITIZE_ADDRESS__)
  ASAN_UNPOISON_MEMORY_REGION(stack.lo, (size_t)(stack.hi - stack.lo));
#else
  (void)stack;
#endif
}

}  // namespace

FiberStack fiber_stack_alloc(size_t bytes) {
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  bytes = (bytes + page - 1) / page * page;
  FiberStack s;
  s.mapBytes = bytes + page;
  s.map = mmap(nullptr, s.mapBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (s.map == MAP_FAILED) abort();
  mprotect(s.map, page, PROT_NONE);
  s.lo = static_cast<char*>(s.map) + page;
  s.hi = s.lo + bytes;
  return s;
}

void fiber_stack_free(FiberStack& s) {
  if (s.map) munmap(s.map, s.mapBytes);
  s = FiberStack{};
}

#if defined(__x86_64__)

// System V x86-64: the callee-saved registers, MXCSR and the x87 control word travel on the stack; the stack
// pointer is the whole context.
extern "C" void papo_emu_switch(void** saveSp, void* newSp);
extern "C" void papo_emu_trampoline();
asm(R"(
  .text
  .p2align 4
  .globl papo_emu_switch
  .hidden papo_emu_switch
  .type papo_emu_switch,@function
papo_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size papo_emu_switch, .-papo_emu_switch

  .p2align 4
  .globl papo_emu_trampoline
  .hidden papo_emu_trampoline
  .type papo_emu_trampoline,@function
papo_emu_trampoline:
  movq %r13, %rdi
  callq *%r12
  ud2
  .size papo_emu_trampoline, .-papo_emu_trampoline
  .section .note.GNU-stack,"",@progbits
  .text
)");

void fiber_init(FiberContext* c, const FiberStack& stack, void (*entry)(void*), void* arg) {
  fresh_shadow(stack);
  // The frame papo_emu_switch pops: [mxcsr, fpu cw][r15][r14][r13 = arg][r12 = entry][rbx][rbp][ret]; after
  // the ret the stack pointer is 16-byte aligned, as the call in the trampoline needs.
  uintptr_t top = reinterpret_cast<uintptr_t>(stack.hi) & ~(uintptr_t)15;
  uint64_t* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = reinterpret_cast<uint64_t>(&papo_emu_trampoline);  // ret
  *--sp = 0;                                                 // rbp
  *--sp = 0;                                                 // rbx
  *--sp = reinterpret_cast<uint64_t>(entry);                 // r12
  *--sp = reinterpret_cast<uint64_t>(arg);                   // r13
  *--sp = 0;                                                 // r14
  *--sp = 0;                                                 // r15
  *--sp = (uint64_t)0x1F80 | ((uint64_t)0x037F << 32);       // default MXCSR, x87 control word
  c->sp = sp;
}

void fiber_switch(FiberContext* from, FiberContext* to) { papo_emu_switch(&from->sp, to->sp); }

#else

namespace {
void ucontext_entry(unsigned hi, unsigned lo, unsigned ehi, unsigned elo) {
  void* arg = reinterpret_cast<void*>(((uintptr_t)hi << 32) | lo);
  auto entry = reinterpret_cast<void (*)(void*)>(((uintptr_t)ehi << 32) | elo);
  entry(arg);
  abort();
}
}  // namespace

void fiber_init(FiberContext* c, const FiberStack& stack, void (*entry)(void*), void* arg) {
  fresh_shadow(stack);
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = stack.lo;
  c->uc.uc_stack.ss_size = (size_t)(stack.hi - stack.lo);
  c->uc.uc_link = nullptr;
  const uintptr_t a = reinterpret_cast<uintptr_t>(arg), e = reinterpret_cast<uintptr_t>(entry);
  makecontext(&c->uc, (void (*)())ucontext_entry, 4, (unsigned)(a >> 32), (unsigned)a, (unsigned)(e >> 32),
              (unsigned)e);
}

void fiber_switch(FiberContext* from, FiberContext* to) { swapcontext(&from->uc, &to->uc); }

#endif

}  // namespace papo_emu
