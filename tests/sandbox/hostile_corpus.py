"""Hostile snippets the sandbox must contain: (name, code, statuses accepted, needs) with ``needs`` the isolation
features a case relies on beyond rlimits + process-tree kill ("net", "mount", "pid").

``{port}``, ``{secret_name}``/``{secret_value}`` and ``{secret_files}`` (secret files the test creates under the host's
HOME, the repository and the host's /tmp) are filled in by the tests. The "read_*" / "list_*" cases need "mount": the
rlimits-only mode has no filesystem isolation (snippets read what uid 0 without capabilities can).
"""

from __future__ import annotations

CASES: list[tuple[str, str, set[str], set[str]]] = [
    ("infinite_loop", "while True:\n    pass\n", {"timeout"}, set()),
    ("sleep_past_timeout", "import time\ntime.sleep(60)\n", {"timeout"}, set()),
    (
        "fork_bomb",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        {"timeout", "exec_error", "memory_error"},
        set(),
    ),
    ("memory_bomb", "x = []\nwhile True:\n    x.append(bytearray(10 << 20))\n", {"memory_error"}, set()),
    (
        "ignores_sigterm",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('armored', flush=True)\n"
        "while True:\n    time.sleep(0.01)\n",
        {"timeout"},
        set(),
    ),
    (
        "detached_grandchild_setsid",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    signal = __import__('signal')\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    time.sleep(120)\n    os._exit(0)\nprint('left it')\n",
        {"ok"},
        set(),
    ),
    (
        "double_fork_daemon",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(120)\n"
        "    os._exit(0)\nos.wait()\nprint('daemonized')\n",
        {"ok"},
        set(),
    ),
    ("huge_output", "import sys\nwhile True:\n    sys.stdout.write('A' * 65536)\n", {"output_limit"}, set()),
    (
        "binary_output",
        "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 4)\nsys.stdout.flush()\n",
        {"ok"},
        set(),
    ),
    ("recursion_overflow", "def f(n):\n    return f(n + 1)\nf(0)\n", {"exec_error"}, set()),
    (
        "deep_c_recursion",
        "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)\n",
        {"exec_error", "memory_error", "timeout"},  # 3.11 frames live on the heap: may just run out of time
        set(),
    ),
    ("segfault_ctypes", "import ctypes\nctypes.string_at(0)\n", {"exec_error"}, set()),
    (
        "kill_parent",
        "import os, signal\nfor pid in {os.getppid(), 1}:\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError as e:\n        print('denied', pid, e.errno)\nprint('still here')\n",
        {"ok"},
        {"pid"},
    ),
    # print() only buffers; the failed flush at exit is ignored like CPython's own shutdown does (ok), or raises
    ("close_stdout_early", "import os\nos.close(1)\nprint('lost')\n", {"ok", "exec_error"}, set()),
    (
        "write_home_and_root",
        "import os\nfor p in [os.path.expanduser('~/grporoc_pwned'), '/root/grporoc_pwned', '/tmp/grporoc_pwned',\n"
        "          '/work/grporoc_pwned']:\n    try:\n        open(p, 'w').write('x')\n        print('wrote', p)\n"
        "    except OSError as e:\n        print('blocked', p, e.errno)\n",
        {"ok"},
        {"mount"},
    ),
    (
        "read_host_environment",
        "import os, glob\nfound = [k for k in os.environ if k == '{secret_name}']\n"
        "for p in glob.glob('/proc/*/environ'):\n"
        "    try:\n        if b'{secret_value}' in open(p, 'rb').read():\n            found.append(p)\n"
        "    except OSError:\n        pass\nprint('FOUND' if found else 'clean', found)\n",
        {"ok"},
        {"pid"},
    ),
    (
        "network_connect",
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('CONNECTED')\n",
        {"exec_error"},
        {"net"},
    ),
    (
        "read_host_secret_files",
        "for p in {secret_files}:\n    try:\n        print('READ', p, open(p).read())\n    except OSError as e:\n"
        "        print('blocked', p, type(e).__name__)\n",
        {"ok"},
        {"mount"},
    ),
    ("read_root_bashrc", "open('/root/.bashrc').read()", {"exec_error"}, {"mount"}),
    ("read_etc_shadow", "open('/etc/shadow').read()", {"exec_error"}, {"mount"}),
    ("read_repo_secret", "open({repo_secret!r}).read()", {"exec_error"}, {"mount"}),
    (
        "list_root_and_home",
        "import os\nprint(sorted(os.listdir('/')))\n"
        "print(sorted(os.listdir('/root')) if os.path.isdir('/root') else [])\n"
        "print([os.path.exists(p) for p in ('/home', '/opt', '/run', '/var/lib', '/sys', '/mnt', '/srv')])\n",
        {"ok"},
        {"mount"},
    ),
    (
        "host_pid1_environ",
        "import os\nprint(open('/proc/1/cmdline', 'rb').read())\n"
        "print(sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
        "try:\n    print('ENV', open('/proc/1/environ', 'rb').read())\n"
        "except OSError as e:\n    print('blocked', type(e).__name__)\n",
        {"ok"},
        {"pid", "mount"},
    ),
]
