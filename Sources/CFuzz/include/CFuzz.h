// libFuzzer's driver entry; only linked when built with -sanitize=fuzzer (see scripts/fuzz.sh).
#ifndef PLAYGROUND_CFUZZ_H
#define PLAYGROUND_CFUZZ_H
#include <stddef.h>
#include <stdint.h>
typedef int (*playground_fuzz_callback)(const uint8_t *data, size_t size);
int LLVMFuzzerRunDriver(int *argc, char ***argv, playground_fuzz_callback callback);
#endif
