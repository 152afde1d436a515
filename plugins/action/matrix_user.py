# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for matrix.stack.matrix_user: hides results that carry an access token."""

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.matrix.stack.plugins.plugin_utils._sensitive_result import SensitiveResultAction


class ActionModule(SensitiveResultAction):

    def carries_secret(self, result):
        return "access_token" in result or boolean(self._task.args.get("return_access_token", False), strict=False)
