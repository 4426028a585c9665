#!/usr/bin/env python3
"""Runs the Kubernetes example of docs/staging.md as a kubelet would run its containers' commands.

There is no cluster here: the Pod's YAML is read from the document, the init container's command
runs with its env (Kubernetes' $(VAR) expansion, the downward-API POD_UID given a test value) and
its mount paths mapped to directories of the test, against the real daemon behind --socket; then
the training container's command runs the same way, with a stand-in train.py in its working
directory that checks the dataset it is given. Exit 0 when both succeed.
"""
import argparse
import os
import re
import subprocess
import sys

import yaml


def pod_yaml(doc):
    with open(doc) as f:
        text = f.read()
    section = text.split("\n## Kubernetes\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    if len(blocks) != 1:
        sys.exit(f"{doc}: expected one yaml block in '## Kubernetes', found {len(blocks)}")
    return yaml.safe_load(blocks[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("doc")
    ap.add_argument("--socket", required=True, help="the node daemon's API socket")
    ap.add_argument("--cli", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--map", action="append", default=[], help="NAME=ENDPOINT: the example's endpoint names")
    ap.add_argument("--pod-uid", default="0b7c2a4e-test")
    args = ap.parse_args()
    names = dict(m.split("=", 1) for m in args.map)
    pod = pod_yaml(args.doc)
    spec = pod["spec"]

    # Volumes: the daemon's socket directory (a directory holding a link to the real socket under
    # the name the example uses), emptyDirs as fresh directories; hostPaths of data stay as they
    # are (the daemon prints real paths).
    mounts = {}
    for v in spec["volumes"]:
        d = os.path.join(args.work, "vol-" + v["name"])
        os.makedirs(d, exist_ok=True)
        mounts[v["name"]] = d

    def mapping(container):
        m = {}
        for vm in container.get("volumeMounts", []):
            if vm["name"] == "staging":
                continue  # read in place: the daemon hands out the cache's real paths
            m[vm["mountPath"]] = mounts[vm["name"]]
        return m

    def local(value, m):
        for mp, d in sorted(m.items(), key=lambda kv: -len(kv[0])):
            value = value.replace(mp, d)
        for name, ep in names.items():
            value = value.replace(name + ":", ep + ":")
        return value

    def env_of(container, m):
        env = {"PATH": os.environ["PATH"]}
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = local(e["value"], m)
            elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.uid":
                env[e["name"]] = args.pod_uid
            else:
                sys.exit(f"unsupported env entry {e}")
        return env

    def expand(arg, env):  # Kubernetes expands $(VAR) in command and args
        return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda mo: env.get(mo.group(1), mo.group(0)), arg)

    def run(container, cwd):
        m = mapping(container)
        env = env_of(container, m)
        cmd = [local(expand(a, env), m) for a in container["command"] + container.get("args", [])]
        if cmd[0] == "pororoca":
            cmd[0] = args.cli
        print("$ " + " ".join(cmd), flush=True)
        r = subprocess.run(cmd, env=env, cwd=cwd, timeout=600)
        if r.returncode != 0:
            sys.exit(f"container {container['name']}: exit {r.returncode}")

    # The socket the init container names, linked to the test daemon's.
    sock_mount = [vm for vm in spec["initContainers"][0]["volumeMounts"] if vm["name"] == "pororoca-socket"][0]
    init_env = env_of(spec["initContainers"][0], mapping(spec["initContainers"][0]))
    link = init_env["PORO_SOCKET"]
    if not link.startswith(mounts["pororoca-socket"]):
        sys.exit(f"PORO_SOCKET {link} is not under the socket volume's mount {sock_mount['mountPath']}")
    os.symlink(args.socket, link)

    for c in spec["initContainers"]:
        run(c, args.work)
    train_dir = os.path.join(args.work, "train")
    os.makedirs(train_dir, exist_ok=True)
    with open(os.path.join(train_dir, "train.py"), "w") as f:
        f.write(
            "import os, sys\n"
            "data = sys.argv[sys.argv.index('--data') + 1]\n"
            "n = sum(len(fs) for _, _, fs in os.walk(data))\n"
            "print(f'train.py: {n} files under {data}')\n"
            "sys.exit(0 if n > 0 else 1)\n")
    for c in spec["containers"]:
        run(c, train_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
