"""Sandbox side of the fork server (stdlib only).

These modules run in the fork server's own interpreter (``SandboxConfig.python``), started as a script
(``python -I _broker.py FD``) that may not be able to import ``grporoc_plugin``: they import each other as top-level
modules there, and as ``grporoc_plugin.sandbox.server.*`` when the host imports them (classifier, runner, tests).

Process tree (see docs/sandbox.md)::

    broker (talks to the host, holds requests and results; never forks a run)
      └─ template (forked before the first request: never holds any request's data)
           └─ one slot zygote per concurrent run (own cgroup; own user namespace where unprivileged)
                └─ the run: PID 1 of its own PID namespace, own mount/network/IPC/UTS namespaces and scratch tmpfs,
                   rlimits, no capabilities, seccomp filter; then the snippet itself
"""
