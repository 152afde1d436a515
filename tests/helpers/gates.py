"""The static gates as the tests run them, each returning what it really scanned.

checkov is run once per rendered directory: given several ``-d`` directories in one process it printed
no summary, or summaries that did not add up (issue 13), so a gate that ran it that way could pass
while a rendered object failed a check.
"""

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".work" / "venv" / "bin"
CHECKOV = REPO / ".work" / "venv-checkov" / "bin" / "checkov"
CHECKOV_CONFIG = REPO / ".checkov.yml"
# Kinds checkov has no Kubernetes check for: scanned and counted as resources, but never named in results.
CHECKOV_UNCHECKED_KINDS = {"Namespace", "NetworkPolicy", "PersistentVolumeClaim", "ServiceMonitor"}
# Workloads whose pod template checkov also checks as a resource of its own (kind Pod).
CHECKOV_POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}


@dataclass
class CheckovResult:
    directory: Path
    returncode: int
    summary: dict
    failed: list = field(default_factory=list)   # (check_id, resource, file_path)
    checked_files: set = field(default_factory=set)
    output: str = ""


def checkov_config(tmp_dir):
    """The repository's .checkov.yml, with passed checks listed so the scanned files can be counted."""
    config = yaml.safe_load(CHECKOV_CONFIG.read_text())
    config["quiet"] = False
    path = Path(tmp_dir) / "checkov.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_checkov(directory, config):
    return subprocess.Popen([str(CHECKOV), "--config-file", str(config), "-d", str(directory), "-o", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def finish_checkov(proc, directory, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    try:
        report = json.loads(out)
    except ValueError as exc:
        raise AssertionError(f"checkov printed no JSON report for {directory}: {err[-3000:]}") from exc
    # One framework, one directory: one report (a list would mean several reports to add up).
    assert isinstance(report, dict), f"checkov returned {len(report)} reports for one directory"
    results = report.get("results", {})
    files = {Path(check["file_path"]).as_posix().lstrip("/")
             for kind in ("passed_checks", "failed_checks", "skipped_checks") for check in results.get(kind, [])}
    failed = [(check["check_id"], check["resource"], check["file_path"]) for check in results.get("failed_checks", [])]
    return CheckovResult(Path(directory), proc.returncode, report["summary"], failed, files, err)


def checkov_scan_all(directories, tmp_dir):
    """Scan every directory with its own checkov process (started together, two cores' worth at a time)."""
    config = checkov_config(tmp_dir)
    results, directories = {}, list(directories)
    for start in range(0, len(directories), 2):
        batch = [(d, start_checkov(d, config)) for d in directories[start:start + 2]]
        for directory, proc in batch:
            results[directory] = finish_checkov(proc, directory)
    return results


def rendered_objects(directory):
    """(relative path, object) of every manifest in a render directory, one object per file."""
    objects = []
    for path in sorted(Path(directory).rglob("*.yaml")):
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        assert len(docs) == 1, f"{path}: one object per file"
        objects.append((path.relative_to(directory).as_posix(), docs[0]))
    return objects


def assert_checkov_clean(result, objects):
    """The gate: every object scanned and counted, no parsing error, no failed check."""
    where = result.directory.name
    expected_files = {rel for rel, obj in objects if obj["kind"] not in CHECKOV_UNCHECKED_KINDS}
    expected_count = len(objects) + sum(obj["kind"] in CHECKOV_POD_TEMPLATE_KINDS for _rel, obj in objects)
    assert result.summary["parsing_errors"] == 0, f"{where}: {result.summary}"
    assert result.summary["resource_count"] == expected_count, f"{where}: scanned {result.summary}, rendered {expected_count}"
    missing = expected_files - result.checked_files
    assert not missing, f"{where}: checkov never checked {sorted(missing)}"
    assert not result.failed and result.summary["failed"] == 0, f"{where}: failed checks {result.failed}"
    assert result.returncode == 0, f"{where}: checkov exited {result.returncode}: {result.output[-2000:]}"


def kubernetes_validate(files, kube_version):
    """kubernetes-validate --strict over many files in one process (it reports each bad file)."""
    return subprocess.run([str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", kube_version, *map(str, files)],
                          capture_output=True, text=True, check=False)
