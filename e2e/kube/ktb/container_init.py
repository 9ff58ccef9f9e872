#!/usr/bin/env python3
"""container_init.py - started by process-kubelet.py for each container process; not for humans.

Reads its plan (JSON) from $KTB_CONTAINER_PLAN, then, in this process:
  1. asks for SIGKILL when the kubelet dies (PR_SET_PDEATHSIG), so no container outlives it;
  2. enters a private mount namespace (unshare(CLONE_NEWNS) + MS_PRIVATE on /), the stand-in
     for the pod's mount namespace of `unshare --mount --propagation private`, and a UTS
     namespace whose hostname is the pod's name, as a kubelet sets it;
  3. bind-mounts each volume onto its mountPath, creating the mount point on the host when it is
     missing (an empty directory, or an empty file for a file subPath), read-only where asked.
     Every source is opened before the first mount, so a mount over /tmp cannot hide a source
     that lives under /tmp; a non-empty directory is never mounted over;
  4. execs the container's argv with its env in its working directory.
Before the exec succeeds, any error is written to the status pipe (fd in the plan) and the
process exits 128; the pipe is close-on-exec, so the kubelet reads EOF once the exec worked.
"""
import ctypes
import json
import os
import signal
import stat
import sys

CLONE_NEWNS, CLONE_NEWUTS = 0x00020000, 0x04000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1

libc = ctypes.CDLL(None, use_errno=True)


def check(rc, what):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def mount(source, target, flags):
    check(libc.mount(source and source.encode(), target.encode(), None, flags, None), "mount %s" % target)


def make_mount_point(target, is_dir):
    if os.path.lexists(target):
        if is_dir and os.path.isdir(target) and os.listdir(target):
            raise OSError("refusing to mount over the non-empty directory %s" % target)
        return
    if is_dir:
        os.makedirs(target, 0o755)
    else:
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        open(target, "a").close()


def enter_namespaces(hostname):
    check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare(CLONE_NEWNS|CLONE_NEWUTS)")
    mount(None, "/", MS_REC | MS_PRIVATE)
    name = hostname.encode()
    check(libc.sethostname(name, len(name)), "sethostname")


def setup_mounts(mounts, log):
    fds = []
    for m in mounts:
        fds.append(None if m["skip"] else os.open(m["source"], os.O_PATH))
    for m, fd in zip(mounts, fds):
        if fd is None:
            log("kube-testbed: %s\n" % m["skip"])
            continue
        make_mount_point(m["target"], stat.S_ISDIR(os.fstat(fd).st_mode))
        mount("/proc/self/fd/%d" % fd, m["target"], MS_BIND | MS_REC)
        if m["readOnly"]:
            mount(None, m["target"], MS_BIND | MS_REMOUNT | MS_RDONLY)
        os.close(fd)


def main():
    plan = json.loads(os.environ.pop("KTB_CONTAINER_PLAN"))
    status_fd = plan["status_fd"]
    os.set_inheritable(status_fd, False)
    try:
        check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != plan["kubelet_pid"]:
            return 1  # the kubelet is already gone
        enter_namespaces(plan["hostname"])
        setup_mounts(plan["mounts"], sys.stderr.write)
        sys.stderr.flush()
        os.chdir(plan.get("workingDir") or "/")
        os.execvpe(plan["argv"][0], plan["argv"], plan["env"])
    except OSError as e:
        os.write(status_fd, str(e).encode() or b"start failed")
    return 128


if __name__ == "__main__":
    sys.exit(main())
