#include "common/psk_file.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <string_view>

#include "common/log.h"

namespace spd {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

void WipeKey(std::string* s) {
  if (!s->empty()) explicit_bzero(s->data(), s->size());
  s->clear();
}

Status LoadPskFile(const std::string& path, const std::string& who, PskKeys* keys,
                   std::string* first) {
  std::ifstream in(path);
  if (!in) return InvalidArgument(who + ": cannot read the PSK file " + path);
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && (st.st_mode & 0077) != 0)
    SPD_LOG_WARN("%s: the PSK file %s can be read by other users (mode %03o): chmod 600 it",
                 who.c_str(), path.c_str(), static_cast<unsigned>(st.st_mode & 0777));
  std::string line;
  size_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    const std::string where = path + ":" + std::to_string(lineno);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos || colon == 0) {
      WipeKey(&line);
      return InvalidArgument(who + ": " + where + ": want IDENTITY:HEXKEY (the psktool format)");
    }
    std::string id = line.substr(0, colon);
    const std::string_view hex(line.data() + colon + 1, line.size() - colon - 1);
    std::string key;
    bool bad = hex.size() % 2 != 0;
    for (size_t i = 0; !bad && i < hex.size(); i += 2) {
      const int hi = HexValue(hex[i]), lo = HexValue(hex[i + 1]);
      if (hi < 0 || lo < 0) bad = true;
      key.push_back(static_cast<char>(hi * 16 + lo));
    }
    WipeKey(&line);
    if (bad) {
      WipeKey(&key);
      return InvalidArgument(who + ": " + where + ": the key of '" + id +
                             "' is not an even number of hex digits");
    }
    if (key.size() < kPskKeyBytesMin) {
      WipeKey(&key);
      return InvalidArgument(who + ": " + where + ": the key of '" + id + "' is shorter than " +
                             std::to_string(kPskKeyBytesMin) +
                             " bytes (psktool -s 32 makes a good one)");
    }
    if (keys->count(id) != 0) {
      WipeKey(&key);
      return InvalidArgument(who + ": " + where + ": identity '" + id + "' appears twice");
    }
    if (first != nullptr && first->empty()) *first = id;
    keys->emplace(std::move(id), std::move(key));
  }
  if (keys->empty()) return InvalidArgument(who + ": the PSK file " + path + " has no key");
  return Status::Ok();
}

}  // namespace spd
