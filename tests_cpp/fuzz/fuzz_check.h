// What every fuzz target in tests_cpp/fuzz/ uses to state an invariant: FUZZ_CHECK(cond, what)
// prints the broken invariant and aborts, which libFuzzer reports as a crash and saves the
// input (crash-<sha1>). Not assert(): the targets are built with NDEBUG (RelWithDebInfo).
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond, what)                                                                            \
  do {                                                                                                    \
    if (!(cond)) {                                                                                        \
      std::fprintf(stderr, "fuzz invariant broken at %s:%d: %s (%s)\n", __FILE__, __LINE__, what, #cond); \
      std::abort();                                                                                       \
    }                                                                                                     \
  } while (0)
