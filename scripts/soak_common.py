"""What the soaks (scripts/soak_train.py, scripts/soak_eval.py) share: watching an output folder with inotify,
running a program once and interrupting it at a planned moment, telling the temporary files a killed process
left, and the seed, timing and PASS/FAIL line of a soak. Linux (inotify) and Python 3 alone."""
import ctypes
import datetime
import os
import platform
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

IN_MODIFY = 0x2
IN_MOVED_FROM = 0x40
IN_CREATE = 0x100
IN_DELETE = 0x200


class Watch:
    """inotify on one folder: creations, writes, renames-away and removals of its entries."""

    def __init__(self, folder):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = IN_CREATE | IN_MODIFY | IN_MOVED_FROM | IN_DELETE
        if self.libc.inotify_add_watch(self.fd, os.fsencode(folder), mask) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")

    def events(self, timeout):
        """(mask, name) of the events that arrive within `timeout` seconds."""
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        if not ready:
            return []
        try:
            buf = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        out, at = [], 0
        while at + 16 <= len(buf):
            _, mask, _, length = struct.unpack_from("iIII", buf, at)
            name = buf[at + 16:at + 16 + length].rstrip(b"\0").decode()
            out.append((mask, name))
            at += 16 + length
        return out

    def close(self):
        os.close(self.fd)


def spin(seconds):
    """Waits `seconds` (sub-millisecond): a busy loop, time.sleep is too coarse."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


class Run:
    """What run_once saw: rc (negative: the signal that ended the process), signalled (whether the planned
    signal was sent), sent_at (seconds after the start), seconds (the process's run time), events [(seconds
    after the start, mask, name)] of the watched folder until the process ended (the times are when they were
    read: a little after they happened)."""

    def __init__(self, rc, signalled, sent_at, seconds, events):
        self.rc, self.signalled, self.sent_at, self.seconds, self.events = rc, signalled, sent_at, seconds, events

    def times(self, name, mask):
        """The seconds after the start of the events on `name` with `mask`."""
        return [t for t, m, n in self.events if n == name and m & mask]


def run_once(cmd, folder, log_path, sig=signal.SIGKILL, delay=None, hit=None, spin_s=0.0, from_first_event=False):
    """Runs cmd once with its output in log_path, watching `folder`. Sends `sig` `delay` seconds after the
    start (from_first_event: after the folder's first event), or when hit(mask, name) first returns True for an
    event of the folder (after spinning `spin_s` seconds more); with neither, lets it run to its end. Returns a
    Run."""
    watch = Watch(folder)
    events = []
    with open(log_path, "w") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        signalled, sent_at = False, None
        deadline = t0 + delay if delay is not None and not from_first_event else None

        def send():
            nonlocal signalled, sent_at
            proc.send_signal(sig)
            signalled, sent_at = True, time.monotonic() - t0

        while proc.poll() is None:
            now = time.monotonic()
            if not signalled and deadline is not None and now >= deadline:
                send()
            timeout = 0.05 if signalled or deadline is None else min(0.05, deadline - now)
            for mask, name in watch.events(timeout):
                events.append((time.monotonic() - t0, mask, name))
                if from_first_event and delay is not None and deadline is None:
                    deadline = time.monotonic() + delay
                if not signalled and hit is not None and hit(mask, name):
                    if spin_s > 0:
                        spin(spin_s)
                    send()
            if signalled and sig == signal.SIGKILL:
                break
        rc = proc.wait()
        seconds = time.monotonic() - t0
        # What the folder saw until the process ended (a SIGINT'ed process goes on writing).
        for mask, name in watch.events(0):
            events.append((time.monotonic() - t0, mask, name))
    watch.close()
    return Run(rc, signalled, sent_at, seconds, events)


def leftovers(folder, probes=()):
    """Temporary files in `folder` (NAME.tmp, NAME.tmp<anything>, names starting with one of `probes`), with
    their inode and change time, so that a file the killed process wrote is told from one an earlier kill
    left."""
    out = {}
    for n in os.listdir(folder):
        if ".tmp" in n or n.startswith(tuple(probes)):
            st = os.stat(os.path.join(folder, n))
            out[n] = (st.st_ino, st.st_ctime_ns)
    return out


def written_by_last(before, after):
    """(left, stale): the temporary files of `after` (leftovers) that the process between the two listings
    created, truncated or wrote to, and those an earlier process left as they were."""
    left = sorted(f for f, st in after.items() if before.get(f) != st)
    stale = sorted(f for f, st in after.items() if before.get(f) == st)
    return left, stale


def tail(path, n=30):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-n:])


def files_equal(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


class Soak:
    """A soak's seed (printed, to replay it), working folder, clock and final line."""

    def __init__(self, name, seed, work, keep):
        self.name = name
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 31)
        self.rng = random.Random(self.seed)
        self.given_work = work is not None
        self.keep = keep
        self.work = work or tempfile.mkdtemp(prefix=f"iat_{name}.")
        os.makedirs(self.work, exist_ok=True)
        self.started = time.monotonic()

    def say(self, text):
        print(f"{self.name}: {text}", flush=True)

    def fresh(self, *names):
        """Empty sub-folders of the working folder."""
        paths = [os.path.join(self.work, d) for d in names]
        for d in paths:
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        return paths

    def machine(self):
        return f"{platform.node()}, {os.cpu_count()} CPUs, {datetime.date.today()}"

    def finish(self, code):
        total = time.monotonic() - self.started
        self.say(f"{'PASS' if code == 0 else 'FAIL'} in {total:.0f} s (seed {self.seed})")
        if code == 0 and not self.keep and not self.given_work:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            self.say(f"working folder kept: {self.work}")
        sys.exit(code)
