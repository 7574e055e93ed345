#define _GNU_SOURCE
#include "CKilnSystem.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <sys/fsuid.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/audit.h>
#include <signal.h>
#include <spawn.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

struct kiln_open_how { uint64_t flags; uint64_t mode; uint64_t resolve; };
#define KILN_RESOLVE_NO_XDEV 0x01
#define KILN_RESOLVE_NO_MAGICLINKS 0x02
#define KILN_RESOLVE_NO_SYMLINKS 0x04
#define KILN_RESOLVE_BENEATH 0x08

int kiln_openat2_beneath(int dirfd, const char *path, int flags, int mode, int no_xdev) {
    struct kiln_open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(unsigned)flags;
    how.mode = (flags & O_CREAT) ? (uint64_t)mode : 0;
    how.resolve = KILN_RESOLVE_BENEATH | KILN_RESOLVE_NO_SYMLINKS | KILN_RESOLVE_NO_MAGICLINKS;
    if (no_xdev) how.resolve |= KILN_RESOLVE_NO_XDEV;
    long r = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    return (int)r;
}

int kiln_setfsuid(uid_t uid) { return setfsuid(uid); }
int kiln_setfsgid(gid_t gid) { return setfsgid(gid); }

/* System calls a build never needs and that widen the kernel's attack surface or reach outside the
   sandbox: new namespaces and mounts, kernel keyrings, eBPF, tracing other processes, io_uring
   (which bypasses seccomp for the operations it performs), module loading, perf, userfaultfd. */
static const int denied_eperm[] = {
#ifdef __NR_mount
    __NR_mount,
#endif
    __NR_umount2, __NR_pivot_root, __NR_unshare, __NR_setns,
    __NR_keyctl, __NR_add_key, __NR_request_key,
    __NR_bpf, __NR_ptrace, __NR_process_vm_readv, __NR_process_vm_writev,
    __NR_perf_event_open, __NR_userfaultfd, __NR_kexec_load,
#ifdef __NR_kexec_file_load
    __NR_kexec_file_load,
#endif
    __NR_init_module, __NR_finit_module, __NR_delete_module,
    __NR_open_by_handle_at, __NR_name_to_handle_at,
    __NR_swapon, __NR_swapoff, __NR_reboot, __NR_acct, __NR_quotactl,
#ifdef __NR_fsopen
    __NR_fsopen, __NR_fsconfig, __NR_fsmount, __NR_fspick, __NR_move_mount, __NR_open_tree,
#endif
#ifdef __NR_mount_setattr
    __NR_mount_setattr,
#endif
};
static const int denied_enosys[] = {
#ifdef __NR_io_uring_setup
    __NR_io_uring_setup, __NR_io_uring_enter, __NR_io_uring_register,
#endif
};

#if defined(__x86_64__)
#define KILN_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define KILN_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

long kiln_build_seccomp_filter(unsigned char *buffer, size_t capacity) {
#ifndef KILN_AUDIT_ARCH
    (void)buffer; (void)capacity; errno = ENOSYS; return -1;
#else
    struct sock_filter prog[128];
    size_t n = 0;
    const size_t ne = sizeof denied_eperm / sizeof denied_eperm[0];
    const size_t nn = sizeof denied_enosys / sizeof denied_enosys[0];
    /* Load arch; anything but the native arch is killed (no x32 / i386 entry points either). */
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, KILN_AUDIT_ARCH, 1, 0);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#if defined(__x86_64__)
    /* x32 system calls (bit 30 set) are refused. */
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
#endif
    /* Each denied call: if nr == X, jump to the matching return at the end. */
    size_t first_check = n;
    size_t total_checks = ne + nn;
    for (size_t i = 0; i < ne + nn; i++) {
        int nr = i < ne ? denied_eperm[i] : denied_enosys[i - ne];
        /* After all checks come: ALLOW, ERRNO(EPERM), ERRNO(ENOSYS). */
        size_t here = first_check + i;
        size_t allow_at = first_check + total_checks;
        size_t target = i < ne ? allow_at + 1 : allow_at + 2;
        prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, (unsigned char)(target - here - 1), 0);
    }
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS);
    size_t bytes = n * sizeof(struct sock_filter);
    if (bytes > capacity) { errno = ENOSPC; return -1; }
    memcpy(buffer, prog, bytes);
    return (long)bytes;
#endif
}

int kiln_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[], const char *cwd,
               int stdin_fd, int stdout_fd, int stderr_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return rc;
    rc = posix_spawnattr_init(&attributes);
    if (rc != 0) { posix_spawn_file_actions_destroy(&actions); return rc; }
    int fds[3] = { stdin_fd, stdout_fd, stderr_fd };
    for (int target = 0; target < 3 && rc == 0; target++) {
        if (fds[target] < 0) {
            rc = posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0);
        } else {
            rc = posix_spawn_file_actions_adddup2(&actions, fds[target], target);
        }
    }
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    if (rc == 0 && cwd != NULL) rc = posix_spawn_file_actions_addchdir_np(&actions, cwd);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attributes, &none);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attributes, &all);
    if (rc == 0) rc = posix_spawnattr_setpgroup(&attributes, 0);
    if (rc == 0) rc = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (rc == 0) rc = posix_spawn(pid, path, &actions, &attributes, argv, envp);
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}

int kiln_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
