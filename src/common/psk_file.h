// Pre-shared key files in GnuTLS psktool's format, which libnbd, qemu and nbdkit read too: one
// "IDENTITY:HEXKEY" per line. NBD's TLS (--nbd-tls-psk) and the replication link's
// (--replication-tls-psk) read them.
//
// Thread-safety: pure (reads the file).
#pragma once

#include <functional>
#include <map>
#include <string>

#include "common/status.h"

namespace spd {

// Identity -> key bytes, in the file's order of identities (sorted by the map).
using PskKeys = std::map<std::string, std::string, std::less<>>;

// Keys shorter than this are refused: psktool makes 32 bytes by default.
constexpr size_t kPskKeyBytesMin = 16;

// Reads `path` whole: every line IDENTITY:HEXKEY (empty lines skipped). Errors name the file and
// line and start with `who` ("nbd tls", "replication tls"); a key never appears in them. A file
// others may read is logged as a warning. `first` (optional) gets the first line's identity.
Status LoadPskFile(const std::string& path, const std::string& who, PskKeys* keys,
                   std::string* first = nullptr);

// Overwrites a key's bytes before it is freed.
void WipeKey(std::string* s);

}  // namespace spd
