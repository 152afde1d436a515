# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Base of the action plugins whose modules can return secret values on request.

A module cannot mark its own result ``no_log`` (ansible-core strips ``_ansible_*`` keys from module results),
and registering the values as no_log values inside the module would mask the very values it returns. So the
action plugin flags the result ``_ansible_no_log`` when it carries a secret: Ansible then censors it in every
callback and at every verbosity, like a task with ``no_log: true``, while the registered variable keeps the
values for later tasks.
"""

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash


class SensitiveResultAction(ActionBase):
    """Runs the module of the same name; hides the whole result when ``carries_secret`` says so."""

    _supports_check_mode = True
    _supports_async = True

    def carries_secret(self, result):
        raise NotImplementedError

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        wrap_async = self._task.async_val and not self._connection.has_native_async
        result = merge_hash(result, self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
        if self.carries_secret(result):
            result["_ansible_no_log"] = True
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
