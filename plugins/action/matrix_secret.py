# -*- coding: utf-8 -*-
# Copyright: (c) 2026, matrix.stack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for matrix.stack.matrix_secret: runs the module, hides results that carry secret values.

A module cannot mark its own result ``no_log`` (ansible-core strips ``_ansible_*`` keys from module results),
and registering the values as no_log values inside the module would mask the returned values themselves. So when
the module returns ``values`` (``return_values: true``), this plugin flags the result ``_ansible_no_log`` and
Ansible censors it in every callback, at every verbosity, like a task with ``no_log: true``.
"""

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash


class ActionModule(ActionBase):

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        wrap_async = self._task.async_val and not self._connection.has_native_async
        result = merge_hash(result, self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
        if "values" in result or self._task.args.get("return_values"):
            result["_ansible_no_log"] = True
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
