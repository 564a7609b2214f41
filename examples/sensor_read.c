/* sensor_read: prints every sensor spd2 publishes, then follows one until interrupted.
 *
 *   cc sensor_read.c $(pkg-config --cflags --libs spdr) -o sensor_read
 *   ./sensor_read [--cache FILE] [SENSOR-NAME]
 */
#include <spd/libspdr.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char** argv) {
  const char* path = NULL;
  const char* name = NULL;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--cache") == 0 && i + 1 < argc) {
      path = argv[++i];
    } else {
      name = argv[i];
    }
  }
  spdr_cache* cache = NULL;
  int rc = path ? spdr_cache_open_path(path, &cache) : spdr_cache_open(NULL, &cache);
  if (rc != SPDR_OK) {
    fprintf(stderr, "sensor_read: open the health cache: %s\n", spdr_strerror(rc));
    return 1;
  }
  uint32_t n = spdr_sensor_count(cache);
  for (uint32_t i = 0; i < n; ++i) {
    spdr_sensor_info info;
    if (spdr_sensor_info_at(cache, i, &info) == SPDR_OK) printf("%s\n", info.name);
  }
  if (name != NULL) {
    spdr_sensor* s = NULL;
    rc = spdr_sensor_open(cache, name, &s);
    if (rc != SPDR_OK) {
      fprintf(stderr, "sensor_read: %s: %s\n", name, spdr_strerror(rc));
      spdr_cache_close(cache);
      return 1;
    }
    spdr_sensor_info info;
    spdr_sensor_info_get(s, &info);
    spdr_reading r;
    int status = 0;
    uint64_t age_ns = 0;
    if (spdr_sensor_read_cached(s, &r, SPDR_READ_NO_BLOCK) == SPDR_OK &&
        spdr_sensor_status(s, &status, &age_ns) == SPDR_OK) {
      printf("%s = %.3f %s (%s, %.1f s old)\n", info.name, r.value_si, spdr_unit_name(info.unit),
             spdr_status_name(status), age_ns == UINT64_MAX ? -1.0 : (double)age_ns / 1e9);
    }
    spdr_sensor_close(s);
  }
  spdr_cache_close(cache);
  return 0;
}
