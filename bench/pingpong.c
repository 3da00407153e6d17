// pingpong: the floor of any out-of-process round trip, a pipe ping-pong between two
// processes, in C (bench/roundtrip.py compiles and drives it; nothing else uses it).
//
//   pingpong [PARENT_CPU CHILD_CPU]
//
// Forks a child that echoes one byte through a second pipe. For each line "N" read from
// stdin, the parent does N round trips (write one byte to the child, read its echo) and
// prints the N round-trip times in nanoseconds (CLOCK_MONOTONIC) on one line. With two CPU
// numbers the parent and the child are pinned to them (the same number twice: both on one
// CPU); without, the scheduler places them, as it places a backend and its worker. EOF on
// stdin ends both processes.
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    perror("pingpong: sched_setaffinity");
    exit(2);
  }
}

int main(int argc, char** argv) {
  if (argc != 1 && argc != 3) {
    fprintf(stderr, "usage: pingpong [PARENT_CPU CHILD_CPU]\n");
    return 2;
  }
  int request[2], reply[2];
  if (pipe(request) != 0 || pipe(reply) != 0) {
    perror("pingpong: pipe");
    return 2;
  }
  const pid_t pid = fork();
  if (pid < 0) {
    perror("pingpong: fork");
    return 2;
  }
  if (pid == 0) {  // the echo: until the parent closes its end
    close(request[1]);
    close(reply[0]);
    if (argc == 3) pin(atoi(argv[2]));
    char byte;
    while (read(request[0], &byte, 1) == 1) {
      if (write(reply[1], &byte, 1) != 1) break;
    }
    _exit(0);
  }
  close(request[0]);
  close(reply[1]);
  if (argc == 3) pin(atoi(argv[1]));
  long n;
  while (scanf("%ld", &n) == 1 && n > 0) {
    long long* samples = malloc((size_t)n * sizeof *samples);
    if (samples == NULL) {
      perror("pingpong: malloc");
      return 2;
    }
    for (long i = 0; i < n; ++i) {  // nothing but the round trip between the two clock reads
      char byte = 'x';
      const long long t0 = now_ns();
      if (write(request[1], &byte, 1) != 1 || read(reply[0], &byte, 1) != 1 || byte != 'x') {
        fprintf(stderr, "pingpong: the echo failed\n");
        return 1;
      }
      samples[i] = now_ns() - t0;
    }
    for (long i = 0; i < n; ++i) printf(i ? " %lld" : "%lld", samples[i]);
    printf("\n");
    fflush(stdout);
    free(samples);
  }
  close(request[1]);
  waitpid(pid, NULL, 0);
  return 0;
}
