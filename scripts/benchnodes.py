"""Node processes for the Python benchmarks: started on port 0 with Redis, their port read from
the "listening on" line, and stopped (SIGTERM, then SIGKILL) however the script ends; each dies
with the script too (PLAYGROUND_DIE_WITH_PARENT)."""
import os
import re
import signal
import subprocess
import tempfile
import threading
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BenchError(Exception):
    pass


def add_node_args(ap):
    """--bin and --redis-url, shared by every script that starts nodes."""
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build", "release", "playground"),
                    help="the playground binary (default: .build/release/playground)")
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="Redis (default: $REDIS_URL)")


def parse_node_args(ap):
    """Parses, checks --redis-url and --bin (exit 2 naming them), and makes SIGTERM end the script
    through its finally blocks; returns (args, absolute binary path)."""
    args = ap.parse_args()
    if not args.redis_url:
        ap.error("set REDIS_URL or pass --redis-url")
    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        ap.error(f"--bin {binary}: not an executable")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return args, binary


class Nodes:
    """Child processes, stopped (SIGTERM, then SIGKILL) however the script ends."""

    def __init__(self, binary, redis_url, *flags, logprefix="bench-"):
        self.binary, self.redis_url, self.flags, self.procs = binary, redis_url, list(flags), []
        self.logdir = tempfile.mkdtemp(prefix=logprefix)

    def start(self, role, *flags):
        """Starts `playground ROLE` and returns (process, port)."""
        env = dict(os.environ, REDIS_URL=self.redis_url, PLAYGROUND_DIE_WITH_PARENT=str(os.getpid()))
        env.pop("DATABASE_URL", None)
        log = open(os.path.join(self.logdir, f"{role}-{len(self.procs)}.log"), "w")
        p = subprocess.Popen([self.binary, role, "--host", "127.0.0.1", "--port", "0", "--log-level", "error",
                              "--redis-url", self.redis_url, *self.flags, *flags],
                             stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, env=env)
        self.procs.append(p)
        line = p.stdout.readline()
        m = re.match(r"listening on http://[\d.]+:(\d+)", line or "")
        if not m:
            raise BenchError(f"{role} did not start: {line!r} (log: {log.name})")
        threading.Thread(target=p.stdout.read, daemon=True).start()  # never let a full pipe block it
        return p, int(m.group(1))

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
