# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for matrix.stack.matrix_user: runs the module, hides results that carry an access token.

A module cannot mark its own result ``no_log`` (ansible-core strips ``_ansible_*`` keys from module results),
and registering the token as a no_log value inside the module would mask the returned token itself. So when the
task asks for the token (``return_access_token: true``) or the result carries one, this plugin flags the result
``_ansible_no_log``: Ansible censors it in every callback and at every verbosity, like a task with
``no_log: true``, while the registered variable keeps the token for later tasks.
"""

from ansible.module_utils.parsing.convert_bool import boolean
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
        if "access_token" in result or boolean(self._task.args.get("return_access_token", False), strict=False):
            result["_ansible_no_log"] = True
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
