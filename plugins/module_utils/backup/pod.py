# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A container the backup reaches through the Kubernetes exec API (the PostgreSQL or the Synapse pod)."""

from __future__ import annotations

from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError


class PodEndpoint:
    kind = "pod"

    def __init__(self, api_client, namespace, pod, container, timeout=600):
        self.api_client, self.namespace, self.pod, self.container = api_client, namespace, pod, container
        self.timeout = timeout

    def _exec(self, command, stdin=None, stdin_size=None):
        from ansible_collections.matrix.stack.plugins.module_utils.kube import pod_exec as _kube_exec
        try:
            return _kube_exec.PodExec(self.api_client, self.namespace, self.pod, command, container=self.container,
                                      stdin=stdin, stdin_size=stdin_size, timeout=self.timeout)
        except _kube_exec.ExecError as e:
            raise BackupError(str(e)) from e

    def finish(self, ex, what=None):
        """The command's exit code; a failure becomes a BackupError (prefixed with what)."""
        from ansible_collections.matrix.stack.plugins.module_utils.kube import pod_exec as _kube_exec
        try:
            return ex.wait()
        except _kube_exec.ExecError as e:
            raise BackupError("%s: %s" % (what, e) if what else str(e)) from e
