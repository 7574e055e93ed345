#ifndef CKILNSYSTEM_H
#define CKILNSYSTEM_H
#include <sys/types.h>
#include <stddef.h>

/// openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
/// (no_xdev only when `no_xdev` is non-zero). Returns the descriptor, or -1 with errno set (ENOSYS
/// where the kernel has no openat2: the caller falls back to a per-component O_NOFOLLOW walk).
int kiln_openat2_beneath(int dirfd, const char *path, int flags, int mode, int no_xdev);

/// setfsuid(2)/setfsgid(2): per-thread file-system credentials. Returns the previous value.
int kiln_setfsuid(uid_t uid);
int kiln_setfsgid(gid_t gid);

/// Writes a classic-BPF seccomp program (struct sock_filter[]) for x86_64/aarch64 into `buffer`
/// (capacity `capacity` bytes) that makes the listed system calls fail with EPERM (ENOSYS for
/// io_uring) and kills any other architecture. Returns the program's size in bytes, or -1.
long kiln_build_seccomp_filter(unsigned char *buffer, size_t capacity);

/// posix_spawn(3) of `path` (absolute) with `stdin_fd`/`stdout_fd`/`stderr_fd` as 0/1/2 (-1: /dev/null)
/// and every other descriptor closed in the child (closefrom 3), whatever another thread opened a
/// moment ago; its own process group, an empty signal mask and default dispositions; `cwd` if not
/// NULL. Returns 0 and sets `pid`, or an errno value.
int kiln_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[], const char *cwd,
               int stdin_fd, int stdout_fd, int stderr_fd);

/// pipe2(2) with O_CLOEXEC on both ends (glibc declares pipe2 only under _GNU_SOURCE).
int kiln_pipe_cloexec(int fds[2]);

#endif
