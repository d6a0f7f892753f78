"""The chaos campaign's host watch on real processes: a tagged run is seen from start to end, and a
process re-parented to the campaign is reported as an orphan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run in a process of its own: becoming a child subreaper is for the whole process, and the
# test runner must not start collecting other tests' orphans.
_SCRIPT = r"""
import json, os, signal, subprocess, sys, time
from chaos.hostwatch import HostWatch, become_subreaper

assert become_subreaper()
known = set()
watch = HostWatch("cxtst", lambda: set(known), interval=0.05)
watch.start()
run = subprocess.Popen([sys.executable, "-c",
    "open('/proc/self/comm', 'w').write('cxtst00001'); import time; time.sleep(0.6)"])
known.add(run.pid)
# sh starts sleep in the background and exits at once: sleep loses its parent.
shell = subprocess.Popen(
    ["sh", "-c", "sleep 30 >/dev/null & echo $!"], stdout=subprocess.PIPE, text=True)
known.add(shell.pid)
orphan = int(shell.communicate()[0])
run.wait()
time.sleep(2.6)
watch.stop()
os.kill(orphan, signal.SIGKILL)
os.waitpid(orphan, 0)
runs = [vars(r) for r in watch.sightings()]
print(json.dumps({"run": run.pid, "orphan": orphan, "runs": runs, "orphans": watch.orphans}))
"""


def test_the_host_watch_sees_a_tagged_run_and_an_orphan_re_parented_to_the_campaign() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(done.stdout)
    [run] = seen["runs"]
    assert (run["tag"], run["pid"]) == ("cxtst00001", seen["run"])
    assert run["gone_at"] is not None
    assert 0.3 < run["last_seen"] - run["first_seen"] < 2.0
    assert list(seen["orphans"]) == [str(seen["orphan"])]
    assert "sleep" in seen["orphans"][str(seen["orphan"])]
