"""scripts/fleet.sh: a fleet on one machine behind haproxy — up, used by real clients, a gateway
killed under it, status, down leaving nothing behind."""
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import time
import uuid

import openai
import websockets

from conftest import ROOT, make_key


def free_base():
    """A port with the gateway and worker ports above it free too."""
    for _ in range(50):
        base = random.randrange(21000, 29000, 10)
        ports = [base, base + 1, base + 2, base + 101, base + 102]
        ok = True
        for p in ports:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return base
    raise RuntimeError("no free ports")


def fleet_sh(*args, timeout=180):
    return subprocess.run(["scripts/fleet.sh", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_fleet_script_up_use_kill_status_down(tmp_path):
    base = free_base()
    d = str(tmp_path / "fleet")
    name = "s" + uuid.uuid4().hex[:10]
    up = fleet_sh("up", "--dir", d, "--port", str(base), "--fleet", name, "--", "--model-ttft-ms", "5", "--model-token-ms", "5")
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        url = up.stdout.strip()
        assert url == f"http://127.0.0.1:{base}"
        key = make_key("fleet-script-" + uuid.uuid4().hex[:6])
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        # Prompts and seeds whose answers are long (152 and 69 tokens): max_tokens is what ends them.
        for _ in range(4):
            r = client.completions.create(model="builtin", prompt="The sea", max_tokens=5, seed=5)
            assert r.usage.completion_tokens == 5
        chunks = list(client.chat.completions.create(model="builtin", max_tokens=5, stream=True, seed=5,
                                                      messages=[{"role": "user", "content": "The sea was calm in the morning, and"}]))
        assert chunks[-1].choices[0].finish_reason == "length"

        async def ws_once():
            async with websockets.connect(f"ws://127.0.0.1:{base}/v1/ws",
                                          additional_headers={"Authorization": f"Bearer {key}"}) as ws:
                await ws.send(json.dumps({"id": 1, "method": "POST", "path": "/v1/completions",
                                          "body": {"prompt": "The sea", "max_tokens": 4, "seed": 5}}))
                kinds = []
                while not kinds or kinds[-1] not in ("done", "error"):
                    kinds.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["type"])
                return kinds
        kinds = asyncio.run(ws_once())
        assert kinds[0] == "accepted" and kinds[-1] == "done" and kinds.count("delta") == 4, kinds

        status = fleet_sh("status", "--dir", d)
        assert status.returncode == 0 and status.stdout.count("running") == 5, status.stdout
        # One gateway dies: haproxy sends everything to the other (its health check, and a retry
        # for a request caught in between).
        pid = int(open(os.path.join(d, "pids", "gateway-1.pid")).read())
        os.kill(pid, signal.SIGKILL)
        for _ in range(20):
            assert client.completions.create(model="builtin", prompt="The sea", max_tokens=2, seed=5).usage.completion_tokens == 2
        status = fleet_sh("status", "--dir", d)
        assert status.returncode == 1 and "gateway-1" in status.stdout and "dead" in status.stdout, status.stdout
    finally:
        pids = []
        pid_dir = os.path.join(d, "pids")
        if os.path.isdir(pid_dir):
            pids = [int(open(os.path.join(pid_dir, f)).read()) for f in os.listdir(pid_dir)]
        down = fleet_sh("down", "--dir", d)
    assert down.returncode == 0, down.stderr
    time.sleep(0.2)
    alive = []
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                if f.read().split()[2] != "Z":  # a zombie is not running (init may not reap here)
                    alive.append(p)
        except FileNotFoundError:
            pass
    assert not alive, f"left running: {alive}"
    assert fleet_sh("status", "--dir", d).returncode == 1
    assert fleet_sh("up", "--bogus").returncode == 2
