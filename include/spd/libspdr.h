/* libspdr: read SP Driver 2.0's host-health cache (sensors, thermal zones, NVMe SMART).
 *
 * spd2 polls the host's sensors and writes their values into a shared-memory segment
 * (docs/health_format.md); this library maps it read-only. Reading a sensor never talks to the
 * daemon and never touches sysfs: spdr_sensor_read_cached is a few memory loads, no system call.
 *
 * Conventions:
 *  - Functions return 0 (SPDR_OK) or a negative SPDR_E* code; none aborts or throws.
 *  - Ownership: an object returned through an `out` pointer belongs to the caller, who frees it
 *    with the matching close/stop function. Strings passed in are copied when needed; strings
 *    handed out point into the mapping and live as long as their spdr_cache.
 *  - Thread-safety: an spdr_cache and the sensors opened from it may be used from any number of
 *    threads at once for every call except close; closing an object while another thread uses
 *    it, or closing a cache before its sensors and watches, is undefined.
 *  - Values are integers in the sensor's unit (milli-degree Celsius, RPM, millivolt, ...:
 *    exactly what the kernel reported), with `value` also given in SI units as a double.
 */
#ifndef SPD_LIBSPDR_H_
#define SPD_LIBSPDR_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SPDR_API __attribute__((visibility("default")))
#else
#define SPDR_API
#endif

#define SPDR_VERSION_MAJOR 0
#define SPDR_VERSION_MINOR 1
#define SPDR_DEFAULT_SHM_NAME "/spd2-health"
#define SPDR_NAME_MAX 96 /* with the NUL */

enum spdr_error {
  SPDR_OK = 0,
  SPDR_EINVAL = -1,  /* a null pointer, an unknown flag, an index out of range */
  SPDR_ENOENT = -2,  /* no such cache, or no sensor of that name */
  SPDR_EAGAIN = -3,  /* SPDR_READ_NO_BLOCK: the writer was busy with it, try again */
  SPDR_EFORMAT = -4, /* not a health cache, or a version this library does not know */
  SPDR_ESYS = -5,    /* a system call failed; errno says which */
  SPDR_ENOMEM = -6,
  SPDR_ERANGE = -7, /* the caller's array is too small (the count needed is returned) */
};

/* Values match docs/health_format.md. */
enum spdr_status {
  SPDR_STATUS_OK = 0,
  SPDR_STATUS_WARNING = 1,  /* at or above max, or below min */
  SPDR_STATUS_CRITICAL = 2, /* at or above crit, or below lcrit */
  SPDR_STATUS_STALE = 3,    /* not read for 3 periods, or never (the daemon may be gone) */
  SPDR_STATUS_FAILED = 4,   /* the last read failed; value is the last good one */
};

enum spdr_kind {
  SPDR_KIND_UNKNOWN = 0,
  SPDR_KIND_TEMP = 1,
  SPDR_KIND_FAN = 2,
  SPDR_KIND_IN = 3,
  SPDR_KIND_CURR = 4,
  SPDR_KIND_POWER = 5,
  SPDR_KIND_ENERGY = 6,
  SPDR_KIND_THERMAL = 7,
  SPDR_KIND_NVME_TEMP = 8,
  SPDR_KIND_NVME_AVAILABLE_SPARE = 9,
  SPDR_KIND_NVME_PERCENT_USED = 10,
  SPDR_KIND_NVME_CRITICAL_WARNING = 11,
  SPDR_KIND_NVME_MEDIA_ERRORS = 12,
  SPDR_KIND_NVME_UNSAFE_SHUTDOWNS = 13,
  SPDR_KIND_NVME_POWER_ON_HOURS = 14,
};

enum spdr_unit {
  SPDR_UNIT_NONE = 0,
  SPDR_UNIT_MILLI_CELSIUS = 1,
  SPDR_UNIT_RPM = 2,
  SPDR_UNIT_MILLI_VOLT = 3,
  SPDR_UNIT_MILLI_AMP = 4,
  SPDR_UNIT_MICRO_WATT = 5,
  SPDR_UNIT_MICRO_JOULE = 6,
  SPDR_UNIT_PERCENT = 7,
  SPDR_UNIT_COUNT = 8,
  SPDR_UNIT_HOURS = 9,
  SPDR_UNIT_BITMASK = 10,
};

/* Bits of spdr_reading.threshold_mask. */
#define SPDR_HAS_MIN 1u
#define SPDR_HAS_MAX 2u
#define SPDR_HAS_CRIT 4u
#define SPDR_HAS_LCRIT 8u

/* Flag of spdr_sensor_read_cached: give up (SPDR_EAGAIN) after a bounded number of attempts
 * instead of retrying until the writer is out of the record. */
#define SPDR_READ_NO_BLOCK 1u

typedef struct spdr_cache spdr_cache;
typedef struct spdr_sensor spdr_sensor;
typedef struct spdr_watch spdr_watch;

typedef struct spdr_sensor_info {
  uint32_t index;           /* position in the cache, 0 .. spdr_sensor_count() - 1 */
  int32_t kind;             /* enum spdr_kind */
  int32_t unit;             /* enum spdr_unit */
  uint64_t period_ns;       /* how often spd2 reads it */
  const char* name;         /* stable name, "hwmon/k10temp/Tctl" */
  const char* pci_location; /* "0000:01:00.0" or "" */
  const char* channel;      /* "temp1", ... */
  const char* label;        /* the device's label or "" */
} spdr_sensor_info;

typedef struct spdr_reading {
  uint32_t index;
  int32_t status;  /* enum spdr_status, as spd2 wrote it (see spdr_sensor_status for age) */
  int64_t value;   /* in the sensor's unit */
  double value_si; /* value in SI units (degrees Celsius, volts, watts, RPM, ...) */
  int64_t min, max, crit, lcrit; /* valid per threshold_mask */
  uint32_t threshold_mask;
  int32_t last_errno;            /* of the last failed read */
  uint64_t updated_monotonic_ns; /* CLOCK_MONOTONIC of the last good read, 0: never */
  uint64_t updated_realtime_ns;
} spdr_reading;

/* --- Caches --- */

/* Maps the cache spd2 publishes under a POSIX shared-memory name (NULL: SPDR_DEFAULT_SHM_NAME).
 * Thread-safe. The caller owns *out and closes it with spdr_cache_close. */
SPDR_API int spdr_cache_open(const char* shm_name, spdr_cache** out);
/* The same for a cache kept in a plain file (tests, containers). */
SPDR_API int spdr_cache_open_path(const char* path, spdr_cache** out);
/* Unmaps it. REQUIRES: its sensors closed and watches stopped. NULL is a no-op. */
SPDR_API void spdr_cache_close(spdr_cache* cache);
/* Sensors published now (the count only grows). Thread-safe, no system call. */
SPDR_API uint32_t spdr_sensor_count(const spdr_cache* cache);
/* Identity of sensor `index`; strings live as long as the cache. Thread-safe. */
SPDR_API int spdr_sensor_info_at(const spdr_cache* cache, uint32_t index, spdr_sensor_info* out);
/* CLOCK_MONOTONIC of the writer's last poll round, 0 if none yet. Thread-safe. */
SPDR_API uint64_t spdr_cache_heartbeat_ns(const spdr_cache* cache);

/* --- Sensors --- */

/* Opens a sensor by its stable name ("hwmon/nvme@0000:01:00.0/Composite") or by its PCI alias
 * ("pcie/0000:01:00.0/Composite"). SPDR_ENOENT if none. Thread-safe. The caller owns *out and
 * closes it with spdr_sensor_close before closing the cache. */
SPDR_API int spdr_sensor_open(spdr_cache* cache, const char* name, spdr_sensor** out);
SPDR_API void spdr_sensor_close(spdr_sensor* sensor);
SPDR_API int spdr_sensor_info_get(const spdr_sensor* sensor, spdr_sensor_info* out);
/* The last value spd2 wrote, consistent (a seqlock read), with no system call and no lock.
 * flags 0: retries until consistent; SPDR_READ_NO_BLOCK: at most 64 attempts, then SPDR_EAGAIN.
 * Status is as written; it does not look at the clock (see spdr_sensor_status). Thread-safe. */
SPDR_API int spdr_sensor_read_cached(const spdr_sensor* sensor, spdr_reading* out, unsigned flags);
/* Status with the reader's own judgement of age: SPDR_STATUS_STALE when the value is older
 * than 3 of its periods even if spd2 did not say so (spd2 stopped). *age_ns: now minus the last
 * good read (UINT64_MAX: never read). Either pointer may be NULL. Reads CLOCK_MONOTONIC (vDSO
 * on most systems). Thread-safe. */
SPDR_API int spdr_sensor_status(const spdr_sensor* sensor, int* status, uint64_t* age_ns);

/* --- Snapshots --- */

/* Copies every sensor as of one poll round (the table's generation seqlock): readings[i] is
 * sensor i. capacity: room in `readings`; *count: sensors in the cache (SPDR_ERANGE when more
 * than capacity, nothing copied). *generation (may be NULL): the round's number, even.
 * Retries while spd2 is mid-round, at most ~1 ms, then SPDR_EAGAIN. Thread-safe. */
SPDR_API int spdr_snapshot(const spdr_cache* cache, spdr_reading* readings, uint32_t capacity,
                           uint32_t* count, uint64_t* generation);

/* --- Notifications --- */

enum spdr_event_type {
  SPDR_EVENT_STATUS = 1,   /* status changed (a threshold crossed, a read failed, stale) */
  SPDR_EVENT_VALUE = 2,    /* value moved by at least value_delta since the last event */
  SPDR_EVENT_OVERFLOW = 3, /* events were dropped: the queue was full (count in `index`) */
};

typedef struct spdr_event {
  int32_t type; /* enum spdr_event_type */
  uint32_t index;
  int32_t old_status;
  int32_t new_status;
  int64_t old_value;
  int64_t new_value;
} spdr_event;

/* Called on the watch's thread; must not call spdr_watch_stop on its own watch. */
typedef void (*spdr_event_fn)(const spdr_event* event, void* user);

typedef struct spdr_watch_options {
  uint32_t interval_ms;   /* how often the watch thread looks at the cache; 0: 200 */
  int64_t value_delta;    /* SPDR_EVENT_VALUE when |value - last reported| >= this; 0: none */
  spdr_event_fn callback; /* NULL: queue events for spdr_watch_fd / spdr_watch_next */
  void* user;
} spdr_watch_options;

/* Starts a thread that compares the cache with what it saw last and reports changes, to the
 * callback or into a bounded queue (1024 events; SPDR_EVENT_OVERFLOW when it was full).
 * The caller owns *out and stops it with spdr_watch_stop (joins the thread). */
SPDR_API int spdr_watch_start(spdr_cache* cache, const spdr_watch_options* options,
                              spdr_watch** out);
/* A file descriptor (an eventfd) readable while the queue holds events: poll/epoll it, then
 * drain with spdr_watch_next. Owned by the watch: do not close it. -1 with a callback. */
SPDR_API int spdr_watch_fd(const spdr_watch* watch);
/* Pops one event: SPDR_OK, or SPDR_EAGAIN when the queue is empty. Thread-safe. */
SPDR_API int spdr_watch_next(spdr_watch* watch, spdr_event* out);
/* Stops the thread and frees the watch. NULL is a no-op. */
SPDR_API void spdr_watch_stop(spdr_watch* watch);

/* --- Names --- */

SPDR_API const char* spdr_status_name(int status); /* "ok", "warning", ... static */
SPDR_API const char* spdr_unit_name(int unit);     /* SI unit of value_si: "C", "V", ... static */
SPDR_API const char* spdr_strerror(int error);     /* static */

#ifdef __cplusplus
}
#endif

#endif /* SPD_LIBSPDR_H_ */
