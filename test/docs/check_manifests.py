#!/usr/bin/env python3
"""The Kubernetes manifests of deploy/kubernetes are well-formed and consistent.

Usage: check_manifests.py KOS_BINARY MANIFEST_DIR README

Checks, for every document of every manifest file:
  - it parses, names its apiVersion, kind and name, and lives in kos-system (namespaced kinds);
  - the kustomization lists exactly the manifest files;
  - a workload's selector matches its pod template's labels; every volume a container
    mounts is declared; every named port a probe or Service uses is a container's port;
    every $(VAR) in args is in the container's env;
  - every Service (and NetworkPolicy) selects the pods of some workload, and a
    StatefulSet's serviceName is a headless Service;
  - every KOS container runs one image, and each of its flags (global ones before the
    subcommand, the subcommand's after) is one `kos [SUBCOMMAND] --help` lists; every file
    it names under /etc or /var is under one of its mounts;
  - etcd's flags are ones `etcd --help` lists (when etcd is installed), its initial cluster
    names every replica of the StatefulSet through its headless Service, and the API
    servers' --store names the same members on the client port;
  - a prometheus.io/port annotation is a container port of the pod;
  - the agent has the host's network and exactly CAP_NET_ADMIN, no privileged mode;
  - every Secret a pod mounts is named in the README's deployment section.
Prints one line per problem and exits 1 if there is any.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

import yaml

NAMESPACED = {"Service", "Deployment", "StatefulSet", "DaemonSet", "NetworkPolicy", "ConfigMap", "Secret"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
KOS_IMAGE = "registry.example.com/kos/kos"

problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def help_text(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    return r.stdout + r.stderr, None


def flags_of(text):
    return set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", text))


def main():
    kos, mdir, readme = sys.argv[1], sys.argv[2], sys.argv[3]
    files = sorted(f for f in glob.glob(os.path.join(mdir, "*.yaml")) if not f.endswith("kustomization.yaml"))
    docs = []  # (file, doc)
    for f in files:
        try:
            with open(f) as fh:
                for d in yaml.safe_load_all(fh):
                    if d is not None:
                        docs.append((os.path.basename(f), d))
        except yaml.YAMLError as e:
            problem(f, f"invalid YAML: {e}")
    with open(os.path.join(mdir, "kustomization.yaml")) as fh:
        kust = yaml.safe_load(fh)
    listed = set(kust.get("resources", []))
    present = {os.path.basename(f) for f in files}
    if listed != present:
        problem("kustomization.yaml", f"resources {sorted(listed)} but the files are {sorted(present)}")

    seen = set()
    by_kind = {}
    for f, d in docs:
        kind, name = d.get("kind"), (d.get("metadata") or {}).get("name")
        where = f"{f}: {kind}/{name}"
        if not d.get("apiVersion") or not kind or not name:
            problem(f, f"a document without apiVersion, kind or metadata.name: {str(d)[:80]}")
            continue
        if (kind, name) in seen:
            problem(where, "defined twice")
        seen.add((kind, name))
        if kind in NAMESPACED and d["metadata"].get("namespace") != "kos-system":
            problem(where, "not in namespace kos-system")
        by_kind.setdefault(kind, []).append((f, d))

    workloads = [(f, d) for k in WORKLOADS for f, d in by_kind.get(k, [])]
    services = {d["metadata"]["name"]: d for _, d in by_kind.get("Service", [])}

    def pod_labels(d):
        return d["spec"]["template"]["metadata"].get("labels", {})

    def selects(selector, labels):
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    def containers(d):
        spec = d["spec"]["template"]["spec"]
        return spec.get("initContainers", []) + spec.get("containers", [])

    kos_help, err = help_text([kos, "--help"])
    if kos_help is None:
        problem(kos, f"cannot run: {err}")
        kos_help = ""
    global_flags = flags_of(kos_help)
    sub_help = {}
    etcd = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
    etcd_flags = None
    if etcd:
        t, _ = help_text([etcd, "--help"])
        etcd_flags = flags_of(t or "")
    kos_images = set()
    etcd_members = None  # (hosts, client port) from the etcd StatefulSet

    for f, d in workloads:
        name = d["metadata"]["name"]
        where = f"{f}: {d['kind']}/{name}"
        spec = d["spec"]
        labels = pod_labels(d)
        if not selects(spec["selector"].get("matchLabels", {}), labels):
            problem(where, "its selector does not match its pod template's labels")
        pspec = spec["template"]["spec"]
        volumes = {v["name"] for v in pspec.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        ports = {}
        for c in containers(d):
            for p in c.get("ports", []):
                ports[p.get("name")] = p["containerPort"]
        for c in containers(d):
            cw = f"{where} container {c['name']}"
            mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    problem(cw, f"mounts volume {m['name']}, which the pod does not declare")
            env = {e["name"] for e in c.get("env", [])}
            args = [str(a) for a in c.get("args", [])]
            for a in args:
                for var in re.findall(r"\$\(([A-Z_][A-Z0-9_]*)\)", a):
                    if var not in env:
                        problem(cw, f"{a} uses $({var}), which is not in its env")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                pr = c.get(probe)
                if not pr:
                    continue
                port = (pr.get("httpGet") or pr.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    problem(cw, f"{probe} uses port {port}, which no container declares")
            image = c.get("image", "")
            if image.startswith(KOS_IMAGE + ":"):
                kos_images.add(image)
                if c.get("command"):
                    continue  # not kos itself (the CNI installer's shell)
                sub = next((a for a in args if not a.startswith("-")), None)
                if sub is None:
                    problem(cw, "no kos subcommand in args")
                    continue
                before = args[: args.index(sub)]
                after = args[args.index(sub) + 1 :]
                if sub not in sub_help:
                    t, err = help_text([kos, sub, "--help"])
                    sub_help[sub] = flags_of(t) if t and "Usage" in t else None
                if sub_help[sub] is None:
                    problem(cw, f"kos has no subcommand {sub}")
                    continue
                for a in before:
                    if a.startswith("--") and a.split("=")[0] not in global_flags:
                        problem(cw, f"kos has no global flag {a.split('=')[0]}")
                for a in after:
                    if a.startswith("--") and a.split("=")[0] not in sub_help[sub]:
                        problem(cw, f"kos {sub} has no flag {a.split('=')[0]}")
                    value = a.split("=", 1)[1] if "=" in a else ""
                    if re.match(r"^/(etc|var)/", value) and not any(
                        value == m or value.startswith(m.rstrip("/") + "/") for m in mounts
                    ):
                        problem(cw, f"{a} names a file outside its mounts {mounts}")
            elif "etcd" in image:
                if etcd_flags is not None:
                    for a in args:
                        if a.startswith("--") and a.split("=")[0] not in etcd_flags:
                            problem(cw, f"etcd has no flag {a.split('=')[0]}")
                svc = spec.get("serviceName")
                replicas = spec.get("replicas", 1)
                hosts = [f"{name}-{i}.{svc}.kos-system.svc" for i in range(replicas)]
                initial = next((a.split("=", 1)[1] for a in args if a.startswith("--initial-cluster=")), "")
                want = ",".join(f"{name}-{i}=http://{h}:{ports.get('peer')}" for i, h in enumerate(hosts))
                if initial != want:
                    problem(cw, f"--initial-cluster is {initial}, expected {want} (every replica)")
                etcd_members = (hosts, ports.get("client"))
        ann = spec["template"]["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") == "true":
            port = ann.get("prometheus.io/port")
            if not port or int(port) not in ports.values():
                problem(where, f"prometheus.io/port {port} is not a container port ({sorted(ports.values())})")
        if d["kind"] == "StatefulSet":
            svc = services.get(spec.get("serviceName"))
            if not svc or svc["spec"].get("clusterIP") != "None":
                problem(where, f"serviceName {spec.get('serviceName')} is not a headless Service of these manifests")

    if len(kos_images) > 1:
        problem("manifests", f"KOS containers run different images: {sorted(kos_images)}")

    # The API servers' store: the etcd members, on their client port.
    for f, d in workloads:
        for c in containers(d):
            for a in c.get("args", []):
                if str(a).startswith("--store=etcd:") and etcd_members:
                    urls = str(a)[len("--store=etcd:") :].split(",")
                    want = [f"http://{h}:{etcd_members[1]}" for h in etcd_members[0]]
                    if urls != want:
                        problem(f"{f}: {d['metadata']['name']}", f"--store names {urls}, expected {want}")

    for f, d in by_kind.get("Service", []):
        where = f"{f}: Service/{d['metadata']['name']}"
        sel = d["spec"].get("selector", {})
        targets = [(wf, w) for wf, w in workloads if selects(sel, pod_labels(w))]
        if not targets:
            problem(where, f"selector {sel} selects no workload")
            continue
        for p in d["spec"].get("ports", []):
            tp = p.get("targetPort", p["port"])
            for _, w in targets:
                named = {pp.get("name"): pp["containerPort"] for c in containers(w) for pp in c.get("ports", [])}
                if isinstance(tp, str) and tp not in named:
                    problem(where, f"targetPort {tp} is not a port of {w['metadata']['name']}")
                if isinstance(tp, int) and tp not in named.values():
                    problem(where, f"targetPort {tp} is not a port of {w['metadata']['name']}")

    for f, d in by_kind.get("NetworkPolicy", []):
        where = f"{f}: NetworkPolicy/{d['metadata']['name']}"
        sel = d["spec"]["podSelector"].get("matchLabels", {})
        if not any(selects(sel, pod_labels(w)) for _, w in workloads):
            problem(where, f"podSelector {sel} selects no workload")
        for rule in d["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                ps = (peer.get("podSelector") or {}).get("matchLabels")
                if ps is not None and not any(selects(ps, pod_labels(w)) for _, w in workloads):
                    problem(where, f"an ingress rule's podSelector {ps} selects no workload")

    # The agent: host network, CAP_NET_ADMIN and nothing more.
    for f, d in by_kind.get("DaemonSet", []):
        if d["metadata"]["name"] != "kos-agent":
            continue
        pspec = d["spec"]["template"]["spec"]
        if not pspec.get("hostNetwork"):
            problem(f, "the agent must run in the host's network namespace (hostNetwork)")
        for c in pspec.get("containers", []):
            sc = c.get("securityContext", {})
            if sc.get("privileged"):
                problem(f, f"container {c['name']} is privileged")
            caps = sc.get("capabilities", {})
            if caps.get("add", []) != ["NET_ADMIN"] or caps.get("drop") != ["ALL"]:
                problem(f, f"container {c['name']} capabilities {caps}: expected drop ALL, add NET_ADMIN")

    # Secrets the operator creates are named in the README.
    with open(readme) as fh:
        text = fh.read()
    section = text[text.find("## Deploying on Kubernetes") :] if "## Deploying on Kubernetes" in text else ""
    if not section:
        problem(readme, "no section '## Deploying on Kubernetes'")
    for f, d in workloads:
        for v in d["spec"]["template"]["spec"].get("volumes", []):
            s = (v.get("secret") or {}).get("secretName")
            if s and s not in section:
                problem(f, f"Secret {s} is not named in the README's deployment section")

    for p in problems:
        print(p)
    kinds = sorted(f"{k} x{len(v)}" for k, v in by_kind.items())
    print(f"{len(docs)} documents in {len(files)} files ({', '.join(kinds)}): "
          f"{'ok' if not problems else str(len(problems)) + ' problems'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
