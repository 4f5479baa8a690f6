"""Policy checks on .github/ that actionlint does not make (run by .ci/lint-workflows).

Workflows:
  - top-level `permissions: {}`, and every job grants its own `permissions`;
  - every remote action pinned by a full commit SHA with a `# vX.Y.Z` comment;
  - no `${{ }}` expression inside a `run:` script (values go through `env:`).
Composite actions (.github/actions/*/action.yml):
  - name, description, `runs.using: composite`;
  - every step with `run:` has `shell: bash` and no `${{ }}` in its script;
  - every `inputs.X` used is declared, every output names an existing step id;
  - the `run:` scripts are written to OUT_DIR/*.sh for shellcheck.

usage: workflow_policy.py OUT_DIR
"""

import os
import re
import sys

import yaml

PIN = re.compile(r"^\s*-?\s*uses:\s*([^\s#]+)(?:\s+#\s*(\S+))?")
SHA = re.compile(r"^[0-9a-f]{40}$")
VERSION = re.compile(r"^v\d+\.\d+\.\d+$")
errors = []


def err(path, msg):
    errors.append(f"{path}: {msg}")


def check_pins(path, text):
    for n, line in enumerate(text.splitlines(), 1):
        m = PIN.match(line)
        if not m:
            continue
        ref, comment = m.group(1), m.group(2)
        ref = ref.strip("'\"")
        if ref.startswith("./") or ref.startswith("docker://"):
            continue
        if "@" not in ref:
            err(f"{path}:{n}", f"action {ref} has no version")
            continue
        _, at = ref.rsplit("@", 1)
        if not SHA.match(at):
            err(f"{path}:{n}", f"{ref}: pin third-party actions by full commit SHA")
        if not comment or not VERSION.match(comment):
            err(f"{path}:{n}", f"{ref}: add the release it is, as `# vX.Y.Z`")


def check_run(path, where, run):
    if "${{" in run:
        err(path, f"{where}: `${{{{ }}}}` inside run:; pass the value through env:")


def check_workflow(path):
    text = open(path, encoding="utf-8").read()
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        err(path, "not a mapping")
        return
    if doc.get("permissions", None) != {}:
        err(path, "top-level `permissions: {}` is required (grant per job)")
    for name, job in (doc.get("jobs") or {}).items():
        if "permissions" not in job:
            err(path, f"job {name}: grant its permissions explicitly")
        for i, step in enumerate(job.get("steps") or []):
            if "run" in step:
                check_run(path, f"job {name} step {i} ({step.get('name', '')})", step["run"])
    check_pins(path, text)


def check_action(path, out_dir):
    text = open(path, encoding="utf-8").read()
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        err(path, "not a mapping")
        return
    for key in ("name", "description", "runs"):
        if key not in doc:
            err(path, f"missing `{key}`")
    runs = doc.get("runs") or {}
    if runs.get("using") != "composite":
        err(path, "runs.using is not composite")
    inputs = doc.get("inputs") or {}
    steps = runs.get("steps") or []
    ids = {s.get("id") for s in steps if s.get("id")}
    for name, out in (doc.get("outputs") or {}).items():
        if "value" not in out:
            err(path, f"output {name} has no value")
            continue
        for m in re.finditer(r"steps\.([A-Za-z0-9_-]+)\.outputs", out["value"]):
            if m.group(1) not in ids:
                err(path, f"output {name} refers to unknown step {m.group(1)}")
    base = os.path.basename(os.path.dirname(path))
    for i, step in enumerate(steps):
        for m in re.finditer(r"inputs\.([A-Za-z0-9_-]+)", yaml.safe_dump(step)):
            if m.group(1) not in inputs:
                err(path, f"step {i}: undefined input {m.group(1)}")
        if "run" not in step:
            continue
        where = f"step {i} ({step.get('name', '')})"
        if step.get("shell") != "bash":
            err(path, f"{where}: needs shell: bash")
        check_run(path, where, step["run"])
        with open(os.path.join(out_dir, f"{base}-{i}.sh"), "w", encoding="utf-8") as f:
            f.write("#!/usr/bin/env bash\n" + step["run"])
    check_pins(path, text)


def main():
    out_dir = sys.argv[1]
    for d, _, files in sorted(os.walk(".github/workflows")):
        for f in sorted(files):
            if f.endswith((".yml", ".yaml")):
                check_workflow(os.path.join(d, f))
    for d, _, files in sorted(os.walk(".github/actions")):
        for f in sorted(files):
            if f in ("action.yml", "action.yaml"):
                check_action(os.path.join(d, f), out_dir)
    for e in errors:
        print(e, file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
