// The USDT probes' semaphores (probes.h). One definition each, in the .probes section where
// tracers (bpftrace, systemtap, perf) expect them; each probe's note holds its semaphore's
// address, which a tracer increments in the running process to turn the probe on.
#include "common/probes.h"

#if defined(SPD_USDT) && SPD_USDT

// Inside extern "C" { }: a definition (an `extern "C"` declaration with an initializer draws a
// warning).
#define SPD_DEFINE_SEMAPHORE(name) \
  volatile unsigned short spd2_##name##_semaphore __attribute__((section(".probes"))) = 0

extern "C" {
SPD_DEFINE_SEMAPHORE(request__arrival);
SPD_DEFINE_SEMAPHORE(sched__enqueue);
SPD_DEFINE_SEMAPHORE(sched__dispatch);
SPD_DEFINE_SEMAPHORE(backend__submit);
SPD_DEFINE_SEMAPHORE(backend__complete);
SPD_DEFINE_SEMAPHORE(request__reply);
}

#endif
