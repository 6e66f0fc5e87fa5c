"""How `make bench` starts a server: in the client's session, so the kernel does not schedule
it as a group apart from the client (autogroup), and in a process group of its own, so
stopping it stops its children too."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest

from benchmarks.serving import free_port, process

# A server that answers GET / and starts a child of its own, which only stopping the group ends.
SERVER = """
import http.server, subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def test_a_server_shares_the_clients_session_and_stops_with_its_children(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-c", SERVER, str(port)]
    with process(command, f"http://127.0.0.1:{port}/", tmp_path / "server.log") as server:
        children = server.children(recursive=True)
        assert children, "the server's child did not start"
        assert os.getsid(server.pid) == os.getsid(0), "the server left the client's session"
        assert os.getpgid(server.pid) == server.pid != os.getpgid(0)
    for proc in [server, *children]:
        with pytest.raises(psutil.NoSuchProcess):
            proc.wait(timeout=30)  # gone, or a zombie reaped by now
            proc.status()
