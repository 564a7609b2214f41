// snapshot: every sensor spd2 publishes, as of one poll round, with the C++ wrapper.
//
//   c++ -std=c++17 snapshot.cpp $(pkg-config --cflags --libs spdr) -o snapshot
//   ./snapshot [CACHE-FILE]
#include <spd/libspdr.hpp>

#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  int err = 0;
  spdr::Cache cache =
      argc > 1 ? spdr::Cache::OpenPath(argv[1], &err) : spdr::Cache::Open(nullptr, &err);
  if (!cache) {
    std::fprintf(stderr, "snapshot: %s\n", spdr_strerror(err));
    return 1;
  }
  std::vector<spdr_reading> readings;
  uint64_t generation = 0;
  if ((err = cache.Snapshot(&readings, &generation)) != SPDR_OK) {
    std::fprintf(stderr, "snapshot: %s\n", spdr_strerror(err));
    return 1;
  }
  const std::vector<spdr_sensor_info> infos = cache.List();
  std::printf("generation %llu\n", static_cast<unsigned long long>(generation));
  for (size_t i = 0; i < readings.size() && i < infos.size(); ++i) {
    std::printf("%-48s %12.3f %-5s %s\n", infos[i].name, readings[i].value_si,
                spdr_unit_name(infos[i].unit), spdr_status_name(readings[i].status));
  }
  return 0;
}
