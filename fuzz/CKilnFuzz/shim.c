#include "ckilnfuzz.h"

// `make fuzz` compiles this with -DKILN_FUZZ and links libFuzzer without its main
// (libclang_rt.fuzzer_no_main): the reference is strong, so the driver is pulled in. Ordinary builds
// keep it weak and unresolved, and the target replays its corpus instead.
#ifdef KILN_FUZZ
extern int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*cb)(const uint8_t *, size_t));
#else
extern int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*cb)(const uint8_t *, size_t)) __attribute__((weak));
#endif

int kiln_fuzz_available(void) { return LLVMFuzzerRunDriver != 0; }

int kiln_fuzz_run(int *argc, char ***argv, kiln_fuzz_callback callback) {
    return LLVMFuzzerRunDriver(argc, argv, callback);
}
