// USDT probes (provider "spd2"): static tracepoints that bpftrace, perf, systemtap or gdb attach
// to in a running spd2, with no restart and no rebuild (docs/observability.md, tools/*.bt).
//
// Each probe is a nop in the instruction stream plus a note in the binary (.note.stapsdt) that
// says where the nop is and where its arguments live. With semaphores (_SDT_HAS_SEMAPHORES), each
// probe also has a global `unsigned short` in the .probes section that a tracer increments when
// it attaches and decrements when it leaves; SPD_PROBE tests it first, so that with nothing
// attached a probe costs one load and one predictable branch, and its arguments (a volume's name,
// the correlation id's words) are never computed. Without the semaphore the arguments would be
// computed on every request whether or not anyone listens.
//
// Built with -DSPD_USDT=OFF, or where <sys/sdt.h> (systemtap-sdt-dev) is missing, CMake defines
// SPD_USDT=0 and every macro here compiles to nothing: no note, no semaphore, no branch.
//
// Adding a probe: declare its semaphore below (SPD_PROBE_SEMAPHORE), define it in probes.cc, fire
// it with SPD_PROBE(name, args...) (integers or pointers; sdt.h takes 12, but bpftrace 0.17 reads
// only the first six on x86-64), and document it in docs/observability.md. A probe's name uses
// "__" where tracers show "-" (request__arrival is spd2:request-arrival to systemtap; bpftrace
// keeps the "__").
#pragma once

#if defined(SPD_USDT) && SPD_USDT

#define _SDT_HAS_SEMAPHORES 1
#define SDT_USE_VARIADIC 1  // STAP_PROBEV
#include <sys/sdt.h>

// The semaphore's symbol is named by sdt.h's convention, provider_name_semaphore, and is
// referenced by that literal name from the probe's note (inline assembly): hence C linkage.
#define SPD_PROBE_SEMAPHORE(name) extern "C" volatile unsigned short spd2_##name##_semaphore

SPD_PROBE_SEMAPHORE(request__arrival);
SPD_PROBE_SEMAPHORE(sched__enqueue);
SPD_PROBE_SEMAPHORE(sched__dispatch);
SPD_PROBE_SEMAPHORE(backend__submit);
SPD_PROBE_SEMAPHORE(backend__complete);
SPD_PROBE_SEMAPHORE(request__reply);

// True while some tracer is attached to spd2:NAME. Only a hint for work done outside SPD_PROBE:
// a tracer may attach or leave between the test and the probe.
#define SPD_PROBE_ACTIVE(name) __builtin_expect(spd2_##name##_semaphore != 0, 0)

// Fires spd2:NAME with the given arguments, evaluated only while a tracer is attached.
#define SPD_PROBE(name, ...)                                          \
  do {                                                                \
    if (SPD_PROBE_ACTIVE(name)) STAP_PROBEV(spd2, name, __VA_ARGS__); \
  } while (0)

#else

#define SPD_PROBE_ACTIVE(name) false
#define SPD_PROBE(name, ...) \
  do {                       \
  } while (0)

#endif
