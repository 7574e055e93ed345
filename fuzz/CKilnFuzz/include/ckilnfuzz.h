#ifndef CKILNFUZZ_H
#define CKILNFUZZ_H
#include <stddef.h>
#include <stdint.h>

typedef int (*kiln_fuzz_callback)(const uint8_t *data, size_t size);

/// 1 when libFuzzer's driver is linked in (`make fuzz`), 0 in ordinary builds.
int kiln_fuzz_available(void);
/// Hands control to libFuzzer; only call when kiln_fuzz_available().
int kiln_fuzz_run(int *argc, char ***argv, kiln_fuzz_callback callback);

#endif
